"""Dynamic micro-batching: checks from concurrent callers that arrive within a short window share one batch.

A web server with many users gets batch throughput without any caller batching: each caller submits its
prompts and waits on a future; one worker thread collects what arrives within ``window_s`` (up to
``max_batch`` prompts), runs it as one model batch, and hands each caller its own results.

Callers may go away at any moment (a cancelled ``acheck``, a timed-out ``wait_for``, a web client that
disconnects): a request whose future is already cancelled when the batch is gathered is dropped before it runs
(``Future.set_running_or_notify_cancel``), and a result for a caller that is gone is discarded, so no caller
affects another. The worker never dies on an exception: the callers of the failing batch get it. If the worker
is gone anyway, the next submit starts a fresh one.

The worker holds the batcher only weakly, and the batcher holds its owner's scoring method only weakly, so a
guard that is no longer referenced is collected and its worker stops; :meth:`MicroBatcher.close` stops it at once.

Example:
    >>> guard = LlamaGuard.from_pretrained(path, batch_window_ms=5)   # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import concurrent.futures
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import GuardClosedError
from .forking import call_in_child

_STOP = object()
"""Put on the queue to stop the worker."""
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
        name: str = "llama-guard-microbatch",
    ) -> None:
        self._score_ref: Callable[[], Any] = (
            weakref.WeakMethod(score) if hasattr(score, "__self__") else (lambda: score)  # type: ignore[arg-type]
        )
        self.window_s = window_s
        self.max_batch = max_batch
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

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._closed:
                raise GuardClosedError("this guard was closed; load a new one")
            if not self.alive:
                self._thread = threading.Thread(
                    target=_worker, args=(weakref.ref(self), self._queue), name=self.name, daemon=True
                )
                self._thread.start()

    def submit(self, prompts: list[Any], extra: list[Any]) -> concurrent.futures.Future:
        """Queue one caller's prompts; the future gets their results, in order."""
        self._ensure_worker()
        request = _Request(list(prompts), list(extra))
        self._queue.put(request)
        return request.future

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker; requests still queued get :class:`~langchain_llamaguard.errors.GuardClosedError`."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._fail_queued(GuardClosedError("this guard was closed while the check waited"))

    def _fail_queued(self, error: BaseException) -> None:
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not _STOP and request.future.set_running_or_notify_cancel():
                _settle(request.future, error=error)

    def _gather(self, first: _Request) -> list[_Request]:
        """``first`` and what arrives within the window, without the requests whose callers are gone."""
        batch = [first] if first.future.set_running_or_notify_cancel() else []
        size = sum(len(r.prompts) for r in batch)
        deadline = time.monotonic() + self.window_s
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                self._queue.put(_STOP)  # seen by the worker after this batch
                break
            if request.future.set_running_or_notify_cancel():
                batch.append(request)
                size += len(request.prompts)
        return batch

    def _run(self, first: _Request) -> None:
        batch = self._gather(first)
        if not batch:
            return
        try:
            score = self._score_ref()
            if score is None:
                raise GuardClosedError("the guard was collected")
            results = score([p for r in batch for p in r.prompts], [e for r in batch for e in r.extra])
            del score
        except BaseException as exc:  # every caller in the batch sees the failure (and fails closed or raises)
            for r in batch:
                _settle(r.future, error=exc)
            return
        self.batches_run += 1
        start = 0
        for r in batch:
            _settle(r.future, result=results[start : start + len(r.prompts)])
            start += len(r.prompts)
