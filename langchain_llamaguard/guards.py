"""The guards as LangChain users meet them: the engines plus the LangChain steps built on them.

:class:`LlamaGuard` and :class:`PromptGuard` are the engines of ``llama_guard.py`` and ``prompt_guard.py`` (load,
check, batch, fail closed) with the methods that make LCEL steps (:mod:`~langchain_llamaguard.runnables`). The
engines know nothing of LangChain's Runnables; this module points down at them, never the other way.

Example:
    >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-4-12B")       # doctest: +SKIP
    >>> chain = guard.as_input_guard() | prompt | llm | guard.as_output_guard()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from langchain_core.runnables.base import coerce_to_runnable

from .llama_guard import LlamaGuardEngine
from .moderators import CombinedModerator, LlamaGuardModerator, PromptGuardModerator
from .prompt_guard import PromptGuardEngine
from .runnables import GuardedRunnable, GuardStep


class LlamaGuard(LlamaGuardEngine):
    """Llama Guard 4 or Llama Guard 3 (8B, 1B): checks conversations and makes LangChain guard steps.

    Loading, checking and every setting are the engine's (:class:`~langchain_llamaguard.llama_guard.LlamaGuardEngine`).

    Example:
        >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-4-12B")  # doctest: +SKIP
        >>> guard.check("How do I make a pipe bomb?")                           # doctest: +SKIP
        Verdict(safe=False, categories=['S9'], ...)
        >>> safe_chain = guard.wrap(prompt | llm, on_unsafe="Sorry, I can't help with that.")  # doctest: +SKIP
    """

    def as_input_guard(
        self,
        *,
        on_unsafe: Any = "raise",
        excluded_categories: Iterable[str] | None = None,
        input_key: str | None = None,
        name: str | None = None,
        categories: Mapping[str, str] | None = None,
    ) -> GuardStep:
        """A Runnable that checks the user's turn and passes its input through unchanged when safe.

        ``categories`` (a custom policy, see :meth:`with_categories`) and ``excluded_categories`` apply to this
        step only; the same holds for :meth:`as_output_guard` and :meth:`wrap`.

        Example:
            >>> chain = guard.as_input_guard() | prompt | llm  # doctest: +SKIP
        """
        return GuardStep(
            moderator=LlamaGuardModerator(self, excluded_categories, categories=categories),
            stage="input",
            on_unsafe=on_unsafe,
            input_key=input_key,
            name=name,
        )

    def as_output_guard(
        self,
        *,
        on_unsafe: Any = "raise",
        excluded_categories: Iterable[str] | None = None,
        output_key: str | None = None,
        stream_mode: Literal["buffer", "incremental"] = "buffer",
        check_every: int | Literal["sentence"] = 32,
        name: str | None = None,
        categories: Mapping[str, str] | None = None,
    ) -> GuardStep:
        """A Runnable that checks the model's answer (as the Agent turn) and passes it through when safe.

        Example:
            >>> chain = prompt | llm | guard.as_output_guard(on_unsafe="I can't help with that.")  # doctest: +SKIP
        """
        return GuardStep(
            moderator=LlamaGuardModerator(self, excluded_categories, categories=categories),
            stage="output",
            on_unsafe=on_unsafe,
            output_key=output_key,
            stream_mode=stream_mode,
            check_every=check_every,
            name=name,
        )

    def wrap(
        self,
        runnable: Any,
        *,
        on_unsafe: Any = "raise",
        excluded_categories: Iterable[str] | None = None,
        input_key: str | None = None,
        output_key: str | None = None,
        stream_mode: Literal["buffer", "incremental"] = "buffer",
        check_every: int | Literal["sentence"] = 32,
        prompt_guard: Any = None,
        name: str | None = None,
        categories: Mapping[str, str] | None = None,
    ) -> GuardedRunnable:
        """Guard ``runnable`` on both sides; the answer is judged with the user's turn as context.

        With ``prompt_guard=``, the input is also checked by Prompt Guard (both run concurrently).

        Example:
            >>> safe_chain = guard.wrap(prompt | llm, on_unsafe="Sorry, I can't help with that.")  # doctest: +SKIP
        """
        llama = LlamaGuardModerator(self, excluded_categories, categories=categories)
        moderator: Any = llama
        if prompt_guard is not None:
            moderator = CombinedModerator([PromptGuardModerator(prompt_guard), llama])
        return GuardedRunnable(
            bound=coerce_to_runnable(runnable),
            moderator=moderator,
            output_moderator=llama,
            on_unsafe=on_unsafe,
            input_key=input_key,
            output_key=output_key,
            stream_mode=stream_mode,
            check_every=check_every,
            name=name,
        )


class PromptGuard(PromptGuardEngine):
    """Prompt Guard 2 (86M, 22M): scores prompt injection and jailbreaks and makes a LangChain input step.

    Example:
        >>> pg = PromptGuard.from_pretrained("meta-llama/Llama-Prompt-Guard-2-86M")  # doctest: +SKIP
        >>> chain = pg.as_input_guard(llama_guard=guard) | prompt | llm              # doctest: +SKIP
    """

    def as_input_guard(
        self,
        *,
        on_unsafe: Any = "raise",
        input_key: str | None = None,
        llama_guard: Any = None,
        excluded_categories: Any = None,
        name: str | None = None,
    ) -> Any:
        """A Runnable that blocks prompt injection / jailbreaks in the user's turn.

        With ``llama_guard=``, one step runs both guards concurrently on the same input (unsafe if either says so).

        Example:
            >>> chain = pg.as_input_guard(llama_guard=guard) | prompt | llm  # doctest: +SKIP
        """
        moderator: Any = PromptGuardModerator(self)
        if llama_guard is not None:
            moderator = CombinedModerator([moderator, LlamaGuardModerator(llama_guard, excluded_categories)])
        return GuardStep(moderator=moderator, stage="input", on_unsafe=on_unsafe, input_key=input_key, name=name)


__all__ = ["LlamaGuard", "PromptGuard"]
