"""Dynamic micro-batching: checks from concurrent callers that arrive within a short window share one batch.

A web server with many users gets batch throughput without any caller batching: each caller submits its
prompts and waits on a future; one worker thread collects what arrives within ``window_s`` (up to
``max_batch`` prompts), runs it as one model batch, and hands each caller its own results.

Callers may go away at any moment (a cancelled ``acheck``, a timed-out ``wait_for``, a web client that
disconnects): a request whose future is already cancelled when the batch is gathered is dropped before it runs
(``Future.set_running_or_notify_cancel``), one withdrawn while it runs (:meth:`MicroBatcher.withdraw`) stops at
its next chunk, and a result for a caller that is gone is discarded, so no caller affects another.

A request of more than ``max_batch`` prompts, or of more than ``max_cost`` (its prompts' tokens, a long
conversation judged in long windows), runs a chunk at a time, going to the back of the queue between chunks:
callers that arrive meanwhile are served in between instead of waiting for all its windows (and timing out
behind them).

The worker never dies on an exception: the callers of the failing batch get it. If the worker is gone anyway,
the next submit starts a fresh one.

The worker holds the batcher only weakly, and the batcher holds its owner's scoring method only weakly, so a
guard that is no longer referenced is collected and its worker stops; :meth:`MicroBatcher.close` stops it at once.

Example:
    >>> guard = LlamaGuard.from_pretrained(path, batch_window_ms=5)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import Any

from .errors import GuardClosedError
from .forking import call_in_child

_STOP = object()
"""Put on the queue to stop the worker."""
WITHDRAWN = object()
"""What :meth:`MicroBatcher.wait` gives when its caller's time ran out first."""
_IDLE_POLL_S = 1.0
"""How often an idle worker looks whether its batcher is still alive."""
_EXIT_JOIN_S = 10.0
"""At interpreter exit, how long a batch still running may take to finish (a worker killed inside torch aborts
the process)."""
_LIVE: weakref.WeakSet[MicroBatcher] = weakref.WeakSet()


@atexit.register
def _stop_workers() -> None:
    """Let the batches still running finish before the interpreter goes (their callers may be gone: a timed-out
    check); the workers are daemon threads, and one stopped inside torch at exit takes the process down."""
    for batcher in list(_LIVE):
        batcher.close(timeout=_EXIT_JOIN_S)


@dataclass
class _Request:
    prompts: list[Any]
    extra: list[Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    done: list[Any] = field(default_factory=list)
    """The results of the prompts already run (a request larger than a batch runs in chunks)."""
    started: bool = False

    def claim(self) -> bool:
        """Whether the caller still waits: the first time, the future is marked running (a cancelled one is
        dropped); later chunks run while it is not settled (withdrawn)."""
        if self.started:
            return not self.future.done()
        self.started = True
        return self.future.set_running_or_notify_cancel()


def _settle(future: concurrent.futures.Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Complete a running future; a future that is already done (its caller went away) is left as it is."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def _worker(ref: weakref.ReferenceType[MicroBatcher], requests: queue.Queue) -> None:
    """The worker thread: holds the batcher only while it runs a batch."""
    while True:
        try:
            first = requests.get(timeout=_IDLE_POLL_S)
        except queue.Empty:
            if ref() is None:
                return
            continue
        if first is _STOP:
            return
        batcher = ref()
        if batcher is None:
            _settle(first.future, error=GuardClosedError("the guard was collected"))
            return
        try:
            batcher._run(first)
        except BaseException as exc:  # pragma: no cover - _run settles every future itself; never let the thread die
            _settle(first.future, error=exc)
        del batcher


class MicroBatcher:
    """Runs ``score(prompts, extra) -> results`` (one result per prompt) on batches gathered across callers.

    ``score`` may be a bound method: it is held weakly, so the batcher does not keep its owner alive.

    Example:
        >>> batcher = MicroBatcher(lambda prompts, extra: [p * 2 for p in prompts], window_s=0.001, max_batch=8)
        >>> batcher.submit([1, 2], [None, None]).result()
        [2, 4]
        >>> batcher.close()
    """

    def __init__(
        self,
        score: Callable[[list[Any], list[Any]], list[Any]],
        *,
        window_s: float,
        max_batch: int,
        cost: Callable[[Any], int] | None = None,
        max_cost: int | None = None,
        name: str = "llama-guard-microbatch",
    ) -> None:
        self._score_ref: Callable[[], Any] = (
            weakref.WeakMethod(score) if hasattr(score, "__self__") else (lambda: score)  # type: ignore[arg-type]
        )
        self.window_s = window_s
        self.max_batch = max_batch
        self.cost = cost
        """A prompt's cost (its tokens): a batch holds at most ``max_cost`` of it (and at least one prompt), so a
        few very long prompts (a long document's windows) run a few at a time, between other callers."""
        self.max_cost = max_cost
        self.name = name
        """The worker thread's name (what a thread dump shows)."""
        self._queue: queue.Queue = queue.Queue()
        self.batches_run = 0
        self._closed = False
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        weakref.finalize(self, self._queue.put, _STOP)  # a collected batcher stops its worker
        _LIVE.add(self)
        call_in_child(self, "_after_fork")

    def _after_fork(self) -> None:
        """In a forked child: the parent's worker is gone, and its queue's locks may be held; start afresh."""
        self._queue = queue.Queue()
        self._start_lock = threading.Lock()
        self._thread = None

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, prompts: list[Any], extra: list[Any]) -> concurrent.futures.Future:
        """Queue one caller's prompts; the future gets their results, in order."""
        request = _Request(list(prompts), list(extra))
        with self._start_lock:  # queued before a close() can drain the queue, or refused
            if self._closed:
                raise GuardClosedError("this guard was closed; load a new one")
            if not self.alive:
                self._thread = threading.Thread(  # in a context of its own: it serves every caller, so it never
                    target=contextvars.Context().run,  # runs under the one that started it (see cancellation.py)
                    args=(_worker, weakref.ref(self), self._queue),
                    name=self.name,
                    daemon=True,
                )
                self._thread.start()
            self._queue.put(request)
        return request.future

    @staticmethod
    def withdraw(future: concurrent.futures.Future) -> None:
        """The caller of ``future`` is gone (timed out, cancelled): a queued request never runs, and one under way
        stops before its next chunk."""
        if not future.cancel():
            _settle(future, error=CancelledError())

    def wait(self, future: concurrent.futures.Future, timeout: float | None) -> Any:
        """``future``'s results, or :data:`WITHDRAWN` once ``timeout`` has passed (the request is withdrawn)."""
        done, _ = concurrent.futures.wait([future], timeout=timeout)
        if not done:
            self.withdraw(future)
            if not future.done() or future.cancelled() or isinstance(future.exception(), CancelledError):
                return WITHDRAWN
        return future.result()  # its results, or its own error

    async def await_(self, future: concurrent.futures.Future) -> Any:
        """``future``'s results on the event loop; a cancelled caller withdraws it."""
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.withdraw(future)
            raise

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker; requests still queued get :class:`~langchain_llamaguard.errors.GuardClosedError`."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        error = GuardClosedError("this guard was closed while the check waited")
        self._fail_queued(error)  # now: the worker would score every queued request before it saw the stop
        self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)  # the batch it is in, if any
        self._fail_queued(error)

    def _fail_queued(self, error: BaseException) -> None:
        stop = False
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                stop = True
            elif request.claim():
                _settle(request.future, error=error)
        if stop:  # a worker still inside a batch (its join timed out) stops after it
            self._queue.put(_STOP)

    def _gather(self, first: _Request) -> list[tuple[_Request, int, int]]:
        """``first`` and what arrives within the window, without the requests whose callers are gone: each as
        the slice of its prompts this batch runs (up to ``max_batch`` prompts in all, at least one)."""
        batch: list[tuple[_Request, int, int]] = []
        size = spent = 0
        stopped = False  # a prompt did not fit: the batch is complete (no waiting out the window)
        budget = self.max_cost if self.cost is not None and self.max_cost is not None else None

        def take(request: _Request) -> None:
            nonlocal size, spent, stopped
            start = end = len(request.done)
            while end < len(request.prompts):
                first = size == 0 and end == start  # the batch's first prompt always runs, whatever it costs
                more = self.cost(request.prompts[end]) if budget is not None else 0  # type: ignore[misc]
                if not first and (
                    size + end - start >= self.max_batch or (budget is not None and spent + more > budget)
                ):
                    stopped = True
                    break
                spent += more
                end += 1
            batch.append((request, start, end))  # an empty slice: its request goes on in the next batch
            size += end - start

        def full() -> bool:
            return stopped or size >= self.max_batch or (budget is not None and spent >= budget)

        if first.claim():
            take(first)
        deadline = time.monotonic() + self.window_s
        while not full():
            remaining = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                self._queue.put(_STOP)  # seen by the worker after this batch
                break
            if request.claim():
                take(request)
        return batch

    def _run(self, first: _Request) -> None:
        batch = self._gather(first)
        if not batch:
            return
        try:
            score = self._score_ref()
            if score is None:
                raise GuardClosedError("the guard was collected")
            prompts = [p for r, a, b in batch for p in r.prompts[a:b]]
            results = score(prompts, [e for r, a, b in batch for e in r.extra[a:b]])
            del score
        except BaseException as exc:  # every caller in the batch sees the failure (and fails closed or raises)
            for r, _, _ in batch:
                _settle(r.future, error=exc)
            return
        self.batches_run += 1
        at = 0
        for r, a, b in batch:
            r.done.extend(results[at : at + b - a])
            at += b - a
            if len(r.done) == len(r.prompts):
                _settle(r.future, result=r.done)
            elif self._closed:  # no new forward passes once closed (at interpreter exit: none inside torch)
                _settle(r.future, error=GuardClosedError("this guard was closed while the check ran"))
            elif not r.future.done():
                self._queue.put(r)  # the rest after the callers already waiting
