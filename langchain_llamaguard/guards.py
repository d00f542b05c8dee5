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

from .documents import DEFAULT_NOTICE, DocumentFilter, OnFlagged, check_llama_options
from .graph import Check, GuardNode
from .llama_guard import LlamaGuardEngine
from .moderators import CombinedModerator, LlamaGuardModerator, PromptGuardModerator
from .parallel import InputCheck, check_input_check
from .prompt_guard import PromptGuardEngine
from .replacements import DEFAULT_REFUSAL
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
        input_check: InputCheck = "before",
    ) -> GuardedRunnable:
        """Guard ``runnable`` on both sides; the answer is judged with the user's turn as context.

        With ``prompt_guard=``, the input is also checked by Prompt Guard (both run concurrently).
        ``input_check="parallel"`` starts ``runnable`` beside the input check (both guards, with ``prompt_guard=``)
        and holds its output until the verdict is in; a flagged input's model call is cancelled (async) or its
        result dropped (sync), so its tokens may be spent (see :mod:`~langchain_llamaguard.parallel`).

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
            input_check=check_input_check(input_check),
        )

    def as_document_filter(
        self,
        *,
        on_flagged: OnFlagged = "drop",
        prompt_guard: Any = None,
        notice: str = DEFAULT_NOTICE,
        excluded_categories: Iterable[str] | None = None,
        categories: Mapping[str, str] | None = None,
        documents_key: str = "documents",
        question_key: str = "question",
        metadata_key: str = "guard",
        name: str | None = None,
    ) -> DocumentFilter:
        """A step that keeps the retrieved documents Llama Guard finds safe (:mod:`~langchain_llamaguard.documents`).

        Each document is judged as the user's turn, or as the answer to the question when the input carries one
        (``{"documents": [...], "question": "..."}``; the keys are ``documents_key`` and ``question_key``, and the
        output is that dict with its documents filtered). With ``prompt_guard=``, Prompt Guard also checks each
        document for injected instructions, in the same step.

        Example:
            >>> chain = retriever | guard.as_document_filter(prompt_guard=pg)  # doctest: +SKIP
        """
        return DocumentFilter(
            llama_guard=self,
            prompt_guard=prompt_guard,
            on_flagged=on_flagged,
            notice=notice,
            excluded_categories=excluded_categories,
            categories=categories,
            documents_key=documents_key,
            question_key=question_key,
            metadata_key=metadata_key,
            name=name,
        )

    def as_node(
        self,
        *,
        check: Check = "last",
        messages_key: str = "messages",
        on_unsafe: Any = DEFAULT_REFUSAL,
        goto: str | None = None,
        goto_safe: str | None = None,
        verdict_key: str | None = None,
        excluded_categories: Iterable[str] | None = None,
        categories: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> GuardNode:
        """A LangGraph node that judges the state's newest message in context and returns a state update
        (:mod:`~langchain_llamaguard.graph`): a flagged model message or tool result is replaced by the refusal
        (same id, so it leaves the state), a flagged user turn is replaced by the guard's notice (same id) and gets
        the refusal after it. With ``goto`` and
        ``goto_safe`` it routes with ``Command(goto=...)``.

        Example:
            >>> builder.add_node("check_out", guard.as_node(check="output"))  # doctest: +SKIP
        """
        return GuardNode(
            LlamaGuardModerator(self, excluded_categories, categories=categories),
            check=check,
            messages_key=messages_key,
            on_unsafe=on_unsafe,
            goto=goto,
            goto_safe=goto_safe,
            verdict_key=verdict_key,
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
        check_llama_options(llama_guard, "input step", excluded_categories=excluded_categories)
        moderator: Any = PromptGuardModerator(self)
        if llama_guard is not None:
            moderator = CombinedModerator([moderator, LlamaGuardModerator(llama_guard, excluded_categories)])
        return GuardStep(moderator=moderator, stage="input", on_unsafe=on_unsafe, input_key=input_key, name=name)

    def as_document_filter(
        self,
        *,
        on_flagged: OnFlagged = "drop",
        llama_guard: Any = None,
        notice: str = DEFAULT_NOTICE,
        excluded_categories: Iterable[str] | None = None,
        documents_key: str = "documents",
        question_key: str = "question",
        metadata_key: str = "guard",
        name: str | None = None,
    ) -> DocumentFilter:
        """A step that keeps the retrieved documents with no injected instructions (indirect prompt injection).

        Every document is scored in one batch, a long one in overlapping windows. With ``llama_guard=``, Llama
        Guard also checks each document for unsafe content, in the same step (see
        :mod:`~langchain_llamaguard.documents`).

        Example:
            >>> chain = retriever | pg.as_document_filter(llama_guard=guard, on_flagged="notice")  # doctest: +SKIP
        """
        return DocumentFilter(
            prompt_guard=self,
            llama_guard=llama_guard,
            on_flagged=on_flagged,
            notice=notice,
            excluded_categories=excluded_categories,
            documents_key=documents_key,
            question_key=question_key,
            metadata_key=metadata_key,
            name=name,
        )

    def as_node(
        self,
        *,
        check: Literal["last", "input", "tool_results"] = "last",
        messages_key: str = "messages",
        on_unsafe: Any = None,
        goto: str | None = None,
        goto_safe: str | None = None,
        verdict_key: str | None = None,
        llama_guard: Any = None,
        excluded_categories: Iterable[str] | None = None,
        name: str | None = None,
    ) -> GuardNode:
        """A LangGraph node that scores the state's newest user turn or tool results for prompt injection
        (:mod:`~langchain_llamaguard.graph`): a flagged tool result is replaced by the refusal (same id), a flagged
        user turn by the guard's notice (same id), with the refusal after it. With ``llama_guard=``, Llama Guard
        judges the same messages too (``excluded_categories`` needs it); the
        default refusal (``on_unsafe=None``) is that of the guard that flagged (``PROMPT_GUARD_REFUSAL`` or Llama
        Guard's ``DEFAULT_REFUSAL``).

        Example:
            >>> builder.add_node("scan_tools", pg.as_node(check="tool_results"))  # doctest: +SKIP
        """
        check_llama_options(llama_guard, "node", excluded_categories=excluded_categories)
        moderator: Any = PromptGuardModerator(self)
        if llama_guard is not None:
            moderator = CombinedModerator([moderator, LlamaGuardModerator(llama_guard, excluded_categories)])
        return GuardNode(
            moderator,
            check=check,
            messages_key=messages_key,
            on_unsafe=on_unsafe,
            goto=goto,
            goto_safe=goto_safe,
            verdict_key=verdict_key,
            stages=("input", "tool_result"),
            name=name,
        )


__all__ = ["LlamaGuard", "PromptGuard"]
