"""Guarded tools: any LangChain ``BaseTool`` checked by Llama Guard before it runs (and, by option, after).

``guard_tool`` checks the tool call (name and arguments) as the Agent's turn, in the conversation's context
when the tool runs inside an agent (the agent state is injected, hidden from the model). ``guard_code_tool`` is
the code-interpreter variant: the code itself is the Agent's turn, so Llama Guard's S14 (Code Interpreter
Abuse: container escapes, privilege escalation, resource exhaustion, attacks from the sandbox) is judged on
exactly what would execute -- before it executes.

Example:
    >>> repl = guard_code_tool(python_repl, guard)   # doctest: +SKIP
    >>> repl.invoke({"code": "import os; os.system('rm -rf /')"})  # doctest: +SKIP
    'Refused: Llama Guard flagged this code before it ran (S14 Code Interpreter Abuse).'
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool, StructuredTool, Tool, ToolException
from langchain_core.tools.base import TOOL_MESSAGE_BLOCK_TYPES, _handle_tool_error
from pydantic import BaseModel, create_model

from . import options
from .conversation import to_turns
from .errors import GuardConfigurationError, UnsafeContentError
from .moderators import AnyVerdict, LlamaGuardModerator, check_llama_guard
from .prompt_format import active_categories
from .provider_blocks import json_text
from .retry import NoVerdictFallbacks
from .runnables import achecked, checked
from .taxonomy import resolve_categories

OnUnsafeTool = Literal["refuse", "error"]
DEFAULT_TOOL_REFUSAL = "Refused: Llama Guard flagged this {what} before it ran ({categories})."
DEFAULT_OUTPUT_REFUSAL = "Refused: Llama Guard flagged this tool output ({categories})."
"""What replaces a flagged output (``check_output=True``) when ``refusal_message`` is the default."""
_STATE_ARG = "llama_guard_state"
try:  # the graph state langgraph's ToolNode injects into a guarded tool, hidden from the model: as the graph has
    # it (a dict, a pydantic model or a dataclass), so it is not validated
    from langgraph.prebuilt import InjectedState

    _AgentState: Any = Annotated[Any, InjectedState]
except ImportError:  # langgraph not installed: no agent context
    _AgentState = None
try:
    from langgraph.types import Command as _Command
except ImportError:
    _Command = None


def _injected_state_type() -> Any:
    return _AgentState


def _state_fields(state: Any) -> Mapping[str, Any]:
    """The graph state's keys and values: a dict's items, a pydantic model's or a dataclass's fields."""
    if isinstance(state, Mapping):
        return state
    if isinstance(state, BaseModel):
        return {name: getattr(state, name) for name in type(state).model_fields}
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return {}


def _message_lists(state: Any) -> dict[str, list[BaseMessage]]:
    """The state's lists of messages, by key (a ``ToolNode`` reads its ``messages_key``, ``"messages"`` by default)."""
    return {
        key: list(value)
        for key, value in _state_fields(state).items()
        if isinstance(value, Sequence)
        and not isinstance(value, str)
        and value
        and all(isinstance(m, BaseMessage) for m in value)
    }


def _calls(messages: list[BaseMessage], tool_name: str) -> bool:
    """Whether the last model message of ``messages`` calls ``tool_name`` (what a ``ToolNode`` runs)."""
    last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    return last is not None and any(c.get("name") == tool_name for c in last.tool_calls)


def _conversation(state: Any, tool_name: str) -> list[BaseMessage]:
    """The state's conversation: ``state["messages"]``, or, when a ``ToolNode`` reads another key
    (``ToolNode(messages_key="chat")``, which does not tell its tools), the one list of messages whose last model
    message calls this tool. Several such lists, none of them ``"messages"``: no conversation (the call is judged
    on its own, as outside a graph)."""
    lists = _message_lists(state)
    candidates = [k for k, messages in lists.items() if _calls(messages, tool_name)] or list(lists)
    if "messages" in candidates:
        return lists["messages"]
    return lists[candidates[0]] if len(candidates) == 1 else []


def _context(state: Any, tool_name: str) -> list[BaseMessage]:
    """The conversation before the current tool call (up to, not including, the last AI message)."""
    messages = _conversation(state, tool_name)
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], AIMessage):
            return messages[:i]
    return messages


def _without_images(context: list[BaseMessage]) -> list[BaseMessage]:
    """The context of a code check with its images left out (their text kept, turn by turn): Llama Guard 4's
    template drops S14 (Code Interpreter Abuse) from the policy of any conversation with an image, so a picture
    earlier in the chat would otherwise leave the code unjudged for code abuse."""
    turns = to_turns(context)
    if not any(t.images for t in turns):
        return context
    kinds = {"user": HumanMessage, "assistant": AIMessage}
    return [kinds[t.role](content=[{"type": "text", "text": p} for p in t.text_parts]) for t in turns]


def _categories(verdict: AnyVerdict) -> str:
    return ", ".join(f"{c} {n}" for c, n in zip(verdict.categories, verdict.category_names, strict=True)) or "unsafe"  # type: ignore[union-attr]


@dataclass(frozen=True)
class _CodeTurn:
    """How :func:`guard_code_tool` shows a call to the guard: the code itself, as the Agent's turn."""

    code_arg: str
    language: str

    def __call__(self, args: dict[str, Any]) -> str:
        code = args.get(self.code_arg, "")
        code = code if isinstance(code, str) else json_text(code)
        turn = f"Run this code:\n```{self.language}\n{code}\n```"
        # Whatever else the call passes (a setup script, files, an environment) can execute too: shown after it.
        for name, value in args.items():
            if name != self.code_arg and value not in (None, "", [], {}):
                text = value if isinstance(value, str) else json_text(value)
                turn += f"\n\nWith {name}:\n```\n{text}\n```"
        return turn


class RefusedToolError(ToolException):
    """What a guarded tool raises in place of a tool error whose text Llama Guard flagged (``check_output=True``):
    its message is the refusal. The guarded tool's ``handle_tool_error`` (or langgraph's ``ToolNode``) turns it
    into the tool's result; the flagged error is its ``__cause__``, for logs only.

    Example:
        >>> str(RefusedToolError("Refused: Llama Guard flagged this tool output (S9 Indiscriminate Weapons)."))[:7]
        'Refused'
    """


@dataclass(frozen=True)
class _HandleRefusals:
    """A guarded tool's ``handle_tool_error``: a refusal's text as it is; any other error as the inner tool handles
    it (an MCP tool's handler re-raises errors that are not its own)."""

    inner: Any

    def __call__(self, exc: ToolException) -> str:
        if isinstance(exc, RefusedToolError):
            return str(exc.args[0])
        return _handle_tool_error(exc, flag=self.inner)


def _is_control_flow(exc: BaseException) -> bool:
    """langgraph's interrupts and parent-graph commands: raised through a tool on purpose, never judged."""
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:  # pragma: no cover - langgraph not installed
        return False
    return isinstance(exc, GraphBubbleUp)


def _args_schema(tool: BaseTool) -> Any:
    """The tool's arguments: its ``args_schema`` (a pydantic model, or an MCP tool's JSON-schema dict); for a tool
    without one, a legacy single-input ``Tool``'s one string (``tool_input``, as ``Tool.args`` names it) or a
    ``BaseTool`` subclass's ``_run`` arguments (``get_input_schema()``)."""
    if tool.args_schema is not None:
        return tool.args_schema
    if isinstance(tool, Tool):
        return create_model(f"{tool.name}_input", tool_input=(str, ...))
    schema = tool.get_input_schema()
    # LangChain hands ``_run`` its config itself: such a parameter is no argument of the call
    given = {n: f for n, f in schema.model_fields.items() if not _is_config(f.annotation)}
    if len(given) == len(schema.model_fields):
        return schema
    return create_model(schema.__name__, **{n: (f.annotation, f) for n, f in given.items()})


def _is_config(annotation: Any) -> bool:
    return annotation is RunnableConfig or RunnableConfig in typing.get_args(annotation)


_RESERVED_ARGS = frozenset({"callbacks", "llama_guard_config", _STATE_ARG})
"""The guarded tool's own parameters (see :meth:`_ToolGuard.call`): an inner tool's argument cannot take them."""


def _arg_names(schema: Any) -> set[str]:
    """The argument names of a pydantic model or of a JSON-schema dict (an MCP tool's)."""
    return set(_arg_names_in_order(schema))


def _arg_names_in_order(schema: Any) -> list[str]:
    """:func:`_arg_names` in the schema's order (LangChain reads a plain string input as the first one)."""
    return list(schema.get("properties", {}) if isinstance(schema, dict) else getattr(schema, "model_fields", {}))


def _injected_args(tool: BaseTool) -> frozenset[str]:
    """The tool's injected arguments (agent state, ``ToolRuntime``, the tool call's id, a store): in its
    ``args_schema`` but hidden from the model (not in its ``tool_call_schema``), so they are the app's and not
    judged. Every other argument a call carries is judged, one its schema does not list too: a tool with a
    JSON-schema dict (an MCP tool) is not validated, and passes such an argument on to its server."""
    if tool.args_schema is None:  # no injected arguments (nor a tool_call_schema to compare with)
        return frozenset()
    fields = getattr(tool.args_schema, "model_fields", None)
    if not fields:
        return frozenset()
    return frozenset(fields) - _arg_names(tool.tool_call_schema)


def _call_id_args(schema: Any) -> frozenset[str]:
    """The tool's ``InjectedToolCallId`` arguments: such a tool runs only when given a whole tool call."""
    from langchain_core.tools import InjectedToolCallId

    fields = getattr(schema, "model_fields", None) or {}
    return frozenset(
        name
        for name, field in fields.items()
        if any(m is InjectedToolCallId or isinstance(m, InjectedToolCallId) for m in field.metadata)
    )


def _aliases(schema: Any) -> dict[str, str]:
    """A pydantic argument schema's aliases, each mapped to its field's name (``{}`` for a JSON schema)."""
    fields = getattr(schema, "model_fields", None) if isinstance(schema, type) else None
    out: dict[str, str] = {}
    for name, field in (fields or {}).items():
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str) and alias != name:
                out[alias] = name
    return out


def _output_content(output: Any) -> Any:
    """What a tool's output says, as message content: a ``ToolMessage``'s content, the messages a ``Command``
    adds, content blocks as they are; anything else as JSON."""
    if isinstance(output, ToolMessage):
        return output.content
    if _Command is not None and isinstance(output, _Command):
        update = output.update
        if update is not None and not isinstance(update, dict):  # (key, value) pairs or a state object
            as_tuples = getattr(output, "_update_as_tuples", None)
            update = dict(as_tuples()) if as_tuples is not None else {"update": update}
        update = update or {}
        raw = update.get("messages", [])
        # each message whole (its images and files too), as add_messages would make it of a message-like; a model
        # message's calls and the text it carries beside its content (reasoning, a legacy function_call) too
        blocks: list[Any] = []
        for message in convert_to_messages(raw if isinstance(raw, list) else [raw]):
            content = message.content
            blocks += [{"type": "text", "text": content}] if isinstance(content, str) else content
            if isinstance(message, AIMessage):
                beside = "".join(to_turns([message.model_copy(update={"content": ""})])[-1].text_parts)
                if beside:
                    blocks.append({"type": "text", "text": beside})
        rest = {k: v for k, v in update.items() if k != "messages"}
        if rest:
            blocks.append({"type": "text", "text": json_text(rest)})
        return blocks
    # As LangChain makes a tool's ToolMessage: a list of its tool-message content blocks is content, anything else
    # (rows of data that happen to have a "type" key too) goes to the model as JSON.
    blocks = isinstance(output, list) and all(
        isinstance(b, str) or (isinstance(b, dict) and b.get("type") in TOOL_MESSAGE_BLOCK_TYPES) for b in output
    )
    return output if isinstance(output, str) or blocks else json.dumps(output, ensure_ascii=False, default=str)


class _ToolGuard:
    """What a guarded tool does around the inner tool: shared by the sync and async paths."""

    def __init__(
        self,
        tool: BaseTool,
        guard: Any,
        *,
        render: Callable[[dict[str, Any]], str] | None,
        check_output: bool,
        on_unsafe: OnUnsafeTool,
        excluded_categories: Iterable[str] | None,
        refusal: str,
        what: str,
    ) -> None:
        _check_tool(tool)
        if on_unsafe not in ("refuse", "error"):
            raise GuardConfigurationError(f"on_unsafe must be 'refuse' or 'error', got {on_unsafe!r}")
        own = {_STATE_ARG} if isinstance(tool, GuardedTool) else set()  # a guarded tool guarded again: its state
        schema = _args_schema(tool)  # not kept on the helper, which pickles: a schema made here need not
        taken = sorted((_RESERVED_ARGS - own) & _arg_names(schema))
        if taken:
            raise GuardConfigurationError(
                f"tool {tool.name!r} has the argument(s) {taken}: names the guarded tool takes for itself (LangChain "
                "hands a tool its callbacks, config and agent state under them); rename them in the tool's schema"
            )
        self.tool = tool
        self.moderator = LlamaGuardModerator(guard, excluded_categories)
        self.render = render
        self.check_output = check_output
        self.on_unsafe = on_unsafe
        self.refusal = options.template("refusal_message", refusal, what=what, categories="S14 Code Interpreter Abuse")
        self.what = what
        self.injected_args = _injected_args(tool)
        self.call_id_args = _call_id_args(schema)
        self.aliases = _aliases(schema)
        # The inner tool runs with its error handling off: its errors reach the guarded tool, which handles them
        # as the inner tool would (the same settings), under the caller's tool-call id (status="error" kept).
        self.runner = tool.model_copy(update={"handle_tool_error": False, "handle_validation_error": False})

    def judged_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments the model chose: what Llama Guard judges (injected ones are the app's, not the model's)."""
        return {k: v for k, v in args.items() if k not in self.injected_args}

    def call_conversation(self, args: dict[str, Any], state: Any) -> list[BaseMessage]:
        context = _context(state, self.tool.name)
        # shown under the schema's names: an argument sent by its alias is still the code a code tool shows
        args = {self.aliases.get(k, k): v for k, v in self.judged_args(args).items()}
        if self.render is not None:
            turn = AIMessage(content=self.render(args))
        else:
            turn = AIMessage(content="", tool_calls=[{"name": self.tool.name, "args": args, "id": "guard"}])
        if not context:
            context = [HumanMessage(content="")]
        elif isinstance(self.render, _CodeTurn):
            context = _without_images(context)
        return context + [turn]

    def output_conversation(self, args: dict[str, Any], state: Any, output: Any) -> list[BaseMessage]:
        # Content blocks (an MCP tool's result) are message content; a ToolMessage its content, a Command the
        # messages it adds; anything else is shown as JSON.
        text = _output_content(output)
        call = self.call_conversation(args, state)
        return call + [ToolMessage(content=text, tool_call_id="guard", name=self.tool.name), AIMessage(content=text)]

    def refuse(self, verdict: AnyVerdict, stage: str) -> str:
        if self.on_unsafe == "error":
            raise UnsafeContentError(verdict, stage=stage)
        if stage == "tool_output" and self.refusal == DEFAULT_TOOL_REFUSAL:
            return DEFAULT_OUTPUT_REFUSAL.format(categories=_categories(verdict))
        return self.refusal.format(
            what=self.what if stage == "tool_call" else "tool output", categories=_categories(verdict)
        )

    # A tool that answers with (content, artifact) (MCP tools: the artifact is the structured content) is run
    # with a tool call, so its artifact comes back; the guarded tool answers the same way (a refusal: no artifact).
    # So is a tool with an InjectedToolCallId argument (LangChain runs it only with a whole tool call), under the
    # id the guarded tool was given: its ToolMessage or Command goes back as it is (status and artifact kept).
    def tool_input(self, args: dict[str, Any], state: Any = None) -> Any:
        """What the inner tool is invoked with: its arguments, or a tool call (under the caller's id if known); a
        guarded tool guarded again gets the agent state too."""
        if isinstance(self.tool, GuardedTool) and state is not None:
            args = {**args, _STATE_ARG: state}
        call_id = next((args[k] for k in self.call_id_args if isinstance(args.get(k), str)), None)
        if call_id is not None or self.tool.response_format == "content_and_artifact":
            inner = {k: v for k, v in args.items() if k not in self.call_id_args}
            return {"type": "tool_call", "name": self.tool.name, "args": inner, "id": call_id or "guard"}
        return args

    def split(self, output: Any) -> tuple[Any, Any]:
        if self.tool.response_format == "content_and_artifact" and isinstance(output, ToolMessage):
            return output.content, output.artifact
        return output, None  # anything else (a ToolMessage under the caller's id, a Command) is passed on whole

    def result(self, content: Any, artifact: Any = None) -> Any:
        return (content, artifact) if self.tool.response_format == "content_and_artifact" else content

    def error_text(self, exc: Exception) -> str | None:
        """What the model would read of the inner tool's error, judged like an output (``check_output``): the text
        its own ``handle_tool_error`` makes of it, else its message (what ``ToolNode(handle_tool_errors=True)``
        shows); ``None`` when outputs are not checked, or for langgraph's control flow."""
        if not self.check_output or _is_control_flow(exc):
            return None
        flag = self.tool.handle_tool_error
        if flag and isinstance(exc, ToolException):
            with contextlib.suppress(Exception):  # a handler that re-raises what is not its own (MCP's): not handled
                return _handle_tool_error(exc, flag=flag)
        return str(exc) or None

    def run(self, args: dict[str, Any], state: Any, callbacks: Any, config: RunnableConfig | None) -> Any:
        """Check the call, run the tool (with the caller's config), check its output; each check is a named child
        run of the tool's run."""

        managers = [callbacks] if callbacks is not None else []
        verdict = checked(self.moderator, [self.call_conversation(args, state)], "Agent", managers, "tool_call")[0]
        if not verdict.safe:
            return self.result(self.refuse(verdict, "tool_call"))
        inner = self.tool_input(args, state)
        try:
            raw = self.runner.invoke(inner, patch_config(config, callbacks=callbacks))
        except Exception as exc:  # an error's text reaches the model too (handled here or by ToolNode): judged
            text = self.error_text(exc)
            if text is not None:
                convs = [self.output_conversation(args, state, text)]
                verdict = checked(self.moderator, convs, "Agent", managers, "tool_output")[0]
                if not verdict.safe:
                    raise RefusedToolError(self.refuse(verdict, "tool_output")) from exc
            raise
        output, artifact = self.split(raw)
        if self.check_output:
            convs = [self.output_conversation(args, state, output)]
            verdict = checked(self.moderator, convs, "Agent", managers, "tool_output")[0]
            if not verdict.safe:
                return self.result(self.refuse(verdict, "tool_output"))
        return self.result(output, artifact)

    # What the guarded StructuredTool calls: LangChain passes the caller's config (the parameter typed
    # RunnableConfig) and the tool run's callbacks. Bound methods, not closures, so a guarded tool pickles.
    # The state is annotated here too, so langgraph injects it into tools with a JSON-schema dict as their
    # args_schema (MCP tools), which cannot carry the injected field.
    # The tool's own arguments arrive as ``**kwargs`` and go on as one dict, so that any name (``state``,
    # ``config``...) is the tool's.
    def call(
        self,
        llama_guard_config: RunnableConfig,
        callbacks: Any = None,
        llama_guard_state: _AgentState = None,
        **kwargs: Any,
    ) -> Any:
        return self.run(kwargs, llama_guard_state, callbacks, llama_guard_config)

    async def acall(
        self,
        llama_guard_config: RunnableConfig,
        callbacks: Any = None,
        llama_guard_state: _AgentState = None,
        **kwargs: Any,
    ) -> Any:
        return await self.arun(kwargs, llama_guard_state, callbacks, llama_guard_config)

    async def arun(self, args: dict[str, Any], state: Any, callbacks: Any, config: RunnableConfig | None) -> Any:

        managers = [callbacks] if callbacks is not None else []
        convs = [self.call_conversation(args, state)]
        verdict = (await achecked(self.moderator, convs, "Agent", managers, "tool_call"))[0]
        if not verdict.safe:
            return self.result(self.refuse(verdict, "tool_call"))
        inner = self.tool_input(args, state)
        try:
            raw = await self.runner.ainvoke(inner, patch_config(config, callbacks=callbacks))
        except Exception as exc:
            text = self.error_text(exc)
            if text is not None:
                convs = [self.output_conversation(args, state, text)]
                verdict = (await achecked(self.moderator, convs, "Agent", managers, "tool_output"))[0]
                if not verdict.safe:
                    raise RefusedToolError(self.refuse(verdict, "tool_output")) from exc
            raise
        output, artifact = self.split(raw)
        if self.check_output:
            convs = [self.output_conversation(args, state, output)]
            verdict = (await achecked(self.moderator, convs, "Agent", managers, "tool_output"))[0]
            if not verdict.safe:
                return self.result(self.refuse(verdict, "tool_output"))
        return self.result(output, artifact)


def _schema_with_state(schema: Any) -> type[BaseModel] | None:
    state_type = _injected_state_type()
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)) or state_type is None:
        return None
    return create_model(f"{schema.__name__}Guarded", __base__=schema, **{_STATE_ARG: (state_type, None)})


def guard_tool(
    tool: BaseTool,
    guard: Any,
    *,
    check_output: bool = False,
    on_unsafe: OnUnsafeTool = "refuse",
    excluded_categories: Iterable[str] | None = None,
    render: Callable[[dict[str, Any]], str] | None = None,
    refusal_message: str = DEFAULT_TOOL_REFUSAL,
    subject: str = "tool call",
) -> BaseTool:
    """Return ``tool`` guarded by Llama Guard: same name, description and arguments for the model.

    Args:
        tool: any ``BaseTool``: a ``@tool`` function, a ``StructuredTool``, an MCP tool, a ``BaseTool`` subclass
            (its ``_run`` arguments), a legacy single-input ``Tool`` (its one argument: ``tool_input``).
        guard: a :class:`~langchain_llamaguard.LlamaGuard`.
        check_output: also check what the tool returned before passing it on.
        on_unsafe: ``"refuse"`` returns a refusal as the tool's result (the tool never runs); ``"error"`` raises
            :class:`UnsafeContentError`.
        render: how the call is shown to Llama Guard as the Agent's turn (default: ``[tool call] name({...})``).
        subject: what a refusal says was blocked (``"tool call"``, ``"code"``...).

    Example:
        >>> safe_search = guard_tool(search, guard, check_output=True)  # doctest: +SKIP
    """
    helper = _ToolGuard(
        tool,
        guard,
        render=render,
        check_output=check_output,
        on_unsafe=on_unsafe,
        excluded_categories=excluded_categories,
        refusal=refusal_message,
        what=subject,
    )
    return _build(helper, {})


class GuardedTool(NoVerdictFallbacks, StructuredTool):
    """What :func:`guard_tool` and :func:`guard_code_tool` return: a ``StructuredTool`` that runs its guard's checks
    around the inner tool.

    ``copy.deepcopy`` gives a tool with its own guard settings over the same loaded model; ``pickle`` works when
    the inner tool and the guard pickle (a guard from ``from_pretrained``; LangChain's ``@tool`` functions do not
    pickle, a ``BaseTool`` subclass or a tool with a module-level ``args_schema`` does). The argument schema
    with the injected agent state is built again on the other side.

    Example:
        >>> repl = guard_code_tool(python_repl, guard)  # doctest: +SKIP
        >>> isinstance(repl, GuardedTool)              # doctest: +SKIP
        True
    """

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {k: getattr(self, k) for k in self.model_fields_set - {"func", "coroutine", "args_schema"}}
        return _build, (self.func.__self__, fields)  # type: ignore[union-attr]

    def _parse_input(self, tool_input: str | dict[str, Any], tool_call_id: str | None) -> str | dict[str, Any]:
        """The arguments as the model sent them. They are validated against the tool's schema here, so a bad call
        fails as it would unguarded (before a check is spent on it), but go on unparsed: the guard judges the
        model's own arguments (a pydantic model made of them would show its repr, which can hide fields), and the
        inner tool validates them as it would unguarded, so what a validator makes of a value (say, decodes it)
        is made once, from what the model sent. (The validators themselves run twice, here and in the tool.)"""
        parsed = super()._parse_input(tool_input, tool_call_id)
        if not isinstance(tool_input, dict) or not isinstance(parsed, dict):
            return parsed
        # LangChain puts an InjectedToolCallId into tool_input itself; its own injected keys come from ``parsed``
        return {**tool_input, **{k: parsed[k] for k in self._injected_args_keys if k in parsed}}

    def _to_args_and_kwargs(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A plain string (``tool.invoke("query")``, as LangChain takes for a one-argument tool and a legacy
        ``Tool``) goes in as the tool's first argument, by name: the guarded function's first parameters are its
        own. A tool without arguments ignores it, as the unguarded tool does."""
        args, kwargs = super()._to_args_and_kwargs(tool_input, tool_call_id)
        if not args:
            return args, kwargs
        first = next((name for name in _arg_names_in_order(self.args_schema) if name != _STATE_ARG), None)
        return (), ({**kwargs, first: args[0]} if first is not None else kwargs)


def _build(helper: _ToolGuard, fields: dict[str, Any]) -> GuardedTool:
    """The guarded tool around ``helper`` (then ``fields`` set on it, when rebuilt from a pickle)."""
    tool = helper.tool
    schema = _args_schema(tool)
    guarded = GuardedTool.from_function(
        func=helper.call,
        coroutine=helper.acall,
        name=tool.name,
        description=tool.description,
        args_schema=_schema_with_state(schema) or schema,
        return_direct=tool.return_direct,
        response_format=tool.response_format,
        handle_tool_error=_HandleRefusals(tool.handle_tool_error) if tool.handle_tool_error else tool.handle_tool_error,
        handle_validation_error=tool.handle_validation_error,
    )
    guarded.metadata = {**(tool.metadata or {}), "llama_guard": True}
    for name, value in fields.items():
        setattr(guarded, name, value)
    return guarded


def _check_tool(tool: Any) -> None:
    if not isinstance(tool, BaseTool):
        raise GuardConfigurationError(
            f"the tool to guard must be a LangChain tool (a @tool function, StructuredTool, an MCP tool, a BaseTool "
            f"subclass), got {type(tool).__name__}; wrap a plain function with langchain_core.tools.tool first"
        )


def _check_code_category(guard: Any, excluded_categories: Iterable[str] | None) -> None:
    """Refuse a code tool whose guard can never flag code abuse: its active policy has no S14 (Llama Guard 3 1B's
    has none; S14 excluded; a custom policy without it), so every program, ``rm -rf /`` included, would run."""
    check_llama_guard(guard, "the guard")
    policy = guard.categories
    excluded = (
        guard.excluded_categories if excluded_categories is None else resolve_categories(excluded_categories, policy)
    )
    active = active_categories(guard.format, excluded, categories=policy)
    if "S14" not in active:
        why = (
            f"S14 is excluded ({', '.join(excluded)} excluded)"
            if "S14" in (policy or guard.format.categories)
            else f"{'this custom policy' if policy else guard.format.name} has no S14"
        )
        raise GuardConfigurationError(
            f"guard_code_tool judges code by S14 (Code Interpreter Abuse), but {why}: no program could be flagged "
            "as abuse and every one would run. Use Llama Guard 4 or Llama Guard 3 8B with S14 in their policy "
            "(a custom policy: keep an S14 entry), or guard_tool() for a tool whose arguments are not code"
        )


def guard_code_tool(
    tool: BaseTool,
    guard: Any,
    *,
    code_arg: str = "code",
    language: str = "python",
    on_unsafe: OnUnsafeTool = "refuse",
    excluded_categories: Iterable[str] | None = None,
    check_output: bool = False,
    refusal_message: str = DEFAULT_TOOL_REFUSAL,
) -> BaseTool:
    """Guard a code-interpreter tool: the code is judged (S14 Code Interpreter Abuse) before it executes.

    The code is shown to Llama Guard as the Agent's turn, verbatim, after the conversation so far.

    Example:
        >>> repl = guard_code_tool(python_repl, guard, code_arg="code")  # doctest: +SKIP
    """
    _check_tool(tool)
    fields = _arg_names(_args_schema(tool))  # of a pydantic model, or of a JSON-schema dict (MCP tools)
    if code_arg not in fields:
        raise GuardConfigurationError(
            f"tool {tool.name!r} has no argument {code_arg!r}; its arguments: {sorted(fields)}"
        )
    _check_code_category(guard, excluded_categories)

    return guard_tool(
        tool,
        guard,
        check_output=check_output,
        on_unsafe=on_unsafe,
        excluded_categories=excluded_categories,
        render=_CodeTurn(code_arg, language),
        refusal_message=refusal_message,
        subject="code",
    )
