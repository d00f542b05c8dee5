"""Exceptions raised by guards. Each carries what a caller needs to act on it, not just a message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .prompt_guard import PromptGuardVerdict
    from .verdict import Verdict


class LlamaGuardError(Exception):
    """Base class of this package's errors."""


class UnsafeContentError(LlamaGuardError):
    """Raised by a guard step when content is judged unsafe.

    Attributes:
        verdict: the :class:`~langchain_llamaguard.verdict.Verdict` (categories, score, role, model), or a
            :class:`~langchain_llamaguard.prompt_guard.PromptGuardVerdict` when Prompt Guard flagged it.
        stage: where it was flagged: ``"input"``, ``"output"``, ``"tool_call"``, ``"tool_result"``, ...
    """

    def __init__(
        self, verdict: Verdict | PromptGuardVerdict, *, stage: str = "input", message: str | None = None
    ) -> None:
        self.verdict = verdict
        self.stage = stage
        if hasattr(verdict, "categories"):
            what = ", ".join(f"{c} ({n})" for c, n in zip(verdict.categories, verdict.category_names, strict=True))
            default = f"unsafe content in {stage} ({verdict.role} turn): {what or 'no category named'}"
        else:
            default = f"prompt injection / jailbreak in {stage}: {verdict.label} (score {verdict.score:.3f})"
        super().__init__(message or default)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.verdict,), {"stage": self.stage, "args": self.args})


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
    """

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (str(self),), {"url": self.url, "status": self.status})
