"""Hold an agent's streamed output until the guard has judged it (langgraph's v3 stream transformers).

The middleware hooks (``after_model``, ``before_model``, ``wrap_tool_call``) clean the agent's *state*, but a
consumer of ``agent.stream_events(version="v3")`` / ``astream_events(version="v3")`` sees each token as the model
writes it, and each tool result as the tool returns it, before any hook has run. Where the installed langgraph
has stream transformers, the guard middleware registers :class:`GuardStreamTransformer`, which runs before the
built-in transformers (so ``run.messages``, ``run.values``, ``run.output`` and the raw event log all see the same
thing) and:

* holds a model message whole: nothing of it goes into the log until ``message-finish``; then the complete
  message (text, reasoning, tool calls, any other block) is judged once, in context (the conversation in the
  state, then the message), and each block is replayed whole (start, one delta, finish). Safe blocks come out
  unchanged; for a flagged message the first block carries the refusal that the hooks write into the state and
  the rest (tool calls included) come out empty, as does the finish's ``additional_kwargs``;
* judges a whole (non-streamed) model message on the ``messages`` channel, and a tool's result (a ToolMessage, a
  ``Command`` carrying one, other output, an error's text) on the ``tools`` channel, the same way (tool output
  deltas are held until the tool finishes);
* rewrites ``values`` snapshots in place (so ``run.output`` too), and the opt-in projections (``updates``,
  ``checkpoints``, ``debug``, ``tasks``) as copies: a flagged message never shows, not even in the
  snapshot taken between the model node and ``after_model``; a message new to this run that was not judged on
  the way is judged there;
* does all of this in every namespace of the run (a subagent running inside a tool is judged in its own
  context); the copies langgraph makes for subgraph handles stay inert and receive the root's replays.

The judgment comes from the middleware (a :class:`StreamJudge`), so the wire and the state agree; the
middleware's verdict cache makes the hook's later check of the same conversation free. Limits: the pre-v3
``agent.stream(...)`` API has no transformers; the payload of an interrupt raised by another middleware's
``after_model`` that runs before the guard's is not rewritten (list the guard last in ``middleware=[...]``:
``after_model`` hooks run in reverse order); and a middleware listed earlier whose transformer rewrites content
(``PIIMiddleware``) makes the stream guard judge the rewritten text, while the hook judges the original.

Example:
    >>> agent = create_agent(model, tools, middleware=[LlamaGuardMiddleware(guard)])  # doctest: +SKIP
    >>> run = agent.stream_events({"messages": [("user", "hi")]}, version="v3")      # doctest: +SKIP
    >>> [m.output.text for m in run.messages]  # each message whole, once judged  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, SystemMessage, ToolMessage

from ..replacements import answers_to, written_here
from .tool_output import messages_in, new_messages, normalized, with_replaced

try:  # langgraph >= 1.2 with the v3 streaming protocol
    from langgraph.stream import StreamTransformer
except ImportError:  # pragma: no cover - older langgraph: no stream transformers, nothing to register
    StreamTransformer = None  # type: ignore[assignment,misc]

Kind = Literal["output", "tool_result"]

_SNAPSHOT_METHODS = frozenset({"updates", "checkpoints", "debug", "tasks"})


@dataclass
class Judgment:
    """One message to judge: what kind it is, the state's messages before it, and the message."""

    kind: Kind
    context: list[BaseMessage]
    message: BaseMessage


class StreamJudge(Protocol):
    """What a guard middleware gives its stream transformer: which kinds it guards and how it judges them.

    ``judge_stream`` returns, for each judgment, the message that replaces a flagged one (the same the hooks
    write into the state) or ``None`` when it is safe.
    """

    stream_kinds: frozenset[str]

    def judge_stream(self, items: Sequence[Judgment]) -> list[BaseMessage | None]: ...

    async def ajudge_stream(self, items: Sequence[Judgment]) -> list[BaseMessage | None]: ...


def _kind_of(message: Any, space: _Namespace | None = None) -> Kind | None:
    """How a message is judged: a model message as the output; a tool result, and a user or system message added
    during the run (by a tool's ``Command``: not in the namespace's input), as a tool result. A guard's own notice
    or refusal is not judged (the hooks skip it too)."""
    if written_here(message):
        return None
    if isinstance(message, AIMessage):
        return "output"
    if isinstance(message, ToolMessage):
        return "tool_result"
    added = space is not None and space.baseline is not None and message.id not in space.baseline
    return "tool_result" if isinstance(message, (HumanMessage, SystemMessage)) and added else None


@dataclass
class _Pending:
    """Judgments an event waits for, and what to do with their results (it returns the events to release)."""

    items: list[Judgment]
    apply: Callable[[list[BaseMessage | None]], list[Any]]


_EMPTY_TEXT = {"type": "text", "text": ""}
_TEXT_TYPES = {"text": "text-delta", "reasoning": "reasoning-delta"}


@dataclass
class _Namespace:
    """What the transformer knows of one graph namespace: its latest state's messages, and those of its input."""

    context: list[BaseMessage] = field(default_factory=list)
    baseline: set[str | None] | None = None


@dataclass
class _HeldMessage:
    """A streamed model message held back until ``message-finish``: what each block holds so far."""

    message_id: str | None
    space: _Namespace
    blocks: dict[int, dict[str, Any]] = field(default_factory=dict)
    finished: dict[int, dict[str, Any]] = field(default_factory=dict)

    def start(self, index: int, content: dict[str, Any]) -> None:
        btype = content.get("type")
        if btype in _TEXT_TYPES:
            self.blocks[index] = {"type": btype, btype: content.get(btype) or ""}
        elif btype in ("tool_call_chunk", "tool_call"):
            args = content.get("args")
            self.blocks[index] = {"type": "tool_call_chunk", "id": content.get("id"), "name": content.get("name")}
            self.blocks[index]["args"] = args if isinstance(args, str) else json.dumps(args) if args else ""
        else:  # anything else (images, server tool blocks, ...) is judged from its finish, as the hook would
            self.blocks[index] = dict(content)

    def delta(self, index: int, delta: dict[str, Any]) -> None:
        dtype = delta.get("type")
        for btype, delta_type in _TEXT_TYPES.items():
            if dtype == delta_type:
                block = self.blocks.setdefault(index, {"type": btype, btype: ""})
                block[btype] = block.get(btype, "") + (delta.get(btype) or "")
                return
        fields = delta.get("fields") if dtype == "block-delta" else delta if dtype == "tool-call-delta" else None
        if isinstance(fields, dict) and (dtype == "tool-call-delta" or fields.get("type") == "tool_call_chunk"):
            block = self.blocks.setdefault(index, {"type": "tool_call_chunk", "id": None, "name": None, "args": ""})
            for key in ("id", "name"):
                block[key] = fields.get(key) or block.get(key)
            if isinstance(fields.get("args"), str):  # block-delta: the whole string so far; tool-call-delta: a slice
                block["args"] = fields["args"] if dtype == "block-delta" else block.get("args", "") + fields["args"]

    def finish(self, index: int, content: dict[str, Any]) -> None:
        self.finished[index] = dict(content)

    def final_blocks(self) -> list[tuple[int, dict[str, Any]]]:
        """Each block as it finished (or, without a finish, as its start and deltas built it)."""
        out = []
        for index in sorted(self.blocks.keys() | self.finished.keys()):
            built = self.blocks.get(index, {})
            content = self.finished.get(index) or _from_parts(built)
            btype = content.get("type")
            if btype in _TEXT_TYPES and not content.get(btype):  # a finish without its text: the deltas'
                content = {**content, btype: built.get(btype, "")}
            out.append((index, content))
        return out

    def assemble(self) -> AIMessage:
        """The whole message, shaped like the one the state will hold."""
        content: list[Any] = []
        calls: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        for _, block in self.final_blocks():
            if block.get("type") == "tool_call":
                calls.append({"name": block.get("name") or "", "args": block.get("args") or {}, "id": block.get("id")})
            elif block.get("type") == "invalid_tool_call":
                invalid.append({k: block.get(k) for k in ("name", "args", "id", "error")})
            else:
                content.append({k: v for k, v in block.items() if k != "index"})
        return AIMessage(content=content, tool_calls=calls, invalid_tool_calls=invalid, id=self.message_id)


def _from_parts(built: dict[str, Any]) -> dict[str, Any]:
    """A finished block made from a start and deltas (a call's arguments parsed, as the state will have them)."""
    if built.get("type") != "tool_call_chunk":
        return dict(built)
    try:
        args = json.loads(built.get("args") or "{}")
    except json.JSONDecodeError:
        args = None
    if isinstance(args, dict):
        return {"type": "tool_call", "id": built.get("id"), "name": built.get("name") or "", "args": args}
    return {"type": "invalid_tool_call", "id": built.get("id"), "name": built.get("name"), "args": built.get("args")}


def _replay(index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished block as the events a consumer expects: its start, its content in one delta, its finish."""
    btype = block.get("type")
    if btype in _TEXT_TYPES:
        start: dict[str, Any] = {"type": btype, btype: ""}
        text = block.get(btype)
        delta: dict[str, Any] | None = {"type": _TEXT_TYPES[btype], btype: text} if text else None
    elif btype == "tool_call":
        start = {"type": "tool_call_chunk", "id": block.get("id"), "name": block.get("name"), "args": ""}
        delta = {"type": "tool-call-delta", "args": json.dumps(block.get("args") or {}, ensure_ascii=False)}
    else:
        start, delta = block, None
    events = [{"event": "content-block-start", "index": index, "content": start}]
    if delta is not None:
        events.append({"event": "content-block-delta", "index": index, "delta": delta})
    return [*events, {"event": "content-block-finish", "index": index, "content": block}]


class _GuardStreamTransformer:
    """Protocol mechanics shared by the sync and async lanes; see the module docstring."""

    before_builtins = True
    supports_sync = True
    required_stream_modes = ("messages", "tools", "values")

    def __init__(self, scope: tuple[str, ...] = (), *, judge: StreamJudge) -> None:
        super().__init__(scope)  # type: ignore[call-arg]
        self._judge = judge
        self._kinds = judge.stream_kinds
        self._mux: Any = None
        self._inert = False
        self._releasing = False
        self._spaces: dict[tuple[str, ...], _Namespace] = {}
        self._held: dict[str, _HeldMessage] = {}
        self._outcome: dict[str, BaseMessage | None] = {}

    def init(self) -> dict[str, Any]:
        return {}  # no projection: events are rewritten in place

    def _on_register(self, mux: Any) -> None:
        self._mux = mux  # held blocks are released through it, at message-finish
        # A subgraph handle's mini-mux shares the root's event objects (and gets a copy of this transformer): the
        # root's instance already guards every namespace below it, and its releases are forwarded to the handle.
        self._inert = getattr(mux, "_assign_seq", True) is False

    def process(self, event: Any) -> bool:
        keep, pending = self._intake(event)
        if pending is not None:
            released = pending.apply(self._judge.judge_stream(pending.items) if pending.items else [])
            self._releasing = True
            try:
                for released_event in released:
                    self._mux.push(released_event)
            finally:
                self._releasing = False
        return keep

    async def aprocess(self, event: Any) -> bool:
        keep, pending = self._intake(event)
        if pending is not None:
            released = pending.apply(await self._judge.ajudge_stream(pending.items) if pending.items else [])
            self._releasing = True
            try:
                for released_event in released:
                    await self._mux.apush(released_event)
            finally:
                self._releasing = False
        return keep

    # -- routing ----------------------------------------------------------------------------------------------
    def _intake(self, event: Any) -> tuple[bool, _Pending | None]:
        """Whether the event goes into the main log, and the judgment it waits for (if any)."""
        params = event.get("params") or {}
        namespace = tuple(params.get("namespace") or ())
        if self._inert or self._releasing or namespace[: len(self.scope)] != tuple(self.scope):
            return True, None  # a subgraph handle's copy, our own release, or outside this run
        space = self._spaces.setdefault(namespace, _Namespace())
        method = event.get("method")
        if method == "messages":
            return self._on_messages(event, params, space)
        if method == "tools" and "tool_result" in self._kinds:
            return True, self._on_tools(params, space)
        if method == "values":
            return True, self._on_values(params, space)
        if method in _SNAPSHOT_METHODS:
            return True, self._on_snapshot(params, space)
        return True, None

    def _record(self, message: BaseMessage, replacement: BaseMessage | None) -> None:
        if message.id is not None:
            self._outcome[message.id] = replacement

    def _on_messages(self, event: Any, params: dict[str, Any], space: _Namespace) -> tuple[bool, _Pending | None]:
        data = params.get("data")
        if not isinstance(data, tuple) or len(data) != 2:
            return True, None
        payload, metadata = data
        if isinstance(payload, BaseMessage):  # a whole message (a model that does not stream, a tool's message)
            kind = _kind_of(payload, space)
            if kind not in self._kinds:
                return True, None

            def apply_whole(out: list[BaseMessage | None]) -> list[Any]:
                self._record(payload, out[0])
                if out[0] is not None:
                    params["data"] = (out[0], metadata)
                return []

            return True, _Pending([Judgment(kind, list(space.context), payload)], apply_whole)  # type: ignore[arg-type]
        if not isinstance(payload, dict) or "output" not in self._kinds:
            return True, None
        run_id = str((metadata or {}).get("run_id") or "")
        step = payload.get("event")
        if step == "message-start":
            if payload.get("role", "ai") == "ai":
                self._held[run_id] = _HeldMessage(payload.get("id") or payload.get("message_id"), space)
            return True, None
        held = self._held.get(run_id)
        if held is None:
            return True, None
        index = payload.get("index")
        if step == "content-block-start" and isinstance(payload.get("content"), dict):
            held.start(index, payload["content"])
            payload["content"] = dict(_EMPTY_TEXT)  # the block is replayed, whole, at message-finish
            return False, None
        if step == "content-block-delta" and isinstance(payload.get("delta"), dict):
            held.delta(index, payload["delta"])
            payload["delta"] = {"type": "text-delta", "text": ""}  # built-ins see an empty delta; the log, none
            return False, None
        if step == "content-block-finish" and isinstance(payload.get("content"), dict):
            held.finish(index, payload["content"])
            payload["content"] = dict(_EMPTY_TEXT)  # the real finish goes out at message-finish
            return False, None
        if step == "message-finish":
            return True, self._on_message_finish(run_id, held, event, payload)
        if step == "error":
            self._held.pop(run_id, None)
        return True, None

    def _on_message_finish(self, run_id: str, held: _HeldMessage, event: Any, payload: dict[str, Any]) -> _Pending:
        del self._held[run_id]
        message = held.assemble()
        params, metadata = event["params"], event["params"]["data"][1]

        def release(out: list[BaseMessage | None]) -> list[Any]:
            replacement = out[0]
            self._record(message, replacement)
            blocks = held.final_blocks()
            if replacement is not None:  # the refusal in the first block; the rest (tool calls too) empty
                payload.pop("additional_kwargs", None)
                indexes = [i for i, _ in blocks] or [0]
                texts = [replacement.text] + [""] * (len(indexes) - 1)
                blocks = [(i, {"type": "text", "text": t}) for i, t in zip(indexes, texts, strict=True)]
            replay = [(step, metadata) for index, block in blocks for step in _replay(index, block)]
            return [{"type": "event", "method": "messages", "params": {**params, "data": d}} for d in replay]

        return _Pending([Judgment("output", list(held.space.context), message)], release)

    def _on_tools(self, params: dict[str, Any], space: _Namespace) -> _Pending | None:
        data = params.get("data")
        if not isinstance(data, dict):
            return None
        step = data.get("event")
        if step == "tool-output-delta":  # held: the whole output goes out with tool-finished, judged
            delta = data.get("delta")
            data["delta"] = type(delta)() if isinstance(delta, (str, dict, list)) else None
            return None
        field_name = "output" if step == "tool-finished" else "message" if step == "tool-error" else None
        if field_name is None or field_name not in data:
            return None
        value = normalized(data[field_name])
        carries_messages = bool(messages_in(value))
        if carries_messages:  # a ToolMessage, a Command: the messages the model will read as new
            messages = [m for m in new_messages(value, space.context, model_messages=False) if not written_here(m)]
            if not messages:
                return None
        else:
            messages = [_text_result(value, data)]

        def apply_tool(out: list[BaseMessage | None]) -> list[Any]:
            for message, replacement in zip(messages, out, strict=True):
                self._record(message, replacement)
            if carries_messages:
                if any(r is not None for r in out):
                    data[field_name] = with_replaced(value, messages, out)
            elif out[0] is not None:
                data[field_name] = out[0].text
            return []

        return _Pending([Judgment("tool_result", list(space.context), m) for m in messages], apply_tool)

    def _unjudged(self, messages: Sequence[Any], space: _Namespace) -> list[Judgment]:
        """The messages of a state's list that no judgment saw (new to the run, of a kind this guard judges)."""
        items: list[Judgment] = []
        for i, m in enumerate(messages):
            kind = _kind_of(m, space)
            if kind in self._kinds and m.id not in self._outcome and m.id not in (space.baseline or ()):
                items.append(Judgment(kind, list(messages[:i]), m))  # type: ignore[arg-type]
        return items

    def _patched(self, messages: list[Any], extra: dict[int, BaseMessage | None]) -> tuple[list[Any], bool]:
        """``messages`` as the state will hold them: each judged one by its outcome (by id, or by object for a
        message without one), and a flagged answer's calls gone with it (the results answering them: ToolStrategy's
        acknowledgement of a structured answer quotes it). Also whether an answer was flagged."""

        def outcome(m: Any) -> BaseMessage | None:
            if not isinstance(m, BaseMessage) or isinstance(m, RemoveMessage):  # a removal stays a removal
                return None
            return extra.get(id(m)) if id(m) in extra else self._outcome.get(m.id) if m.id is not None else None

        patched = [outcome(m) or m for m in messages]
        flagged = [m for m in messages if isinstance(m, AIMessage) and outcome(m) is not None]
        gone = {id(m) for answer in flagged for m in answers_to(answer, messages)}
        patched = [m for m, was in zip(patched, messages, strict=True) if id(was) not in gone]
        return patched, bool(flagged)

    def _on_values(self, params: dict[str, Any], space: _Namespace) -> _Pending | None:
        data = params.get("data")
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            return None
        space.context = list(messages)
        if space.baseline is None:  # the run's input: the input guard's business, and earlier runs' history
            space.baseline = {m.id for m in messages if isinstance(m, BaseMessage)}
            return None
        items = self._unjudged(messages, space)

        def patch(out: list[BaseMessage | None]) -> list[Any]:
            for item, replacement in zip(items, out, strict=True):
                self._record(item.message, replacement)
            patched, flagged = self._patched(messages, {})
            if flagged and data.get("structured_response") is not None:  # as after_model will leave the state
                data["structured_response"] = None
            if len(patched) != len(messages) or any(a is not b for a, b in zip(patched, messages, strict=True)):
                data["messages"] = patched  # in place: run.output reads this very dict (a copy made for the stream)
            return []

        return _Pending(items, patch)

    def _on_snapshot(self, params: dict[str, Any], space: _Namespace) -> _Pending | None:
        """langgraph's other projections (``updates``, ``checkpoints``, ``debug``, ``tasks``): a node's writes, the
        state it was given, a checkpoint's values. Each message in the payload shows as the state will hold it;
        one no judgment saw (a node's answer that never streamed) is judged here, in the namespace's context."""
        data = params.get("data")
        lists = _message_lists(data)
        if not lists:
            return None
        items: list[Judgment] = []
        if space.baseline is not None:
            seen: set[int] = set()
            for messages in lists:
                known = {m.id for m in messages if isinstance(m, BaseMessage)} >= {m.id for m in space.context}
                for item in self._unjudged(messages, space):
                    if id(item.message) not in seen:  # a write, not the whole state: judged after the state
                        seen.add(id(item.message))
                        context = item.context if known else [*space.context, *item.context]
                        items.append(Judgment(item.kind, context, item.message))

        def patch(out: list[BaseMessage | None]) -> list[Any]:
            extra: dict[int, BaseMessage | None] = {}
            for item, replacement in zip(items, out, strict=True):
                self._record(item.message, replacement)
                extra[id(item.message)] = replacement
            params["data"] = self._scrubbed(data, extra)  # a copy where anything changed: the node's own objects stay
            return []

        return _Pending(items, patch)

    def _scrubbed(self, value: Any, extra: dict[int, BaseMessage | None]) -> Any:
        """``value`` with every list of messages in it :meth:`_patched` (and a flagged answer's structured_response
        cleared beside it); unchanged parts are the same objects."""
        if isinstance(value, list):
            items = [self._scrubbed(v, extra) for v in value]
            if any(isinstance(v, BaseMessage) for v in value):
                items = self._patched(items, extra)[0]
            same = len(items) == len(value) and all(a is b for a, b in zip(items, value, strict=True))
            return value if same else items
        if isinstance(value, tuple):
            items = [self._scrubbed(v, extra) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
        if isinstance(value, dict):
            out = {k: self._scrubbed(v, extra) for k, v in value.items()}
            messages = value.get("messages")
            if (
                isinstance(messages, list)
                and out.get("structured_response") is not None
                and self._patched(messages, extra)[1]
            ):
                out["structured_response"] = None
            return value if all(out[k] is value[k] for k in value) else out
        if isinstance(value, BaseMessage):
            return self._patched([value], extra)[0][0]
        return value


def _message_lists(value: Any, depth: int = 0) -> list[list[Any]]:
    """The lists of messages anywhere in a payload (a lone message counts as a list of one)."""
    if isinstance(value, BaseMessage):
        return [[value]]
    if depth > 8 or not isinstance(value, (list, tuple, dict)):
        return []
    children = value.values() if isinstance(value, dict) else value
    found = [list(value)] if isinstance(value, list) and any(isinstance(v, BaseMessage) for v in value) else []
    for child in children:
        if not isinstance(child, BaseMessage) or not found:
            found += _message_lists(child, depth + 1)
    return found


def _text_result(value: Any, data: dict[str, Any]) -> ToolMessage:
    """A tool's output that is no message (any other output, an error), as the ToolMessage the model will read."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return ToolMessage(content=text, tool_call_id=str(data.get("tool_call_id") or ""), name=data.get("tool_name"))


if StreamTransformer is not None:

    class GuardStreamTransformer(_GuardStreamTransformer, StreamTransformer):  # type: ignore[misc,valid-type]
        """Holds an agent's streamed messages and tool results until the middleware's guard has judged them."""

else:  # pragma: no cover
    GuardStreamTransformer = None  # type: ignore[assignment,misc]


def stream_transformers(judge: StreamJudge) -> tuple[Any, ...]:
    """The ``transformers`` a guard middleware registers: none where langgraph has no stream transformers."""
    if GuardStreamTransformer is None or not judge.stream_kinds:
        return ()
    return (partial(GuardStreamTransformer, judge=judge),)
