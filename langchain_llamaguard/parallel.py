"""Parallel input checks: the input is judged while the model already runs (``input_check="parallel"``).

The model call starts at once, beside the input check; nothing it produces leaves before the verdict is in:

* a safe input: its output (or its buffered chunks, then the rest of its stream) goes on as in ``"before"`` mode;
* an unsafe input: the model call is stopped and its output thrown away. Async: its task is cancelled and awaited
  (a chain run closes as cancelled; a chat model's run cancelled inside ``agenerate`` gets no end callback from
  langchain-core, as with any cancelled call). Sync: a thread cannot be killed, so the caller gets the
  ``on_unsafe`` outcome at once, **without waiting** for the model; a stream stops pulling chunks at the next one,
  and a plain call's result is dropped when it returns (its tokens are spent);
* traces show both runs: the model run carries ``metadata={"llama_guard_overlap": True}`` (set before it starts)
  and, when discarded, the guarded run dispatches a custom event ``llama_guard_discarded`` (``on_custom_event``
  in callbacks, ``astream_events``) whose data names the model run (``run_id``), the stage and the categories.

The wrapped runnable must be free of side effects before its answer (a model, a prompt | model chain): in sync
mode it runs to its end even when the input is flagged. For agents with tools, use
:class:`~langchain_llamaguard.middleware.LlamaGuardMiddleware` ``(input_check="parallel")``, which holds the first
model response (and so every tool call) until the verdict is in.

Example:
    >>> chain = guard.wrap(prompt | llm, input_check="parallel", on_unsafe="Sorry.")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any, Literal

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config, var_child_runnable_config

from .inner_runs import unstreamed_child, without_streaming

InputCheck = Literal["before", "parallel"]
INPUT_CHECKS: tuple[str, ...] = ("before", "parallel")
OVERLAP_METADATA_KEY = "llama_guard_overlap"
"""Metadata key set on a model run that started before its input's verdict."""
DISCARDED_EVENT = "llama_guard_discarded"
"""Custom event dispatched when a flagged input's overlapped model run is cancelled or its output thrown away."""
NOSTREAM_TAG = "nostream"
"""langgraph's tag that keeps a model run's tokens out of ``stream_mode="messages"`` (used by the middleware)."""


def check_input_check(value: Any) -> InputCheck:
    """``value`` if it is a valid ``input_check``, else a :class:`GuardConfigurationError` naming the choices."""
    from .errors import GuardConfigurationError

    if value not in INPUT_CHECKS:
        raise GuardConfigurationError(f"input_check must be 'before' or 'parallel', got {value!r}")
    return value  # type: ignore[no-any-return]


# -- configs and the discard marker ----------------------------------------------------------------------------
def model_config(config: RunnableConfig, run_manager: Any) -> tuple[RunnableConfig, uuid.UUID]:
    """The overlapped model run's config (child of ``run_manager``, marked with the overlap metadata) and its id."""
    run_id = uuid.uuid4()
    cfg = patch_config(config, callbacks=unstreamed_child(run_manager))
    cfg["run_id"] = run_id
    cfg["metadata"] = {**(cfg.get("metadata") or {}), OVERLAP_METADATA_KEY: True}
    return cfg, run_id


def _event_data(run_id: Any, verdict: Any, how: str) -> dict[str, Any]:
    return {
        "run_id": str(run_id) if run_id is not None else None,
        "stage": "input",
        "categories": list(getattr(verdict, "categories", []) or []),
        "how": how,
    }


def mark_discarded(config: RunnableConfig, run_id: Any, verdict: Any, how: str) -> None:
    """Dispatch :data:`DISCARDED_EVENT` under the guarded run (``config`` is its child config)."""
    with contextlib.suppress(RuntimeError):  # no parent run (no callbacks configured): nothing to mark
        dispatch_custom_event(DISCARDED_EVENT, _event_data(run_id, verdict, how), config=config)


async def amark_discarded(config: RunnableConfig | None, run_id: Any, verdict: Any, how: str) -> None:
    """The async :func:`mark_discarded`."""
    with contextlib.suppress(RuntimeError):
        await adispatch_custom_event(DISCARDED_EVENT, _event_data(run_id, verdict, how), config=config)


# -- threads and tasks -------------------------------------------------------------------------------------------
def start_thread(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """``fn(*args)`` in a daemon thread with a copy of the caller's context; its outcome in a ``Future``."""
    future: Future[Any] = Future()
    ctx = contextvars.copy_context()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = ctx.run(fn, *args)
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=run, name="llama-guard-overlap", daemon=True).start()
    return future


async def settle(task: asyncio.Future[Any]) -> bool:
    """Cancel ``task`` and wait until it has stopped; whether it was cancelled before finishing."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():  # we are being cancelled ourselves: pass it on
            raise
        return True
    except Exception:  # noqa: BLE001 - the discarded call's own failure does not matter
        return False
    return False


# -- invoke -----------------------------------------------------------------------------------------------------
def invoke_overlapped(
    bound: Runnable[Any, Any], value: Any, config: RunnableConfig, run_manager: Any, check: Callable[[], Any]
) -> tuple[Any, Any]:
    """Run ``bound.invoke(value)`` in a thread while ``check()`` judges the input: ``(verdict, output)``, with
    ``output`` ``None`` when the verdict is unsafe (returned at once; the model's result is dropped)."""
    cfg, run_id = model_config(config, run_manager)
    return _overlap(start_thread(bound.invoke, value, cfg), check, config, run_id)


def _overlap(
    future: Future[Any], check: Callable[[], Any], config: Any, run_id: Any, *, wait: bool = False
) -> tuple[Any, Any]:
    """Judge the input while ``future`` (the model, in a thread) runs: ``(verdict, its result or None)``; with
    ``wait``, a discarded call has returned (or failed) before this does."""
    try:
        verdict = check()  # a failing check propagates; the model's result is dropped with the future
    except BaseException:
        if wait:
            wait_futures([future])
        raise
    if not verdict.safe:
        future.cancel()
        if wait:
            wait_futures([future])
        mark_discarded(config, run_id, verdict, "dropped")
        return verdict, None
    return verdict, future.result()


async def ainvoke_overlapped(
    bound: Runnable[Any, Any],
    value: Any,
    config: RunnableConfig,
    run_manager: Any,
    check: Callable[[], Awaitable[Any]],
) -> tuple[Any, Any]:
    """Async :func:`invoke_overlapped`: the model call is a task, cancelled when the input is unsafe."""
    cfg, run_id = model_config(config, run_manager)
    return await _aoverlap(bound.ainvoke(value, cfg), check, config, run_id)


async def _aoverlap(
    model: Awaitable[Any], check: Callable[[], Awaitable[Any]], config: Any, run_id: Any
) -> tuple[Any, Any]:
    """Judge the input while ``model`` runs as a task, cancelled when the input is unsafe."""
    task = asyncio.ensure_future(model)
    verdict = await _ajudge_beside(task, check, config, run_id)
    return verdict, (await task if verdict.safe else None)


async def _ajudge_beside(
    task: asyncio.Future[Any], check: Callable[[], Awaitable[Any]], config: Any, run_id: Any
) -> Any:
    """The input's verdict, judged while ``task`` runs; an unsafe one (or a failing check) cancels the task."""
    try:
        verdict = await check()
    except BaseException:
        await settle(task)
        raise
    if not verdict.safe:
        cancelled = await settle(task)
        await amark_discarded(config, run_id, verdict, "cancelled" if cancelled else "dropped")
    return verdict


# -- batch -------------------------------------------------------------------------------------------------------
def _passed(verdict: Any) -> bool:
    """Whether a batch row's input check let it through (a row whose check failed is the error, not a verdict)."""
    return not isinstance(verdict, BaseException) and verdict.safe


def batch_overlapped(
    bound: Runnable[Any, Any],
    values: list[Any],
    configs: list[RunnableConfig],
    run_managers: list[Any],
    check: Callable[[], list[Any]],
) -> tuple[list[Any], list[Any]]:
    """One inner batch of every input, in a thread, while ``check()`` judges them all: ``(verdicts, outputs)``.
    Flagged inputs' outputs (and those of rows the check could not judge) are ``None`` (dropped); when no input
    passed nothing waits for the batch."""
    pairs = [model_config(c, rm) for c, rm in zip(configs, run_managers, strict=True)]
    future = start_thread(lambda: bound.batch(values, [c for c, _ in pairs], return_exceptions=True))
    verdicts = check()
    outputs: list[Any] = [None] * len(values)
    if any(map(_passed, verdicts)):
        outputs = list(future.result())
    for i, verdict in enumerate(verdicts):
        if not _passed(verdict):
            outputs[i] = None
            mark_discarded(configs[i], pairs[i][1], verdict, "dropped")
    return verdicts, outputs


async def abatch_overlapped(
    bound: Runnable[Any, Any],
    values: list[Any],
    configs: list[RunnableConfig],
    run_managers: list[Any],
    check: Callable[[], Awaitable[list[Any]]],
) -> tuple[list[Any], list[Any]]:
    """Async :func:`batch_overlapped`; the inner batch is one task, cancelled when every input is flagged."""
    pairs = [model_config(c, rm) for c, rm in zip(configs, run_managers, strict=True)]
    task = asyncio.ensure_future(bound.abatch(values, [c for c, _ in pairs], return_exceptions=True))
    try:
        verdicts = await check()
    except BaseException:
        await settle(task)
        raise
    outputs: list[Any] = [None] * len(values)
    how = "dropped"
    if any(map(_passed, verdicts)):
        outputs = list(await task)
    else:
        how = "cancelled" if await settle(task) else "dropped"
    for i, verdict in enumerate(verdicts):
        if not _passed(verdict):
            outputs[i] = None
            await amark_discarded(configs[i], pairs[i][1], verdict, how)
    return verdicts, outputs


# -- streams ------------------------------------------------------------------------------------------------------
_DONE = object()


class _Pump:
    """Pulls a sync stream in a thread into a queue; :meth:`stop` makes it stop at the next chunk."""

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        self._queue: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self._stop = threading.Event()
        start_thread(self._run, make)

    def _run(self, make: Callable[[], Iterator[Any]]) -> None:
        chunks: Iterator[Any] | None = None
        try:
            chunks = iter(make())  # inside the try: a stream that fails at once must not leave the consumer waiting
            for chunk in chunks:
                if self._stop.is_set():
                    break
                self._queue.put((chunk, None))
        except BaseException as exc:  # re-raised in the consumer
            self._queue.put((_DONE, exc))
            return
        finally:
            close = getattr(chunks, "close", None) if chunks is not None else None
            if close is not None:
                close()
        self._queue.put((_DONE, None))

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                chunk, error = self._queue.get()
                if chunk is _DONE:
                    if error is not None:
                        raise error
                    return
                yield chunk
        finally:
            self.stop()


def stream_overlapped(
    bound: Runnable[Any, Any], value: Any, config: RunnableConfig, run_manager: Any, check: Callable[[], Any]
) -> tuple[Any, Iterator[Any] | None]:
    """``bound.stream(value)`` pulled in a thread (chunks held) while ``check()`` judges the input:
    ``(verdict, chunks)``; when unsafe, ``chunks`` is ``None`` and the stream stops at its next chunk."""
    cfg, run_id = model_config(config, run_manager)
    pump = _Pump(lambda: bound.stream(value, cfg))
    try:
        verdict = check()
    except BaseException:
        pump.stop()
        raise
    if not verdict.safe:
        pump.stop()
        mark_discarded(config, run_id, verdict, "stopped")
        return verdict, None
    return verdict, iter(pump)


async def astream_overlapped(
    bound: Runnable[Any, Any],
    value: Any,
    config: RunnableConfig,
    run_manager: Any,
    check: Callable[[], Awaitable[Any]],
) -> tuple[Any, AsyncIterator[Any] | None]:
    """Async :func:`stream_overlapped`: a task pulls ``bound.astream`` into a queue; cancelled when unsafe."""
    cfg, run_id = model_config(config, run_manager)
    held: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for chunk in bound.astream(value, cfg):
                held.put_nowait((chunk, None))
        except BaseException as exc:  # any end reaches the consumer (re-raised there), or it would wait forever
            held.put_nowait((_DONE, exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        held.put_nowait((_DONE, None))

    task = asyncio.ensure_future(pump())
    verdict = await _ajudge_beside(task, check, config, run_id)
    if not verdict.safe:
        return verdict, None

    async def chunks() -> AsyncIterator[Any]:
        try:
            while True:
                chunk, error = await held.get()
                if chunk is _DONE:
                    if error is not None:
                        raise error
                    return
                yield chunk
        finally:
            if not task.done():
                await settle(task)

    return verdict, chunks()


# -- agent middleware: the first model call beside the input check -------------------------------------------------
def _overlap_context() -> None:
    """Mark the model run that starts in this context: overlap metadata, and no token streaming (langgraph's tag,
    and no streaming handler: ``astream_events`` / ``stream_mode="messages"`` get the response once judged)."""
    config = dict(var_child_runnable_config.get() or {})
    config["metadata"] = {**(config.get("metadata") or {}), OVERLAP_METADATA_KEY: True}
    config["tags"] = [*(config.get("tags") or []), NOSTREAM_TAG]
    config["callbacks"] = without_streaming(config.get("callbacks"))
    var_child_runnable_config.set(config)  # type: ignore[arg-type]


def call_overlapped(call: Callable[[], Any], check: Callable[[], Any], *, wait: bool = False) -> tuple[Any, Any]:
    """``call()`` (an agent's model call) in a thread while ``check()`` judges the input: ``(verdict, response)``,
    ``response`` ``None`` when unsafe (returned at once, the call's result dropped when it returns; with ``wait``,
    once the call has returned: middlewares inside it share state with the caller's next call)."""

    def run() -> Any:
        _overlap_context()
        return call()

    return _overlap(start_thread(run), check, None, None, wait=wait)


async def acall_overlapped(call: Callable[[], Awaitable[Any]], check: Callable[[], Awaitable[Any]]) -> tuple[Any, Any]:
    """Async :func:`call_overlapped`: the model call is a task, cancelled when the input is unsafe."""

    async def run() -> Any:
        _overlap_context()
        return await call()

    return await _aoverlap(run(), check, None, None)


__all__ = [
    "DISCARDED_EVENT",
    "INPUT_CHECKS",
    "OVERLAP_METADATA_KEY",
    "InputCheck",
    "acall_overlapped",
    "abatch_overlapped",
    "ainvoke_overlapped",
    "astream_overlapped",
    "batch_overlapped",
    "call_overlapped",
    "check_input_check",
    "invoke_overlapped",
    "stream_overlapped",
]
