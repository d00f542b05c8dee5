"""A guard's decision taken inside ``wrap_model_call``, the one hook that runs right before every model call.

``before_model`` hooks are nodes of their own: a run forked from a checkpoint taken after them (LangGraph's "edit
a message and re-run", ``update_state`` then ``invoke(None, fork)``) goes straight to the model node. A guard that
must see everything the model reads judges what no check judged yet in ``wrap_model_call``, and acts there:

* flagged messages are replaced by id, in the request the model is sent and in the agent state (a ``Command``
  beside the model's response, :class:`~langchain.agents.middleware.types.ExtendedModelResponse`);
* to end the run, the model is not called: the refusal is the model node's answer (it has no tool calls, so the
  agent stops after it).

Example:
    >>> from langchain_core.messages import AIMessage
    >>> decision = Late(replacements=[], answer=AIMessage("I can't continue."))
    >>> decision.answer.text
    "I can't continue."
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage


@dataclass
class Late:
    """What a guard decided before a model call: messages to replace (by id), and the answer that ends the run
    (``None``: the model is called, on the request with the replacements)."""

    replacements: list[BaseMessage]
    answer: AIMessage | None = None
    update: dict[str, Any] = field(default_factory=dict)
    """More state to write (the guard's records)."""


def rewritten(request: Any, replacements: list[BaseMessage]) -> Any:
    """``request`` with each message that has a replacement's id swapped for it."""
    by_id = {m.id: m for m in replacements if m.id is not None}
    if not by_id:
        return request
    return request.override(messages=[by_id.get(m.id, m) if m.id is not None else m for m in request.messages])


def extended(response: Any, late: Late) -> Any:
    """The model's ``response`` with ``late``'s replacements and records written beside it (a ``Command``)."""
    from langchain.agents.middleware.types import ExtendedModelResponse, ModelResponse
    from langgraph.types import Command

    if isinstance(response, AIMessage):
        response = ModelResponse(result=[response])
    elif isinstance(response, ExtendedModelResponse):  # handlers return ModelResponse; kept for safety
        response = response.model_response
    update = {**late.update, **({"messages": late.replacements} if late.replacements else {})}
    return ExtendedModelResponse(model_response=response, command=Command(update=update) if update else None)


def refused_turn(update: dict[str, Any] | None, state: Any) -> dict[str, Any] | None:
    """``update``, and when it ends the turn (``jump_to="end"``) while an earlier turn's structured answer is still in
    the state (a checkpointed thread keeps ``structured_response``), that answer cleared: a refused turn has none,
    and a caller reads ``result["structured_response"]`` as the answer to the turn it sent.

    Example:
        >>> refused_turn({"jump_to": "end"}, {"structured_response": {"answer": "Paris"}})
        {'jump_to': 'end', 'structured_response': None}
    """
    if (
        update
        and update.get("jump_to") == "end"
        and "structured_response" not in update
        and isinstance(state, dict)
        and state.get("structured_response") is not None
    ):
        return {**update, "structured_response": None}
    return update


def answered(request: Any, handler: Callable[[Any], Any], late: Late) -> Any:
    """The model call's outcome under ``late``: its answer, or the model's on the rewritten request."""
    response = late.answer if late.answer is not None else handler(rewritten(request, late.replacements))
    return extended(response, late)


async def aanswered(request: Any, handler: Callable[[Any], Awaitable[Any]], late: Late) -> Any:
    response = late.answer if late.answer is not None else await handler(rewritten(request, late.replacements))
    return extended(response, late)


def inner_commands(handler: Callable[..., Any]) -> list[Any] | None:
    """The state updates the middlewares listed after this one returned with their response, or ``None`` when
    ``handler`` calls the model directly. LangChain (``langchain.agents.factory``, ``compose_two``) keeps the inner
    middlewares' ``Command`` s of the *last* handler call in the handler's closure and applies them with the outer
    middleware's answer; a guard that throws a call's response away clears them too, or a discarded answer's
    updates (an audit or memory middleware's) would land in the state.

    Example:
        >>> inner_commands(lambda request: None) is None
        True
    """
    code, closure = getattr(handler, "__code__", None), getattr(handler, "__closure__", None)
    if code is None or not closure:
        return None
    cell = dict(zip(code.co_freevars, closure, strict=False)).get("accumulated_commands")
    try:
        found = cell.cell_contents if cell is not None else None
    except ValueError:  # an empty cell
        return None
    return found if isinstance(found, list) else None


__all__ = ["Late", "aanswered", "answered", "extended", "inner_commands", "refused_turn", "rewritten"]
