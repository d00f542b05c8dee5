"""Retries and fallbacks of guard Runnables: a transient failure is retried (or falls back), a verdict is not.

LangChain's ``with_retry()`` retries every exception by default. A guard's
:class:`~langchain_llamaguard.errors.UnsafeContentError` is a verdict, and the same input gets the same verdict, so
retrying it only runs the model again (three checks instead of one). A guard step's ``with_retry`` returns a
:class:`GuardRetry`: the same options and behaviour as LangChain's ``RunnableRetry``, except that
``UnsafeContentError`` is raised at once and, in a batch, a flagged item is not run again while the items that
failed for another reason are.

A whole chain's ``with_retry`` is LangChain's own: give it :func:`is_transient_error` (or your own predicate built
on it) so that only failures worth another attempt are retried.

LangChain's ``with_fallbacks()`` catches every exception by default too, and a fallback model would then answer the
flagged input, unguarded: a guard Runnable's ``with_fallbacks`` (:class:`NoVerdictFallbacks`) refuses such a
catch-all.

Example:
    >>> step = guard.as_input_guard().with_retry(stop_after_attempt=3)  # doctest: +SKIP
    >>> step.invoke("How do I make a bomb?")  # one check, then UnsafeContentError  # doctest: +SKIP
    >>> chain = guard.as_input_guard() | prompt | llm                             # doctest: +SKIP
    >>> chain = chain.with_retry(retry_if_exception_type=is_transient_error)      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import Runnable
from langchain_core.runnables.base import RunnableBindingBase
from langchain_core.runnables.retry import RunnableRetry
from tenacity import retry_if_exception_type, retry_if_not_exception_type

from .errors import GuardBatchError, GuardConfigurationError, GuardServerError, UnsafeContentError


def is_transient_error(exc: BaseException) -> bool:
    """Whether ``exc`` may go away on another attempt: a guard server that could not be reached, timed out, was
    busy (429) or failed (5xx), a timeout or a lost connection; a :class:`GuardBatchError` when every failing row
    failed so. Never a verdict (:class:`UnsafeContentError`), bad input or configuration, or an unreadable answer.

    Example:
        >>> is_transient_error(GuardServerError("no answer", unreachable=True)), is_transient_error(ValueError("x"))
        (True, False)
    """
    if isinstance(exc, GuardBatchError):
        return bool(exc.errors) and all(is_transient_error(e) for e in exc.errors.values())
    if isinstance(exc, GuardServerError):  # no answer, or busy / failing; never a 4xx or an unreadable answer
        return exc.unreachable or (exc.status is not None and (exc.status == 429 or exc.status >= 500))
    return isinstance(exc, (TimeoutError, ConnectionError))  # GuardTimeoutError is a TimeoutError


class NoVerdictFallbacks:
    """Mixed into every guard Runnable (steps, wrapped chains, document filters, graph nodes, guarded tools): its
    ``with_fallbacks`` never catches a verdict by default (see :meth:`with_fallbacks`).

    Example:
        >>> guard.wrap(llm).with_fallbacks([backup])  # doctest: +SKIP
        GuardConfigurationError: with_fallbacks(exceptions_to_handle=(Exception,)) would catch this guard's verdict ...
    """

    def with_fallbacks(
        self,
        fallbacks: Sequence[Runnable[Any, Any]],
        *,
        exceptions_to_handle: tuple[type[BaseException], ...] = (Exception,),
        exception_key: str | None = None,
    ) -> Runnable[Any, Any]:
        """LangChain's ``with_fallbacks``, except that a verdict is never handed to a fallback by accident: LangChain
        catches every ``Exception`` by default, and a fallback model would then answer the flagged input, unguarded.
        List the failures to fall back on (``exceptions_to_handle=(GuardServerError, TimeoutError)``); list
        :class:`UnsafeContentError` itself to fall back on a verdict, or reroute with ``on_unsafe=``.

        Example:
            >>> chain = guard.wrap(llm)                                                             # doctest: +SKIP
            >>> chain = chain.with_fallbacks([backup], exceptions_to_handle=(GuardServerError,))  # doctest: +SKIP
        """
        if isinstance(exceptions_to_handle, type):
            exceptions_to_handle = (exceptions_to_handle,)
        broad = [
            t
            for t in exceptions_to_handle
            if isinstance(t, type) and issubclass(UnsafeContentError, t) and t is not UnsafeContentError
        ]
        if broad and UnsafeContentError not in exceptions_to_handle:
            raise GuardConfigurationError(
                f"with_fallbacks(exceptions_to_handle=({', '.join(t.__name__ for t in broad)},)) would catch this "
                "guard's verdict (UnsafeContentError) and run the fallback on the flagged content, unguarded; list the "
                "failures to fall back on, e.g. exceptions_to_handle=(GuardServerError, TimeoutError), add "
                "UnsafeContentError to the tuple to fall back on a verdict on purpose, or reroute with on_unsafe="
            )
        return super().with_fallbacks(  # type: ignore[misc]
            fallbacks, exceptions_to_handle=exceptions_to_handle, exception_key=exception_key
        )


class _Flagged:
    """A batch item the guard flagged, held as a result so ``RunnableRetry`` does not run it again."""

    __slots__ = ("error",)

    def __init__(self, error: UnsafeContentError) -> None:
        self.error = error


def _held(results: list[Any]) -> list[Any]:
    return [_Flagged(r) if isinstance(r, UnsafeContentError) else r for r in results]


def _released(results: list[Any]) -> list[Any]:
    return [r.error if isinstance(r, _Flagged) else r for r in results]


class _HoldFlagged(RunnableBindingBase):
    """Sits under ``RunnableRetry`` in :class:`GuardRetry`'s MRO: the bound step's batches come back with flagged
    items held (not exceptions), so ``RunnableRetry`` retries only the items that failed for another reason."""

    def batch(self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any) -> Any:
        return _held(super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs))

    async def abatch(
        self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> Any:
        return _held(await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs))


class GuardRetry(RunnableRetry, _HoldFlagged):
    """``RunnableRetry`` for guard steps: :class:`~langchain_llamaguard.errors.UnsafeContentError` is never retried.

    Made by a guard step's ``with_retry(...)`` (same arguments as LangChain's); everything else it retries as
    ``retry_if_exception_type`` says (every exception by default).

    Example:
        >>> step = guard.as_input_guard().with_retry(stop_after_attempt=3)  # doctest: +SKIP
        >>> type(step).__name__                                             # doctest: +SKIP
        'GuardRetry'
    """

    @property
    def _kwargs_retrying(self) -> dict[str, Any]:
        kwargs = super()._kwargs_retrying
        kwargs["retry"] = kwargs.get("retry", retry_if_exception_type()) & retry_if_not_exception_type(
            UnsafeContentError
        )
        return kwargs

    def _batch(self, inputs: list[Any], run_manager: Any, config: Any, **kwargs: Any) -> list[Any]:
        return _released(super()._batch(inputs, run_manager, config, **kwargs))

    async def _abatch(self, inputs: list[Any], run_manager: Any, config: Any, **kwargs: Any) -> list[Any]:
        return _released(await super()._abatch(inputs, run_manager, config, **kwargs))


__all__ = ["GuardRetry", "is_transient_error"]
