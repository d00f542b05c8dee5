"""What takes a flagged message's place: a refusal that reuses the flagged message's ``id`` (so langgraph's
``add_messages`` swaps it out and the flagged text leaves the state), and the words that say why.

Shared by the agent middleware (:mod:`~langchain_llamaguard.middleware`) and the graph nodes
(:mod:`~langchain_llamaguard.graph`), so a flagged message is replaced the same way in both.

Example:
    >>> from langchain_core.messages import AIMessage
    >>> replacement(AIMessage("flagged text", id="run-1"), "I can't help with that.").id
    'run-1'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

if TYPE_CHECKING:  # pragma: no cover
    from .moderators import AnyVerdict

DEFAULT_REFUSAL = "I can't help with that: the request was flagged by Llama Guard ({categories})."
"""The refusal text; ``{categories}`` is filled in with :func:`describe`."""


def last_index(messages: Sequence[BaseMessage], kind: type[BaseMessage]) -> int | None:
    """The index of the last message of type ``kind``, or ``None``."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], kind):
            return i
    return None


def describe(verdict: AnyVerdict) -> str:
    """Why a verdict flagged: its categories (``S9 Indiscriminate Weapons``), or Prompt Guard's label and score."""
    names = getattr(verdict, "category_names", None)
    if names is not None:
        return ", ".join(f"{c} {n}" for c, n in zip(verdict.categories, names, strict=True)) or "unsafe"  # type: ignore[union-attr]
    return f"{verdict.label}, score {verdict.score:.2f}"  # type: ignore[union-attr]


def replacement(original: BaseMessage, refusal: str) -> BaseMessage:
    """The message that takes a flagged model response's or tool result's place: the same ``id`` (a tool result
    keeps its ``tool_call_id`` and ``name`` and gets ``status="error"``; a model response becomes an AIMessage
    without tool calls; another message a tool added, in a ``Command``, keeps its type), with ``refusal`` as its
    text."""
    if isinstance(original, ToolMessage):
        return ToolMessage(
            content=refusal, tool_call_id=original.tool_call_id, name=original.name, id=original.id, status="error"
        )
    if isinstance(original, AIMessage):
        return AIMessage(content=refusal, id=original.id)
    return original.model_copy(update={"content": refusal})


__all__ = ["DEFAULT_REFUSAL", "describe", "last_index", "replacement"]
