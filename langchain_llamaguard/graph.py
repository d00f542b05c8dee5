"""Guards as LangGraph nodes: judge the state's newest messages in context and return a state update.

A :class:`GuardNode` (``guard.as_node(...)``) is a node for a plain ``StateGraph``, shaped like langgraph's prebuilt
``ToolNode``: it takes the state, reads its messages (``messages_key``), and returns an update, sync and async.

* A flagged model message or tool result is replaced by a refusal that **reuses its id**, so the state's
  ``add_messages`` reducer swaps it out: the flagged text is gone from the state and from the thread's latest
  checkpoint (the checkpoints of earlier steps keep it; run with ``durability="exit"`` to save only the end
  state). A refusal has no tool calls, so ``tools_condition`` (or any edge that looks for them) ends the run.
* A flagged user turn is replaced by the guard's notice (``[message removed by Llama Guard: ...]``, the agent
  middleware's words, under the turn's id) and gets a refusal after it, so a checkpointed thread's next run does
  not hand the flagged text to the model. A turn without an id (no ``add_messages`` reducer) stays, with the
  refusal after it.
* ``goto=`` / ``goto_safe=`` make the node route with ``Command(goto=...)``: to a node you name, or ``END``.
* ``verdict_key=`` writes the verdicts into the state as plain JSON data (never ``Verdict`` objects), so a
  checkpointer stores and loads them with no "unregistered type" warning. Each record names the node's policy
  (:func:`~langchain_llamaguard.moderators.policy_digest`): an output node skips a model message already judged
  under its own policy only.
* The messages key **must** have langgraph's ``add_messages`` reducer (``MessagesState`` has it): with
  ``operator.add`` the refusal is appended and the flagged text stays; with no reducer the history is replaced by
  the refusal alone.

Which messages it judges (``check``): the newest message when it is of a kind the node checks: ``"input"`` a user
turn (``HumanMessage``, judged with the conversation before it), ``"output"`` a model message (``AIMessage``, its
text and tool calls, judged as the answer to the conversation before it), ``"tool_results"`` the tool results
after the last model message and any note a tool's ``Command`` added beside them (each judged after that message,
in one batch), ``"last"`` whichever of these arrived last (a tool round counts whole, its note included). System
messages after the newest message are skipped over. Anything else passes with no update.

Streaming: every stream mode shows a node's output when that node finishes, so the model node's own update
(``"updates"``) and the state after it (``"values"``) carry the unguarded answer before the guard node replaces
it. To show users only guarded text, forward only what comes after the guard node (its update, or the state
after it), or read the outcome from the state. ``stream_mode="messages"`` shows a model's tokens as the model makes
them, before a guard node after it has judged them, and langgraph does not stream a message again under an id it
has already streamed, so the replacement of a flagged answer is not on that stream (the refusal after a flagged
user turn is). Hold the tokens back, or read the outcome from the state.

Example:
    >>> from langgraph.graph import END, START, MessagesState, StateGraph  # doctest: +SKIP
    >>> builder = StateGraph(MessagesState)                                # doctest: +SKIP
    >>> check_in = guard.as_node(check="input", goto=END, goto_safe="model")    # doctest: +SKIP
    >>> builder.add_node("check_in", check_in, destinations=check_in.destinations)  # doctest: +SKIP
    >>> builder.add_node("model", call_model)                                        # doctest: +SKIP
    >>> builder.add_node("check_out", guard.as_node(check="output"))                 # doctest: +SKIP
    >>> builder.add_edge(START, "check_in")                                          # doctest: +SKIP
    >>> builder.add_edge("model", "check_out")                                       # doctest: +SKIP
    >>> builder.add_edge("check_out", END)                                           # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableConfig

from . import options
from .errors import GuardConfigurationError, GuardInputError, GuardKeyError, GuardTypeError, UnsafeContentError
from .llama_guard import LlamaGuardEngine
from .moderators import AnyVerdict, Moderator, policy_digest
from .prompt_guard import PromptGuardEngine, PromptGuardVerdict
from .replacements import (
    DEFAULT_REFUSAL,
    describe,
    fingerprint,
    guard_written,
    last_index,
    refuse_unread_input,
    removed_turn,
    replacement,
    user_turn,
)
from .retry import NoVerdictFallbacks
from .runnables import achecked, check_on_unsafe, checked

Check = Literal["last", "input", "output", "tool_results"]
PROMPT_GUARD_REFUSAL = "I can't continue: Prompt Guard flagged a likely prompt injection ({categories})."
"""Prompt Guard's default refusal (Llama Guard's is :data:`~langchain_llamaguard.replacements.DEFAULT_REFUSAL`)."""
Stage = Literal["input", "output", "tool_result"]
_STAGES: dict[str, tuple[Stage, ...]] = {
    "last": ("input", "output", "tool_result"),
    "input": ("input",),
    "output": ("output",),
    "tool_results": ("tool_result",),
}


@dataclass
class _Plan:
    """What one run of the node judges: the conversations (one batch), as which role, and where they sit."""

    messages: list[BaseMessage]
    stage: Stage
    role: str
    idxs: list[int]
    convs: list[list[BaseMessage]]


class GuardNode(NoVerdictFallbacks, Runnable[Any, Any]):
    """A LangGraph node that judges the newest messages of the state and returns a state update.

    Made by :meth:`LlamaGuard.as_node <langchain_llamaguard.LlamaGuard.as_node>` and
    :meth:`PromptGuard.as_node <langchain_llamaguard.PromptGuard.as_node>`; see :mod:`~langchain_llamaguard.graph`.

    Args:
        moderator: the guard(s), as a :class:`~langchain_llamaguard.moderators.Moderator`.
        check: which messages: ``"last"`` (default), ``"input"``, ``"output"`` or ``"tool_results"``.
        messages_key: the state's key (or attribute) holding the messages; it needs langgraph's ``add_messages``
            reducer (``MessagesState`` has it), which is what replaces a message by id.
        on_unsafe: ``None`` (default): the refusal of the guard whose verdict flagged the message (Llama Guard's
            ``DEFAULT_REFUSAL`` or Prompt Guard's ``PROMPT_GUARD_REFUSAL``); the refusal text (``{categories}`` is
            filled in with what was flagged); a message; ``"raise"``
            (:class:`~langchain_llamaguard.errors.UnsafeContentError`, and the node writes nothing); or a Runnable
            or callable that receives ``{"messages", "message", "verdict", "stage"}`` and returns the refusal
            (a str or a message).
        goto: where a run goes when something was flagged (a node's name, or ``END``): the node then returns
            ``Command(update=..., goto=goto)``. Needs ``goto_safe``.
        goto_safe: where a run goes when nothing was flagged. A node's static edges run as well as a Command's
            ``goto``, so a node that routes routes both ways and has no ``add_edge`` from it.
        verdict_key: a state key to write the verdicts to, as a list of JSON-able dicts (``verdict.model_dump(
            mode="json")`` plus ``message_id``, ``stage``, ``fingerprint``, a hash of the judged content, and
            ``policy``, the node's guards and what their verdicts depend on: ``node.policy``), one per judged
            message, on every run that judged something. Give it a reducer (``Annotated[list[dict],
            operator.add]``) to keep them all. A later output node of the same policy skips a model message whose
            id and fingerprint are there (one rewritten under the same id is judged again, and so is every message
            by a node of another policy).
        stages: the kinds of message this guard may judge (Prompt Guard: no model output).
        name: the node's name (``builder.add_node(node)`` uses it).

    Example:
        >>> node = guard.as_node(check="output")                          # doctest: +SKIP
        >>> builder.add_node("check_out", node)                           # doctest: +SKIP
        >>> node.invoke({"messages": [HumanMessage(q), AIMessage(a, id="1")]})  # doctest: +SKIP
        {'messages': [AIMessage(content="I can't help with that: ...", id='1')]}
    """

    def __init__(
        self,
        moderator: Moderator,
        *,
        check: Check = "last",
        messages_key: str = "messages",
        on_unsafe: Any = None,
        goto: str | None = None,
        goto_safe: str | None = None,
        verdict_key: str | None = None,
        stages: Sequence[Stage] = ("input", "output", "tool_result"),
        name: str | None = None,
    ) -> None:
        if isinstance(moderator, (LlamaGuardEngine, PromptGuardEngine)) or not isinstance(moderator, Moderator):
            raise GuardConfigurationError(
                f"GuardNode takes a moderator, got {type(moderator).__name__}; build a node from a guard with "
                "guard.as_node(...) (a LlamaGuard or a PromptGuard)"
            )
        if not isinstance(check, str) or check not in _STAGES:
            raise GuardConfigurationError(
                f"check must be one of {', '.join(map(repr, get_args(Check)))}; got {check!r}"
            )
        self.stages = tuple(s for s in _STAGES[check] if s in stages)
        if not self.stages:
            raise GuardConfigurationError(
                f"check={check!r} judges nothing this guard checks ({moderator.name} judges {', '.join(stages)})"
            )
        if (goto is None) != (goto_safe is None):
            raise GuardConfigurationError(
                "pass goto= and goto_safe= together: a node's static edges run as well as a Command's goto, so a "
                "guard node that routes must route both outcomes (and have no add_edge from it); e.g. "
                "goto=END, goto_safe='model'"
            )
        for key, value in (("messages_key", messages_key), ("verdict_key", verdict_key)):
            if value is not None and (not isinstance(value, str) or not value):
                raise GuardConfigurationError(f"{key} must be a state key (a non-empty str); got {value!r}")
        self.moderator = moderator
        self.check = check
        self.messages_key = messages_key
        self.on_unsafe = _check_on_unsafe(on_unsafe)
        self.goto = goto
        self.goto_safe = goto_safe
        self.verdict_key = verdict_key
        self.name = name
        self.policy = f"{moderator.name}:{policy_digest(moderator)}"

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return f"{name or self.name or f'{self.moderator.name}_node'}{suffix or ''}"

    @property
    def destinations(self) -> tuple[str, ...] | None:
        """Where the node routes (``(goto, goto_safe)``), for ``builder.add_node(..., destinations=...)`` so the
        graph's drawing shows the routes; ``None`` when it does not route."""
        return None if self.goto is None else (self.goto, self.goto_safe)  # type: ignore[return-value]

    # -- run --------------------------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, run_type="chain")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain")

    def _invoke(self, state: Any, run_manager: Any, config: RunnableConfig) -> Any:
        plan = self._plan(state)
        if plan is None:
            return self._routed({}, self.goto_safe)
        children = [run_manager.get_child() for _ in plan.convs]
        verdicts = checked(self.moderator, plan.convs, plan.role, children, plan.stage)  # type: ignore[arg-type]
        refusals = [
            None if v.safe else self._refusal_for(plan, i, v, config) for i, v in zip(plan.idxs, verdicts, strict=True)
        ]
        return self._update(plan, verdicts, refusals)

    async def _ainvoke(self, state: Any, run_manager: Any, config: RunnableConfig) -> Any:
        plan = self._plan(state)
        if plan is None:
            return self._routed({}, self.goto_safe)
        children = [run_manager.get_child() for _ in plan.convs]
        verdicts = await achecked(self.moderator, plan.convs, plan.role, children, plan.stage)  # type: ignore[arg-type]
        refusals = [
            None if v.safe else await self._arefusal_for(plan, i, v, config)
            for i, v in zip(plan.idxs, verdicts, strict=True)
        ]
        return self._update(plan, verdicts, refusals)

    # -- shared helpers (the sync and async runs differ only in how the check is awaited) --------------------------
    def _messages(self, state: Any) -> list[BaseMessage]:
        key = self.messages_key
        if isinstance(state, Mapping):
            if key not in state:
                raise GuardKeyError(f"messages_key {key!r} is not in the state; keys: {sorted(map(str, state))}")
            value = state[key]
        elif hasattr(state, key):
            value = getattr(state, key)
        else:
            raise GuardTypeError(
                f"a guard node reads the graph's state: a dict or an object with a {key!r} attribute (messages_key);"
                f" got a {type(state).__name__}"
            )
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise GuardTypeError(
                f"state[{key!r}] must be a list of messages (give the key langgraph's add_messages reducer, as "
                f"MessagesState does); got {type(value).__name__}"
            )
        bad = next((i for i, m in enumerate(value) if not isinstance(m, BaseMessage)), None)
        if bad is not None:
            raise GuardTypeError(
                f"state[{key!r}][{bad}] is a {type(value[bad]).__name__}, not a message: a guard node reads messages. "
                "langgraph's add_messages reducer (MessagesState has it) turns tuples, dicts and strings into "
                "messages, but a Send(node, {...}) payload skips the state's reducers: send messages there "
                "(HumanMessage(...), with an id)"
            )
        return list(value)

    def _plan(self, state: Any) -> _Plan | None:
        messages = self._messages(state)
        if "input" in self.stages:
            refuse_unread_input(messages)
        # The newest message of a kind a guard judges: system messages after it (a parallel branch's notes) do not
        # hide it; nor, from a node that judges only the model's words, user messages or tool results a parallel
        # branch added.
        judged = (AIMessage,) if self.stages == ("output",) else (HumanMessage, AIMessage, ToolMessage)
        end = len(messages)
        while end and not isinstance(messages[end - 1], judged):
            end -= 1
        if not end:
            return None
        last = messages[end - 1]
        if (
            not isinstance(last, AIMessage)
            and "tool_result" in self.stages
            and (plan := self._tool_round(messages, end))
        ):
            return plan
        if isinstance(last, HumanMessage) and "input" in self.stages:
            return _Plan(messages, "input", "User", [end - 1], [messages[:end]])
        if isinstance(last, AIMessage) and "output" in self.stages:
            # Every model message since the last other one (a node may add several; parallel branches do), each
            # judged on its own after the conversation before them, so each flagged one is replaced.
            start = end - 1
            while start > 0 and isinstance(messages[start - 1], AIMessage):
                start -= 1
            judged = self._judged_outputs(state)  # with verdict_key: an earlier guard node's, not judged again
            idxs = [i for i in range(start, end) if i == end - 1 or _seen(messages[i]) not in judged]
            return _Plan(messages, "output", "Agent", idxs, [messages[:start] + [messages[i]] for i in idxs])
        if "input" in self.stages:
            # The user's turn with messages after it that this node does not judge (a caller's assistant "prefill"
            # or tool message sent with the question): the model reads the turn all the same, so it is judged
            # rather than passed unread.
            human = last_index(messages[:end], HumanMessage)
            if human is not None:
                return _Plan(messages, "input", "User", [human], [messages[: human + 1]])
        return None

    @staticmethod
    def _tool_round(messages: list[BaseMessage], end: int) -> _Plan | None:
        """The results of the last model message's tool calls, when the newest messages are: its tool results and
        any other message a tool's ``Command`` added beside them (a user-side note), each judged after the model
        message. A note must not hide the results before it, nor a result the note."""
        last_ai = last_index(messages[:end], AIMessage)
        start = 0 if last_ai is None else last_ai + 1
        if not any(isinstance(m, ToolMessage) and not guard_written(m) for m in messages[start:end]):
            return None  # no round, or one a guard already judged: a user turn after it is a new turn
        idxs = [
            i
            for i in range(start, end)
            if isinstance(messages[i], (HumanMessage, ToolMessage)) and not guard_written(messages[i])
        ]
        return (
            _Plan(messages, "tool_result", "User", idxs, [messages[:start] + [messages[i]] for i in idxs])
            if idxs
            else None
        )

    def _judged_outputs(self, state: Any) -> set[Any]:
        """(id, fingerprint) of the model messages whose output verdict under this node's policy is already in
        ``state[verdict_key]`` (a node of another policy, a lenient one before a strict one, judges them again)."""
        if self.verdict_key is None:
            return set()
        records = state.get(self.verdict_key) if isinstance(state, Mapping) else getattr(state, self.verdict_key, None)
        return {
            (r.get("message_id"), r.get("fingerprint"))
            for r in records or []
            if isinstance(r, Mapping)
            and r.get("stage") == "output"
            and r.get("policy") == self.policy
            and r.get("message_id") is not None
        }

    def _refusal_for(self, plan: _Plan, idx: int, verdict: AnyVerdict, config: RunnableConfig) -> Any:
        if self.on_unsafe == "raise":
            raise UnsafeContentError(verdict, stage=plan.stage)
        if isinstance(self.on_unsafe, Runnable):
            return self.on_unsafe.invoke(self._payload(plan, idx, verdict), config)
        return self._fixed_refusal(verdict)

    async def _arefusal_for(self, plan: _Plan, idx: int, verdict: AnyVerdict, config: RunnableConfig) -> Any:
        if isinstance(self.on_unsafe, Runnable):
            return await self.on_unsafe.ainvoke(self._payload(plan, idx, verdict), config)
        return self._refusal_for(plan, idx, verdict, config)

    @staticmethod
    def _payload(plan: _Plan, idx: int, verdict: AnyVerdict) -> dict[str, Any]:
        return {
            "messages": plan.messages[: idx + 1],
            "message": plan.messages[idx],
            "verdict": verdict,
            "stage": plan.stage,
        }

    def _fixed_refusal(self, verdict: AnyVerdict) -> Any:
        if isinstance(self.on_unsafe, BaseMessage):
            return self.on_unsafe
        text = self.on_unsafe if self.on_unsafe is not None else default_refusal(verdict)
        return text.format(categories=describe(verdict))

    def _placed(self, original: BaseMessage, stage: Stage, refusal: Any) -> BaseMessage:
        """The refusal as it goes into the state: after a user turn (a new id), else in the flagged one's place."""
        if not isinstance(refusal, (str, BaseMessage)):
            raise GuardTypeError(f"on_unsafe must give a str or a message; it gave a {type(refusal).__name__}")
        if stage == "input":
            if isinstance(refusal, str):
                return AIMessage(content=refusal, id=str(uuid.uuid4()))
            return refusal.model_copy(update={"id": str(uuid.uuid4())})  # a fixed id would overwrite the last refusal
        if original.id is None:
            raise GuardInputError(
                f"the flagged {type(original).__name__} has no id, so the node cannot replace it in the state "
                "(langgraph's add_messages reducer replaces a message by its id, and gives one to every message that "
                "goes through it). This one did not go through it: it came in a Send payload (Send(node, {...}) "
                "skips the state's reducers) or in a state handed to the node directly, or the messages key has no "
                "add_messages reducer. Give the message an id where it is made (AIMessage(..., "
                "id=str(uuid.uuid4()))), and the messages key the add_messages reducer (MessagesState has it)"
            )
        if stage == "tool_result" and not isinstance(original, ToolMessage):  # a tool's note keeps its own type
            return replacement(original, refusal if isinstance(refusal, str) else refusal.text)
        if isinstance(refusal, ToolMessage) and isinstance(original, ToolMessage):  # it answers the flagged one's call
            status = refusal.status if "status" in refusal.model_fields_set else "error"
            update = {"id": original.id, "tool_call_id": original.tool_call_id, "name": original.name, "status": status}
            return refusal.model_copy(update=update)
        if isinstance(refusal, BaseMessage) and not (stage == "tool_result" and not isinstance(refusal, ToolMessage)):
            return refusal.model_copy(update={"id": original.id})
        return replacement(original, refusal if isinstance(refusal, str) else refusal.text)

    def _written(
        self, messages: list[BaseMessage], idx: int, stage: Stage, verdict: AnyVerdict, refusal: Any
    ) -> list[BaseMessage]:
        """What goes into the state for a flagged message: the refusal in its place; for a user turn, the guard's
        notice in the place of each of its messages that has an id (a caller may send several at once; same id, as
        the agent middleware writes it) and the refusal after them, so a checkpointed thread's next run hands the
        model neither the flagged text nor judges later turns in its context. A message without an id cannot be
        replaced: it stays, with the refusal after it."""
        placed = self._placed(messages[idx], stage, refusal)
        if stage == "input":
            return [*(removed_turn(m, verdict) for m in user_turn(messages, idx + 1) if m.id is not None), placed]
        return [placed]

    def _update(self, plan: _Plan, verdicts: list[AnyVerdict], refusals: list[Any]) -> Any:
        update: dict[str, Any] = {}
        new = [
            message
            for i, v, r in zip(plan.idxs, verdicts, refusals, strict=True)
            if r is not None
            for message in self._written(plan.messages, i, plan.stage, v, r)
        ]
        if new:
            update[self.messages_key] = new
        if self.verdict_key is not None:
            update[self.verdict_key] = [
                {
                    "message_id": plan.messages[i].id,
                    "stage": plan.stage,
                    "fingerprint": fingerprint(plan.messages[i]),
                    "policy": self.policy,
                    **v.model_dump(mode="json"),
                }
                for i, v in zip(plan.idxs, verdicts, strict=True)
            ]
        return self._routed(update, self.goto if new else self.goto_safe)

    @staticmethod
    def _routed(update: dict[str, Any], goto: str | None) -> Any:
        if goto is None:
            return update
        from langgraph.types import Command

        return Command(update=update, goto=goto)


def default_refusal(verdict: AnyVerdict) -> str:
    """The refusal text when none was given: Prompt Guard's for a Prompt Guard verdict, else Llama Guard's."""
    return PROMPT_GUARD_REFUSAL if isinstance(verdict, PromptGuardVerdict) else DEFAULT_REFUSAL


def _seen(message: BaseMessage) -> tuple[Any, str] | None:
    """The key a model message's verdict record is found by (``None`` for a message with no id: never skipped)."""
    return None if message.id is None else (message.id, fingerprint(message))


def _check_on_unsafe(on_unsafe: Any) -> Any:
    """As a guard step takes it (:func:`~langchain_llamaguard.runnables.check_on_unsafe`), or ``None`` (the
    default refusal); a refusal text is a template that may name the ``{categories}``."""
    if on_unsafe is None:
        return None
    checked_value = check_on_unsafe(on_unsafe)
    if isinstance(checked_value, str) and checked_value != "raise":
        return options.template("on_unsafe", checked_value, categories="S1 Violent Crimes")
    return checked_value


__all__ = ["PROMPT_GUARD_REFUSAL", "Check", "GuardNode", "default_refusal", "fingerprint"]
