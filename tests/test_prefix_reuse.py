"""Token-prefix KV reuse (issue 22, item 1): a check of a growing conversation computes only what follows the
longest stored token prefix of an earlier check of the same role and policy. Parity with the store off, the
tokens actually computed (counted with a forward pre-hook), eviction, threads, images, and turning it off."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, UNSAFE_ANSWER, WEATHER, same_verdicts
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
            same_verdicts([got], [want])
            assert widths.main() == len(enc.input_ids) + 1 - enc.prefix_len  # off: all but the policy prefix
            start = last_end.get(enc.role, enc.prefix_len)
            assert computed == len(enc.input_ids) + 1 - start  # on: the new turns, the suffix and the lead
            if enc.role in last_end:
                assert computed < len(enc.input_ids) - enc.body_end + 60  # about one step + suffix, not the whole
            last_end[enc.role] = enc.body_end
    assert len(on.backend.prefix_store) == 2  # the latest User and Agent checks; each dropped the one it extends
    # The same conversations again, in one batch: rows reuse stored prefixes of different lengths, stacked.
    convs = [run[:k] for k in range(1, len(run) + 1)] + [[*run, HumanMessage(BENIGN)]]
    same_verdicts(on.batch_check(convs), off.batch_check(convs))


def test_eviction_keeps_the_store_under_its_budget(lg3_1b):
    big, off = _guards(lg3_1b)
    questions = [WEATHER, BENIGN, BOMB, "Tell me a joke.", "What is two plus two?", "Name a blue fruit."]
    big.check(questions[0])
    one = cache_nbytes(big.backend.prefix_store.longest(big.encode(questions[0])[0].input_ids)[1])
    budget = int(2.5 * one)  # about two entries of these sizes
    small, _ = _guards(lg3_1b, budget)
    store = small.backend.prefix_store
    for q in questions:
        same_verdicts([small.check(q)], [off.check(q)])
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
            same_verdicts([got], [off.check(conv)])
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
    same_verdicts(got, want)
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
            same_verdicts([on.check(c)], [off.check(c)])
            assert not widths.seen[0][1]  # a whole-prompt forward: no cache reused
    assert len(on.backend.prefix_store) == 0


def test_zero_turns_it_off_and_bad_values_are_refused(lg3_1b):
    _, off = _guards(lg3_1b)
    assert off.backend.prefix_store is None and off.backend.prefix_cache_bytes == 0
    # on by default: 1 GiB on a CPU, less where a tenth of the available memory is less
    from langchain_llamaguard.backends.prefix_store import DEFAULT_CPU_BYTES, available_memory

    default = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer)
    assert default.backend.prefix_store is not None
    assert default.backend.prefix_cache_bytes == min(DEFAULT_CPU_BYTES, (available_memory() or 10 << 30) // 10)
    assert 64 << 20 <= default.backend.prefix_cache_bytes <= 1 << 30
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


def _meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="Linux's /proc/meminfo")
def test_the_default_bound_counts_the_page_cache_as_available():
    """A server that read a model's weights from disk holds them in its page cache: its *free* memory is then a
    small part of what it can use, and a store bounded by a tenth of the free memory held a tenth of what it
    should. The bound follows the *available* memory (the kernel's MemAvailable), or a cgroup's room if less."""
    from langchain_llamaguard.backends.prefix_store import available_memory, cgroup_room

    want = _meminfo("MemAvailable")
    room = cgroup_room(Path("/sys/fs/cgroup"))
    want = min(want, room) if room is not None else want
    got = available_memory()
    assert got is not None and abs(got - want) <= 0.1 * want + (256 << 20), (got, want, _meminfo("MemFree"))


def test_a_containers_memory_limit_bounds_the_default(tmp_path):
    from langchain_llamaguard.backends.prefix_store import available_memory, cgroup_room

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("4294967296\n")  # a 4 GiB container ...
    (v2 / "memory.current").write_text(str(3 << 30))  # ... using 3 GiB, 512 MiB of it reclaimable page cache
    (v2 / "memory.stat").write_text(f"anon 123\nfile 999\ninactive_file {512 << 20}\nactive_file 5\n")
    assert cgroup_room(v2) == (1 << 30) + (512 << 20)
    assert available_memory(v2) <= (1 << 30) + (512 << 20)  # the container's room, not the host's memory
    (v2 / "memory.max").write_text("max\n")  # no limit
    assert cgroup_room(v2) is None
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    (v1 / "memory.usage_in_bytes").write_text("22016790528\n")
    assert cgroup_room(tmp_path / "v1") is None
    (v1 / "memory.limit_in_bytes").write_text(str(8 << 30))
    (v1 / "memory.usage_in_bytes").write_text(str(9 << 30))  # over it (page cache counts in v1's usage)
    (v1 / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {2 << 30}\n")
    assert cgroup_room(tmp_path / "v1") == 1 << 30
    assert cgroup_room(tmp_path / "nothing-here") is None


def test_store_finds_the_longest_stored_prefix_and_evicts_least_recently_used():
    import torch

    from langchain_llamaguard.backends.prefix_store import SUPERSEDED_TAIL, PrefixStore

    def kv(n: int) -> SimpleNamespace:  # one layer, one row: n tokens of 4 floats (32 bytes each for keys+values)
        return SimpleNamespace(layers=[SimpleNamespace(keys=torch.zeros(1, 1, n, 4), values=torch.zeros(1, 1, n, 4))])

    store = PrefixStore(max_bytes=32 * 30, block=4)  # keys of a dozen ids: index blocks of 4
    a, b, c = list(range(10)), list(range(12)), [*range(7), 99, 98, 97, 10, 11]  # c shares 7 ids with a and b
    store.put(a, kv(10))
    store.put(b, kv(12))  # b extends a: a is dropped
    assert len(store) == 1 and store.nbytes == 32 * 12
    n, got = store.longest([*b, 5, 6])
    assert n == 12 and got.layers[0].keys.shape[-2] == 12
    n, got = store.longest(c)  # a common prefix of 7: the entry's first 7 tokens
    assert n == 7 and got.layers[0].keys.shape[-2] == 7
    assert store.longest(c, min_len=8) == (0, None)
    d = [7, *range(11)]
    store.put(d, kv(12))
    store.longest(b)  # b is now the most recently used
    store.put(c, kv(12))  # 36 tokens' worth: d (least recently used) goes
    assert len(store) == 2 and store.nbytes == 32 * 24
    assert store.longest(d)[0] == 0 and store.longest(c)[0] == 12
    # An entry that the new one continues but for its last few ids (a streamed answer's previous check: its last
    # word re-tokenized, then its end of turn) is dropped: it can serve no lookup more than those few ids better.
    e = [*b[:11], 77]
    assert SUPERSEDED_TAIL >= 1
    store.max_bytes = 32 * 40  # room for all three: b leaves because e supersedes it, not to make room
    store.put(e, kv(12))  # b differs from e in its last id only; c, in its last 5 > SUPERSEDED_TAIL: kept
    assert len(store) == 2 and store.longest(b)[0] == 11 and store.longest(c)[0] == 12
    store.put(list(range(100)), kv(100))  # larger than the whole budget: not stored, nothing evicted
    assert len(store) == 2 and store.nbytes == 32 * 24
    store.clear()
    assert (len(store), store.nbytes, store.longest(c)) == (0, 0, (0, None))
    # a write computed before a clear (clear_caches after the weights changed) is not stored
    epoch = store.epoch
    store.clear()
    store.put(c, kv(12), epoch=epoch)
    assert len(store) == 0
    store.put(c, kv(12), epoch=store.epoch)
    assert len(store) == 1


class _Tokens:
    """Tokens the model computes in its verdicts' first steps (non-padding input ids), over a ``with`` block."""

    def __init__(self, model) -> None:
        self.model, self.count = model, 0

    def _hook(self, _module, _args, kwargs) -> None:
        ids = kwargs.get("input_ids")
        if ids is not None and kwargs.get("logits_to_keep") == 2:
            self.count += int(kwargs["attention_mask"][:, -ids.shape[1] :].sum())

    def __enter__(self) -> _Tokens:
        self._handle = self.model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


class _Verdicts:
    """Every verdict a guard's moderators hand out (the middleware's, the step's), in order."""

    def __init__(self, guard) -> None:
        self.guard, self.seen = guard, []

    def __enter__(self) -> _Verdicts:
        self._batch = self.guard.batch_check

        def recording(*args, **kwargs):
            out = self._batch(*args, **kwargs)
            self.seen.extend(out)
            return out

        self.guard.batch_check = recording
        return self

    def __exit__(self, *exc) -> None:
        del self.guard.batch_check


@pytest.mark.parametrize("name", ["lg3_1b", "lg4"])
def test_a_guarded_agent_run_is_the_same_with_the_store_and_computes_less(request, name):
    """A real ``create_agent`` run under ``LlamaGuardMiddleware`` (user turn, every response, every tool call and
    tool result): the same final state and the same verdicts with the store as without, for fewer tokens."""
    from langchain.agents import create_agent
    from test_agents import ToolCallingFakeModel, call

    from langchain_llamaguard.middleware import LlamaGuardMiddleware

    on, off = _guards(request.getfixturevalue(name))
    results = {}
    for guard in (off, on):
        _, _, web_search = __import__("conftest").make_tools("Sunny, 21 degrees, light wind from the west.")
        script = [call("web_search", {"query": f"weather in Paris, day {i}"}, f"call{i}") for i in range(5)]
        script.append(AIMessage(BENIGN_ANSWER))
        agent = create_agent(
            ToolCallingFakeModel(messages=iter(script)),
            [web_search],
            middleware=[LlamaGuardMiddleware(guard, apply_to_tool_results=True)],
        )
        with _Verdicts(guard) as verdicts, _Tokens(guard.backend.model) as tokens:
            state = agent.invoke({"messages": [HumanMessage(WEATHER)]})
        results[guard is on] = ([(m.type, m.text) for m in state["messages"]], verdicts.seen, tokens.count)
    (msgs_on, seen_on, tokens_on), (msgs_off, seen_off, tokens_off) = results[True], results[False]
    assert msgs_on == msgs_off
    assert len(seen_on) == len(seen_off) >= 2
    same_verdicts(seen_on, seen_off)
    assert tokens_on < tokens_off


@pytest.mark.parametrize("name", ["lg3_1b", "lg4"])
def test_an_incremental_stream_is_the_same_with_the_store_and_computes_less(request, name):
    """``stream_mode="incremental"``: the same chunks released (or the same stop) and the same verdicts with the
    store as without, and the answer's checks together compute about one full check of the final answer plus one
    template suffix per check (and a re-read last word or two), not the answer again at every check."""
    from conftest import answering_chat_model

    on, off = _guards(request.getfixturevalue(name))
    answer = " ".join([BENIGN_ANSWER] * 6)
    model = answering_chat_model({BENIGN: answer})
    results = {}
    for guard in (off, on):
        chain = guard.wrap(model, stream_mode="incremental", check_every=6, on_unsafe="[withheld]")
        with _Verdicts(guard) as verdicts, _Tokens(guard.backend.model) as tokens:
            chunks = [c.text if hasattr(c, "text") else c for c in chain.stream(BENIGN)]
        results[guard is on] = (chunks, verdicts.seen, tokens.count)
    (chunks_on, seen_on, tokens_on), (chunks_off, seen_off, tokens_off) = results[True], results[False]
    assert chunks_on == chunks_off
    assert len(seen_on) == len(seen_off) >= 4  # the input, then the answer every 6 words and at its end
    same_verdicts(seen_on, seen_off)
    # Every answer check judged a prefix of the final answer (all of it, unless the stream stopped early).
    asked, _ = on.encode(BENIGN)
    final, _ = on.encode([HumanMessage(BENIGN), AIMessage(answer)])
    checks = len(seen_on) - 1
    suffix = len(final.input_ids) + 1 - final.body_end  # the template's closing text and the lead
    bound = (len(asked.input_ids) + 1 - asked.prefix_len) + (final.body_end - final.prefix_len) + checks * (suffix + 4)
    assert tokens_on <= bound and tokens_on < tokens_off


def test_a_batch_mixing_a_long_reused_row_and_a_long_new_row_is_no_wider(lg3_1b):
    """Rows are stacked ``[pad][start][pad][rest]``: a row reusing a long stored prefix beside a row whose long
    text is all new would make every row as wide as both. The batch uses a stored prefix only where it lets the
    rows compute less without widening the attention past the forward without the store."""
    from langchain_llamaguard.tiny import data

    on, off = _guards(lg3_1b, 256 << 20)
    first = [HumanMessage((data.BENIGN_TOOL_OUTPUTS[0] + " ") * 40)]
    nxt = [*first, AIMessage("Sure."), HumanMessage("Thanks!")]  # the same conversation's next turn
    other = [HumanMessage((BENIGN_ANSWER + " ") * 60)]  # a new conversation as long, in the same batch
    on.check(first)  # stored
    widths = {}
    for guard in (off, on):
        seen: list[int] = []

        def hook(_m, _a, kw, seen=seen):
            if kw.get("past_key_values") is not None:
                seen.append(kw["attention_mask"].shape[1])

        handle = guard.backend.model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            verdicts = guard.batch_check([nxt, other])
        finally:
            handle.remove()
        widths[guard is on] = (seen[0], verdicts)
    assert widths[True][0] <= widths[False][0]
    same_verdicts(widths[True][1], widths[False][1])
    # alone, the next turn still reuses its stored conversation
    with _Widths(on.backend.model) as w:
        on.check(nxt)
        enc, _ = on.encode(nxt)
        assert w.main() < len(enc.input_ids) - enc.body_end + 16


def test_plan_reuse_weighs_computed_tokens_against_width():
    from langchain_llamaguard.backends.prefix_store import plan_reuse

    # a row that would fit the batch's longest rest anyway gains nothing from its stored prefix
    assert plan_reuse([300, 300], [1964, 1950], [1900, 0], key_cost=16384) == [False, False]
    # rows of one growing conversation each: reuse both (a quarter of the tokens, narrower attention too)
    assert plan_reuse([250, 250], [1050, 900], [1000, 500], key_cost=16384) == [True, True]
    # only the row that needs it to fit a shorter rest; the other's rest fits anyway, from its short start
    assert plan_reuse([250, 250], [2000, 330], [1900, 300], key_cost=16384) == [True, False]
    # a second stored prefix that lets the batch's longest rest shrink is used too
    assert plan_reuse([250, 250], [2000, 400], [1990, 380], key_cost=16384) == [True, True]
    assert plan_reuse([250], [1050], [0], key_cost=100) == [False]
    # the batch budget: reuse that stacks 2 x 1400 padded tokens where the rows alone take 2 x 1050 needs room
    assert plan_reuse([250, 250], [1050, 900], [1000, 500], key_cost=16384, max_tokens=2800) == [True, True]
    assert plan_reuse([250, 250], [1050, 900], [1000, 500], key_cost=16384, max_tokens=2100) == [False, False]


def test_a_prompt_whose_conversation_runs_to_its_end_checks_alike_with_the_store(lg3_1b):
    """``check_encoded`` of a caller's own encoding with no closing suffix (``body_end`` at the end): the store
    never stands in for the prompt's last token, whose logits the check reads."""
    import dataclasses

    on, off = _guards(lg3_1b)
    enc, excluded = on.encode([HumanMessage(BENIGN), AIMessage("Paris.")])
    other, _ = on.encode(BOMB)
    whole = dataclasses.replace(enc, body_end=len(enc.input_ids))
    want = off.check_encoded([whole, other], [excluded, excluded])
    for _ in range(2):
        same_verdicts(on.check_encoded([whole], [excluded]), want[:1])
        same_verdicts(on.check_encoded([whole, other], [excluded, excluded]), want)
        assert all(v.error is None for v in on.check_encoded([whole, other], [excluded, excluded]))


def test_a_streamed_answer_leaves_one_entry_not_one_per_check(lg3_1b):
    from conftest import answering_chat_model

    on, _ = _guards(lg3_1b)
    store = on.backend.prefix_store
    store.clear()
    answer = " ".join([BENIGN_ANSWER] * 12)
    chain = on.wrap(
        answering_chat_model({BENIGN: answer}), stream_mode="incremental", check_every=6, on_unsafe="[withheld]"
    )
    with _Verdicts(on) as verdicts:
        list(chain.stream(BENIGN))
    assert len(verdicts.seen) >= 3  # the input and at least two checks of the answer (whatever they found)
    assert len(store) == 2  # the user's turn (input check) and the answer's last check: no dead checks between


def test_a_bad_prefix_cache_bytes_fails_before_the_weights_load(lg3_1b_path, monkeypatch):
    import langchain_llamaguard.backends.loading as loading

    def never(*args, **kwargs):
        raise AssertionError("weights loaded before the option was checked")

    monkeypatch.setattr(loading, "load_guard_model", never)
    for bad in (-1, 1.5, "1000", True, 1e9):
        with pytest.raises(LlamaGuardError, match="prefix_cache_bytes"):
            LlamaGuard.from_pretrained(lg3_1b_path, prefix_cache_bytes=bad)


def test_stored_prefixes_keep_a_forward_within_max_batch_tokens(lg3_1b):
    """A row starting from a long stored prefix beside a row with a long new part stacks as wide as both: with the
    store, a forward held 1.46x the padded tokens ``max_batch_tokens`` allows (rows x longest row)."""
    from langchain_llamaguard.tiny import data

    first = [HumanMessage((data.BENIGN_TOOL_OUTPUTS[0] + " ") * 60)]  # checked before: in the store
    grown = [*first, AIMessage("Sure."), HumanMessage("Thanks!")]
    fresh = [HumanMessage((data.BENIGN_ANSWER + " ") * 58)]  # all new tokens
    model, tok = lg3_1b.backend.model, lg3_1b.tokenizer
    longest = max(len(lg3_1b.encode(c)[0].input_ids) for c in (grown, fresh))
    budget = 2 * (longest + 1)  # both rows fit one forward without the store (each row ends with the lead token)
    found = {}
    for store in (0, 64 << 20):
        guard = LlamaGuard.from_model(model, tok, prefix_cache_bytes=store, max_batch_tokens=budget, on_error="unsafe")
        guard.check(first)
        with _Masks(model) as masks:
            found[store] = guard.batch_check([grown, fresh])
        assert masks.seen and all(rows * width <= budget for rows, width in masks.seen), (store, masks.seen)
    same_verdicts(found[64 << 20], found[0])


class _Masks:
    """``(rows, width)`` of the attention mask of each scoring forward."""

    def __init__(self, model) -> None:
        self.seen: list[tuple[int, int]] = []
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, _args, kwargs) -> None:
        if kwargs.get("logits_to_keep") == 2:
            self.seen.append(tuple(kwargs["attention_mask"].shape))

    def __enter__(self) -> _Masks:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def test_a_store_that_cannot_keep_an_entry_never_fails_the_check_nor_copies_it(lg3_1b, monkeypatch):
    """The store is a cache: an entry larger than its bound is skipped before its KV is copied (a copy of a whole
    row's KV was made, then thrown away), and a write that fails (out of memory) leaves the verdict as it is (with
    ``on_error="unsafe"`` a safe check came back unsafe)."""
    from langchain_llamaguard.backends.prefix_store import PrefixStore

    model, tok = lg3_1b.backend.model, lg3_1b.tokenizer
    want = LlamaGuard.from_model(model, tok, prefix_cache_bytes=0, on_error="unsafe").batch_check([BENIGN, BOMB])
    tiny = LlamaGuard.from_model(model, tok, prefix_cache_bytes=1, on_error="unsafe")
    puts = []
    monkeypatch.setattr(PrefixStore, "put", lambda self, ids, cache: puts.append(len(ids)))
    same_verdicts(tiny.batch_check([BENIGN, BOMB]), want)
    assert puts == []  # nothing copied for a store of one byte
    monkeypatch.undo()

    def out_of_memory(self, ids, cache):
        raise RuntimeError("CUDA out of memory. Tried to allocate 1.50 GiB")

    failing = LlamaGuard.from_model(model, tok, prefix_cache_bytes=64 << 20, on_error="unsafe")
    monkeypatch.setattr(PrefixStore, "put", out_of_memory)
    got = failing.batch_check([BENIGN, BOMB])
    same_verdicts(got, want)
    assert all(v.error is None for v in got)


def test_a_lookup_compares_a_few_entries_whatever_the_store_holds():
    """Each row of a batch looked itself up against every entry (256 full-key comparisons, about 2 ms a row: a
    batch of unrelated conversations ran 24-30% slower with the store on). The index walks the row's own blocks
    and compares at most a few entries, however many are stored."""
    from types import SimpleNamespace

    import torch

    from langchain_llamaguard.backends import prefix_store
    from langchain_llamaguard.backends.prefix_store import CANDIDATES, PrefixStore

    def kv(n: int) -> SimpleNamespace:
        return SimpleNamespace(layers=[SimpleNamespace(keys=torch.zeros(1, 1, n, 1), values=torch.zeros(1, 1, n, 1))])

    policy = list(range(1000, 1300))  # every key starts with the same 300-token policy
    store = PrefixStore(max_bytes=1 << 30)
    rows = [policy + [7] * 5 + [i] * 200 for i in range(256)]  # then a shared header, then their own text
    for row in rows:
        store.put(row, kv(len(row)))
    assert len(store) == 256
    compared = []
    real = prefix_store._common_prefix
    prefix_store._common_prefix = lambda a, b: compared.append(1) or real(a, b)
    try:
        assert store.longest(rows[3] + [1, 2, 3])[0] == len(rows[3])
        assert store.longest(policy + [7] * 5 + [999] * 50, min_len=301)[0] == 305  # all 256 share these 305
        assert store.longest(policy + [999] * 50, min_len=301) == (0, None)
        assert store.longest(rows[200][:400], min_len=301)[0] == 400
    finally:
        prefix_store._common_prefix = real
    assert len(compared) <= 3 * CANDIDATES
