"""A conversation longer than the guard's context: what is judged, what the verdict says was left out, the
``on_overflow`` modes, and bounded cost for a conversation of any size."""

from __future__ import annotations

import time

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, UNSAFE_ANSWER
from langchain_core.messages import AIMessage, HumanMessage

from langchain_llamaguard import LlamaGuard
from langchain_llamaguard.conversation import to_turns
from langchain_llamaguard.errors import GuardBatchError, GuardContextOverflowError
from langchain_llamaguard.prompt_format import render

FILLER = "What is the capital of France? "
HISTORY = [HumanMessage(BENIGN), AIMessage(BENIGN_ANSWER)] * 30  # about 500 tokens: past a 512-token context
ANSWERED = [HumanMessage(BENIGN), AIMessage(UNSAFE_ANSWER)]


def small(base, **settings):
    """Another guard over an already-loaded tiny model, with a 512-token context (overflow is cheap)."""
    tokenizer = base.backend.processor or base.tokenizer
    return LlamaGuard.from_model(base.backend.model, tokenizer, context_length=512, **settings)


def ran_model(guard, monkeypatch) -> list[int]:
    """Records how many prompts each forward pass of the real model got."""
    seen: list[int] = []
    original = guard.backend.first_step
    monkeypatch.setattr(guard.backend, "first_step", lambda p, t, **kw: (seen.append(len(p)), original(p, t, **kw))[1])
    return seen


def test_a_conversation_that_fits_is_encoded_once_and_left_whole(lg3_1b, monkeypatch):
    guard = small(lg3_1b)
    convo = HISTORY[:6] + [HumanMessage(BOMB)]
    calls: list[int] = []
    original = guard._encode_turns
    monkeypatch.setattr(guard, "_encode_turns", lambda turns, ex: (calls.append(len(turns)), original(turns, ex))[1])
    prompts, _ = guard.prepare(convo)
    assert calls == [7] and len(prompts) == 1 and prompts[0].omitted_turns == 0  # the hot path: one encoding
    verdict = guard.check(convo)
    assert verdict.omitted_turns == 0 and verdict.segments == 1


@pytest.mark.parametrize("model", ["lg3_1b", "lg4"])
def test_split_judges_the_last_turn_and_says_how_many_turns_were_left_out(request, model):
    guard = small(request.getfixturevalue(model))
    user = HISTORY + [HumanMessage(BOMB)]
    agent = HISTORY + ANSWERED
    assert not guard._fits(guard._encode_turns(to_turns(user), ()))  # the whole does not fit
    for convo, alone in ((user, [HumanMessage(BOMB)]), (agent, ANSWERED)):
        prompts, _ = guard.prepare(convo)
        assert [p.input_ids for p in prompts] == [guard.encode(alone)[0].input_ids]  # the same prompt as alone
        verdict = guard.check(convo)
        assert verdict.omitted_turns == len(HISTORY) and verdict.segments == 1
        assert verdict.model_copy(update={"omitted_turns": 0}) == guard.check(alone)
    # turns as Llama Guard reads them: the empty user turn put before a leading answer is not counted
    assert guard.prepare([AIMessage(BENIGN_ANSWER)] + HISTORY + [HumanMessage(BOMB)])[0][0].omitted_turns == 61
    with pytest.raises(GuardContextOverflowError, match="does not fit the model's context of 512 tokens whole"):
        guard.encode(user)  # one prompt of the whole conversation, or an error


def test_a_question_too_long_to_keep_is_left_out_and_counted(lg3_1b):
    guard = small(lg3_1b)
    question = HumanMessage(FILLER * 50)  # with the answer, past the 512-token context; alone, past the 256 it may take
    for history in ([], HISTORY):
        prompts, _ = guard.prepare([*history, question, AIMessage(UNSAFE_ANSWER)])
        assert [p.input_ids for p in prompts] == [guard.encode(UNSAFE_ANSWER, role="Agent")[0].input_ids]
        assert prompts[0].omitted_turns == len(history) + 1
    verdict = guard.check([question, AIMessage(UNSAFE_ANSWER)])
    assert verdict.omitted_turns == 1 and verdict.role == "Agent"
    assert verdict.model_copy(update={"omitted_turns": 0}) == guard.check(UNSAFE_ANSWER, role="Agent")


def test_windows_of_a_long_turn_report_the_turns_left_out(lg3_1b):
    guard = small(lg3_1b)
    prompts, _ = guard.prepare(HISTORY[:4] + [HumanMessage(FILLER * 100)])
    assert len(prompts) > 2 and {p.omitted_turns for p in prompts} == {4}


def test_on_overflow_unsafe_fails_closed_without_running_the_model(lg3_1b, monkeypatch):
    guard = small(lg3_1b, on_overflow="unsafe")  # on_error stays "raise": the overflow mode decides alone
    seen = ran_model(guard, monkeypatch)
    verdict = guard.check(HISTORY + [HumanMessage(BENIGN)])
    assert seen == [] and not verdict.safe and verdict.score == 1.0 and verdict.categories == []
    assert "61 turns" in verdict.error and "does not fit the model's context of 512 tokens" in verdict.error
    assert guard.check(BOMB) == small(lg3_1b).check(BOMB)  # what fits is judged as ever


def test_on_overflow_raise_raises_whatever_on_error_says(lg3_1b):
    guard = small(lg3_1b, on_overflow="raise", on_error="unsafe")
    with pytest.raises(GuardContextOverflowError, match=r"\(1 turn, [0-9,]+ tokens\) does not fit .* 512 tokens"):
        guard.check("7 " * 400)  # few characters, many tokens: measured by encoding it
    with pytest.raises(GuardBatchError) as caught:  # in a batch: that row's error; the other row is judged
        guard.batch_check([HumanMessage(FILLER * 600), BOMB])
    assert list(caught.value.errors) == [0] and isinstance(caught.value.errors[0], GuardContextOverflowError)
    assert "at least" in str(caught.value.errors[0])  # measured without tokenizing it all
    assert caught.value.verdicts[1] == guard.check(BOMB)


def test_a_turn_needing_more_than_max_segments_windows_is_refused(lg3_1b):
    text = FILLER * 100
    windows = len(small(lg3_1b).prepare(text)[0])
    assert windows > 2
    assert len(small(lg3_1b, max_segments=windows).prepare(text)[0]) == windows
    refusing = small(lg3_1b, max_segments=windows - 1)
    with pytest.raises(GuardContextOverflowError, match=f"needs more than max_segments={windows - 1} windows"):
        refusing.check(text)


def test_a_turn_over_max_segments_fails_closed_with_on_error_unsafe(lg3_1b):
    """Like an image over the guard's bounds: split was asked for, and this one cannot be judged within them."""
    verdict = small(lg3_1b, max_segments=1, on_error="unsafe").check(FILLER * 100)
    assert not verdict.safe and verdict.score == 1.0 and "needs more than max_segments=1 windows" in verdict.error


def test_ten_megabytes_are_judged_or_refused_in_bounded_time(lg3_1b):
    text = (FILLER * (10_000_000 // len(FILLER) + 1))[:10_000_000]
    start = time.perf_counter()
    with pytest.raises(GuardContextOverflowError, match="needs more than max_segments=64 windows"):
        lg3_1b.check(text)  # the default: split, up to 64 windows of the 8,192-token context
    refused = time.perf_counter() - start
    guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, on_overflow="unsafe")
    start = time.perf_counter()
    verdict = guard.check(text)
    failed_closed = time.perf_counter() - start
    assert not verdict.safe and "at least" in verdict.error and "10,000,000 characters" in verdict.error
    assert refused < 30 and failed_closed < 5, (refused, failed_closed)


def test_a_hundred_thousand_messages_are_judged_in_bounded_time(lg4):
    messages = [HumanMessage(BENIGN), AIMessage(BENIGN_ANSWER)] * 50_000 + [HumanMessage(BOMB)]
    start = time.perf_counter()
    verdict = lg4.check(messages)
    took = time.perf_counter() - start
    assert verdict.omitted_turns == 100_000 and verdict.segments == 1
    assert verdict.model_copy(update={"omitted_turns": 0}) == lg4.check(BOMB)
    assert took < 30, took


@pytest.mark.parametrize("fmt", ["llama-guard-3-1b", "llama-guard-3-8b", "llama-guard-4"])
def test_the_cheap_measures_count_the_tokens_the_prompt_has(lg3_1b, lg4, fmt):
    """The bounds that let a huge conversation skip the full encoding are exact where they claim to be: the turns
    add up (a turn starts a new pre-token), and text tokenized a chunk at a time gives the whole text's tokens."""
    base = lg4 if fmt == "llama-guard-4" else lg3_1b
    guard = LlamaGuard.from_model(base.backend.model, base.backend.processor or base.tokenizer, model_format=fmt)
    turns = to_turns(
        [
            HumanMessage(FILLER * 40 + "naïve café — 東京 123,456.7!  "),
            AIMessage(["Paris.\n\n  ", "It's 42 km²... <|eot_id|> ", BENIGN_ANSWER * 30]),
            HumanMessage("\t" + BOMB + " 🙂" * 50),
        ]
    )
    body = len(guard.encoder.segment_ids(render(turns, model=fmt).body))
    assert sum(len(p) for t in turns for p in t.text_parts) > 2 * body  # long enough to be counted, not encoded
    assert guard._min_body_tokens(turns, body) == body - len(turns)  # exact, less the margin of one per turn
    text = " ".join(f"word{i % 97} naïve, café; 東京 {i}" for i in range(4000))  # past two 32k-character chunks
    spans, at_least, complete = guard._token_spans(text, 10**9)
    whole = guard.tokenizer(text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
    assert complete and at_least == len(spans) and spans == list(whole["offset_mapping"])


def test_a_context_too_small_for_windows_names_the_context_not_images(lg3_1b):
    """A long text-only turn on a context the policy nearly fills: the error says what takes the room and what to
    change (it used to tell a user with no images to send fewer images)."""
    small = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, context_length=250)
    with pytest.raises(GuardContextOverflowError, match=r"template and its categories.*raise context_length=") as err:
        small.check("word " * 300)
    assert "images" not in str(err.value)


@pytest.mark.parametrize("load", ["from_pretrained", "from_model"])
def test_llama_guard_4_reads_its_verdict_whole_at_the_edge_of_its_context(lg4_path, lg4, load):
    """The checkpoint's null ``attention_chunk_size`` was set to the context length: a prompt that filled the context
    put the verdict's category tokens in a new attention chunk, where they cannot see the conversation (the tiny
    guard answered ``unsafe\\nSsafesafe...`` or ``S114141414...``)."""
    from transformers import AutoProcessor, Llama4ForConditionalGeneration

    from langchain_llamaguard.backends.base import MAX_NEW_TOKENS

    n = len(lg4.encode(BOMB)[0].input_ids)
    if load == "from_pretrained":
        edge = LlamaGuard.from_pretrained(str(lg4_path), context_length=n + 1)
    else:
        model = Llama4ForConditionalGeneration.from_pretrained(str(lg4_path)).eval()
        edge = LlamaGuard.from_model(model, AutoProcessor.from_pretrained(str(lg4_path)), context_length=n + 1)
    at_edge, roomy = edge.check(BOMB), lg4.check(BOMB)
    assert (at_edge.safe, at_edge.raw, at_edge.error) == (roomy.safe, roomy.raw, None)
    assert at_edge.score == pytest.approx(roomy.score, abs=1e-4)
    assert edge.backend.model.config.text_config.attention_chunk_size >= n + 1 + MAX_NEW_TOKENS
