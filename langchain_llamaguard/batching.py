"""Dynamic micro-batching: checks from concurrent callers that arrive within a short window share one batch.

A web server with many users gets batch throughput without any caller batching: each caller submits its
prompts and waits on a future; one worker thread collects what arrives within ``window_s`` (up to
``max_batch`` prompts), runs it as one model batch, and hands each caller its own results.

Example:
    >>> guard = LlamaGuard.from_pretrained(path, batch_window_ms=5)   # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Request:
    prompts: list[Any]
    extra: list[Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class MicroBatcher:
    """Runs ``score(prompts, extra) -> results`` (one result per prompt) on batches gathered across callers."""

    def __init__(self, score: Callable[[list[Any], list[Any]], list[Any]], *, window_s: float, max_batch: int) -> None:
        self._score = score
        self.window_s = window_s
        self.max_batch = max_batch
        self._queue: queue.Queue[_Request] = queue.Queue()
        self.batches_run = 0
        self._thread = threading.Thread(target=self._loop, name="llama-guard-microbatch", daemon=True)
        self._thread.start()

    def submit(self, prompts: list[Any], extra: list[Any]) -> concurrent.futures.Future:
        request = _Request(list(prompts), list(extra))
        self._queue.put(request)
        return request.future

    def _gather(self) -> list[_Request]:
        batch = [self._queue.get()]
        size = len(batch[0].prompts)
        deadline = time.monotonic() + self.window_s
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(request)
            size += len(request.prompts)
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            prompts = [p for r in batch for p in r.prompts]
            extra = [e for r in batch for e in r.extra]
            try:
                results = self._score(prompts, extra)
            except BaseException as exc:  # every caller in the batch sees the failure (and fails closed or raises)
                for r in batch:
                    r.future.set_exception(exc)
                continue
            self.batches_run += 1
            start = 0
            for r in batch:
                r.future.set_result(results[start : start + len(r.prompts)])
                start += len(r.prompts)
