"""What a tool hands back to an agent: a ``ToolMessage``, or a ``Command`` whose update carries ToolMessages.

Both guard middlewares (and the stream transformer) judge the ToolMessages inside either shape, and put the
replacements of flagged ones back in the same shape.

Example:
    >>> from langchain_core.messages import ToolMessage
    >>> result = ToolMessage("18C", tool_call_id="1")
    >>> tool_messages_in(result) == [result]
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage


def tool_messages_in(value: Any) -> list[ToolMessage]:
    """The ToolMessages a tool's result carries: itself, or those in a ``Command``'s ``messages`` update."""
    return [m for m in messages_in(value) if isinstance(m, ToolMessage)]


def messages_in(value: Any) -> list[BaseMessage]:
    """Every message a tool's result adds: itself (a ToolMessage), or all of a ``Command``'s ``messages`` update
    (a tool may add a user or system message beside its ToolMessage, and the model reads those too)."""
    if isinstance(value, ToolMessage):
        return [value]
    update = getattr(value, "update", None)
    if isinstance(update, dict) and isinstance(update.get("messages"), list):
        return [m for m in update["messages"] if isinstance(m, BaseMessage)]
    return []


def with_replaced(value: Any, messages: Sequence[BaseMessage], replacements: Sequence[BaseMessage | None]) -> Any:
    """``value`` with each of ``messages`` swapped for its replacement (``None``: kept), in the same shape."""
    swap = {id(m): r for m, r in zip(messages, replacements, strict=True) if r is not None}
    if not swap:
        return value
    if isinstance(value, ToolMessage):
        return swap.get(id(value), value)
    update = value.update
    new = [swap.get(id(m), m) for m in update["messages"]]
    return dataclasses.replace(value, update={**update, "messages": new})
