"""Production-hard behaviour: cancelled callers never wedge the guard, batches are bounded by memory, one bad row
never fails its neighbours, and a guard can be closed and collected."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import random
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, CODE_ABUSE, POISON, WEATHER
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda

from langchain_llamaguard import GuardBatchError, GuardClosedError, GuardOutputError, LlamaGuard, PromptGuard, batching
from langchain_llamaguard.batching import MicroBatcher
from langchain_llamaguard.budget import BatchBudget, plan_sub_batches

CONVS = [BENIGN, BOMB, CODE_ABUSE, WEATHER, "What is 2 + 2?", "Tell me a joke about cats."]
MARKER = " zebra-quokka-marker "


def key(v):
    return v.safe, tuple(v.categories), pytest.approx(v.score, abs=1e-4)


def batcher_threads() -> int:
    return sum(t.name == "llama-guard-microbatch" and t.is_alive() for t in threading.enumerate())


# -- the micro-batcher itself -----------------------------------------------------------------------------------
def test_micro_batcher_skips_cancelled_callers_and_survives_failures():
    seen: list[list[int]] = []
    gate = threading.Event()

    def score(prompts, extra):
        gate.wait(5)
        seen.append(list(prompts))
        if -1 in prompts:
            raise RuntimeError("model error")
        return [p * 10 for p in prompts]

    batcher = MicroBatcher(score, window_s=0.05, max_batch=64)
    first = batcher.submit([1], [None])  # the worker takes it and waits at the gate
    time.sleep(0.1)
    cancelled = batcher.submit([2], [None])
    assert cancelled.cancel()
    kept = batcher.submit([3], [None])
    gate.set()
    assert first.result(5) == [10] and kept.result(5) == [30]
    assert all(2 not in batch for batch in seen)  # the cancelled caller's rows never ran

    failing = batcher.submit([-1], [None])
    with pytest.raises(RuntimeError, match="model error"):
        failing.result(5)
    assert batcher.submit([4], [None]).result(5) == [40]  # the worker lived on

    # a result for a caller that went away while its batch ran is dropped, and the worker lives on
    gate.clear()
    gone = batcher.submit([5], [None])
    time.sleep(0.1)
    assert not gone.cancel()  # already running: the standard handshake
    gate.set()
    assert gone.result(5) == [50]
    batcher.close()
    assert not batcher.alive
    with pytest.raises(GuardClosedError):
        batcher.submit([6], [None])


def test_a_long_request_runs_in_chunks_and_callers_arriving_meanwhile_go_between():
    """One conversation judged in many windows ran them all in one go: every caller arriving meanwhile waited for
    all of them (and, with ``timeout=``, timed out behind them). It now runs ``max_batch`` at a time."""
    seen: list[list[int]] = []
    first_chunk = threading.Event()
    gate = threading.Event()

    def score(prompts, extra):
        seen.append(list(prompts))
        first_chunk.set()
        gate.wait(5)
        return [p * 10 for p in prompts]

    batcher = MicroBatcher(score, window_s=0.0, max_batch=4)
    long = batcher.submit(list(range(100, 112)), [None] * 12)
    assert first_chunk.wait(5)
    short = batcher.submit([1], [None])  # arrives while the long request's first chunk runs
    gate.set()
    assert short.result(5) == [10]
    assert long.result(5) == [p * 10 for p in range(100, 112)]  # in order, whole
    assert seen[0] == [100, 101, 102, 103] and seen[1][0] == 1  # the short caller went right after one chunk
    assert sorted(p for batch in seen for p in batch) == [1, *range(100, 112)]  # each prompt scored once
    batcher.close()

    # a few very long prompts (a long document's windows, thousands of tokens each) by their cost, not their count
    seen.clear()
    first_chunk.clear()
    gate.clear()
    batcher = MicroBatcher(score, window_s=0.0, max_batch=64, cost=lambda p: p, max_cost=10)
    long = batcher.submit([6, 6, 6], [None] * 3)
    assert first_chunk.wait(5)
    short = batcher.submit([1], [None])
    gate.set()
    assert short.result(5) == [10] and long.result(5) == [60, 60, 60]
    assert seen[:2] == [[6], [1, 6]]  # one long prompt at a time, the short caller in the next batch
    batcher.close()

    # a batch that something did not fit is complete: it never waits out the window for more
    batcher = MicroBatcher(lambda p, e: p, window_s=0.5, max_batch=64, cost=lambda p: p, max_cost=10)
    start = time.monotonic()
    assert batcher.submit([6, 6, 6, 6], [None] * 4).result(5) == [6, 6, 6, 6]
    assert time.monotonic() - start < 1.0  # 4 batches: 2 s when each waited its window
    batcher.close()


def _held_in_its_first_chunk():
    """A batcher of 2-prompt chunks whose worker holds a 6-prompt request in its first chunk until ``gate`` is set;
    ``seen`` lists the batches it scored."""
    seen: list[list[int]] = []
    busy, gate = threading.Event(), threading.Event()

    def score(prompts, extra):
        seen.append(list(prompts))
        busy.set()
        gate.wait(5)
        return list(prompts)

    batcher = MicroBatcher(score, window_s=0.0, max_batch=2)
    running = batcher.submit([1, 2, 3, 4, 5, 6], [None] * 6)
    assert busy.wait(5)
    return batcher, seen, gate, running


def test_a_caller_that_gives_up_withdraws_its_rows_queued_or_between_chunks():
    """A sync check that timed out left its request queued: the worker scored it later, for nobody, and the next
    caller timed out behind it. Withdrawn, a queued request never runs and a running one stops at its next chunk."""
    batcher, seen, gate, blocking = _held_in_its_first_chunk()
    queued = batcher.submit([7], [None])
    assert batcher.wait(queued, timeout=0.05) is batching.WITHDRAWN  # its time ran out while it waited
    batcher.withdraw(blocking)  # gave up while its first chunk ran
    gate.set()
    assert batcher.submit([8], [None]).result(5) == [8]
    assert seen == [[1, 2], [8]]  # neither the withdrawn request nor the rest of the stopped one ran
    assert batcher.wait(batcher.submit([9], [None]), timeout=5) == [9]
    batcher.close()


def test_close_fails_the_queued_requests_at_once_instead_of_scoring_them():
    """``close()`` put its stop behind the queue: the worker scored every request queued before it (seconds, for
    callers about to be told the guard is closed). Queued requests fail at once; the running batch finishes."""
    batcher, seen, gate, running = _held_in_its_first_chunk()
    queued = [batcher.submit([n], [None]) for n in range(10, 20)]
    closing = threading.Thread(target=batcher.close)
    closing.start()
    for future in queued:
        with pytest.raises(GuardClosedError):
            future.result(2)  # before the running batch ends: nothing waits behind it
    gate.set()
    closing.join(5)
    assert seen == [[1, 2]]  # nothing queued was scored
    with pytest.raises(GuardClosedError):
        running.result(5)  # the rest of the running request is never started either


def test_a_micro_batched_guard_judges_a_long_conversation_in_chunks_as_without_batching(lg3_1b):
    """The windows of a long conversation, run a few at a time between other callers, give the same verdict."""
    long = " ".join(f"{BENIGN} {BOMB}" for _ in range(400))
    plain = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, context_length=512)
    batched = LlamaGuard.from_model(
        lg3_1b.backend.model, lg3_1b.tokenizer, context_length=512, batch_window_ms=2, max_batch_size=2
    )
    want = plain.batch_check([long, BOMB, BENIGN])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        got = list(pool.map(batched.check, [long, BOMB, BENIGN]))
    assert want[0].segments > 4 and batched._batcher.batches_run > 2
    assert [(v.safe, v.categories, v.segments) for v in got] == [(v.safe, v.categories, v.segments) for v in want]
    assert [v.score for v in got] == pytest.approx([v.score for v in want], abs=1e-4)
    batched.close()


def test_micro_batcher_restarts_a_dead_worker():
    batcher = MicroBatcher(lambda p, e: p, window_s=0.001, max_batch=8)
    assert batcher.submit([1], [None]).result(5) == [1]
    batcher._queue.put(batching._STOP)  # the worker is gone ...
    deadline = time.monotonic() + 5
    while batcher.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not batcher.alive
    assert batcher.submit([2], [None]).result(5) == [2]  # ... and the next submit starts a fresh one
    batcher.close()


# -- cancellation through the engine, the steps and streams ------------------------------------------------------
@pytest.mark.parametrize("settings", [{"batch_window_ms": 20}, {"batch_window_ms": 20, "timeout": 30}, {}])
async def test_cancelled_callers_never_wedge_the_guard(lg4, lg4_with, settings):
    want = {c: key(lg4_with(on_error="unsafe").check(c)) for c in CONVS}  # parity, whatever the tiny guard says
    threads, tasks = batcher_threads(), len(asyncio.all_tasks())
    guard = lg4_with(**settings, on_error="unsafe")
    rng = random.Random(7)

    async def caller(i: int):
        conv = CONVS[i % len(CONVS)]
        if i % 3 == 0:  # a random third go away at a random moment
            with pytest.raises((asyncio.TimeoutError, asyncio.CancelledError)):
                await asyncio.wait_for(guard.acheck(conv), rng.uniform(0.0005, 0.05))
            return None
        return conv, await guard.acheck(conv)

    done = await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(30))), 120)
    for got in filter(None, done):
        assert key(got[1]) == want[got[0]]
    # afterwards every new call completes, async and sync
    after = await asyncio.wait_for(asyncio.gather(*(guard.acheck(c) for c in CONVS)), 60)
    assert [key(v) for v in after] == [want[c] for c in CONVS]
    sync = await asyncio.wait_for(asyncio.to_thread(guard.batch_check, CONVS), 60)
    assert [key(v) for v in sync] == [want[c] for c in CONVS]
    guard.close()
    assert batcher_threads() == threads and len(asyncio.all_tasks()) == tasks  # nothing left behind


async def test_cancelled_chains_and_abandoned_streams(lg4, lg4_with):
    guard = lg4_with(batch_window_ms=20)
    chain = guard.wrap(RunnableLambda(lambda x: f"answered: {x}"), on_unsafe="blocked")
    for _ in range(5):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(chain.ainvoke(BENIGN), 0.001)
    assert await asyncio.wait_for(chain.ainvoke(BENIGN), 60) == f"answered: {BENIGN}"
    assert await asyncio.wait_for(chain.ainvoke(BOMB), 60) == "blocked"

    # whatever the tiny guard makes of the partial answers (unreadable included: fails closed), the stream yields
    # and the consumer leaves half-way
    guard.close()
    guard = lg4_with(batch_window_ms=20, on_error="unsafe")
    out_step = guard.as_output_guard(stream_mode="incremental", check_every=2, on_unsafe="[withheld]")
    model = GenericFakeChatModel(messages=iter([AIMessage(" ".join(["word"] * 40))]))  # streams word by word
    stream = (model | out_step).astream("hi")
    assert await asyncio.wait_for(anext(stream), 60)
    await stream.aclose()
    assert (await asyncio.wait_for(out_step.ainvoke(BENIGN_ANSWER), 60)) == BENIGN_ANSWER  # the guard still works
    guard.close()


async def test_cancelled_prompt_guard_calls(prompt_guard):
    want = prompt_guard.batch_score(CONVS)
    for _ in range(5):  # cancelled once its batch is in a worker thread (a timeout could fire after it finished)
        task = asyncio.create_task(prompt_guard.abatch_score(CONVS))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    got = await asyncio.wait_for(prompt_guard.abatch_score(CONVS), 60)
    assert got == pytest.approx(want, abs=1e-6)


# -- callers that stop waiting: nothing runs for them ------------------------------------------------------------
class Forwards:
    """Counts the forward passes of a real model (a hook, removed on exit)."""

    def __init__(self, model) -> None:
        self.model, self.n = model, 0

    def __enter__(self) -> Forwards:
        self._handle = self.model.register_forward_hook(self._count)
        return self

    def _count(self, *_: object) -> None:
        self.n += 1

    def __exit__(self, *_: object) -> None:
        self._handle.remove()


def _until_no_thread_named(name: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while any(t.name == name and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline, f"a {name!r} thread is still running"
        time.sleep(0.01)


@contextlib.contextmanager
def one_worker_thread():
    """The running loop's ``to_thread`` work on one thread for a while: a job after a cancelled one waits for it."""
    loop = asyncio.get_running_loop()
    previous = loop._default_executor  # noqa: SLF001 - put back below (the loop may outlive the test)
    worker = concurrent.futures.ThreadPoolExecutor(1)
    loop.set_default_executor(worker)
    try:
        yield
    finally:
        loop._default_executor = previous  # noqa: SLF001
        worker.shutdown()


def test_a_check_that_timed_out_waiting_for_the_model_never_runs_it(lg3_1b):
    """A loaded guard with ``timeout=``: a check that timed out while other callers' checks held the model used to
    run once it got the model, for nobody, and later callers queued behind such work timed out in turn (24 callers,
    14 ms checks, ``timeout=0.15``: 5 answers in 6 s, 564 abandoned threads still queued). It now never runs."""
    guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, timeout=0.3, on_error="unsafe")
    guard.check(BENIGN)  # the policy prefix is cached
    with Forwards(guard.backend.model) as forwards:
        with guard.backend.lock:  # another caller's forward pass holds the model
            verdict = guard.check(BOMB)
        assert not verdict.safe and "did not answer within 0.3 s" in verdict.error
        _until_no_thread_named("llama-guard-timeout")  # the abandoned check's thread has ended
        assert forwards.n == 0
        assert guard.check(BOMB) == lg3_1b.check(BOMB)  # the guard answers at once, and the hook counts forwards
        assert forwards.n > 0


async def test_a_cancelled_async_check_waiting_for_the_model_never_runs_it(lg3_1b):
    """The async twin (a web client that disconnected): its worker thread waited for the model and then ran the
    check for nobody."""
    guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer)
    await guard.acheck(BENIGN)
    with one_worker_thread(), Forwards(guard.backend.model) as forwards:
        with guard.backend.lock:
            task = asyncio.create_task(guard.acheck(BOMB))
            await asyncio.sleep(0.3)  # prepared, and waiting for the model in the worker thread
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.to_thread(lambda: None)  # the cancelled check's thread is done
        assert forwards.n == 0
        assert (await guard.acheck(BOMB)) == lg3_1b.check(BOMB)
        assert forwards.n > 0


async def test_a_cancelled_prompt_guard_call_waiting_for_the_model_never_runs_it(prompt_guard):
    guard = PromptGuard(prompt_guard.model, prompt_guard.tokenizer)
    with one_worker_thread(), Forwards(guard.model) as forwards:
        with guard._lock:
            task = asyncio.create_task(guard.ascore(BOMB))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.to_thread(lambda: None)
        assert forwards.n == 0
        assert (await guard.ascore(BOMB)) == pytest.approx(prompt_guard.score(BOMB), abs=1e-6)
        assert forwards.n > 0


# -- batches bounded by memory -----------------------------------------------------------------------------------
def test_sub_batches_are_length_sorted_and_bounded():
    budget = BatchBudget(max_tokens=4096, max_attention=2**40)
    lengths = [300, 9000, 310, 2000, 305, 2100, 320]
    groups = plan_sub_batches(lengths, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [9000] in [[lengths[i] for i in g] for g in groups]  # over the budget alone: runs alone
    for g in groups:
        assert [lengths[i] for i in g] == sorted(lengths[i] for i in g)
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 4096
    assert plan_sub_batches([200] * 64, BatchBudget(max_tokens=32768, max_attention=2**28)) == [list(range(64))]


def test_mixed_lengths_in_sub_batches_equal_one_by_one(lg3_1b):
    words = "the committee reviewed the figures and asked for a summary".split()
    convs = [" ".join(words[j % len(words)] for j in range(n)) for n in (3, 1800, 10, 400, 2600, 40, 900)]
    convs += [BOMB, BENIGN]
    guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, max_batch_tokens=2048, on_error="unsafe")
    prompts = [guard.prepare(c)[0][0] for c in convs]
    groups = guard._groups(prompts)
    assert len(groups) > 2 and any(len(g) > 1 for g in groups)
    longest = max(len(p.input_ids) for p in prompts)
    assert longest > 2048  # one conversation alone fills the budget: it runs alone
    assert [i for g in groups for i in g if len(g) == 1 and len(prompts[i].input_ids) == longest]
    batched = guard.batch_check(convs)
    assert [key(v) for v in batched] == [key(guard.check(c)) for c in convs]


def test_mixed_length_batch_time_and_memory_against_one_by_one(lg3_1b_path):
    """40 conversations of ~200 to ~5,000 tokens, each way in a subprocess of its own (the benchmark's code)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import mixed_batch
    finally:
        sys.path.pop(0)
    got = mixed_batch.measure(str(lg3_1b_path), repeats=1, threads=1)
    one, batch = got["one"], got["batch"]
    assert one["tokens"][1] > 4000
    assert batch["safe"] == one["safe"]
    assert batch["scores"] == pytest.approx(one["scores"], abs=1e-4)
    assert batch["seconds"] <= one["seconds"] * 1.5  # never slower than one by one (generous: CI runs 2 workers)
    # one padded forward of all 40 took 70x the memory of one by one; sub-batches stay within a few times
    assert batch["peak_mb"] <= max(5 * one["peak_mb"], 300)


# -- one bad row never fails its neighbours ----------------------------------------------------------------------
class OffFormatRig:
    """A forward hook on a real tiny guard: rows whose prompt contains the marker answer off-format (the lead
    token is not the blank line), or, with ``error``, make the whole forward fail as an out-of-memory would. Its
    guards run without the token-prefix store (``prefix_cache_bytes=0``): it reads the marker from input ids."""

    def __init__(self, guard, *, error: bool = False) -> None:
        self.marker = guard.encoder.text_ids(MARKER.rstrip())[:-1]  # the ids it has inside any prompt
        self.guard = guard
        self.error = error
        self.forwards: list[int] = []

    def _rows(self, ids) -> list[int]:
        n = len(self.marker)
        rows = ids.tolist()
        return [r for r, row in enumerate(rows) if any(row[j : j + n] == self.marker for j in range(len(row) - n + 1))]

    def __enter__(self):
        model = self.guard.backend.model

        def hook(module, args, kwargs, output):
            ids = kwargs.get("input_ids")
            if ids is None or kwargs.get("logits_to_keep") != 2:  # only the verdict's first step
                return output
            self.forwards.append(ids.shape[0])
            rows = self._rows(ids)
            if rows and self.error and ids.shape[0] > 0:
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
            for r in rows:
                output.logits[r, -2, :] = 0.0
                output.logits[r, -2, self.guard.tokens.safe] = 100.0  # "safe" with no blank line before it
            return output

        self.handle = model.register_forward_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_a_batch_with_thousands_of_failed_rows_says_so_in_a_few_lines():
    """A batch error groups its rows by error: 2,000 rows failing alike read as one cause with a count, not a
    megabyte of message (every row's own error stays in .errors)."""
    errors: dict[int, BaseException] = {i: GuardOutputError("Sure!", "first line is neither") for i in range(2000)}
    errors[2000] = ValueError("an image over the bound")
    errors.update({2001 + k: RuntimeError(f"odd failure {k}") for k in range(5)})
    err = GuardBatchError([None] * 2006 + ["v"], errors)
    text = str(err)
    assert len(text) < 1200, len(text)
    assert text.startswith("2,006 of 2,007 rows could not be judged: ")
    assert "rows 0, 1, 2, 3, 4, 5, 6, 7 and 1,992 more: GuardOutputError" in text
    assert "row 2000: ValueError: an image over the bound" in text
    assert "row 2001: RuntimeError: odd failure 0; 4 other errors in 4 more rows;" in text
    assert len(err.errors) == 2006 and err.verdicts[-1] == "v"


def test_failing_rows_are_named_and_the_others_keep_their_verdicts(lg3_1b):
    convs = [BENIGN, BENIGN + MARKER, BOMB, "a question" + MARKER, POISON]  # unrigged rows: check-set cases
    # no token-prefix store: the rig finds its marker in each forward's input ids, which a reused prefix would hide
    strict = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, prefix_cache_bytes=0)
    lenient = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, on_error="unsafe", prefix_cache_bytes=0)
    want = [key(strict.check(c)) for c in (BENIGN, BOMB, POISON)]
    with OffFormatRig(strict):
        with pytest.raises(GuardBatchError) as info:
            strict.batch_check(convs)
        err = info.value
        assert sorted(err.errors) == [1, 3]
        assert all(isinstance(e, GuardOutputError) for e in err.errors.values())
        assert "rows 1, 3: GuardOutputError" in str(err)  # one cause, its rows together
        assert [key(err.verdicts[i]) for i in (0, 2, 4)] == want
        assert err.verdicts[1] is None and err.verdicts[3] is None
        with pytest.raises(GuardOutputError):  # one conversation: its own error
            strict.check(convs[1])
        verdicts = lenient.batch_check(convs)
        assert [key(verdicts[i]) for i in (0, 2, 4)] == want
        assert [(verdicts[i].safe, bool(verdicts[i].error)) for i in (1, 3)] == [(False, True), (False, True)]


def test_a_model_error_is_retried_row_by_row(lg3_1b):
    convs = [BENIGN, BOMB + MARKER, WEATHER, BOMB]
    guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, on_error="unsafe", prefix_cache_bytes=0)
    want = [key(guard.check(c)) for c in convs if MARKER not in c]
    with OffFormatRig(guard, error=True) as rig:
        verdicts = guard.batch_check(convs)
    assert [key(v) for v in verdicts if not v.error] == want
    assert verdicts[1].safe is False and "out of memory" in verdicts[1].error
    assert rig.forwards[0] == len(convs) and rig.forwards.count(1) >= len(convs)  # the batch, then row by row


def test_a_split_conversation_whose_window_fails_says_in_how_many_it_was_checked(lg3_1b):
    guard = LlamaGuard.from_model(
        lg3_1b.backend.model, lg3_1b.tokenizer, context_length=512, on_error="unsafe", prefix_cache_bytes=0
    )
    text = BENIGN + " " + "The weather is mild today. " * 200 + MARKER + "Thanks."  # the marker: last window only
    windows = len(guard.prepare(text)[0])
    assert windows > 1
    with OffFormatRig(guard):
        verdict = guard.check(text)
    assert not verdict.safe and "blank line" in verdict.error
    assert verdict.segments == windows  # not 1: the user sees the text was judged in parts


def test_a_row_that_is_not_a_conversation_is_named_in_both_modes(lg3_1b):
    for on_error in ("raise", "unsafe"):
        guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, on_error=on_error)
        with pytest.raises(GuardBatchError) as info:
            guard.batch_check([BENIGN, 42, BOMB])
        assert list(info.value.errors) == [1]
        assert info.value.verdicts[2].categories == ["S9"]


def test_a_row_nested_deeper_than_python_reads_fails_alone(lg3_1b):
    """Built in Python, a row 5,000 lists deep raised a bare RecursionError (from its error message's repr), and
    its neighbours got no verdicts."""
    row: object = "hi"
    for _ in range(5000):
        row = [row]
    with pytest.raises(GuardBatchError) as info:
        lg3_1b.batch_check([BENIGN, row, BOMB])
    assert list(info.value.errors) == [1] and "[[[[" in str(info.value.errors[1])
    assert info.value.verdicts[2].categories == ["S9"]


# -- lifecycle ----------------------------------------------------------------------------------------------------
def test_close_stops_the_worker_and_refuses_later_checks(lg3_1b):
    before = batcher_threads()
    with LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, batch_window_ms=5) as guard:
        assert guard.check(BENIGN).safe
        assert batcher_threads() == before + 1
    assert batcher_threads() == before
    with pytest.raises(GuardClosedError):
        guard.check(BENIGN)
    assert lg3_1b.check(BENIGN).safe  # the shared model is still there for the guard that loaded it


async def test_aclose_and_async_context_manager(lg3_1b):
    async with LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, batch_window_ms=5) as guard:
        assert (await guard.acheck(BENIGN)).safe
    with pytest.raises(GuardClosedError):
        await guard.acheck(BENIGN)


def test_an_unreferenced_guard_and_its_worker_are_collected(lg3_1b):
    before = batcher_threads()
    refs = []
    for _ in range(4):
        guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, batch_window_ms=5)
        assert guard.check(BENIGN).safe
        refs.append(weakref.ref(guard))
        del guard
    gc.collect()
    assert [r() for r in refs] == [None] * 4
    deadline = time.monotonic() + 10
    while batcher_threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batcher_threads() == before


def test_loaded_model_is_released_when_its_last_guard_closes(lg3_1b_path):
    guard = LlamaGuard.from_pretrained(str(lg3_1b_path))
    view = guard.with_categories({"S1": "Violent Crimes."})
    model = weakref.ref(guard.backend.model)
    guard.close()
    assert model() is not None and view.check(BOMB).safe is not None  # the view still uses it
    view.close()
    gc.collect()
    assert model() is None


def test_concurrent_threads_with_timeouts_and_cancellations(lg4, lg4_with):
    guard = lg4_with(batch_window_ms=10, timeout=60, on_error="unsafe")
    want = {c: key(lg4_with(on_error="unsafe").check(c)) for c in CONVS}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(guard.check, CONVS[i % len(CONVS)]) for i in range(24)]
        for f in futures[::3]:
            f.cancel()
        for i, f in enumerate(futures):
            if not f.cancelled():
                assert key(f.result(120)) == want[CONVS[i % len(CONVS)]]
    guard.close()


async def test_cancelled_agent_turns_and_guarded_tools_never_wedge_the_guard(lg4_with):
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from langchain_llamaguard.middleware import LlamaGuardMiddleware
    from langchain_llamaguard.tools import guard_tool

    guard = lg4_with(batch_window_ms=10)

    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return WEATHER

    guarded = guard_tool(weather, guard)
    for _ in range(5):  # callers that go away mid-check, through the tool and through an agent turn
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(guarded.ainvoke({"city": "Paris"}), 0.001)
    assert await asyncio.wait_for(guarded.ainvoke({"city": "Paris"}), 60) == WEATHER

    def agent():
        model = GenericFakeChatModel(messages=iter([AIMessage(BENIGN_ANSWER)] * 10))
        return create_agent(model, [], middleware=[LlamaGuardMiddleware(guard)])

    for _ in range(5):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(agent().ainvoke({"messages": [("user", BENIGN)]}), 0.002)
    done = await asyncio.wait_for(agent().ainvoke({"messages": [("user", BENIGN)]}), 60)
    assert done["messages"][-1].text == BENIGN_ANSWER
    flagged = await asyncio.wait_for(agent().ainvoke({"messages": [("user", BOMB)]}), 60)
    assert "S9" in flagged["messages"][-1].text  # the refusal names the category
    guard.close()


async def test_closing_a_served_guard_closes_its_connections(lg3_8b_path):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    guard = LlamaGuard.from_endpoint(
        f"http://127.0.0.1:{port}/v1", model="lg3", tokenizer=str(lg3_8b_path), on_error="unsafe", timeout=2
    )
    backend = guard.backend
    verdict = await guard.acheck(BENIGN)  # fails closed
    assert not verdict.safe and verdict.error
    assert not await guard.aready(timeout=0.2)  # probes the server on this loop's async client
    assert backend.client._async
    await guard.aclose()
    assert not backend.client._async and backend.client._client.is_closed
    with pytest.raises(GuardClosedError):
        await guard.acheck(BENIGN)


# -- web-server process models: forks, closes under load, interpreter exit ------------------------------------
def _in_forked_child(work, timeout: float = 90.0) -> int:
    """Run ``work()`` in a forked child (gunicorn --preload); its exit code (0: it returned True), or -1 if it hung."""
    import os

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            code = 0 if work() else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
@pytest.mark.parametrize("which", ["llama_guard_with_timeout", "prompt_guard"])
def test_a_guard_used_before_a_fork_works_in_the_child(lg3_1b, prompt_guard, which):
    """A guard loaded and used in the parent (on the forking thread, and by threads still checking when it forks)
    answers in the child: no lock held by a thread that is gone, no pool of the parent's threads."""
    import warnings

    if which == "prompt_guard":
        guard = PromptGuard(prompt_guard.model, prompt_guard.tokenizer)
        check, text = (lambda: guard.check(BOMB).score), " ".join([BENIGN] * 300)
        busy = lambda: guard.batch_check([text] * 8)  # noqa: E731
    else:
        guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, timeout=30, on_error="unsafe")
        # a lock left held by a gone thread times out (an error in the verdict); 30 s so a loaded machine does not
        check = lambda: (lambda v: (v.safe, v.error))(guard.check(BOMB))  # noqa: E731 - a timeout has an error
        busy = lambda: guard.batch_check(CONVS * 4)  # noqa: E731
    expected = check()  # on this (the forking) thread
    stop = threading.Event()

    def keep_checking() -> None:
        while not stop.is_set():
            busy()

    threads = [threading.Thread(target=keep_checking) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the threads hold the model's lock most of the time
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            codes = [_in_forked_child(lambda: check() == expected, timeout=60) for _ in range(3)]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert codes == [0, 0, 0]


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_fork_while_another_thread_holds_the_store_encoder_or_tokenizer_lock(lg3_1b):
    """A fork while another thread is inside a prefix-store lookup, a prompt encoding or a tokenizer call (the
    thread is gone in the child, its lock held for ever): the child's first check hung on the store's lock."""
    from langchain_llamaguard.encoding import tokenizer_lock

    guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer)
    expected = guard.check(BOMB).score  # the store holds this conversation now
    assert len(guard.backend.prefix_store) >= 1
    locks = [guard.backend.prefix_store._lock, guard.encoder._lock, tokenizer_lock(guard.tokenizer)]
    store = guard.backend.prefix_store  # the child starts with an empty one: a write under way at the fork
    code = _forked_while_held(locks, lambda: len(store) == 0 and abs(guard.check(BOMB).score - expected) < 1e-4)
    assert code == 0


def _forked_while_held(locks: list, work, timeout: float = 90.0) -> int:
    """:func:`_in_forked_child` while another thread holds ``locks`` (it is gone in the child)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait()
        for lock in locks:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    try:
        return _in_forked_child(work, timeout=timeout)
    finally:
        release.set()
        holder.join()


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_fork_while_another_thread_loads_a_guard_or_reads_the_middleware_cache(lg3_1b, lg3_1b_path):
    """A fork while another thread is loading a guard (its load lock), unpickling one, or inside the agent
    middleware's verdict cache: the child hung for ever on the first load or middleware check."""
    import langchain_llamaguard.backends.loading as loading
    import langchain_llamaguard.llama_guard as engine
    import langchain_llamaguard.pickling as pickling
    import langchain_llamaguard.replacements as replacements
    from langchain_llamaguard.middleware import LlamaGuardMiddleware

    middleware = LlamaGuardMiddleware(lg3_1b)
    judged = [HumanMessage(BOMB)]
    expected = middleware.moderator.check([judged], role="User")[0].safe
    module_locks = [loading.LOAD_LOCK, pickling._LIVE_LOCK, replacements._WRITTEN_LOCK, engine._OWNERS_LOCK]

    def in_child() -> bool:
        fresh = LlamaGuard.from_pretrained(str(lg3_1b_path))  # the load lock
        cached = middleware.moderator.check([judged], role="User")[0].safe  # the verdict cache's lock
        return cached == expected and fresh.check(BOMB).safe == lg3_1b.check(BOMB).safe

    assert _forked_while_held([*module_locks, middleware.moderator.cache._lock], in_child) == 0


@pytest.mark.parametrize("batch_window_ms", [None, 5])
def test_a_check_running_when_its_guard_is_closed_fails_with_guard_closed_error(lg3_1b, monkeypatch, batch_window_ms):
    """Another thread's ``close()`` landing between two forward passes of a running check: the check fails with
    GuardClosedError (a LlamaGuardError, so ``on_error`` applies, micro-batched or not), never a bare TypeError
    from a model that is gone."""
    for on_error in ("raise", "unsafe"):
        guard = LlamaGuard.from_model(
            lg3_1b.backend.model, lg3_1b.tokenizer, on_error=on_error, batch_window_ms=batch_window_ms
        )
        backend, real = guard.backend, guard.backend.first_step

        def closing(*args, _real=real, _guard=guard, **kw):
            _guard.close()  # the closing thread's turn came: the model is released before this forward pass
            return _real(*args, **kw)

        monkeypatch.setattr(backend, "first_step", closing)
        if on_error == "raise":
            with pytest.raises(GuardClosedError, match="closed while a check was running"):
                guard.check(BOMB)
        else:
            verdict = guard.check(BOMB)
            assert not verdict.safe and "closed while a check was running" in verdict.error
    if batch_window_ms:  # closed as the check hands its rows to the batcher: refused by it, the same way
        for run in (lambda g: g.check(BOMB), lambda g: asyncio.run(g.acheck(BOMB))):
            guard = LlamaGuard.from_model(lg3_1b.backend.model, lg3_1b.tokenizer, on_error="unsafe", batch_window_ms=5)
            batcher, submit = guard._batcher, guard._batcher.submit

            def closing_submit(*args, _guard=guard, _submit=submit):
                _guard.close()  # another thread's close() lands after this check got past its own open check
                return _submit(*args)

            monkeypatch.setattr(batcher, "submit", closing_submit)
            verdict = run(guard)
            assert not verdict.safe and "closed" in verdict.error


def test_a_process_whose_micro_batch_is_still_running_exits_cleanly(lg3_1b_path, tmp_path):
    """A web worker shutting down while a timed-out caller's micro-batch still runs: the batch finishes, and the
    process exits with 0 (a daemon worker stopped inside torch would abort it)."""
    import os
    import subprocess

    script = tmp_path / "exit.py"
    script.write_text(
        "import asyncio, sys\n"
        "from langchain_llamaguard import LlamaGuard\n"
        f"guard = LlamaGuard.from_pretrained({str(lg3_1b_path)!r}, batch_window_ms=5)\n"
        f"rows = [{WEATHER!r} * 40] * 64\n"
        "async def main():\n"
        "    try:\n"
        "        await asyncio.wait_for(guard.abatch_check(rows), 0.05)\n"
        "    except TimeoutError:\n"
        "        pass\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]


def test_image_and_text_checks_prepared_at_once_never_share_a_tokenizer_setting(lg4):
    """transformers keeps ``<|eot|>`` in content as text (``split_special_tokens=True``) by switching a setting of
    the shared Rust tokenizer for the call, and Llama Guard 4's image processor uses the same tokenizer without it:
    prepared at the same time (any web server), a forged turn in the text became real special tokens, and an image
    check failed with a token-count mismatch. Every use of the tokenizer now holds its lock."""
    from langchain_core.messages import HumanMessage

    from langchain_llamaguard.tiny.data import FORGERIES, check_images

    red, _ = check_images()
    image = [HumanMessage(content=[{"type": "image", "image": red}, {"type": "text", "text": "hi"}])]
    forged = BOMB + FORGERIES[0]
    expected = list(lg4.encode(forged)[0].input_ids)
    stop = time.monotonic() + 6.0
    problems: list[str] = []

    def images() -> None:
        while time.monotonic() < stop:
            try:
                lg4.prepare(image)
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                problems.append(f"image: {type(exc).__name__}: {exc}"[:120])

    def texts() -> None:
        while time.monotonic() < stop:
            if list(lg4.encode(forged)[0].input_ids) != expected:
                problems.append("text: the forged turn was tokenized as special tokens")

    threads = [threading.Thread(target=f) for f in (images, images, texts, texts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []


def test_a_closed_batcher_starts_no_further_chunk():
    """A long request still running when its guard was closed (at interpreter exit, after the join gave up) went
    back on the queue and ran chunk after chunk: new forward passes started while the interpreter shut down."""
    batcher, seen, gate, running = _held_in_its_first_chunk()
    batcher.close(timeout=0.1)  # the worker is inside its first chunk: the join gives up
    gate.set()
    with pytest.raises(GuardClosedError):
        running.result(5)
    deadline = time.monotonic() + 5
    while batcher.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [[1, 2]] and not batcher.alive
