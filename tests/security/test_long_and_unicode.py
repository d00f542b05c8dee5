"""Long inputs are covered in full; unicode tricks never crash or skip the guard."""

from __future__ import annotations

import pytest
from conftest import BENIGN, BOMB
from langchain_core.messages import AIMessage, HumanMessage

from langchain_llamaguard.tiny.data import UNICODE_TRICKS

FILLER = "What is the capital of France? " * 40


def test_long_conversation_is_split_not_truncated(lg4_with):
    guard = lg4_with(context_length=320, on_error="unsafe")  # the merge is under test, not the windows
    text = FILLER + BOMB + " " + FILLER
    prompts, _ = guard.prepare(text)
    assert len(prompts) > 2 and all(len(p.input_ids) < 320 for p in prompts)
    # every token of the judged turn is in some window, and the payload whole in at least one
    windows = [guard.tokenizer.decode(p.input_ids) for p in prompts]
    assert any(BOMB in w for w in windows)
    assert windows[0].count("France") < text.count("France") and FILLER[-40:].strip() in windows[-1]
    # the verdict is the windows' verdicts merged: unsafe if any is, categories united, highest score
    parts = guard.check_encoded(prompts, [()] * len(prompts))
    whole = guard.check(text)
    assert whole.segments == len(prompts)
    assert whole.safe == all(p.safe for p in parts)
    # (the second check of the same windows reuses the first's stored prefixes: the same score to within 1e-4)
    assert whole.score == pytest.approx(max(p.score for p in parts), abs=1e-4)
    assert set(whole.categories) == {c for p in parts for c in p.categories}


def test_merged_verdict_is_unsafe_if_any_part_is():
    from langchain_llamaguard.verdict import make_verdict, merge_verdicts, parse_output

    def verdict(raw: str, score: float):
        return make_verdict(parse_output(raw), score=score, role="User", model="m", raw=raw)

    safe, s9, s1 = verdict("safe", 0.1), verdict("unsafe\nS9", 0.9), verdict("unsafe\nS1", 0.7)
    merged = merge_verdicts([safe, s9, safe, s1])
    assert not merged.safe and merged.categories == ["S1", "S9"] and merged.score == 0.9 and merged.segments == 4
    assert merge_verdicts([safe, safe]).safe


def test_long_history_is_split_by_turn(lg4_with):
    guard = lg4_with(context_length=480)
    history = []
    for _ in range(12):
        history += [HumanMessage(BENIGN), AIMessage("Paris is the capital of France.")]
    prompts, _ = guard.prepare(history + [HumanMessage(BOMB)])
    assert len(prompts) == 1  # older turns left out as context; the judged turn whole
    assert not guard.check(history + [HumanMessage(BOMB)]).safe


@pytest.mark.parametrize(("text", "target"), UNICODE_TRICKS)
def test_unicode_tricks_never_crash_or_skip(lg4, prompt_guard, text, target, monkeypatch):
    seen = []
    original = lg4.backend.first_step
    monkeypatch.setattr(lg4.backend, "first_step", lambda p, t, **kw: (seen.append(len(p)), original(p, t, **kw))[1])
    v = lg4.check(text)
    assert seen == [1] and v.role == "User"  # the model did run
    assert v.categories == ([] if target == "safe" else ["S9"])  # a check-set verdict
    assert 0.0 <= prompt_guard.score(text) <= 1.0
    lg4.as_input_guard(on_unsafe="blocked").invoke(text)
