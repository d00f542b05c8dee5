"""What a tool hands back to an agent: a ``ToolMessage``, or a ``Command`` whose update carries messages.

Both guard middlewares (and the stream transformer) judge every message inside either shape (a ``Command`` may
add a user or system message beside its ToolMessage, and the model reads it too), put the replacements of
flagged ones back in the same shape, and mark a result whose run must end (``exit_behavior="end"``).

Example:
    >>> from langchain_core.messages import ToolMessage
    >>> result = ToolMessage("18C", tool_call_id="1")
    >>> messages_in(result) == [result]
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, RemoveMessage, ToolMessage, convert_to_messages

from ..errors import GuardInputError
from ..replacements import last_index

END_MARKER = "llama_guard_end_run"
"""Key in a tool result's ``artifact``: the refusal to end the run with (read by ``before_model``).

A tool wrapper cannot end an agent run by itself, so a blocked call's (or a flagged result's) ToolMessage carries
the refusal and the next ``before_model`` hook (which can jump to ``"end"``) ends the run before the model sees
anything."""


def ending_refusal(messages: Sequence[BaseMessage]) -> str | None:
    """The refusal stored by a tool wrapper that wants the run to end, if the last tool round has one."""
    last_ai = last_index(messages, AIMessage)
    for message in messages[(last_ai or 0) + 1 :]:
        artifact = getattr(message, "artifact", None)
        if isinstance(message, ToolMessage) and isinstance(artifact, dict) and END_MARKER in artifact:
            return str(artifact[END_MARKER])
    return None


def marked_to_end(
    messages: Sequence[BaseMessage], replacements: Sequence[BaseMessage | None], refusal: str
) -> list[BaseMessage | None]:
    """``replacements`` with the end-of-run marker on one ToolMessage of a tool's result: a replaced one first,
    else the tool's own (what was flagged is another message of its ``Command``), whose artifact keeps its keys."""
    out = list(replacements)
    for i in sorted(range(len(messages)), key=lambda i: out[i] is None):
        current = out[i] or messages[i]
        if isinstance(current, ToolMessage):
            artifact = current.artifact
            kept = artifact if isinstance(artifact, dict) else {} if artifact is None else {"artifact": artifact}
            out[i] = current.model_copy(update={"artifact": {**kept, END_MARKER: refusal}})
            break
    return out


def _update_dict(command: Any) -> dict[str, Any] | None:
    """A ``Command``'s update as a dict: langgraph also takes ``(key, value)`` pairs or a state object, and applies
    them the same way (``Command._update_as_tuples``)."""
    update = command.update
    if update is None or isinstance(update, dict):
        return update
    as_tuples = getattr(command, "_update_as_tuples", None)
    pairs = list(as_tuples()) if as_tuples is not None else []
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise GuardInputError(
            f"a tool's Command updates {repeated} more than once; the guard judges its messages from one update: "
            "give the update as a dict"
        )
    return dict(pairs)


def normalized(value: Any) -> Any:
    """A tool's result with every message it adds as a ``BaseMessage``, in the same shape: a ``Command``'s
    ``messages`` update given as message-likes (``("user", text)``, ``{"role": ..., "content": ...}``, a single
    message, a tuple) is converted as ``add_messages`` would convert it, so that a guard judges exactly what the
    model will read; an update given as ``(key, value)`` pairs or a state object becomes the equivalent dict. A list
    of ToolMessages / Commands (langgraph's ToolNode accepts one) is normalized item by item."""
    if isinstance(value, list):
        return [normalized(item) for item in value]
    if not hasattr(value, "update") or not hasattr(value, "goto"):  # not a Command
        return value
    update = _update_dict(value)
    if update is not value.update:
        value = dataclasses.replace(value, update=update)
    if not isinstance(update, dict) or "messages" not in update:
        return value
    raw = update["messages"]
    if isinstance(raw, list) and all(isinstance(m, BaseMessage) for m in raw):
        return value
    items = raw if isinstance(raw, list) else [raw]  # add_messages takes anything else as one message-like
    return dataclasses.replace(value, update={**update, "messages": convert_to_messages(items)})


def messages_in(value: Any) -> list[BaseMessage]:
    """Every message a tool's result adds: itself (a ToolMessage), all of a ``Command``'s ``messages`` update
    (a tool may add a user or system message beside its ToolMessage, and the model reads those too), or, for a list
    of ToolMessages / Commands, those of every item. Call :func:`normalized` first."""
    if isinstance(value, ToolMessage):
        return [value]
    if isinstance(value, list):
        return [m for item in value for m in messages_in(item)]
    update = getattr(value, "update", None)
    if isinstance(update, dict) and isinstance(update.get("messages"), list):
        return [m for m in update["messages"] if isinstance(m, BaseMessage)]
    return []


def new_messages(value: Any, known: Sequence[Any], *, model_messages: bool = True) -> list[BaseMessage]:
    """The messages of a tool's result that a guard judges: those the model will read as new, which leaves out a
    ``RemoveMessage``, a message the state already holds as it is (a handoff's ``Command`` carries the history
    along; one that reuses an id with other content replaces that message, and is judged) and, without
    ``model_messages``, an ``AIMessage`` (the model's own words, not input). Call :func:`normalized` first."""
    held = {m.id: m for m in known if isinstance(m, BaseMessage) and m.id is not None}
    return [
        m
        for m in messages_in(value)
        if not isinstance(m, RemoveMessage)
        and not _same(m, held.get(m.id) if m.id is not None else None)
        and (model_messages or not isinstance(m, AIMessage))
    ]


def _same(message: BaseMessage, held: BaseMessage | None) -> bool:
    """Whether ``message`` says what ``held`` says: its content, calls and the fields a guard reads beside them
    (a legacy ``function_call``, reasoning, a refusal; the provider its blocks are read as)."""
    return (
        held is not None
        and type(message) is type(held)
        and message.content == held.content
        and getattr(message, "tool_calls", None) == getattr(held, "tool_calls", None)
        and message.additional_kwargs == held.additional_kwargs
        and message.response_metadata.get("model_provider") == held.response_metadata.get("model_provider")
    )


def with_replaced(value: Any, messages: Sequence[BaseMessage], replacements: Sequence[BaseMessage | None]) -> Any:
    """``value`` with each of ``messages`` swapped for its replacement (``None``: kept), in the same shape."""
    swap = {id(m): r for m, r in zip(messages, replacements, strict=True) if r is not None}
    return _swapped(value, swap) if swap else value


def _swapped(value: Any, swap: dict[int, BaseMessage]) -> Any:
    if isinstance(value, ToolMessage):
        return swap.get(id(value), value)
    if isinstance(value, list):
        return [_swapped(item, swap) for item in value]
    update = getattr(value, "update", None)
    if not isinstance(update, dict) or not isinstance(update.get("messages"), list):
        return value
    new = [swap.get(id(m), m) for m in update["messages"]]
    return dataclasses.replace(value, update={**update, "messages": new})
