"""Exceptions raised by guards. Each carries what a caller needs to act on it, not just a message.

This module is the bottom of the package: it imports nothing of it (verdicts are carried as plain objects), so
every other module can raise these errors.

Example:
    >>> try:
    ...     raise GuardConfigurationError("threshold must be in [0, 1]")
    ... except LlamaGuardError as exc:  # every error of the package, bad input and configuration included
    ...     isinstance(exc, ValueError)
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class LlamaGuardError(Exception):
    """Base class of this package's errors."""


class UnsafeContentError(LlamaGuardError):
    """Raised by a guard step when content is judged unsafe.

    Attributes:
        verdict: the :class:`~langchain_llamaguard.verdict.Verdict` (categories, score, role, model), or a
            :class:`~langchain_llamaguard.prompt_guard.PromptGuardVerdict` when Prompt Guard flagged it.
        stage: where it was flagged: ``"input"``, ``"output"``, ``"tool_call"``, ``"tool_result"``, ...
    """

    def __init__(self, verdict: Any, *, stage: str = "input", message: str | None = None) -> None:
        self.verdict = verdict
        self.stage = stage
        if hasattr(verdict, "categories"):
            what = ", ".join(f"{c} ({n})" for c, n in zip(verdict.categories, verdict.category_names, strict=True))
            default = f"unsafe content in {stage} ({verdict.role} turn): {what or 'no category named'}"
        else:
            default = f"prompt injection / jailbreak in {stage}: {verdict.label} (score {verdict.score:.3f})"
        error = getattr(verdict, "error", None)
        if isinstance(error, str) and error:  # failed closed: say why, not only that the text was flagged
            default += f"; the check failed closed: {error[:300]}"
        super().__init__(message or default)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.verdict,), {"stage": self.stage, "args": self.args})


class UnsafeDocumentError(UnsafeContentError):
    """Raised by a document filter (``on_flagged="raise"``) for the first flagged document of its input.

    Attributes:
        verdict: the verdict that flagged it (Prompt Guard's first, when both guards did); ``stage`` is
            ``"document"``.
        index: the document's position in the filter's input.
        document: the ``Document`` itself.
    """

    def __init__(self, verdict: Any, *, index: int = 0, document: Any = None, message: str | None = None) -> None:
        super().__init__(verdict, stage="document", message=message)
        self.index = index
        self.document = document
        if message is None:
            doc_id = getattr(document, "id", None)
            which = f"document {index}" + (f" (id {doc_id!r})" if doc_id is not None else "")
            error = getattr(verdict, "error", None)
            self.args = (f"{which}: {self.args[0]}" + (f"; it could not be judged: {error}" if error else ""),)

    def __reduce__(self) -> tuple[Any, ...]:
        state = {"stage": self.stage, "args": self.args, "index": self.index, "document": self.document}
        return (self.__class__, (self.verdict,), state)


class GuardOutputError(LlamaGuardError):
    """The guard model's output could not be read as a verdict (never taken as safe).

    Attributes:
        raw: the model's text.
    """

    def __init__(self, raw: str, reason: str) -> None:
        self.raw = raw
        super().__init__(
            f"cannot read the guard model's output {raw!r}: {reason}; expected 'safe' or "
            "'unsafe' followed by a line of comma-separated categories like 'S1,S10'"
        )


class GuardConfigurationError(LlamaGuardError, ValueError):
    """Bad configuration, found when the guard is built (not on the first request)."""


class GuardLoadError(LlamaGuardError, OSError):
    """A checkpoint that cannot be loaded: a hub id with no network (transformers retries for about 24 s first;
    ``HF_HUB_OFFLINE=1`` fails at once), a gated repository without a token, unreadable weight files."""


class GuardTimeoutError(LlamaGuardError, TimeoutError):
    """A check took longer than the guard's ``timeout`` (never taken as safe)."""


class GuardInputError(LlamaGuardError, ValueError):
    """Content this guard cannot check as asked (for example a special-token string sent to a server's chat
    template, where it would become a real special token); it is refused, never passed unchecked."""


class GuardServerError(LlamaGuardError, RuntimeError):
    """A guard model server could not give a verdict: unreachable, timed out, an HTTP error, or an answer
    that is not what the protocol expects (never taken as safe).

    Attributes:
        url: the endpoint that was called (credentials are never part of it, nor of the message).
        status: the HTTP status, when the server answered.
        retry_after: the seconds a busy server asked to wait (its ``Retry-After`` header), when it said.
        unreachable: the request got no answer at all (no connection, a timeout, a lost connection): another
            attempt may succeed. An answer that is not the protocol, or a model the server does not serve, is not.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        unreachable: bool = False,
    ) -> None:
        self.url = url
        self.status = status
        self.retry_after = retry_after
        self.unreachable = unreachable
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        state = {"url": self.url, "status": self.status, "retry_after": self.retry_after}
        return (self.__class__, (str(self),), {**state, "unreachable": self.unreachable})


class GuardBatchError(LlamaGuardError):
    """Some rows of a batch could not be judged (``on_error="raise"``); the others were.

    Attributes:
        verdicts: one entry per input row, in input order: its verdict, or ``None`` where the row failed.
        errors: the failing rows' indices and what went wrong with each.

    Example:
        >>> err = GuardBatchError([None, "v1"], {0: GuardOutputError("Sure!", "first line is neither")})
        >>> sorted(err.errors), err.verdicts[1]
        ([0], 'v1')
    """

    def __init__(self, verdicts: Sequence[Any], errors: Mapping[int, BaseException]) -> None:
        self.verdicts = list(verdicts)
        self.errors = dict(sorted(errors.items()))
        super().__init__(
            f"{len(self.errors):,} of {len(self.verdicts):,} rows could not be judged: {_summary(self.errors)}; the "
            "other rows' verdicts are in .verdicts, every failed row's error in .errors"
        )

    def rows(self) -> list[Any]:
        """One entry per input row, in input order: its verdict, or its own error where it failed.

        Example:
            >>> GuardBatchError([None, "v1"], {0: ValueError("bad row")}).rows()
            [ValueError('bad row'), 'v1']
        """
        return [self.errors.get(i, v) for i, v in enumerate(self.verdicts)]

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.verdicts, self.errors))


SHOWN_ERRORS = 3
"""A batch error's message quotes this many distinct errors (``.errors`` holds every row's)."""
SHOWN_ROWS = 8
"""... and names this many rows of each."""


def _summary(errors: Mapping[int, BaseException]) -> str:
    """The rows' errors, rows with the same error together: a batch of thousands with one cause reads as one line."""
    groups: dict[str, list[int]] = {}
    for i, e in errors.items():
        groups.setdefault(f"{type(e).__name__}: {e}", []).append(i)
    parts = []
    for text, rows in list(groups.items())[:SHOWN_ERRORS]:
        named = ", ".join(map(str, rows[:SHOWN_ROWS]))
        more = f" and {len(rows) - SHOWN_ROWS:,} more" if len(rows) > SHOWN_ROWS else ""
        parts.append(f"{'rows' if len(rows) > 1 else 'row'} {named}{more}: {text}")
    if len(groups) > SHOWN_ERRORS:
        rest = sum(len(rows) for rows in list(groups.values())[SHOWN_ERRORS:])
        others = len(groups) - SHOWN_ERRORS
        parts.append(f"{others:,} other error{'s' if others > 1 else ''} in {rest:,} more row{'s' if rest > 1 else ''}")
    return "; ".join(parts)


class ImageLoadError(LlamaGuardError, ValueError):
    """An image in the conversation could not be read, or is over one of the guard's image bounds (never
    taken as safe: with ``on_error="unsafe"`` its conversation gets an unsafe verdict)."""


class GuardContextOverflowError(LlamaGuardError, ValueError):
    """A conversation does not fit the guard's context and the guard was asked not to leave anything out
    (``on_overflow="raise"``)."""


class GuardClosedError(LlamaGuardError, RuntimeError):
    """The guard was closed (:meth:`close`); build or load a new one."""


class GuardTypeError(LlamaGuardError, TypeError):
    """Input or an option of a type the guard cannot use (a number, a ``Document``, a dict that is not a
    ``{"role": ..., "content": ...}`` message, an ``on_unsafe`` of the wrong kind...). A ``TypeError`` (and not
    a ``ValueError``, so pydantic constructors raise it as it is)."""


class GuardKeyError(GuardInputError, KeyError):
    """A key the guard step was told to read (``input_key`` / ``output_key``) is not in its input. A
    :class:`GuardInputError` and a ``KeyError``."""

    __str__ = Exception.__str__  # the message as written (KeyError would quote it)


class GuardPickleError(LlamaGuardError, TypeError):
    """A guard that cannot be pickled: one over a model passed in (``from_model``) has no way to load that model
    again on the other side. A :class:`LlamaGuardError` and a ``TypeError`` (what ``pickle`` raises for objects
    it cannot write)."""
