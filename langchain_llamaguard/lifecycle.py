"""What every guard engine shares about its lifetime: ``close()`` / ``aclose()``, ``with`` / ``async with`` blocks
that call them, and the refusal to check once closed.

Example:
    >>> class Engine(Closeable):
    ...     _closed = False
    ...     def close(self):
    ...         self._closed = True
    >>> with Engine() as engine:
    ...     engine._check_open()
    >>> engine._closed
    True
"""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import GuardClosedError


class Closeable:
    """A guard engine's lifetime: subclasses set ``_closed`` and implement :meth:`close` (idempotent)."""

    _closed: bool

    def close(self) -> None:  # pragma: no cover - every engine has its own
        raise NotImplementedError

    async def aclose(self) -> None:
        """Async :meth:`close` (in a worker thread: a running batch may be finishing)."""
        await asyncio.to_thread(self.close)

    def _check_open(self) -> None:
        if self._closed:
            raise GuardClosedError(f"this {type(self).__name__} was closed; load a new one to check more")

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["Closeable"]
