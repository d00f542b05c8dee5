"""Llama Guard as ``create_agent`` middleware: the user's turn, every model response, every tool call and
(optionally) every tool result are checked, in context, before they can do anything.

Known pitfalls of the middleware API, and how this class handles each:

* a jump to ``"end"`` is ignored unless the hook declares it: every hook that ends the run has
  ``@hook_config(can_jump_to=["end"])``;
* ending from ``after_agent`` re-runs that hook (and loops if the refusal is flagged again): model responses
  are checked in ``after_model``, never in ``after_agent``;
* returning a new message appends it and leaves the unsafe one in state: flagged model responses and tool
  results are replaced by a message that **reuses their id**;
* a hook written only in sync form runs on the event loop under ``ainvoke``: every hook has an async twin
  that runs the model in a worker thread; both share the same private helpers;
* two instances of one middleware class need distinct ``name`` s: each instance gets a unique default name;
* flagged content should stay out of traces: the hook spans record no message payload (``trace_policy``),
  and errors carry the verdict, not the text;
* ``after_model`` hooks run in reverse list order: list this middleware **last**, so it judges a response before
  any other middleware (``HumanInTheLoopMiddleware`` and its interrupt, say) acts on it;
* hooks clean the state, not the live stream: where langgraph has stream transformers, a
  :mod:`~langchain_llamaguard.middleware.stream_guard` transformer holds streamed output until it is judged, so a
  ``stream_events(version="v3")`` consumer never sees a flagged message either.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState, hook_config
from langchain.agents.middleware.types import PrivateStateAttr
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, ToolMessage

from .. import options
from ..errors import GuardConfigurationError, UnsafeContentError
from ..moderators import AnyVerdict, LlamaGuardModerator, Moderator, policy_digest
from ..parallel import InputCheck, acall_overlapped, call_overlapped, check_input_check
from ..replacements import (
    DEFAULT_REFUSAL,
    answers_to,
    fingerprint,
    guard_written,
    marked,
    refuse_unread_input,
    removed_turn,
    replacement,
    user_turn,
)
from ..replacements import describe as _describe
from ..replacements import last_index as _last_index
from .model_call import Late, aanswered, answered, extended, inner_commands, refused_turn
from .stream_guard import Judgment, stream_transformers
from .tool_output import END_MARKER, ending_refusal, marked_to_end, new_messages, normalized, with_replaced

ExitBehavior = Literal["end", "error", "replace"]
DEFAULT_TOOL_REFUSAL = "Tool call blocked by Llama Guard before it ran ({categories})."
_COUNTERS: dict[str, itertools.count] = {}
VERDICT_CACHE_SIZE = 256
"""Recent verdicts a middleware keeps, so the stream transformer's check and the hook's are one model call."""


def unique_name(cls_name: str) -> str:
    counter = _COUNTERS.setdefault(cls_name, itertools.count(1))
    n = next(counter)
    return cls_name if n == 1 else f"{cls_name}_{n}"


def no_payload_trace_policy() -> Any:
    """A ``TracePolicy`` that keeps hook spans and timings but records no messages (where LangChain has it)."""
    try:
        from langgraph.types import TracePolicy, omit_payload
    except ImportError:  # older langgraph: no trace policies
        return None
    return TracePolicy(process_inputs=omit_payload, process_outputs=omit_payload)


INPUT_JUDGED_KEY = "llama_guard_input_judged"
"""Private agent-state key of ``input_check="parallel"``: ``{middleware name: whether this run's user turn was
judged}``, set to ``False`` by ``before_agent`` and to ``True`` by the model call that overlapped the check."""


def _merge_flags(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    return {**(old or {}), **(new or {})}


OUTPUT_JUDGED_KEY = "llama_guard_output_judged"
"""Private agent-state key: ``{record: id of the last model message its after_model judged}`` (``None`` before the
first), kept by a checkpointed thread. A run that stopped between the model node and after_model
(``exit_behavior="error"``, a cancelled stream, a crash) leaves an unjudged model message in the thread: the next
run's before_agent judges it first. A call without a checkpointer starts without the key and judges no history.
The record is named after the middleware's policy (:meth:`LlamaGuardMiddleware.record`), not its instance, so an
agent built again (once per request, after a restart) finds the record of the one before."""

INPUT_SEEN_KEY = "llama_guard_input_seen"
"""Private agent-state key: ``{record: id and fingerprint of the user turn its input check last judged}``. Before
every model call, a user turn that does not match (edited or added after the run began: a fork from a later
checkpoint, ``update_state``) is judged then."""


class LlamaGuardState(AgentState):
    """The agent state plus the parallel input check's private flags (a reducer, so that several middlewares
    can set theirs in one step)."""

    llama_guard_input_judged: NotRequired[Annotated[dict[str, bool], PrivateStateAttr, _merge_flags]]
    llama_guard_output_judged: NotRequired[Annotated[dict[str, str], PrivateStateAttr, _merge_flags]]
    llama_guard_input_seen: NotRequired[Annotated[dict[str, str], PrivateStateAttr, _merge_flags]]


def _flagged(found: Sequence[Sequence[AnyVerdict]]) -> bool:
    return any(not v.safe for verdicts in found for v in verdicts)


def _seen(message: BaseMessage) -> str:
    """What :data:`INPUT_SEEN_KEY` records of a judged user turn: its id and its content's fingerprint."""
    return f"{message.id}:{fingerprint(message)}"


@dataclass
class _Check:
    """One hook's check: the conversations to judge (in one batch), as which role, and where they sit."""

    convs: list[list[BaseMessage]]
    role: str
    idxs: list[int]
    messages: list[BaseMessage]
    stage: str
    structured: bool = False


class LlamaGuardMiddleware(AgentMiddleware):
    """Llama Guard moderation for ``langchain.agents.create_agent``, shaped like ``PIIMiddleware``.

    Args:
        guard: a :class:`~langchain_llamaguard.LlamaGuard`.
        apply_to_input: check the user's last turn once, before the first model call.
        apply_to_output: check every model response before it is returned or its tool calls run.
        apply_to_tool_calls: check each tool call (name and arguments, in context) before the tool executes.
        apply_to_tool_results: check each tool result as the tool returns it, before it enters the state.
        excluded_categories: categories this middleware does not check (overrides the guard's).
        categories: a custom policy for this middleware (``{"S1": "Violent Crimes.", "S15": "Fraud."}``; see
            :func:`~langchain_llamaguard.taxonomy.default_categories`), replacing the guard's list.
        exit_behavior: on unsafe content: ``"end"`` (default) replaces a flagged model response (same id), or a
            flagged user turn by a notice (same id) followed by a refusal, and ends the run; ``"error"`` raises
            :class:`UnsafeContentError` carrying the verdict; ``"replace"`` rewrites the flagged message in place
            (same id) with the refusal and lets the agent continue. A flagged tool call never executes.
        on_unsafe: alias of ``exit_behavior``.
        refusal_message: text of refusals; ``{categories}`` is filled in.
        tool_refusal_message: the tool result returned for a blocked tool call.
        name: the middleware's name (unique by default).
        omit_payload_from_traces: keep message payloads out of this middleware's hook spans.
        input_check: ``"before"`` (default) judges the user's turn before the first model call; ``"parallel"``
            starts the first model call beside that check (in ``wrap_model_call``) and holds its response, so every
            tool call too, until the verdict is in; its tokens are not streamed (``stream_mode="messages"`` gets the
            message whole). A flagged input's model call is cancelled (async) or its result dropped (sync: the call
            runs on in a thread, its tokens are spent), and the outcome follows ``exit_behavior``: ``"end"`` answers
            with the refusal, ``"error"`` raises, ``"replace"`` rewrites the user's turn (same id) and calls the
            model again on it. See :mod:`~langchain_llamaguard.parallel`.

    Example:
        >>> from langchain.agents import create_agent
        >>> agent = create_agent(model, tools, middleware=[LlamaGuardMiddleware(guard)])  # doctest: +SKIP
    """

    state_schema = LlamaGuardState

    def __init__(
        self,
        guard: Any,
        *,
        apply_to_input: bool = True,
        apply_to_output: bool = True,
        apply_to_tool_calls: bool = True,
        apply_to_tool_results: bool = False,
        excluded_categories: Iterable[str] | None = None,
        exit_behavior: ExitBehavior | None = None,
        on_unsafe: ExitBehavior | None = None,
        refusal_message: str = DEFAULT_REFUSAL,
        tool_refusal_message: str = DEFAULT_TOOL_REFUSAL,
        name: str | None = None,
        omit_payload_from_traces: bool = True,
        categories: Mapping[str, str] | None = None,
        input_check: InputCheck = "before",
    ) -> None:
        super().__init__()
        self.input_check: InputCheck = check_input_check(input_check)
        if exit_behavior is not None and on_unsafe is not None and exit_behavior != on_unsafe:
            raise GuardConfigurationError("pass exit_behavior or its alias on_unsafe, not both")
        behavior = exit_behavior if exit_behavior is not None else on_unsafe if on_unsafe is not None else "end"
        if behavior not in ("end", "error", "replace"):
            raise GuardConfigurationError(f"exit_behavior must be 'end', 'error' or 'replace', got {behavior!r}")
        self.moderator: Moderator = LlamaGuardModerator(
            guard, excluded_categories, cache_size=VERDICT_CACHE_SIZE, categories=categories
        )
        self.apply_to_input = options.flag("apply_to_input", apply_to_input)
        self.apply_to_output = options.flag("apply_to_output", apply_to_output)
        self.apply_to_tool_calls = options.flag("apply_to_tool_calls", apply_to_tool_calls)
        self.apply_to_tool_results = options.flag("apply_to_tool_results", apply_to_tool_results)
        if not (apply_to_input or apply_to_output or apply_to_tool_calls or apply_to_tool_results):
            raise GuardConfigurationError(
                "every apply_to_* option is False: this middleware would check nothing and pass every message "
                "unguarded; set at least one of apply_to_input, apply_to_output, apply_to_tool_calls, "
                "apply_to_tool_results (or leave the middleware out)"
            )
        self.exit_behavior: ExitBehavior = behavior  # type: ignore[assignment]
        example = "S9 Indiscriminate Weapons"
        self.refusal_message = options.template("refusal_message", refusal_message, categories=example)
        self.tool_refusal_message = options.template("tool_refusal_message", tool_refusal_message, categories=example)
        self._name = name or unique_name(type(self).__name__)
        self.record = self._policy_record()
        if omit_payload_from_traces:
            self.trace_policy = no_payload_trace_policy()
        kinds = {"output"} if apply_to_output else set()
        self.stream_kinds = frozenset(kinds | ({"tool_result"} if apply_to_tool_results else set()))
        self.transformers = stream_transformers(self)

    @property
    def name(self) -> str:
        return self._name

    def _policy_record(self) -> str:
        """The name of this middleware's records in the agent state: its class and what its checks judge by
        (:func:`~langchain_llamaguard.moderators.policy_digest`), the same for every instance built alike, in any
        process."""
        return f"{type(self).__name__}:{policy_digest(self.moderator)}"

    # -- shared helpers (the sync and async hooks differ only in how the check is awaited) ---------------------
    def _refusal(self, verdict: AnyVerdict) -> str:
        return self.refusal_message.format(categories=_describe(verdict))

    def _plan(self, stage: str, state: Any) -> _Check | dict[str, Any] | None:
        """What a hook must check (a :class:`_Check`), an update to return at once, or ``None`` (nothing to do)."""
        messages = list(state["messages"])
        if stage == "input":
            if self.apply_to_input:
                refuse_unread_input(messages)
            idx = _last_index(messages, HumanMessage) if self.apply_to_input else None
            if idx is None:
                return None
            return _Check([messages[: idx + 1]], "User", [idx], messages, "input")
        if stage == "output":
            # The answer is the last AIMessage, not always the last message: with response_format the model node
            # adds a ToolMessage acknowledging it (ToolStrategy), and another middleware's after_model, run before
            # this one, may add ToolMessages after it (ToolCallLimitMiddleware and TodoListMiddleware do).
            structured = state.get("structured_response") is not None
            idx = _last_index(messages, AIMessage)
            if not self.apply_to_output or idx is None:
                return None
            if guard_written(messages[idx]):  # a guard's refusal in the model's place
                return None
            return _Check([messages[: idx + 1]], "Agent", [idx], messages, "output", structured)
        refusal = ending_refusal(messages)  # stage == "tool_results", in before_model
        if refusal is not None:
            return {"messages": [AIMessage(content=refusal)], "jump_to": "end"}
        last_ai = _last_index(messages, AIMessage) if self.apply_to_tool_results else None
        if last_ai is None:
            return None
        idxs = [
            i
            for i in range(last_ai + 1, len(messages))
            if isinstance(messages[i], ToolMessage) and not guard_written(messages[i])  # not a guard's refusal
        ]
        context = messages[: last_ai + 1]
        return _Check([context + [messages[i]] for i in idxs], "User", idxs, messages, "tool_result") if idxs else None

    def _finish(self, check: _Check, verdicts: Sequence[AnyVerdict]) -> dict[str, Any] | None:
        flagged = [(idx, v) for idx, v in zip(check.idxs, verdicts, strict=True) if not v.safe]
        if not flagged:
            return None
        (idx, verdict), rest = flagged[0], flagged[1:]
        update = self._on_violation(check.messages, idx, check.stage, verdict)
        # Several tool results of one round may be flagged: each is replaced (by id), not only the first.
        for idx, verdict in rest:
            update["messages"].append(self._replacement(check.messages[idx], verdict))
        return update

    def _run(self, stage: str, state: Any) -> dict[str, Any] | None:
        plan = self._plan(stage, state)
        if not isinstance(plan, _Check):
            return plan
        verdicts = self.moderator.check(plan.convs, role=plan.role)
        return self._mark(plan, self._structured(plan, self._finish(plan, verdicts)))

    async def _arun(self, stage: str, state: Any) -> dict[str, Any] | None:
        plan = self._plan(stage, state)
        if not isinstance(plan, _Check):
            return plan
        verdicts = await self.moderator.acheck(plan.convs, role=plan.role)
        return self._mark(plan, self._structured(plan, self._finish(plan, verdicts)))

    def _mark(self, plan: _Check, update: dict[str, Any] | None) -> dict[str, Any] | None:
        """Record the model message after_model judged (safe, or replaced under the same id), and the user turn the
        input check judged safe (a flagged one is replaced by the guard's notice)."""
        if plan.stage == "input" and update is None:
            return {INPUT_SEEN_KEY: {self.record: _seen(plan.messages[plan.idxs[0]])}}
        judged = plan.messages[plan.idxs[0]].id if plan.stage == "output" else None
        if judged is None:
            return update
        return {**(update or {}), OUTPUT_JUDGED_KEY: {self.record: judged}}

    def _leftover_plan(self, state: Any) -> _Check | dict[str, Any] | None:
        """The thread's last model message before this run's user turn, when no after_model of this middleware
        judged it (the run that wrote it stopped before its after_model); on a thread's first run, the update that
        starts its record (a caller's own history, without a checkpointer, is not judged again)."""
        if not self.apply_to_output:
            return None
        judged = state.get(OUTPUT_JUDGED_KEY) or {}
        others = [v for k, v in judged.items() if k != self.record and v is not None]
        if self.record not in judged and not others:  # no model message of this thread was judged before
            return {OUTPUT_JUDGED_KEY: {self.record: None}}
        messages = list(state["messages"])
        human = _last_index(messages, HumanMessage)
        idx = _last_index(messages[:human], AIMessage) if human else None
        if idx is None or messages[idx].id is None or guard_written(messages[idx]):
            return None
        # judged by a middleware of this policy; or, the first time this policy meets the thread, by another one
        last = messages[idx].id
        if judged[self.record] == last if self.record in judged else last in others:
            return None
        return _Check([messages[: idx + 1]], "Agent", [idx], messages, "output")

    def _leftover_turn(self, state: Any) -> _Check | None:
        """The user turn before the thread's last model message, when no input check of this policy judged it: a
        middleware listed before the guard ended that run in its ``before_agent`` (a quota's "out of credits"), or
        the run stopped before its first model call in ``"parallel"`` mode. Only on a thread with a record of an
        earlier judged turn (a caller's own history, without a checkpointer, is not judged again)."""
        recorded = (state.get(INPUT_SEEN_KEY) or {}).get(self.record) if self.apply_to_input else None
        if recorded is None:
            return None
        messages = list(state["messages"])
        human = _last_index(messages, HumanMessage)
        if human is None or _seen(messages[human]) == recorded:  # a run without a turn of its own (a tool's result)
            return None
        model = _last_index(messages[:human], AIMessage) if human else None
        idx = _last_index(messages[:model], HumanMessage) if model else None
        if idx is None or guard_written(messages[idx]) or _seen(messages[idx]) == recorded:
            return None
        return _Check([messages[: idx + 1]], "User", [idx], messages, "input")

    def _repaired_turn(self, plan: _Check, verdict: AnyVerdict, state: Any) -> tuple[dict[str, Any], Any]:
        """A flagged leftover turn's notices (same ids: it leaves the thread before the model reads it again), and
        the state the rest of ``before_agent`` then reads."""
        if verdict.safe:
            return {}, state
        notices = {id(m): removed_turn(m, verdict) for m in user_turn(plan.messages, plan.idxs[0] + 1)}
        messages = [notices.get(id(m), m) for m in state["messages"]]
        return {"messages": list(notices.values())}, {**state, "messages": messages}

    def _repaired(self, plan: _Check, verdict: AnyVerdict, state: Any) -> tuple[dict[str, Any], Any]:
        """The update that records (and, flagged, replaces by id) a leftover model message, and the state the
        input check then reads (with the replacement in place)."""
        idx = plan.idxs[0]
        update: dict[str, Any] = {OUTPUT_JUDGED_KEY: {self.record: plan.messages[idx].id}}
        if verdict.safe:
            return update, state
        fixed = self._replacement(plan.messages[idx], verdict)
        messages = [fixed if i == idx else m for i, m in enumerate(plan.messages)]
        return {**update, "messages": [fixed]}, {**state, "messages": messages}

    @staticmethod
    def _merged(first: dict[str, Any], second: dict[str, Any] | None) -> dict[str, Any] | None:
        """Two updates of one hook as one (their messages in order); ``None`` for none."""
        if not second:
            return first or None
        if not first:
            return second
        messages = [*first.get("messages", []), *second.get("messages", [])]
        return {**first, **second, **({"messages": messages} if messages else {})}

    def _before_agent(self, state: Any) -> dict[str, Any] | None:
        plan = self._leftover_plan(state)
        repair: dict[str, Any] = plan if isinstance(plan, dict) else {}  # a thread's first run: its record
        if isinstance(plan, _Check):
            repair, state = self._repaired(plan, self.moderator.check(plan.convs, role=plan.role)[0], state)
        if (turn := self._leftover_turn(state)) is not None:
            fixed, state = self._repaired_turn(turn, self.moderator.check(turn.convs, role=turn.role)[0], state)
            repair = self._merged(repair, fixed) or {}
        rest = self._pending_input() if self.input_check == "parallel" else self._run("input", state)
        return self._merged(repair, rest)

    async def _abefore_agent(self, state: Any) -> dict[str, Any] | None:
        plan = self._leftover_plan(state)
        repair: dict[str, Any] = plan if isinstance(plan, dict) else {}  # a thread's first run: its record
        if isinstance(plan, _Check):
            verdict = (await self.moderator.acheck(plan.convs, role=plan.role))[0]
            repair, state = self._repaired(plan, verdict, state)
        if (turn := self._leftover_turn(state)) is not None:
            verdict = (await self.moderator.acheck(turn.convs, role=turn.role))[0]
            fixed, state = self._repaired_turn(turn, verdict, state)
            repair = self._merged(repair, fixed) or {}
        rest = self._pending_input() if self.input_check == "parallel" else await self._arun("input", state)
        return self._merged(repair, rest)

    @staticmethod
    def _structured(plan: _Check, update: dict[str, Any] | None) -> dict[str, Any] | None:
        """A flagged structured answer: its structured_response cleared, the ToolMessages acknowledging it (which
        quote it) removed, and the run ended (there is no safe structured answer to go on with)."""
        if update is None or not plan.structured:
            return update
        return {**update, "structured_response": None, "jump_to": "end"}  # its acknowledgement left with it

    def _on_violation(
        self, messages: Sequence[BaseMessage], idx: int, stage: str, verdict: AnyVerdict
    ) -> dict[str, Any]:
        if self.exit_behavior == "error":
            raise UnsafeContentError(verdict, stage=stage)
        original = messages[idx]
        if stage == "input":
            # The flagged turn leaves the thread in both cases (same id): a checkpointed thread's next run would
            # otherwise send it to the model, and judge every later turn in its context.
            # Every message of the turn: a caller may send several at once, and they were judged as one turn.
            notices = [removed_turn(m, verdict) for m in user_turn(messages, idx + 1)]
            if self.exit_behavior == "end":
                return {"messages": [*notices, marked(AIMessage(content=self._refusal(verdict)))], "jump_to": "end"}
            return {"messages": notices}
        update: dict[str, Any] = {"messages": [self._replacement(original, verdict)]}
        if stage == "output":  # the results answering its calls (another after_model's, ToolStrategy's) go with it
            update["messages"] += [RemoveMessage(id=m.id) for m in answers_to(original, messages[idx + 1 :]) if m.id]
            # No jump: the refusal calls no tool, so the run ends after the other middlewares' after_model hooks,
            # which still run (ModelCallLimitMiddleware counts the call there).
            return update
        if self.exit_behavior == "end":
            update["jump_to"] = "end"
        return update

    def _replacement(self, original: BaseMessage, verdict: AnyVerdict) -> BaseMessage:
        """The refusal that takes a flagged response's or tool result's place: same id, so the unsafe text leaves
        the state (and the stream shows the same)."""
        return replacement(original, self._refusal(verdict))

    # -- the stream transformer's judge (see stream_guard.py) ------------------------------------------------
    def _stream_plan(self, items: Sequence[Judgment]) -> dict[str, list[int]]:
        by_role: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_role.setdefault("Agent" if item.kind == "output" else "User", []).append(i)
        return by_role

    @staticmethod
    def _stream_conversation(item: Judgment) -> list[BaseMessage]:
        context = item.context
        if item.kind == "tool_result":  # judged like before_model does: the last AI turn, then the result
            last_ai = _last_index(context, AIMessage)
            context = context[: last_ai + 1] if last_ai is not None else context
        return [*context, item.message]

    def _stream_outcome(self, items: Sequence[Judgment], verdicts: dict[int, AnyVerdict]) -> list[BaseMessage | None]:
        return [
            None if verdicts[i].safe else self._replacement(item.message, verdicts[i]) for i, item in enumerate(items)
        ]

    def judge_stream(self, items: Sequence[Judgment]) -> list[BaseMessage | None]:
        verdicts: dict[int, AnyVerdict] = {}
        for role, idxs in self._stream_plan(items).items():
            found = self.moderator.check([self._stream_conversation(items[i]) for i in idxs], role=role)
            verdicts.update(zip(idxs, found, strict=True))
        return self._stream_outcome(items, verdicts)

    async def ajudge_stream(self, items: Sequence[Judgment]) -> list[BaseMessage | None]:
        verdicts: dict[int, AnyVerdict] = {}
        for role, idxs in self._stream_plan(items).items():
            found = await self.moderator.acheck([self._stream_conversation(items[i]) for i in idxs], role=role)
            verdicts.update(zip(idxs, found, strict=True))
        return self._stream_outcome(items, verdicts)

    def _tool_call_conversation(self, request: Any) -> list[Any]:
        state = request.state if isinstance(request.state, dict) else {}
        messages = list(state.get("messages", []))
        last_ai = _last_index(messages, AIMessage)
        context = messages[:last_ai] if last_ai is not None else messages
        call = request.tool_call
        return context + [
            AIMessage(content="", tool_calls=[{"name": call["name"], "args": call["args"], "id": call.get("id")}])
        ]

    def _blocked_tool_call(self, request: Any, verdict: AnyVerdict) -> ToolMessage:
        if self.exit_behavior == "error":
            raise UnsafeContentError(verdict, stage="tool_call")
        call = request.tool_call
        artifact = {END_MARKER: self._refusal(verdict)} if self.exit_behavior == "end" else None
        return marked(
            ToolMessage(
                content=self.tool_refusal_message.format(categories=_describe(verdict)),
                tool_call_id=call.get("id") or "",
                name=call["name"],
                status="error",
                artifact=artifact,
            )
        )

    # -- hooks (each a sync and an async twin over the shared helpers above) ---------------------------------
    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """Check the user's last turn once per run, before the first model call (``input_check="before"``); in
        ``"parallel"`` mode, mark it as not yet judged (the run's first model call judges it)."""
        return refused_turn(self._before_agent(state), state)

    @hook_config(can_jump_to=["end"])
    async def abefore_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return refused_turn(await self._abefore_agent(state), state)

    # -- input_check="parallel": the run's first model call runs beside the input check -----------------------
    def _pending_input(self) -> dict[str, Any]:
        return {INPUT_JUDGED_KEY: {self.name: False}}

    def _overlap_plan(self, request: Any) -> _Check | None:
        """The input check to overlap with this model call: the run's first call, whatever the run's input holds
        after the user's turn (an assistant prefill, a replayed tool round); later calls of the run are not."""
        if self.input_check != "parallel" or not isinstance(request.state, dict):
            return None
        if (request.state.get(INPUT_JUDGED_KEY) or {}).get(self.name):
            return None  # judged at this run's first model call
        plan = self._plan("input", request.state)
        return plan if isinstance(plan, _Check) else None

    def _judged(self, response: Any, notices: Sequence[BaseMessage] = (), seen: BaseMessage | None = None) -> Any:
        """``response`` with this run's input marked as judged (and ``notices``, a rewritten user turn, added; or
        ``seen``, the user turn judged safe, recorded)."""
        update: dict[str, Any] = {INPUT_JUDGED_KEY: {self.name: True}}
        if seen is not None:
            update[INPUT_SEEN_KEY] = {self.record: _seen(seen)}
        return extended(response, Late(replacements=list(notices), update=update))

    def _flagged_input(self, plan: _Check, verdict: AnyVerdict) -> Any:
        """The first call's outcome for a flagged turn: an error, ``(refusal, notices)`` that end the run, or
        (``"replace"``) the notices to ask again with; a notice takes each message of the turn's place (same id)."""
        if self.exit_behavior == "error":
            raise UnsafeContentError(verdict, stage="input")
        update = self._on_violation(plan.messages, plan.idxs[0], "input", verdict)
        if self.exit_behavior == "end":
            return update["messages"][-1], update["messages"][:-1]
        return update["messages"]

    @staticmethod
    def _with_notice(request: Any, notices: Sequence[BaseMessage]) -> Any:
        by_id = {n.id: n for n in notices if n.id is not None}
        return request.override(messages=[by_id.get(m.id, m) if m.id is not None else m for m in request.messages])

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """``input_check="parallel"``: the turn's first model call runs in a thread beside the input check. Any
        call: what the model is about to read that no check judged (a user turn edited in a fork of the thread,
        ``update_state``) is judged first (see :mod:`~langchain_llamaguard.middleware.model_call`)."""
        plan = self._overlap_plan(request)
        if plan is None:  # not the first call of a parallel run: judge what no check judged, if anything
            return self._late_call(request, handler)
        plans = self._late_plans(request)  # tool results a fork edited after before_model (else cache hits)
        found = [self.moderator.check(p.convs, role=p.role) for p in plans]
        if _flagged(found):  # no overlap: the turn, then those results, as "before" mode judges them
            late = self._first_late(plan, self.moderator.check(plan.convs, role=plan.role), plans, found)
            return answered(request, handler, late)
        inner = inner_commands(handler)
        verdict, response = call_overlapped(
            lambda: handler(request),
            lambda: self.moderator.check(plan.convs, role=plan.role)[0],
            wait=inner is not None,  # the middlewares inside must be done before their updates are cleared
        )
        if verdict.safe:
            return self._judged(response, seen=plan.messages[plan.idxs[0]])
        if inner is not None:
            inner.clear()  # the discarded call's state updates
        outcome = self._flagged_input(plan, verdict)
        if isinstance(outcome, tuple):
            return self._judged(*outcome)
        return self._judged(handler(self._with_notice(request, outcome)), outcome)

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        plan = self._overlap_plan(request)
        if plan is None:
            return await self._alate_call(request, handler)
        plans = self._late_plans(request)
        found = [await self.moderator.acheck(p.convs, role=p.role) for p in plans]
        if _flagged(found):
            late = self._first_late(plan, await self.moderator.acheck(plan.convs, role=plan.role), plans, found)
            return await aanswered(request, handler, late)

        async def check() -> AnyVerdict:
            return (await self.moderator.acheck(plan.convs, role=plan.role))[0]

        inner = inner_commands(handler)
        verdict, response = await acall_overlapped(lambda: handler(request), check)  # a discarded call is awaited
        if verdict.safe:
            return self._judged(response, seen=plan.messages[plan.idxs[0]])
        if inner is not None:
            inner.clear()
        outcome = self._flagged_input(plan, verdict)
        if isinstance(outcome, tuple):
            return self._judged(*outcome)
        return self._judged(await handler(self._with_notice(request, outcome)), outcome)

    def _first_late(
        self, plan: _Check, verdicts: list[AnyVerdict], plans: list[_Check], found: list[list[AnyVerdict]]
    ) -> Late:
        """A parallel run's first call judged in order instead of overlapped: the user's turn, then the tool
        results, and the turn marked as judged."""
        late = self._late([plan, *plans], [verdicts, *found]) or Late(replacements=[])
        late.update[INPUT_JUDGED_KEY] = {self.name: True}
        return late

    def _unjudged_input(self, state: Any) -> bool:
        """Whether the user's turn stands as no input check judged it: edited or added after the run's
        before_agent (a fork from a later checkpoint, ``update_state``); not while a parallel check of it is due."""
        if not self.apply_to_input or not isinstance(state, dict):
            return False
        if self.input_check == "parallel" and (state.get(INPUT_JUDGED_KEY) or {}).get(self.name) is False:
            return False  # this run's first model call judges it
        plan = self._plan("input", state)
        if not isinstance(plan, _Check):
            return False
        human = plan.messages[plan.idxs[0]]
        return not guard_written(human) and (state.get(INPUT_SEEN_KEY) or {}).get(self.record) != _seen(human)

    def _late_plans(self, request: Any) -> list[_Check]:
        """What the model is about to read that may not have been judged: a user turn edited or added after the
        run's input check, and (``apply_to_tool_results``) the last round's tool results, which ``before_model``
        judged unless the run was forked after it (then they are judged here; else each is a cache hit)."""
        state = request.state if isinstance(request.state, dict) else None
        if state is None:
            return []
        plans = [self._plan("input", state)] if self._unjudged_input(state) else []
        plans.append(self._plan("tool_results", state) if self.apply_to_tool_results else None)
        return [p for p in plans if isinstance(p, _Check)]

    def _late(self, plans: list[_Check], verdicts: list[list[AnyVerdict]]) -> Late | None:
        """What to do before the model call, from the verdicts on :meth:`_late_plans`."""
        late = Late(replacements=[])
        ending: tuple[AIMessage, list[BaseMessage]] | None = None
        for plan, found in zip(plans, verdicts, strict=True):
            if plan.stage == "input":
                if found[0].safe:
                    late.update[INPUT_SEEN_KEY] = {self.record: _seen(plan.messages[plan.idxs[0]])}
                    continue
                outcome = self._flagged_input(plan, found[0])  # raises with exit_behavior="error"
                if isinstance(outcome, tuple):  # the refusal ends the run, the turn leaves the thread
                    ending = outcome
                else:
                    late.replacements.extend(outcome)
                continue
            update = self._finish(plan, found)  # tool results
            if update is not None:
                late.replacements.extend(update["messages"])
                if "jump_to" in update:
                    flagged = next(v for v in found if not v.safe)
                    late.answer = marked(AIMessage(content=self._refusal(flagged)))
        if ending is not None:  # flagged results leave too: a later turn's model must not read them
            return Late(replacements=[*ending[1], *late.replacements], answer=ending[0])
        return late if late.replacements or late.answer or late.update else None

    def _late_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        plans = self._late_plans(request)
        late = self._late(plans, [self.moderator.check(p.convs, role=p.role) for p in plans])
        return handler(request) if late is None else answered(request, handler, late)

    async def _alate_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        plans = self._late_plans(request)
        late = self._late(plans, [await self.moderator.acheck(p.convs, role=p.role) for p in plans])
        return await handler(request) if late is None else await aanswered(request, handler, late)

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """End the run after a blocked tool call; check tool results (``apply_to_tool_results``)."""
        return refused_turn(self._run("tool_results", state), state)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return refused_turn(await self._arun("tool_results", state), state)

    @hook_config(can_jump_to=["end"])
    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """Check every model response (its text and tool calls) before it is returned or acted on."""
        return refused_turn(self._run("output", state), state)

    @hook_config(can_jump_to=["end"])
    async def aafter_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return refused_turn(await self._arun("output", state), state)

    def _result_plan(self, request: Any, result: Any) -> tuple[list[BaseMessage], list[list[BaseMessage]]] | None:
        """Every message the tool's result adds (its ToolMessage, and any user or system message of its ``Command``:
        the model reads those too; see :func:`new_messages`), each judged in the conversation ``before_model``
        judges tool results in (up to the tool-calling AI message), so that check is the same (cached) one. Call
        with a :func:`normalized` result."""
        messages = list((request.state if isinstance(request.state, dict) else {}).get("messages", []))
        found = new_messages(result, messages, model_messages=False) if self.apply_to_tool_results else []
        if not found:
            return None
        last_ai = _last_index(messages, AIMessage)
        context = messages[: last_ai + 1] if last_ai is not None else messages
        return found, [[*context, m] for m in found]

    def _judged_result(self, result: Any, found: list[BaseMessage], verdicts: Sequence[AnyVerdict]) -> Any:
        """``result`` with its flagged messages replaced: the run may end before any ``before_model`` runs
        (a ``return_direct`` tool, another middleware ending the run, a blocked sibling call)."""
        flagged = next((v for v in verdicts if not v.safe), None)
        if flagged is None:
            return result
        if self.exit_behavior == "error":
            raise UnsafeContentError(flagged, stage="tool_result")
        replacements: list[BaseMessage | None] = [
            None if verdict.safe else self._replacement(message, verdict)
            for message, verdict in zip(found, verdicts, strict=True)
        ]
        if self.exit_behavior == "end":
            replacements = marked_to_end(found, replacements, self._refusal(flagged))
        return with_replaced(result, found, replacements)

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """Check the tool call (in context) before the tool runs; a flagged call never executes. With
        ``apply_to_tool_results``, check what it returned before it enters the state."""
        if self.apply_to_tool_calls:
            verdict = self.moderator.check([self._tool_call_conversation(request)], role="Agent")[0]
            if not verdict.safe:
                return self._blocked_tool_call(request, verdict)
        result = normalized(handler(request))
        plan = self._result_plan(request, result)
        if plan is None:
            return result
        return self._judged_result(result, plan[0], self.moderator.check(plan[1], role="User"))

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        if self.apply_to_tool_calls:
            verdict = (await self.moderator.acheck([self._tool_call_conversation(request)], role="Agent"))[0]
            if not verdict.safe:
                return self._blocked_tool_call(request, verdict)
        result = normalized(await handler(request))
        plan = self._result_plan(request, result)
        if plan is None:
            return result
        return self._judged_result(result, plan[0], await self.moderator.acheck(plan[1], role="User"))
