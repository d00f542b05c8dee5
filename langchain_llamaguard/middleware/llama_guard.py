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
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from ..errors import GuardConfigurationError, UnsafeContentError
from ..moderators import AnyVerdict, LlamaGuardModerator, Moderator
from ..parallel import InputCheck, acall_overlapped, call_overlapped, check_input_check
from ..replacements import DEFAULT_REFUSAL, replacement
from ..replacements import describe as _describe
from ..replacements import last_index as _last_index
from .stream_guard import Judgment, stream_transformers

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


END_MARKER = "llama_guard_end_run"
"""Key in a blocked tool result's ``artifact``: the refusal to end the run with (read by ``before_model``).

A tool wrapper cannot end an agent run by itself, so a blocked call's ToolMessage carries the refusal and the
next ``before_model`` hook (which can jump to ``"end"``) ends the run before the model sees anything."""


def ending_refusal(messages: Sequence[BaseMessage]) -> str | None:
    """The refusal stored by a tool wrapper that wants the run to end, if the last tool round has one."""
    last_ai = _last_index(messages, AIMessage)
    for message in messages[(last_ai or 0) + 1 :]:
        artifact = getattr(message, "artifact", None)
        if isinstance(message, ToolMessage) and isinstance(artifact, dict) and END_MARKER in artifact:
            return str(artifact[END_MARKER])
    return None


INPUT_JUDGED_KEY = "llama_guard_input_judged"
"""Private agent-state key of ``input_check="parallel"``: ``{middleware name: whether this run's user turn was
judged}``, set to ``False`` by ``before_agent`` and to ``True`` by the model call that overlapped the check."""


def _merge_flags(old: dict[str, bool] | None, new: dict[str, bool] | None) -> dict[str, bool]:
    return {**(old or {}), **(new or {})}


class LlamaGuardState(AgentState):
    """The agent state plus the parallel input check's private flags (a reducer, so that several middlewares
    can set theirs in one step)."""

    llama_guard_input_judged: NotRequired[Annotated[dict[str, bool], PrivateStateAttr, _merge_flags]]


@dataclass
class _Check:
    """One hook's check: the conversations to judge (in one batch), as which role, and where they sit."""

    convs: list[list[BaseMessage]]
    role: str
    idxs: list[int]
    messages: list[BaseMessage]
    stage: str


class LlamaGuardMiddleware(AgentMiddleware):
    """Llama Guard moderation for ``langchain.agents.create_agent``, shaped like ``PIIMiddleware``.

    Args:
        guard: a :class:`~langchain_llamaguard.LlamaGuard`.
        apply_to_input: check the user's last turn once, before the first model call.
        apply_to_output: check every model response before it is returned or its tool calls run.
        apply_to_tool_calls: check each tool call (name and arguments, in context) before the tool executes.
        apply_to_tool_results: check tool results before the model reads them.
        excluded_categories: categories this middleware does not check (overrides the guard's).
        categories: a custom policy for this middleware (``{"S1": "Violent Crimes.", "S15": "Fraud."}``; see
            :func:`~langchain_llamaguard.taxonomy.default_categories`), replacing the guard's list.
        exit_behavior: on unsafe content: ``"end"`` (default) replaces a flagged model response (same id) or
            adds a refusal after a flagged user turn, and ends the run; ``"error"`` raises
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
        behavior = exit_behavior or on_unsafe or "end"
        if behavior not in ("end", "error", "replace"):
            raise GuardConfigurationError(f"exit_behavior must be 'end', 'error' or 'replace', got {behavior!r}")
        self.moderator: Moderator = LlamaGuardModerator(
            guard, excluded_categories, cache_size=VERDICT_CACHE_SIZE, categories=categories
        )
        self.apply_to_input = apply_to_input
        self.apply_to_output = apply_to_output
        self.apply_to_tool_calls = apply_to_tool_calls
        self.apply_to_tool_results = apply_to_tool_results
        self.exit_behavior: ExitBehavior = behavior  # type: ignore[assignment]
        self.refusal_message = refusal_message
        self.tool_refusal_message = tool_refusal_message
        self._name = name or unique_name(type(self).__name__)
        if omit_payload_from_traces:
            self.trace_policy = no_payload_trace_policy()
        kinds = {"output"} if apply_to_output else set()
        self.stream_kinds = frozenset(kinds | ({"tool_result"} if apply_to_tool_results else set()))
        self.transformers = stream_transformers(self)

    @property
    def name(self) -> str:
        return self._name

    # -- shared helpers (the sync and async hooks differ only in how the check is awaited) ---------------------
    def _refusal(self, verdict: AnyVerdict) -> str:
        return self.refusal_message.format(categories=_describe(verdict))

    def _plan(self, stage: str, state: Any) -> _Check | dict[str, Any] | None:
        """What a hook must check (a :class:`_Check`), an update to return at once, or ``None`` (nothing to do)."""
        messages = list(state["messages"])
        if stage == "input":
            idx = _last_index(messages, HumanMessage) if self.apply_to_input else None
            if idx is None:
                return None
            return _Check([messages[: idx + 1]], "User", [idx], messages, "input")
        if stage == "output":
            if not self.apply_to_output or not messages or not isinstance(messages[-1], AIMessage):
                return None
            return _Check([messages], "Agent", [len(messages) - 1], messages, "output")
        refusal = ending_refusal(messages)  # stage == "tool_results", in before_model
        if refusal is not None:
            return {"messages": [AIMessage(content=refusal)], "jump_to": "end"}
        last_ai = _last_index(messages, AIMessage) if self.apply_to_tool_results else None
        if last_ai is None:
            return None
        idxs = [i for i in range(last_ai + 1, len(messages)) if isinstance(messages[i], ToolMessage)]
        context = messages[: last_ai + 1]
        return _Check([context + [messages[i]] for i in idxs], "User", idxs, messages, "tool_result") if idxs else None

    def _finish(self, check: _Check, verdicts: Sequence[AnyVerdict]) -> dict[str, Any] | None:
        for idx, verdict in zip(check.idxs, verdicts, strict=True):
            if not verdict.safe:
                return self._on_violation(check.messages, idx, check.stage, verdict)
        return None

    def _run(self, stage: str, state: Any) -> dict[str, Any] | None:
        plan = self._plan(stage, state)
        if not isinstance(plan, _Check):
            return plan
        return self._finish(plan, self.moderator.check(plan.convs, role=plan.role))

    async def _arun(self, stage: str, state: Any) -> dict[str, Any] | None:
        plan = self._plan(stage, state)
        if not isinstance(plan, _Check):
            return plan
        return self._finish(plan, await self.moderator.acheck(plan.convs, role=plan.role))

    def _on_violation(
        self, messages: Sequence[BaseMessage], idx: int, stage: str, verdict: AnyVerdict
    ) -> dict[str, Any]:
        if self.exit_behavior == "error":
            raise UnsafeContentError(verdict, stage=stage)
        original = messages[idx]
        if stage == "input":
            if self.exit_behavior == "end":
                return {"messages": [AIMessage(content=self._refusal(verdict))], "jump_to": "end"}
            notice = f"[message removed by Llama Guard: {_describe(verdict)}]"
            return {"messages": [HumanMessage(content=notice, id=original.id)]}
        update: dict[str, Any] = {"messages": [self._replacement(original, verdict)]}
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
        return ToolMessage(
            content=self.tool_refusal_message.format(categories=_describe(verdict)),
            tool_call_id=call.get("id") or "",
            name=call["name"],
            status="error",
            artifact=artifact,
        )

    # -- hooks (each a sync and an async twin over the shared helpers above) ---------------------------------
    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """Check the user's last turn once per run, before the first model call (``input_check="before"``); in
        ``"parallel"`` mode, mark it as not yet judged (the run's first model call judges it)."""
        return self._pending_input() if self.input_check == "parallel" else self._run("input", state)

    @hook_config(can_jump_to=["end"])
    async def abefore_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return self._pending_input() if self.input_check == "parallel" else await self._arun("input", state)

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

    def _judged(self, response: Any, notice: BaseMessage | None = None) -> Any:
        """``response`` with this run's input marked as judged (and ``notice``, a rewritten user turn, added)."""
        from langchain.agents.middleware.types import ExtendedModelResponse, ModelResponse
        from langgraph.types import Command

        if isinstance(response, AIMessage):
            response = ModelResponse(result=[response])
        elif isinstance(response, ExtendedModelResponse):  # handlers return ModelResponse; kept for safety
            response = response.model_response
        update: dict[str, Any] = {INPUT_JUDGED_KEY: {self.name: True}}
        if notice is not None:
            update["messages"] = [notice]
        return ExtendedModelResponse(model_response=response, command=Command(update=update))

    def _flagged_input(self, plan: _Check, verdict: AnyVerdict) -> Any:
        """The first call's outcome for a flagged turn: a refusal, an error, or (``"replace"``) what to ask
        again, as ``(request_messages, notice)``."""
        if self.exit_behavior == "error":
            raise UnsafeContentError(verdict, stage="input")
        if self.exit_behavior == "end":
            return AIMessage(content=self._refusal(verdict))
        update = self._on_violation(plan.messages, plan.idxs[0], "input", verdict)
        return update["messages"][0]

    @staticmethod
    def _with_notice(request: Any, notice: BaseMessage) -> Any:
        messages = [notice if m.id is not None and m.id == notice.id else m for m in request.messages]
        return request.override(messages=messages)

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """``input_check="parallel"``: the turn's first model call runs in a thread beside the input check."""
        plan = self._overlap_plan(request)
        if plan is None:
            return handler(request)
        verdict, response = call_overlapped(
            lambda: handler(request), lambda: self.moderator.check(plan.convs, role=plan.role)[0]
        )
        if verdict.safe:
            return self._judged(response)
        outcome = self._flagged_input(plan, verdict)
        if isinstance(outcome, AIMessage):
            return self._judged(outcome)
        return self._judged(handler(self._with_notice(request, outcome)), outcome)

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        plan = self._overlap_plan(request)
        if plan is None:
            return await handler(request)

        async def check() -> AnyVerdict:
            return (await self.moderator.acheck(plan.convs, role=plan.role))[0]

        verdict, response = await acall_overlapped(lambda: handler(request), check)
        if verdict.safe:
            return self._judged(response)
        outcome = self._flagged_input(plan, verdict)
        if isinstance(outcome, AIMessage):
            return self._judged(outcome)
        return self._judged(await handler(self._with_notice(request, outcome)), outcome)

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """End the run after a blocked tool call; check tool results (``apply_to_tool_results``)."""
        return self._run("tool_results", state)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return await self._arun("tool_results", state)

    @hook_config(can_jump_to=["end"])
    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """Check every model response (its text and tool calls) before it is returned or acted on."""
        return self._run("output", state)

    @hook_config(can_jump_to=["end"])
    async def aafter_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return await self._arun("output", state)

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """Check the tool call (in context) before the tool runs; a flagged call never executes."""
        if self.apply_to_tool_calls:
            verdict = self.moderator.check([self._tool_call_conversation(request)], role="Agent")[0]
            if not verdict.safe:
                return self._blocked_tool_call(request, verdict)
        return handler(request)

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        if self.apply_to_tool_calls:
            verdict = (await self.moderator.acheck([self._tool_call_conversation(request)], role="Agent"))[0]
            if not verdict.safe:
                return self._blocked_tool_call(request, verdict)
        return await handler(request)
