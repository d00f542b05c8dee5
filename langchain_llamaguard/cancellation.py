"""Work whose caller stopped waiting: dropped before the model runs it.

A check runs on a thread of its own when its caller may stop waiting for it: a guard's ``timeout``, an async
caller that is cancelled (a web client that went away). Such a thread usually waits for the model, which runs
one forward pass at a time. If it went on once its caller had gone, every later caller would queue behind work
nobody reads, and a loaded guard would time out everyone: 24 callers of a guard whose check takes 14 ms, with
``timeout=0.15``, got 5 answers in 6 seconds, and 564 abandoned checks were still queued when the load stopped.

So a caller that stops waiting raises its thread's flag, and the backends call :func:`raise_if_abandoned` as a
forward pass is about to run (holding the model): a forward already running finishes, nothing more runs for a
caller that has gone. A flag also answers for the caller's own caller (a check inside a check that timed out).

Example:
    >>> import time
    >>> future = in_thread(time.sleep, 0.01)
    >>> abandon(future)  # the caller gave up: the thread stops before its next forward pass
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Abandoned(BaseException):  # noqa: N818 - a signal like CancelledError, not an error a caller handles
    """Raised in a worker thread whose caller stopped waiting. A ``BaseException``, like ``CancelledError``, so
    that the error handling of the work it stops (a batch retried row by row) does not take it for a failure."""


class _Flag:
    __slots__ = ("event", "parent")

    def __init__(self, parent: _Flag | None) -> None:
        self.event = threading.Event()
        self.parent = parent

    def raised(self) -> bool:
        flag: _Flag | None = self
        while flag is not None:
            if flag.event.is_set():
                return True
            flag = flag.parent
        return False


_FLAG: contextvars.ContextVar[_Flag | None] = contextvars.ContextVar("llamaguard_abandoned", default=None)


def abandoned() -> bool:
    """Whether the caller of the work on this thread (or its caller's caller) has stopped waiting."""
    flag = _FLAG.get()
    return flag is not None and flag.raised()


def raise_if_abandoned() -> None:
    """Raise :class:`Abandoned` if nobody waits for the work on this thread any more (backends, before a forward)."""
    if abandoned():
        raise Abandoned("the caller of this check stopped waiting for it")


def _flagged(flag: _Flag, fn: Callable[..., T], args: tuple[Any, ...]) -> Callable[[], T]:
    def run() -> T:
        token = _FLAG.set(flag)
        try:
            return fn(*args)
        finally:
            _FLAG.reset(token)

    return run


def in_thread(fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
    """``fn(*args)`` on a thread of its own, so that its caller can stop waiting (:func:`abandon`). A thread per
    call, not a shared pool: one guard's slow checks never count against another's timeout, it works after a
    fork, and after the main thread has finished (when ``concurrent.futures`` pools refuse new work)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    flag = _Flag(_FLAG.get())
    future._llamaguard_flag = flag  # type: ignore[attr-defined]
    run = _flagged(flag, fn, args)

    def target() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(run())
            except BaseException as exc:  # noqa: BLE001 - the caller gets it (or nobody, once abandoned)
                future.set_exception(exc)

    threading.Thread(target=target, name="llama-guard-timeout").start()
    return future


def abandon(future: concurrent.futures.Future[Any]) -> None:
    """Stop waiting for an :func:`in_thread` call: dropped if it has not started, stopped before its next forward
    pass if it has."""
    future.cancel()
    flag = getattr(future, "_llamaguard_flag", None)
    if flag is not None:
        flag.event.set()


async def to_thread(fn: Callable[..., T], *args: Any) -> T:
    """:func:`asyncio.to_thread`, whose work stops before its next forward pass once the awaiting caller is
    cancelled (or its ``wait_for`` times out)."""
    flag = _Flag(_FLAG.get())
    try:
        return await asyncio.to_thread(_flagged(flag, fn, args))
    except asyncio.CancelledError:
        flag.event.set()
        raise
