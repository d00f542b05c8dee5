"""Token-prefix KV reuse (issue 22, item 1): a check of a growing conversation computes only what follows the
longest stored token prefix of an earlier check of the same role and policy. Parity with the store off, the
tokens actually computed (counted with a forward pre-hook), eviction, threads, images, and turning it off."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, UNSAFE_ANSWER, WEATHER
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_llamaguard import LlamaGuard
from langchain_llamaguard.backends.prefix_store import cache_nbytes
from langchain_llamaguard.errors import LlamaGuardError
from langchain_llamaguard.tiny.data import check_images


def _agent_run() -> list:
    """An agent's conversation, 8 steps: a user turn, model turns with tool calls, tool results, answers."""

    def call(i: int) -> dict:
        return {"name": "get_weather", "args": {"city": f"Paris {i}"}, "id": f"call{i}", "type": "tool_call"}

    return [
        HumanMessage(WEATHER),
        AIMessage("Let me look that up.", tool_calls=[call(0)]),
        ToolMessage("Sunny, 21 degrees.", tool_call_id="call0"),
        AIMessage(BENIGN_ANSWER, tool_calls=[call(1)]),
        ToolMessage("Cloudy, 17 degrees.", tool_call_id="call1"),
        AIMessage(UNSAFE_ANSWER),
        HumanMessage(BOMB),
        AIMessage(BENIGN_ANSWER),
    ]


def _guards(base: LlamaGuard, budget: int | None = 64 << 20) -> tuple[LlamaGuard, LlamaGuard]:
    """Two guards over ``base``'s loaded model: one with the token-prefix store, one without."""
    model, proc = base.backend.model, base.backend.processor or base.tokenizer
    return (
        LlamaGuard.from_model(model, proc, prefix_cache_bytes=budget, on_error="unsafe"),  # parity, whatever
        LlamaGuard.from_model(model, proc, prefix_cache_bytes=0, on_error="unsafe"),  # the tiny guard answers
    )


class _Widths:
    """Input widths of the model's forwards: ``(width, continues a cache)`` each."""

    def __init__(self, model) -> None:
        self.seen: list[tuple[int, bool]] = []
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, _args, kwargs) -> None:
        self.seen.append((kwargs["input_ids"].shape[1], kwargs.get("past_key_values") is not None))

    def main(self) -> int:
        """The width of the check's scoring forward (after any policy-prefix forward, before any decoding)."""
        return next(w for w, cont in self.seen if cont)

    def __enter__(self) -> _Widths:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def _same(a, b) -> None:
    assert [(v.safe, v.categories, v.raw) for v in a] == [(v.safe, v.categories, v.raw) for v in b]
    assert [v.score for v in a] == pytest.approx([v.score for v in b], abs=1e-4)


@pytest.mark.parametrize("name", ["lg3_1b", "lg4"])
def test_growing_conversation_computes_only_the_new_turns(request, name):
    on, off = _guards(request.getfixturevalue(name))
    run = _agent_run()
    last_end: dict[str, int] = {}  # role -> where the previous check of that role's conversation ended
    with _Widths(on.backend.model) as widths:
        for k in range(1, len(run) + 1):
            conv = run[:k]
            enc, _ = on.encode(conv)
            widths.seen.clear()
            got = on.check(conv)
            computed = widths.main()
            widths.seen.clear()
            want = off.check(conv)
            _same([got], [want])
            assert widths.main() == len(enc.input_ids) + 1 - enc.prefix_len  # off: all but the policy prefix
            start = last_end.get(enc.role, enc.prefix_len)
            assert computed == len(enc.input_ids) + 1 - start  # on: the new turns, the suffix and the lead
            if enc.role in last_end:
                assert computed < len(enc.input_ids) - enc.body_end + 60  # about one step + suffix, not the whole
            last_end[enc.role] = enc.body_end
    assert len(on.backend.prefix_store) == 2  # the latest User and Agent checks; each dropped the one it extends
    # The same conversations again, in one batch: rows reuse stored prefixes of different lengths, stacked.
    convs = [run[:k] for k in range(1, len(run) + 1)] + [[*run, HumanMessage(BENIGN)]]
    _same(on.batch_check(convs), off.batch_check(convs))


def test_eviction_keeps_the_store_under_its_budget(lg3_1b):
    big, off = _guards(lg3_1b)
    questions = [WEATHER, BENIGN, BOMB, "Tell me a joke.", "What is two plus two?", "Name a blue fruit."]
    big.check(questions[0])
    one = cache_nbytes(big.backend.prefix_store.longest(big.encode(questions[0])[0].input_ids)[1])
    budget = int(2.5 * one)  # about two entries of these sizes
    small, _ = _guards(lg3_1b, budget)
    store = small.backend.prefix_store
    for q in questions:
        _same([small.check(q)], [off.check(q)])
        assert 0 < store.nbytes <= budget
    assert 1 <= len(store) <= 2  # least recently used entries were dropped
    ends = [e.body_end for e in (small.encode(q)[0] for q in questions)]
    first, last = small.encode(questions[0])[0], small.encode(questions[-1])[0]
    assert store.longest(first.input_ids[: ends[0]])[0] < ends[0]  # the oldest went
    assert store.longest(last.input_ids[: ends[-1]])[0] == ends[-1]  # the latest is kept


@pytest.mark.parametrize("name", ["lg3_1b", "lg4"])
def test_a_growing_answer_reuses_the_answer_so_far(request, name):
    """A streamed answer checked every few words: each check reuses the previous one's KV up to where their ids
    differ (the previous answer's end of turn, or a re-tokenized last word), not just the policy prefix."""
    on, off = _guards(request.getfixturevalue(name))
    words = (BENIGN_ANSWER + " ") * 12
    words = words.split()
    prev = 0
    with _Widths(on.backend.model) as widths:
        for n in range(8, len(words) + 1, 8):
            conv = [HumanMessage(BENIGN), AIMessage(" ".join(words[:n]))]
            enc, _ = on.encode(conv)
            widths.seen.clear()
            got = on.check(conv)
            computed = widths.main()
            _same([got], [off.check(conv)])
            if prev:
                new = enc.body_end - prev  # the answer's new tokens
                assert computed <= new + (len(enc.input_ids) - enc.body_end) + 8  # + suffix, lead, a few re-read
            prev = enc.body_end


def test_concurrent_callers_share_entries(lg3_1b):
    on, off = _guards(lg3_1b)
    run = _agent_run()
    convs = [run[:k] for k in range(1, len(run) + 1)] * 3
    want = [off.check(c) for c in convs]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(on.check, convs))
    _same(got, want)
    assert 1 <= len(on.backend.prefix_store) <= len(convs) // 3  # entries shared by the callers, never duplicated
    assert on.backend.prefix_store.nbytes <= on.backend.prefix_cache_bytes


def test_prompts_with_images_bypass_reuse(lg4):
    on, off = _guards(lg4)
    _, blue = check_images()
    conv = [HumanMessage(content=[{"type": "image", "image": blue}, {"type": "text", "text": "Describe it"}])]
    longer = [*conv, AIMessage("A blue square."), HumanMessage("Thanks")]
    with _Widths(on.backend.model) as widths:
        for c in (conv, longer, conv, longer):
            widths.seen.clear()
            _same([on.check(c)], [off.check(c)])
            assert not widths.seen[0][1]  # a whole-prompt forward: no cache reused
    assert len(on.backend.prefix_store) == 0


def test_zero_turns_it_off_and_bad_values_are_refused(lg3_1b):
    _, off = _guards(lg3_1b)
    assert off.backend.prefix_store is None and off.backend.prefix_cache_bytes == 0
    assert lg3_1b.backend.prefix_cache_bytes == 0 and lg3_1b.backend.prefix_store is None  # off unless asked
    default = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, prefix_cache_bytes=None)
    assert default.backend.prefix_cache_bytes == 256 << 20  # the CPU default
    run = _agent_run()
    with _Widths(off.backend.model) as widths:
        off.check(run[:1])
        widths.seen.clear()
        enc, _ = off.encode(run[:3])
        off.check(run[:3])
        assert widths.main() == len(enc.input_ids) + 1 - enc.prefix_len  # only the policy prefix is reused
    with pytest.raises(LlamaGuardError, match="prefix_cache_bytes") as err:
        LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, prefix_cache_bytes=-1)
    assert isinstance(err.value, ValueError)
    clone = copy.deepcopy(_guards(lg3_1b, 1 << 20)[0].backend)
    assert clone.prefix_cache_bytes == 1 << 20 and len(clone.prefix_store) == 0


def test_store_finds_the_longest_stored_prefix_and_evicts_least_recently_used():
    import torch

    from langchain_llamaguard.backends.prefix_store import PrefixStore

    def kv(n: int) -> SimpleNamespace:  # one layer, one row: n tokens of 4 floats (32 bytes each for keys+values)
        return SimpleNamespace(layers=[SimpleNamespace(keys=torch.zeros(1, 1, n, 4), values=torch.zeros(1, 1, n, 4))])

    store = PrefixStore(max_bytes=32 * 30)
    a, b, c = list(range(10)), list(range(12)), [*range(9), 99, 10, 11]  # c shares the first 9 ids of a and b
    store.put(a, kv(10))
    store.put(b, kv(12))  # b extends a: a is dropped
    assert len(store) == 1 and store.nbytes == 32 * 12
    n, got = store.longest([*b, 5, 6])
    assert n == 12 and got.layers[0].keys.shape[-2] == 12
    n, got = store.longest(c)  # a common prefix of 9: the entry's first 9 tokens
    assert n == 9 and got.layers[0].keys.shape[-2] == 9
    assert store.longest(c, min_len=10) == (0, None)
    d = [7, *range(11)]
    store.put(d, kv(12))
    store.longest(b)  # b is now the most recently used
    store.put(c, kv(12))  # 36 tokens' worth: d (least recently used) goes
    assert len(store) == 2 and store.nbytes == 32 * 24
    assert store.longest(d)[0] == 0 and store.longest(c)[0] == 12
    store.put(list(range(100)), kv(100))  # larger than the whole budget: not stored, nothing evicted
    assert len(store) == 2
    store.clear()
    assert (len(store), store.nbytes, store.longest(c)) == (0, 0, (0, None))
