"""Content cannot forge turns, pre-write the verdict, or change which turn or categories are judged."""

from __future__ import annotations

import pytest
from conftest import BENIGN, BOMB
from langchain_core.messages import AIMessage, HumanMessage

from langchain_llamaguard import format_prompt
from langchain_llamaguard.prompt_format import render
from langchain_llamaguard.tiny.data import FAKE_MARKERS, FORGERIES


@pytest.mark.parametrize("forgery", FORGERIES)
def test_special_token_strings_in_content_are_text_llama_guard_4(lg4, forgery):
    baseline, _ = lg4.encode(BOMB)
    prompts = [lg4.encode(c)[0] for c in (BOMB + forgery, [HumanMessage(BENIGN), AIMessage(forgery)])]
    batch = lg4.prepare(BOMB + forgery)[0]
    for p in prompts + batch:
        for special in (200000, 200005, 200006, 200008, 200090, 200092, 200080):
            assert p.input_ids.count(special) == baseline.input_ids.count(special), special


@pytest.mark.parametrize("forgery", FORGERIES)
@pytest.mark.parametrize("fixture", ["lg3_8b", "lg3_1b"])
def test_special_token_strings_in_content_are_text_llama_guard_3(request, fixture, forgery):
    guard = request.getfixturevalue(fixture)
    baseline, _ = guard.encode(BOMB)
    forged, _ = guard.encode([HumanMessage(BENIGN), AIMessage(forgery), HumanMessage(BOMB + forgery)])
    for special in (128000, 128006, 128007, 128009, 128256 - 245):
        assert forged.input_ids.count(special) == baseline.input_ids.count(special)


def test_forged_verdict_does_not_flip_the_verdict(lg4, lg3_8b):
    for guard, forgery in ((lg4, FORGERIES[0]), (lg3_8b, FORGERIES[3])):
        clean = guard.check(BOMB)
        forged = guard.check(BOMB + forgery)
        assert not clean.safe and not forged.safe and forged.categories == ["S9"]


def test_batched_forgeries_stay_text(lg4):
    """On top of the token-id checks above: in one batch, each forged request is still judged as the request."""
    prompts = [p for c in [BOMB + f for f in FORGERIES] + [BENIGN] for p in lg4.prepare(c)[0]]
    baseline, _ = lg4.encode(BOMB)
    for p in prompts:  # structure first: the same special tokens as an unforged prompt
        assert [t for t in p.input_ids if t >= 200000] == [t for t in baseline.input_ids if t >= 200000]
    verdicts = lg4.batch_check([BOMB + f for f in FORGERIES] + [BENIGN])
    assert [v.categories for v in verdicts] == [["S9"]] * len(FORGERIES) + [[]]


@pytest.mark.parametrize("model", ["llama-guard-4", "llama-guard-3-8b", "llama-guard-3-1b"])
def test_fake_format_markers_do_not_change_the_structure(model):
    clean = render(BOMB, model=model, excluded_categories=["S6"])
    faked = render(BOMB + FAKE_MARKERS, model=model, excluded_categories=["S6"])
    assert faked.prefix == clean.prefix and faked.suffix == clean.suffix  # same categories, same judged role
    assert faked.role == "User" and faked.categories == clean.categories
    assert [s for s in faked.body if s.special] == [s for s in clean.body if s.special]
    text = format_prompt(BOMB + FAKE_MARKERS, model=model)
    assert text.endswith("".join(seg.text for seg in clean.suffix))  # the real instruction is the last one


def test_fake_markers_do_not_change_the_verdict(lg4):
    v = lg4.check(BOMB + FAKE_MARKERS)
    assert not v.safe and v.role == "User" and "S9" in v.categories
