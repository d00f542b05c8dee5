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

import collections
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from .errors import GuardTypeError
from .forking import renew_in_child

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


def refuse_unread_input(messages: Sequence[BaseMessage]) -> None:
    """Raise :class:`~langchain_llamaguard.errors.GuardTypeError` for a ``ChatMessage`` or legacy
    ``FunctionMessage`` (or one of their chunks) sent since the model last spoke. Providers send a
    ``ChatMessage(role="user")`` as the user's turn (and one of any role as that role's words), but a guard reads
    none of them, so it would reach the model unjudged: refused instead, as Llama Guard refuses such a message
    wherever it meets one."""
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return
        if isinstance(message, (ChatMessage, FunctionMessage)):
            raise GuardTypeError(
                f"a {type(message).__name__} is not read by the guard: send the user's turn as a HumanMessage (or "
                '{"role": "user", "content": ...}) and a tool\'s result as a ToolMessage'
            )


def user_turn(messages: Sequence[BaseMessage], end: int) -> list[BaseMessage]:
    """The user's turn that ends at ``messages[end - 1]``: that ``HumanMessage`` and the ``HumanMessage`` s before
    it back to the model's last message or a tool result, system messages between them passed over. A caller may
    send several at once (a question and a pasted text, a system note between them); the provider sends them all,
    Llama Guard reads them as one turn, Prompt Guard scans each, and a flagged turn leaves the thread whole.

    Example:
        >>> [m.text for m in user_turn([HumanMessage("a"), SystemMessage("note"), HumanMessage("b")], 3)]
        ['a', 'b']
    """
    start = end
    while start > 0 and isinstance(messages[start - 1], (HumanMessage, SystemMessage)):
        start -= 1
    return [m for m in messages[start:end] if isinstance(m, HumanMessage)]


def answers_to(calling: BaseMessage, after: Sequence[BaseMessage]) -> list[ToolMessage]:
    """The ToolMessages in ``after`` that answer ``calling``'s tool calls: they leave with it when it is replaced
    (no result without its call; ToolStrategy's acknowledgement of a structured answer quotes that answer)."""
    calls = {c.get("id") for c in getattr(calling, "tool_calls", None) or []} - {None}
    return [m for m in after if isinstance(m, ToolMessage) and m.tool_call_id in calls]


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
    text, marked as the guard's own words (:func:`guard_written`)."""
    if isinstance(original, ToolMessage):
        new: BaseMessage = ToolMessage(
            content=refusal, tool_call_id=original.tool_call_id, name=original.name, id=original.id, status="error"
        )
    elif isinstance(original, AIMessage):
        new = AIMessage(content=refusal, id=original.id)
    else:
        new = original.model_copy(update={"content": refusal})
    return marked(new)


def removed_turn(original: BaseMessage, verdict: AnyVerdict) -> BaseMessage:
    """The notice that takes a flagged user turn's place: the same ``id`` (so ``add_messages`` swaps the turn out
    and a checkpointed thread's next run never hands it to the model), the words the agent middleware writes
    (``[message removed by Llama Guard: S9 Indiscriminate Weapons]``, or Prompt Guard's score), marked as the
    guard's own (:func:`marked`).

    Example:
        >>> removed_turn(HumanMessage("flagged text", id="q1"), verdict).id  # doctest: +SKIP
        'q1'
    """
    if getattr(verdict, "category_names", None) is not None:
        text = f"[message removed by Llama Guard: {describe(verdict)}]"
    else:
        text = f"[message removed by Prompt Guard: score {verdict.score:.2f}]"
    return marked(HumanMessage(content=text, id=original.id))


GUARD_WRITTEN = "guard_written"
"""Key in the ``response_metadata`` of a message a guard wrote (a refusal, a notice in a flagged message's place):
a keyed hash of its content (:data:`MARK_KEY_ENV`), so a later check does not judge the guard's own words as input
(an edited message no longer matches, and is judged; a caller cannot forge the mark)."""

MARK_KEY_ENV = "LLAMAGUARD_MARK_KEY"
"""Environment variable holding the secret that keys the marks (:func:`marked`). Unset, each process draws its own:
a guard's notice written by another process (a replica, a restarted server reading its checkpoints) is then judged
again, one extra check of the guard's own words. Set the same secret on every process that shares threads to
spare those checks; never send it to clients, who could then mark their own input as the guard's."""

_PROCESS_KEY = secrets.token_bytes(32)


def _mark(message: BaseMessage) -> str:
    """The mark of ``message``: its :func:`fingerprint`, keyed with the secret (:data:`MARK_KEY_ENV`), since a
    plain hash is what anyone sending a message with ``response_metadata`` (a LangGraph server's input) could
    compute, and a forged mark would skip the input check."""
    key = os.environ.get(MARK_KEY_ENV)
    secret = key.encode("utf-8", "surrogatepass") if key else _PROCESS_KEY
    return hmac.new(secret, fingerprint(message).encode("ascii"), hashlib.sha256).hexdigest()[:32]


def marked(message: BaseMessage) -> BaseMessage:
    """``message`` marked as a guard's own words (see :data:`GUARD_WRITTEN`).

    Example:
        >>> guard_written(marked(AIMessage("I can't help with that."))), guard_written(AIMessage("I can't help."))
        (True, False)
    """
    mark = _mark(message)
    with _WRITTEN_LOCK:
        _WRITTEN_HERE[mark] = None
        _WRITTEN_HERE.move_to_end(mark)
        while len(_WRITTEN_HERE) > _WRITTEN_KEPT:
            _WRITTEN_HERE.popitem(last=False)
    meta = {**(message.response_metadata or {}), GUARD_WRITTEN: mark}
    return message.model_copy(update={"response_metadata": meta})


_WRITTEN_HERE: collections.OrderedDict[str, None] = collections.OrderedDict()
"""Fingerprints of what guards of this process wrote lately (:func:`marked`)."""
_WRITTEN_LOCK = threading.Lock()
renew_in_child(sys.modules[__name__], "_WRITTEN_LOCK")  # held by another thread at a fork: renewed
_WRITTEN_KEPT = 4096


def written_here(message: BaseMessage) -> bool:
    """Whether ``message`` is, unchanged, what a guard of this process wrote lately: a marked message can be copied
    whole (a tool or a remote graph handing back a guard's notice it was given), so a check that skips
    guard-written messages as they are made (the stream transformers judging each other's notices) asks this.

    Example:
        >>> notice = marked(AIMessage("withheld."))
        >>> written_here(notice), guard_written(AIMessage("x", response_metadata={GUARD_WRITTEN: "0" * 32}))
        (True, False)
    """
    if not guard_written(message):
        return False
    with _WRITTEN_LOCK:
        return _mark(message) in _WRITTEN_HERE


def guard_written(message: BaseMessage) -> bool:
    """Whether ``message`` is, unchanged, what a guard wrote (:func:`marked`), with this process's key."""
    meta = getattr(message, "response_metadata", None)
    mark = meta.get(GUARD_WRITTEN) if isinstance(meta, dict) else None
    return isinstance(mark, str) and mark.isascii() and hmac.compare_digest(mark, _mark(message))


def fingerprint(message: BaseMessage) -> str:
    """A hash of what a guard judges in ``message``: its content and tool calls (``verdict_key`` records carry it,
    so a message rewritten under the same id is told apart; the agent middleware's records too).

    Example:
        >>> fingerprint(AIMessage("hi", id="1")) == fingerprint(AIMessage("hi", id="2")) != fingerprint(AIMessage("ho"))
        True
    """
    judged = {
        "content": message.content,
        "tool_calls": [
            {"name": c["name"], "args": c["args"], "id": c.get("id")} for c in getattr(message, "tool_calls", [])
        ],
        "invalid_tool_calls": list(getattr(message, "invalid_tool_calls", [])),
    }
    text = json.dumps(judged, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]  # a lone surrogate is content too


__all__ = [
    "DEFAULT_REFUSAL",
    "GUARD_WRITTEN",
    "MARK_KEY_ENV",
    "describe",
    "fingerprint",
    "guard_written",
    "last_index",
    "marked",
    "removed_turn",
    "replacement",
    "written_here",
]
