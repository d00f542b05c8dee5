"""LangChain guard steps: input and output guards that raise or reroute, in every LCEL mode.

* :class:`GuardStep` with ``stage="input"`` checks the user's turn and passes its input through unchanged when
  safe; with ``stage="output"`` it checks the model's answer as the Agent turn.
* :class:`GuardedRunnable` (``guard.wrap(chain)``) guards both sides and judges the answer in the context of
  the user's turn that produced it; an unsafe input never reaches the chain.

Each check is a named child run (``llama_guard``, ``prompt_guard``) whose output is the verdict, so verdicts
show up in callbacks, LangSmith traces and ``astream_events``. Batches are checked in one model batch.

Example:
    >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-4-12B")   # doctest: +SKIP
    >>> chain = guard.as_input_guard() | prompt | llm | guard.as_output_guard()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from functools import partial
from typing import Any, Literal, cast, get_args

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk, HumanMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import BaseModel, ConfigDict, Field

from . import options
from .conversation import (
    CALL_BLOCK_TYPES,
    MESSAGE_FIELDS,
    ConversationInput,
    coerce_message,
    documents_error,
    is_documents,
    is_message_dict,
    to_turns,
)
from .errors import (
    GuardBatchError,
    GuardConfigurationError,
    GuardInputError,
    GuardKeyError,
    GuardTypeError,
    UnsafeContentError,
)
from .inner_runs import unstreamed_child
from .moderators import AnyVerdict, Moderator
from .parallel import (
    abatch_overlapped,
    ainvoke_overlapped,
    astream_overlapped,
    batch_overlapped,
    invoke_overlapped,
    stream_overlapped,
)
from .retry import NoVerdictFallbacks

Stage = Literal["input", "output"]
OnUnsafe = Any
"""``"raise"``, a ``str`` / ``BaseMessage`` returned instead, or a ``Runnable`` that receives
``{"input": ..., "verdict": ...}`` (and, for outputs, ``"output"``) and returns the replacement."""

_SENTENCE_END = re.compile(r"[.!?\n]\s*$")


# -- what flows through chains ----------------------------------------------------------------------------------
def input_conversation(value: Any, input_key: str | None = None) -> ConversationInput:
    """The conversation to check from what flows at the head of a chain.

    ``str``, ``BaseMessage``, a list of messages and ``PromptValue`` are used as they are. A ``dict`` uses
    ``input_key``; else a ``{"role": ..., "content": ...}`` dict is one message, and any other dict its single
    string / message-list value (several candidates are an error that names them). Documents are refused with
    what to do instead. Errors are :class:`~langchain_llamaguard.errors.GuardInputError` s.
    """
    if is_documents(value):
        raise documents_error()
    if isinstance(value, (str, PromptValue, BaseMessage)):
        return value
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        if input_key is not None:
            if input_key not in value:
                raise GuardKeyError(f"input_key {input_key!r} is not in the input; keys: {sorted(value)}")
            return input_conversation(value[input_key])
        candidates = [k for k, v in value.items() if _may_hold_text(v)]
        if is_message_dict(value):
            others = sorted(k for k in candidates if k not in MESSAGE_FIELDS)
            if not others:
                return [value]
            raise GuardInputError(
                f"the input dict is a chat message with other keys a prompt may read ({others}): pass "
                "input_key='...' to the guard step to say which to check"
            )
        if len(candidates) == 1:
            return input_conversation(value[candidates[0]])
        raise GuardInputError(
            f"cannot tell which key of the input dict to check (candidates: {sorted(candidates) or 'none'}); "
            "pass input_key='...' to the guard step"
        )
    raise GuardTypeError(
        f"a guard step cannot check a {type(value).__name__}; accepted: str, dict, BaseMessage, "
        "list of messages, PromptValue"
    )


_AGENT_EXECUTOR_KEYS = frozenset(
    {"output", "input", "chat_history", "intermediate_steps", "messages", "actions", "steps"}
)
"""What langchain-classic's AgentExecutor returns and streams beside its answer ("output"): the question, the
history, and the steps that led to the answer (its tool calls and their results, as actions, steps and messages)."""


def _may_hold_text(value: Any) -> bool:
    """Whether a value of an input dict is something a prompt may format into the model's input: anything but
    ``None``, booleans and numbers (a ``Document``, a nested dict or an object has text too)."""
    return value is not None and not isinstance(value, (bool, int, float))


_OUTPUT_ACCEPTED = "accepted: AIMessage, AIMessageChunk, str, a dict or a pydantic object with output_key"


def output_message(value: Any, output_key: str | None = None) -> BaseMessage:
    """The model's answer as a message (``AIMessage``, ``AIMessageChunk``, ``str``, a dict's key, a pydantic
    object's field (``with_structured_output``), or a ``{"role": "assistant", "content": ...}`` dict); errors are
    ``GuardInputError`` s."""
    if is_documents(value):
        raise documents_error()
    if isinstance(value, BaseMessage):
        return value
    if isinstance(value, str):
        return AIMessage(content=value)
    if isinstance(value, BaseModel):  # structured output: its fields, read like a dict's keys
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, dict):
        if output_key is None and is_message_dict(value):
            return coerce_message(value)
        key = output_key
        if key is None:
            # "output" by default (AgentExecutor's answer), where nothing else an app may show is beside it but
            # what AgentExecutor puts there (the question, the history, its steps): a key left unjudged must be one
            # the caller named the answer apart from
            others = sorted(k for k, v in value.items() if k not in _AGENT_EXECUTOR_KEYS and _may_hold_text(v))
            if "output" not in value or others:
                beside = f"; besides 'output' it holds {others}, which would pass unjudged" if "output" in value else ""
                raise GuardInputError(
                    f"pass output_key='...' to say which key or field is the answer{beside}; keys: {sorted(value)}"
                )
            key = "output"
        if key not in value:
            raise GuardKeyError(f"output_key {key!r} is not in the output; keys: {sorted(value)}")
        answer = value[key]
        nested = isinstance(answer, dict) and not is_message_dict(answer)
        if nested or (isinstance(answer, BaseModel) and not isinstance(answer, (BaseMessage, Document))):
            inner = sorted(answer) if isinstance(answer, dict) else sorted(type(answer).model_fields)
            raise GuardTypeError(
                f"output_key {key!r} holds a {type(answer).__name__} (keys: {inner}), not an answer; it must hold "
                "a str, a message or a {'role': 'assistant', 'content': ...} dict: point output_key at the text"
            )
        return output_message(answer)
    raise GuardTypeError(f"an output guard cannot check a {type(value).__name__}; {_OUTPUT_ACCEPTED}")


def _as_messages(conv: ConversationInput) -> list[Any]:
    if isinstance(conv, str):
        return [HumanMessage(content=conv)]
    if isinstance(conv, PromptValue):
        return conv.to_messages()
    if isinstance(conv, BaseMessage):
        return [conv]
    return list(conv)  # type: ignore[arg-type]


def _is_message_type(tp: Any) -> bool:
    """Whether a runnable's ``OutputType`` (a class, a Union or an Annotated alias) is a message type."""
    if isinstance(tp, type):
        return issubclass(tp, BaseMessage)
    return any(_is_message_type(arg) for arg in get_args(tp))


def _replacement(on_unsafe: Any, like: Any) -> Any:
    """A fixed replacement shaped like what it replaces (a message for messages, a str for strings, a chunk for
    the chunks of a stream, so that the stream's chunks still add up)."""
    if isinstance(like, AIMessageChunk) and type(on_unsafe) is AIMessage:
        fields = on_unsafe.model_dump(exclude={"type", "tool_calls", "invalid_tool_calls"})
        calls = [(c["name"], json.dumps(c["args"]), c["id"]) for c in on_unsafe.tool_calls]
        chunks = [
            {"name": name, "args": args, "id": id_, "index": i, "type": "tool_call_chunk"}
            for i, (name, args, id_) in enumerate(calls)
        ]
        return AIMessageChunk(**fields, tool_call_chunks=chunks)
    if isinstance(on_unsafe, BaseMessage):
        return on_unsafe
    if isinstance(like, AIMessageChunk):
        return AIMessageChunk(content=on_unsafe)
    if isinstance(like, BaseMessage) or (not isinstance(like, str) and _is_message_type(like)):
        return AIMessage(content=on_unsafe)
    return on_unsafe


def _calls_a_tool(message: BaseMessage) -> bool:
    """Whether an answer (so far) holds a tool call, in its call fields or as a content block."""
    if any(getattr(message, f, None) for f in ("tool_calls", "invalid_tool_calls", "tool_call_chunks")):
        return True
    if (message.additional_kwargs or {}).get("function_call"):
        return True
    content = message.content
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") in CALL_BLOCK_TYPES for b in content)


def _as_chunk_like(result: Any, like: Any) -> Any:
    """An ``on_unsafe`` Runnable's answer in a stream of message chunks: an ``AIMessage`` becomes an
    ``AIMessageChunk``, so that the stream still adds up; anything else (a str included) as it is."""
    return _replacement(result, like) if isinstance(like, AIMessageChunk) and type(result) is AIMessage else result


def _streamed_like(output_type: Any) -> Any:
    """What a stream's replacement is shaped like when nothing was streamed yet: a chunk for a chain that streams
    messages, else the chain's output type."""
    return AIMessageChunk(content="") if _is_message_type(output_type) else output_type


def check_stream_options(stream_mode: Any, check_every: Any) -> None:
    """A :class:`GuardConfigurationError` naming what is accepted unless both streaming options are valid."""
    if stream_mode not in ("buffer", "incremental") or not isinstance(stream_mode, str):
        raise GuardConfigurationError(f"stream_mode must be 'buffer' or 'incremental', got {stream_mode!r}")
    if check_every != "sentence" and (type(check_every) is not int or check_every < 1):
        raise GuardConfigurationError(
            f"check_every must be a whole number of chunks (1 or more) or 'sentence', got {check_every!r}"
        )


def _is_graph_state(value: Any, config: RunnableConfig) -> bool:
    """Whether a step's input is a LangGraph state with messages, inside a graph node (the step used as a node)."""
    if not (config.get("metadata") or {}).get("langgraph_node") or not isinstance(value, dict):
        return False
    return any(isinstance(v, list) and v and all(isinstance(m, BaseMessage) for m in v) for v in value.values())


def _extends(old: Any, new: Any) -> bool:
    """Whether ``new`` is ``old`` carried on: strings that start alike, dicts / lists / pydantic objects whose
    every part is carried on (the snapshots ``JsonOutputParser`` and ``PydanticOutputParser`` stream)."""
    if isinstance(old, BaseModel) and isinstance(new, BaseModel) and not isinstance(old, BaseMessage):
        return type(old) is type(new) and _extends(old.model_dump(), new.model_dump())
    if isinstance(old, str) and isinstance(new, str):
        return new.startswith(old)
    if isinstance(old, dict) and isinstance(new, dict):
        return all(k in new and _extends(v, new[k]) for k, v in old.items())
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return len(old) <= len(new) and all(_extends(a, b) for a, b in zip(old, new, strict=False))
    try:
        return bool(old == new)
    except Exception:  # e.g. arrays, whose == is no truth value
        return False


def _added(acc: Any, chunk: Any) -> tuple[Any, Any]:
    """(``acc + chunk``, ``None``). A chunk that does not add to the others replaces them, as in LangChain's own
    ``transform``: where it carries them on (``JsonOutputParser`` streams whole snapshots as plain dicts), nothing
    is lost; where it does not, what it replaced comes back second, to be judged on its own."""
    if acc is None:
        return chunk, None
    whole = isinstance(acc, BaseMessage) and isinstance(chunk, BaseMessage)
    if whole and not (isinstance(acc, BaseMessageChunk) and isinstance(chunk, BaseMessageChunk)):
        # whole messages do not add up (langchain-core makes a prompt template of two): each is one answer
        return chunk, (None if _extends(acc, chunk) else acc)
    try:
        return acc + chunk, None
    except TypeError:
        return chunk, (None if _extends(acc, chunk) else acc)


def _joined(chunks: list[Any]) -> tuple[Any, list[Any]]:
    """A streamed input put back together (a single chunk is the input itself), and the earlier parts a chunk
    replaced without carrying them on (each is judged too)."""
    if not chunks:
        raise GuardInputError("a guard step got an empty input stream; there is nothing to check")
    value, replaced = None, []
    for chunk in chunks:
        value, dropped = _added(value, chunk)
        if dropped is not None:
            replaced.append(dropped)
    return value, replaced


def _answer_payload(payload: dict[str, Any], answer: Any) -> dict[str, Any]:
    """What an ``on_unsafe`` Runnable gets with a flagged answer: ``payload`` (the guarded run's ``"input"``) and
    ``"output"``; an output step's ``"input"`` is the answer itself, in every mode."""
    return {"input": answer, **payload, "output": answer}


def _or_error(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or the exception it raised: one row's outcome, reported per input by ``_batch_with_config``."""
    try:
        return fn(*args)
    except Exception as exc:
        return exc


async def _one(value: Any) -> AsyncIterator[Any]:
    yield value


def check_on_unsafe(on_unsafe: Any) -> Any:
    """``on_unsafe`` as a step or a graph node takes it: ``"raise"`` or a canned answer (a str), a message, a
    Runnable, or a callable (as a ``RunnableLambda``); anything else raises
    :class:`~langchain_llamaguard.errors.GuardTypeError`."""
    if isinstance(on_unsafe, str):
        return options.canned_answer("on_unsafe", on_unsafe)
    if isinstance(on_unsafe, (BaseMessage, Runnable)):
        return on_unsafe
    if callable(on_unsafe):
        from langchain_core.runnables import RunnableLambda

        return RunnableLambda(on_unsafe)
    raise GuardTypeError(
        "on_unsafe must be 'raise', a refusal text, a message, or a Runnable or callable that returns the answer; "
        f"got a {type(on_unsafe).__name__}"
    )


def checked(
    moderator: Moderator, convs: list[ConversationInput], role: str, callbacks: Sequence[Any], stage: str
) -> list[AnyVerdict]:
    """``moderator.check`` as one named child run per conversation (name: the moderator's, output: the verdict),
    under each conversation's callback manager; with no managers, just the check."""
    children = [
        cb.on_chain_start(None, {"stage": stage, "role": role}, name=moderator.name, run_type="chain")
        for cb in callbacks
    ]
    try:
        verdicts = moderator.check(convs, role=role)
    except BaseException as exc:
        for child in children:
            child.on_chain_error(exc)
        raise
    for child, verdict in zip(children, verdicts if children else [], strict=True):
        child.on_chain_end({"verdict": verdict.model_dump()})
    return verdicts


async def achecked(
    moderator: Moderator, convs: list[ConversationInput], role: str, callbacks: Sequence[Any], stage: str
) -> list[AnyVerdict]:
    """The async :func:`checked` (async callback managers)."""
    children = [
        await cb.on_chain_start(None, {"stage": stage, "role": role}, name=moderator.name, run_type="chain")
        for cb in callbacks
    ]
    try:
        verdicts = await moderator.acheck(convs, role=role)
    except BaseException as exc:
        for child in children:
            await child.on_chain_error(exc)
        raise
    for child, verdict in zip(children, verdicts if children else [], strict=True):
        await child.on_chain_end({"verdict": verdict.model_dump()})
    return verdicts


def _raise_first_error(outputs: list[Any]) -> list[Any]:
    """``outputs`` when no row failed; else raise the first failed row's error, as LangChain's ``batch`` does, with
    a note naming the row (its own message names only what is wrong inside the row)."""
    failed = [(i, out) for i, out in enumerate(outputs) if isinstance(out, BaseException)]
    if not failed:
        return outputs
    row, error = failed[0]
    whole = all(out is error for out in outputs)  # the whole call failed (a cancellation, a closed guard)
    if len(outputs) > 1 and not whole and isinstance(error, Exception):
        error.add_note(f"(row {row} of a batch of {len(outputs):,}; pass return_exceptions=True for every row's)")
    raise error


class OneBatchPerCall:
    """A Runnable mixin: ``batch`` / ``abatch`` hand the whole list to the class's ``_batch`` / ``_abatch``, so a
    batch of inputs is one model batch per guard (LangChain's default would run them one by one).

    Example:
        >>> class MyStep(OneBatchPerCall, RunnableSerializable[Any, Any]): ...  # doctest: +SKIP
    """

    def batch(
        self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> list[Any]:
        if not inputs:
            return []
        out = self._batch_with_config(  # type: ignore[attr-defined]
            self._batch,
            inputs,
            config,
            return_exceptions=True,
            run_type="chain",
            **kwargs,  # type: ignore[attr-defined]
        )
        return out if return_exceptions else _raise_first_error(out)

    async def abatch(
        self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> list[Any]:
        if not inputs:
            return []
        out = await self._abatch_with_config(  # type: ignore[attr-defined]
            self._abatch,
            inputs,
            config,
            return_exceptions=True,
            run_type="chain",
            **kwargs,  # type: ignore[attr-defined]
        )
        return out if return_exceptions else _raise_first_error(out)


class _GuardBase(OneBatchPerCall, NoVerdictFallbacks, RunnableSerializable[Any, Any]):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    moderator: Any = Field(exclude=True)
    """A :class:`~langchain_llamaguard.moderators.Moderator`."""
    on_unsafe: Any = "raise"
    input_key: str | None = None
    output_key: str | None = None
    stream_mode: Literal["buffer", "incremental"] = "buffer"
    check_every: int | Literal["sentence"] = 32

    def __init__(self, **data: Any) -> None:
        # Checked before pydantic sees them: its own checks would raise a ValidationError (not one of this
        # package's errors) and would take ``True`` for 1 and ``"2"`` for 2.
        check_stream_options(data.get("stream_mode", "buffer"), data.get("check_every", 32))
        data["on_unsafe"] = check_on_unsafe(data.get("on_unsafe", "raise"))
        for key in ("input_key", "output_key"):
            if data.get(key) is not None and (not isinstance(data[key], str) or not data[key]):
                raise GuardConfigurationError(f"{key} must be a dict key (a non-empty str) or None, got {data[key]!r}")
        super().__init__(**data)

    def model_post_init(self, context: Any) -> None:
        if not isinstance(self.moderator, Moderator):
            raise GuardTypeError("moderator must implement check()/acheck()")

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    # -- retries: transient failures only (see retry.py) ---------------------------------------------------------
    def with_retry(
        self,
        *,
        retry_if_exception_type: Any = (Exception,),
        wait_exponential_jitter: bool = True,
        exponential_jitter_params: Any = None,
        stop_after_attempt: int = 3,
    ) -> Runnable[Any, Any]:
        """LangChain's ``with_retry``, except that a verdict is never retried: :class:`UnsafeContentError` is
        raised at once (a batch runs its flagged items once); other errors are retried as
        ``retry_if_exception_type`` says (every exception by default).

        Example:
            >>> step = guard.as_input_guard().with_retry(stop_after_attempt=3)  # doctest: +SKIP
        """
        from .retry import GuardRetry

        return GuardRetry(
            bound=self,
            kwargs={},
            config={},
            retry_exception_types=retry_if_exception_type,
            wait_exponential_jitter=wait_exponential_jitter,
            exponential_jitter_params=exponential_jitter_params,
            max_attempt_number=stop_after_attempt,
        )

    # -- as-completed batches: still one model batch per stage ---------------------------------------------
    def batch_as_completed(
        self, inputs: Sequence[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> Iterator[tuple[int, Any]]:
        """Like :meth:`batch` (one model batch per stage); every result is ready at once, each with its index."""
        if inputs:
            yield from enumerate(self.batch(list(inputs), config, return_exceptions=return_exceptions, **kwargs))

    async def abatch_as_completed(
        self, inputs: Sequence[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> AsyncIterator[tuple[int, Any]]:
        """Like :meth:`abatch` (one model batch per stage); every result is ready at once, each with its index."""
        if inputs:
            results = await self.abatch(list(inputs), config, return_exceptions=return_exceptions, **kwargs)
            for item in enumerate(results):
                yield item

    # -- verdicts as named child runs -----------------------------------------------------------------------
    def _moderator_for(self, stage: str) -> Moderator:
        return cast(Moderator, self.moderator)

    def _verdicts(
        self, convs: list[ConversationInput], role: str, run_managers: Sequence[Any], stage: str
    ) -> list[AnyVerdict]:
        return checked(self._moderator_for(stage), convs, role, [rm.get_child() for rm in run_managers], stage)

    async def _averdicts(
        self, convs: list[ConversationInput], role: str, run_managers: Sequence[Any], stage: str
    ) -> list[AnyVerdict]:
        return await achecked(self._moderator_for(stage), convs, role, [rm.get_child() for rm in run_managers], stage)

    def _row_verdicts(self, convs: list[Any], role: str, run_managers: Sequence[Any], stage: str) -> list[Any]:
        """A batch's verdicts, one per row, or that row's own error: a row that is no conversation (its entry in
        ``convs`` is the error that says why) or that the check could not judge fails alone."""
        ok = [i for i, c in enumerate(convs) if not isinstance(c, Exception)]
        out = list(convs)
        if ok:
            try:
                got = self._verdicts([convs[i] for i in ok], role, [run_managers[i] for i in ok], stage)
            except GuardBatchError as exc:
                got = exc.rows()
            for i, verdict in zip(ok, got, strict=True):
                out[i] = verdict
        return out

    async def _arow_verdicts(self, convs: list[Any], role: str, run_managers: Sequence[Any], stage: str) -> list[Any]:
        """The async :meth:`_row_verdicts`."""
        ok = [i for i, c in enumerate(convs) if not isinstance(c, Exception)]
        out = list(convs)
        if ok:
            try:
                got = await self._averdicts([convs[i] for i in ok], role, [run_managers[i] for i in ok], stage)
            except GuardBatchError as exc:
                got = exc.rows()
            for i, verdict in zip(ok, got, strict=True):
                out[i] = verdict
        return out

    # -- what happens on unsafe -----------------------------------------------------------------------------
    def _unsafe(
        self, stage: str, verdict: AnyVerdict, payload: dict[str, Any], like: Any, config: RunnableConfig
    ) -> Any:
        if self.on_unsafe == "raise":
            raise UnsafeContentError(verdict, stage=stage)
        if isinstance(self.on_unsafe, Runnable):
            return _as_chunk_like(self.on_unsafe.invoke({**payload, "verdict": verdict}, config), like)
        return _replacement(self.on_unsafe, like)

    async def _aunsafe(
        self, stage: str, verdict: AnyVerdict, payload: dict[str, Any], like: Any, config: RunnableConfig
    ) -> Any:
        if isinstance(self.on_unsafe, Runnable):
            return _as_chunk_like(await self.on_unsafe.ainvoke({**payload, "verdict": verdict}, config), like)
        return self._unsafe(stage, verdict, payload, like, config)

    # -- streaming output checks (shared by GuardStep(stage="output") and GuardedRunnable) --------------------
    def _due(self, since_check: int, acc: Any, text_at_check: str | None) -> bool:
        """Whether the answer so far is due a check: every ``check_every`` chunks, or when its text has grown
        since the last check (``text_at_check``) and ends a sentence."""
        if self.stream_mode == "buffer":
            return False
        if not self._has_answer(acc):
            return False  # the answer's key has not streamed yet (the end of the stream judges it whole)
        if _calls_a_tool(output_message(acc, self.output_key)):
            return False  # a tool call is never released in part: held from its first chunk, judged whole at the end
        if self.check_every != "sentence":
            return since_check >= int(self.check_every)
        text = self._text_so_far(acc)
        return text is not None and text != text_at_check and bool(_SENTENCE_END.search(text))

    def _has_answer(self, acc: Any) -> bool:
        """Whether a streamed output has its answer yet (a dict's answer key can come after its other keys)."""
        if isinstance(acc, dict) and not (self.output_key is None and is_message_dict(acc)):
            return (self.output_key or "output") in acc
        return True

    def _text_so_far(self, acc: Any) -> str | None:
        """The answer's text so far for ``check_every="sentence"`` (``None`` before a dict output has its key)."""
        if self.check_every != "sentence" or not self._has_answer(acc):
            return None
        return output_message(acc, self.output_key).text

    def _read_by_check(self, acc: Any) -> tuple[Any, ...]:
        """What an output check of ``acc`` reads: the answer's turn as the guard renders it (its text, calls,
        reasoning, a legacy ``function_call``, a refusal and images alike). An answer whose chunks since the last
        check added none of it (e.g. the closing chunk with ``finish_reason`` or usage) has the same verdict, so it
        is not judged again."""
        message = output_message(acc, self.output_key)
        try:
            turn = to_turns([message])[-1]
        except Exception:  # not readable: the check runs, and fails the way it should
            return (object(),)
        return (turn.role, tuple(turn.text_parts), tuple(turn.images))

    def _judge_so_far(
        self, acc: Any, judged: tuple[Any, ...] | None, context: list[Any], run_manager: Any
    ) -> tuple[Any, tuple[Any, ...]]:
        """(the verdict on the answer so far, or ``None`` where nothing it reads changed since the last check;
        what this check read)."""
        seen = self._read_by_check(acc)
        if seen == judged:
            return None, seen
        conversation = context + [output_message(acc, self.output_key)]
        return self._verdicts([conversation], "Agent", [run_manager], "output")[0], seen

    async def _ajudge_so_far(
        self, acc: Any, judged: tuple[Any, ...] | None, context: list[Any], run_manager: Any
    ) -> tuple[Any, tuple[Any, ...]]:
        seen = self._read_by_check(acc)
        if seen == judged:
            return None, seen
        conversation = context + [output_message(acc, self.output_key)]
        return (await self._averdicts([conversation], "Agent", [run_manager], "output"))[0], seen

    def _stream_checked(
        self,
        chunks: Iterator[Any],
        context: list[Any],
        run_manager: Any,
        payload: dict[str, Any],
        config: RunnableConfig,
    ) -> Iterator[Any]:
        pending: list[Any] = []
        acc: Any = None
        judged: tuple[Any, ...] | None = None  # what the last (safe) check read
        text_at_check: str | None = None
        for chunk in chunks:
            pending.append(chunk)
            acc, replaced = _added(acc, chunk)
            if replaced is not None and self._has_answer(replaced):  # released later: judged now, on its own
                verdict, judged = self._judge_so_far(replaced, judged, context, run_manager)
                if verdict is not None and not verdict.safe:
                    yield self._unsafe("output", verdict, _answer_payload(payload, replaced), chunk, config)
                    return
            if self._due(len(pending), acc, text_at_check):
                verdict, judged = self._judge_so_far(acc, judged, context, run_manager)
                text_at_check = self._text_so_far(acc)
                if verdict is not None and not verdict.safe:
                    yield self._unsafe("output", verdict, _answer_payload(payload, acc), chunk, config)
                    return
                yield from pending
                pending = []
        if pending:  # the end of the answer: judged whole before its last chunks leave
            verdict, _ = self._judge_so_far(acc, judged, context, run_manager)
            if verdict is not None and not verdict.safe:
                yield self._unsafe("output", verdict, _answer_payload(payload, acc), pending[-1], config)
                return
            yield from pending

    async def _astream_checked(
        self,
        chunks: AsyncIterator[Any],
        context: list[Any],
        run_manager: Any,
        payload: dict[str, Any],
        config: RunnableConfig,
    ) -> AsyncIterator[Any]:
        pending: list[Any] = []
        acc: Any = None
        judged: tuple[Any, ...] | None = None  # what the last (safe) check read
        text_at_check: str | None = None
        async for chunk in chunks:
            pending.append(chunk)
            acc, replaced = _added(acc, chunk)
            if replaced is not None and self._has_answer(replaced):  # released later: judged now, on its own
                verdict, judged = await self._ajudge_so_far(replaced, judged, context, run_manager)
                if verdict is not None and not verdict.safe:
                    yield await self._aunsafe("output", verdict, _answer_payload(payload, replaced), chunk, config)
                    return
            if self._due(len(pending), acc, text_at_check):
                verdict, judged = await self._ajudge_so_far(acc, judged, context, run_manager)
                text_at_check = self._text_so_far(acc)
                if verdict is not None and not verdict.safe:
                    yield await self._aunsafe("output", verdict, _answer_payload(payload, acc), chunk, config)
                    return
                for p in pending:
                    yield p
                pending = []
        if pending:  # the end of the answer: judged whole before its last chunks leave
            verdict, _ = await self._ajudge_so_far(acc, judged, context, run_manager)
            if verdict is not None and not verdict.safe:
                yield await self._aunsafe("output", verdict, _answer_payload(payload, acc), pending[-1], config)
                return
            for p in pending:
                yield p


class GuardStep(_GuardBase):
    """One guard check as an LCEL step: ``stage="input"`` (the user's turn) or ``"output"`` (the answer).

    Safe input passes through unchanged (the same object). Unsafe input raises :class:`UnsafeContentError`
    or is replaced (``on_unsafe``). In the middle of a chain a replacement flows on to the next step; to skip
    the rest of the chain use :meth:`LlamaGuard.wrap` or ``with_fallbacks(..., exceptions_to_handle=
    (UnsafeContentError,))``.

    Streaming (output stage): ``stream_mode="buffer"`` (default) holds the whole answer until it is checked;
    ``"incremental"`` checks the text so far every ``check_every`` chunks (or at sentence ends with
    ``"sentence"``) and releases only chunks that were checked; the full answer is checked before the last
    chunks are released.

    Example:
        >>> step = guard.as_output_guard(on_unsafe="Sorry, I can't help with that.")  # doctest: +SKIP
        >>> (prompt | llm | step).invoke({"question": "hi"})                          # doctest: +SKIP
    """

    stage: Stage = "input"

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        base = name or self.name or f"{self.moderator.name}_{self.stage}_guard"
        return f"{base}{suffix or ''}"

    def _unsafe(
        self, stage: str, verdict: AnyVerdict, payload: dict[str, Any], like: Any, config: RunnableConfig
    ) -> Any:
        if self.on_unsafe != "raise" and isinstance(self.on_unsafe, (str, BaseMessage)):
            if _is_graph_state(payload.get("input"), config):
                raise GuardConfigurationError(
                    "a guard step returns its input or the on_unsafe replacement, not a state update: as a LangGraph "
                    "node it would hand the graph a bare replacement (InvalidUpdateError) and keep the flagged "
                    "message. Use guard.as_node(check=..., on_unsafe=...) as the node (it replaces a flagged message "
                    "by id, and can route with goto=), or on_unsafe='raise' inside your own node"
                )
        return super()._unsafe(stage, verdict, payload, like, config)

    @property
    def _role(self) -> str:
        return "User" if self.stage == "input" else "Agent"

    def _conversation(self, value: Any) -> ConversationInput:
        if self.stage == "input":
            return input_conversation(value, self.input_key)
        return [output_message(value, self.output_key)]

    def _payload(self, value: Any) -> dict[str, Any]:
        return {"input": value} if self.stage == "input" else _answer_payload({}, value)

    # -- invoke / batch ---------------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, run_type="chain")

    def _judged(self, value: Any, run_manager: Any) -> AnyVerdict:
        return self._verdicts([self._conversation(value)], self._role, [run_manager], self.stage)[0]

    async def _ajudged(self, value: Any, run_manager: Any) -> AnyVerdict:
        return (await self._averdicts([self._conversation(value)], self._role, [run_manager], self.stage))[0]

    def _invoke(self, value: Any, run_manager: Any, config: RunnableConfig) -> Any:
        verdict = self._judged(value, run_manager)
        return value if verdict.safe else self._unsafe(self.stage, verdict, self._payload(value), value, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain")

    async def _ainvoke(self, value: Any, run_manager: Any, config: RunnableConfig) -> Any:
        verdict = await self._ajudged(value, run_manager)
        if verdict.safe:
            return value
        return await self._aunsafe(self.stage, verdict, self._payload(value), value, config)

    # A batch: one guard batch of every row; a row that is no conversation, or that the check could not judge,
    # fails alone (its own error, per input with return_exceptions=True).
    def _batch(
        self, values: list[Any], run_manager: list[Any], config: list[RunnableConfig], **kwargs: Any
    ) -> list[Any]:
        convs = [_or_error(self._conversation, v) for v in values]
        verdicts = self._row_verdicts(convs, self._role, run_manager, self.stage)
        out: list[Any] = []
        for value, verdict, cfg in zip(values, verdicts, config, strict=True):
            if isinstance(verdict, Exception):
                out.append(verdict)
            elif verdict.safe:
                out.append(value)
            else:
                out.append(_or_error(self._unsafe, self.stage, verdict, self._payload(value), value, cfg))
        return out

    async def _abatch(
        self, values: list[Any], run_manager: list[Any], config: list[RunnableConfig], **kwargs: Any
    ) -> list[Any]:
        convs = [_or_error(self._conversation, v) for v in values]
        verdicts = await self._arow_verdicts(convs, self._role, run_manager, self.stage)
        out: list[Any] = []
        for value, verdict, cfg in zip(values, verdicts, config, strict=True):
            if isinstance(verdict, Exception):
                out.append(verdict)
                continue
            if verdict.safe:
                out.append(value)
                continue
            try:
                out.append(await self._aunsafe(self.stage, verdict, self._payload(value), value, cfg))
            except Exception as exc:  # reported per input by _abatch_with_config
                out.append(exc)
        return out

    # -- streaming --------------------------------------------------------------------------------------------
    # An input is never judged in parts: its chunks are held, the whole input is checked, then the same chunks
    # are passed on. An output streams as its mode says (see the class docstring).
    def transform(self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        yield from self._transform_stream_with_config(input, self._transform, config)

    def _transform(self, chunks: Iterator[Any], run_manager: Any, config: RunnableConfig) -> Iterator[Any]:
        if self.stage == "output":
            yield from self._stream_checked(chunks, [], run_manager, {}, config)
            return
        held = list(chunks)
        if not held:
            return
        value, replaced = _joined(held)
        for part in [*replaced, value]:  # every part the chunks pass on, each judged whole
            verdict = self._judged(part, run_manager)
            if not verdict.safe:
                yield self._unsafe(self.stage, verdict, self._payload(part), part, config)
                return
        yield from held

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        yield from self.transform(iter([input]), config, **kwargs)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for item in self._atransform_stream_with_config(input, self._atransform, config):
            yield item

    async def _atransform(
        self, chunks: AsyncIterator[Any], run_manager: Any, config: RunnableConfig
    ) -> AsyncIterator[Any]:
        if self.stage == "output":
            async for item in self._astream_checked(chunks, [], run_manager, {}, config):
                yield item
            return
        held = [chunk async for chunk in chunks]
        if not held:
            return
        value, replaced = _joined(held)
        for part in [*replaced, value]:  # every part the chunks pass on, each judged whole
            verdict = await self._ajudged(part, run_manager)
            if not verdict.safe:
                yield await self._aunsafe(self.stage, verdict, self._payload(part), part, config)
                return
        for chunk in held:
            yield chunk

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        async for item in self.atransform(_one(input), config, **kwargs):
            yield item


class GuardedRunnable(_GuardBase):
    """A runnable guarded on both sides; the answer is judged together with the user's turn.

    An unsafe input never reaches ``bound``; an unsafe answer never reaches the caller. With
    ``on_unsafe`` set to a string, that string (as an ``AIMessage`` when ``bound`` returns messages) is
    returned in place of the answer; a Runnable receives ``{"input", "verdict"}`` (plus ``"output"`` when the
    answer was flagged). When safe, the output is ``bound``'s own output object, unchanged.

    Example:
        >>> safe_chain = guard.wrap(prompt | llm, on_unsafe="Sorry, I can't help with that.")  # doctest: +SKIP
        >>> safe_chain.invoke({"question": "How do I make a bomb?"}).content                 # doctest: +SKIP
        "Sorry, I can't help with that."
    """

    bound: Runnable[Any, Any] = Field(exclude=True)
    output_moderator: Any = Field(default=None, exclude=True)
    check_input: bool = True
    check_output: bool = True
    input_check: Literal["before", "parallel"] = "before"
    """``"parallel"``: the input check runs beside the model call, whose output is held until the verdict is in
    (see :mod:`~langchain_llamaguard.parallel`)."""

    def _overlaps(self) -> bool:
        return self.check_input and self.input_check == "parallel"

    def _verdict_of(self, conv: Any, run_manager: Any) -> AnyVerdict:
        return self._verdicts([conv], "User", [run_manager], "input")[0]

    def _inner(self, kwargs: dict[str, Any]) -> Runnable[Any, Any]:
        """``bound`` with the call's keyword arguments (``.bind(stop=...)``, ``invoke(x, stop=...)``), passed on as
        LangChain's own wrappers pass them."""
        return self.bound.bind(**kwargs) if kwargs else self.bound

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return name or self.name or f"Guarded[{self.bound.get_name()}]{suffix or ''}"

    @property
    def InputType(self) -> Any:  # noqa: N802
        return self.bound.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802
        return self.bound.OutputType

    def _moderator_for(self, stage: str) -> Moderator:
        if stage == "output" and self.output_moderator is not None:
            return cast(Moderator, self.output_moderator)
        return cast(Moderator, self.moderator)

    def _out_verdicts(self, convs: list[Any], run_managers: Sequence[Any]) -> list[AnyVerdict]:
        return self._verdicts(convs, "Agent", run_managers, "output")

    # -- invoke -------------------------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, run_type="chain", **kwargs)

    def _invoke(self, value: Any, run_manager: Any, config: RunnableConfig, **kwargs: Any) -> Any:
        conv = input_conversation(value, self.input_key)
        if self._overlaps():
            check = partial(self._verdict_of, conv, run_manager)
            verdict, output = invoke_overlapped(self._inner(kwargs), value, config, run_manager, check)
            if not verdict.safe:
                return self._unsafe("input", verdict, {"input": value}, self.bound.OutputType, config)
        else:
            if self.check_input:
                verdict = self._verdicts([conv], "User", [run_manager], "input")[0]
                if not verdict.safe:
                    return self._unsafe("input", verdict, {"input": value}, self.bound.OutputType, config)
            output = self._inner(kwargs).invoke(value, patch_config(config, callbacks=unstreamed_child(run_manager)))
        if not self.check_output:
            return output
        verdict = self._out_verdicts([_as_messages(conv) + [output_message(output, self.output_key)]], [run_manager])[0]
        if verdict.safe:
            return output
        return self._unsafe("output", verdict, {"input": value, "output": output}, output, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain", **kwargs)

    async def _ainvoke(self, value: Any, run_manager: Any, config: RunnableConfig, **kwargs: Any) -> Any:
        conv = input_conversation(value, self.input_key)
        if self._overlaps():

            async def check() -> AnyVerdict:
                return (await self._averdicts([conv], "User", [run_manager], "input"))[0]

            verdict, output = await ainvoke_overlapped(self._inner(kwargs), value, config, run_manager, check)
            if not verdict.safe:
                return await self._aunsafe("input", verdict, {"input": value}, self.bound.OutputType, config)
        else:
            if self.check_input:
                verdict = (await self._averdicts([conv], "User", [run_manager], "input"))[0]
                if not verdict.safe:
                    return await self._aunsafe("input", verdict, {"input": value}, self.bound.OutputType, config)
            inner_config = patch_config(config, callbacks=unstreamed_child(run_manager))
            output = await self._inner(kwargs).ainvoke(value, inner_config)
        if not self.check_output:
            return output
        convo = [_as_messages(conv) + [output_message(output, self.output_key)]]
        verdict = (await self._averdicts(convo, "Agent", [run_manager], "output"))[0]
        if verdict.safe:
            return output
        return await self._aunsafe("output", verdict, {"input": value, "output": output}, output, config)

    # -- batch: one guard batch per side, one inner batch ---------------------------------------------------------
    def _batch(
        self, values: list[Any], run_manager: list[Any], config: list[RunnableConfig], **kwargs: Any
    ) -> list[Any]:
        bound = self._inner(kwargs)
        plan = self._batch_plan(values, run_manager, config)
        answer: Any = None
        try:
            while True:
                kind, *args = plan.send(answer)
                if kind == "check":
                    answer = self._row_verdicts(*args)
                elif kind == "overlap":
                    vals, cfgs, rms, convs = args
                    answer = batch_overlapped(
                        bound, vals, cfgs, rms, partial(self._row_verdicts, convs, "User", rms, "input")
                    )
                elif kind == "inner":
                    answer = bound.batch(*args, return_exceptions=True)
                else:
                    answer = _or_error(self._unsafe, *args)
        except StopIteration as done:
            return done.value

    async def _abatch(
        self, values: list[Any], run_manager: list[Any], config: list[RunnableConfig], **kwargs: Any
    ) -> list[Any]:
        bound = self._inner(kwargs)
        plan = self._batch_plan(values, run_manager, config)
        answer: Any = None
        try:
            while True:
                kind, *args = plan.send(answer)
                if kind == "check":
                    answer = await self._arow_verdicts(*args)
                elif kind == "overlap":
                    vals, cfgs, rms, convs = args
                    answer = await abatch_overlapped(
                        bound, vals, cfgs, rms, partial(self._arow_verdicts, convs, "User", rms, "input")
                    )
                elif kind == "inner":
                    answer = await bound.abatch(*args, return_exceptions=True)
                else:
                    try:
                        answer = await self._aunsafe(*args)
                    except Exception as exc:  # surfaced per input by _abatch_with_config
                        answer = exc
        except StopIteration as done:
            return done.value

    def _batch_plan(
        self, values: list[Any], run_managers: list[Any], configs: list[RunnableConfig]
    ) -> Generator[tuple[Any, ...], Any, list[Any]]:
        """What a batch does, for the sync and the async driver alike: one guard batch per side, one inner
        batch. It yields ``("check", convs, role, run_managers, stage)``, ``("inner", values, configs)`` and
        ``("unsafe", stage, verdict, payload, like, config)`` and is sent back their results; with
        ``input_check="parallel"`` the input check and the inner batch are one ``("overlap", values, configs,
        run_managers, convs)``, sent back ``(verdicts, outputs)`` (a flagged input's output is ``None``). A check
        answers one verdict per row, or the row's own error: a row that is no conversation, that its check could not
        judge or whose answer cannot be read fails alone, and never reaches the model unchecked."""
        convs = [_or_error(input_conversation, v, self.input_key) for v in values]
        results: list[Any] = [c if isinstance(c, Exception) else None for c in convs]
        todo = [i for i, c in enumerate(convs) if not isinstance(c, Exception)]
        overlapped: list[Any] | None = None
        vals, cfgs, rms, cvs = ([seq[i] for i in todo] for seq in (values, configs, run_managers, convs))
        if todo and self._overlaps():  # one inner batch of the inputs, beside their check (see parallel.py)
            verdicts, overlapped = yield ("overlap", vals, cfgs, rms, cvs)
        elif todo and self.check_input:
            verdicts = yield ("check", cvs, "User", rms, "input")
        if todo and self.check_input:
            judged = dict(zip(todo, overlapped or [None] * len(todo), strict=True))
            todo = []
            for (i, output), verdict in zip(judged.items(), verdicts, strict=True):
                if isinstance(verdict, Exception):
                    results[i] = verdict
                elif verdict.safe:
                    todo.append(i)
                    results[i] = output
                else:
                    like = self.bound.OutputType
                    results[i] = yield ("unsafe", "input", verdict, {"input": values[i]}, like, configs[i])
        if todo and overlapped is None:
            inner_cfgs = [patch_config(configs[i], callbacks=unstreamed_child(run_managers[i])) for i in todo]
            outputs = yield ("inner", [values[i] for i in todo], inner_cfgs)
            for i, output in zip(todo, outputs, strict=True):
                results[i] = output
        if not self.check_output:
            return results
        checked = []  # (row, its answer, the conversation to judge)
        for i in todo:
            if not isinstance(results[i], Exception):
                answer = _or_error(output_message, results[i], self.output_key)
                if isinstance(answer, Exception):
                    results[i] = answer
                else:
                    checked.append((i, results[i], _as_messages(convs[i]) + [answer]))
        if not checked:
            return results
        judge = [conversation for *_, conversation in checked]
        out_verdicts = yield ("check", judge, "Agent", [run_managers[i] for i, *_ in checked], "output")
        for (i, o, _), verdict in zip(checked, out_verdicts, strict=True):
            if isinstance(verdict, Exception):
                results[i] = verdict
            elif not verdict.safe:
                results[i] = yield ("unsafe", "output", verdict, {"input": values[i], "output": o}, o, configs[i])
        return results

    # -- streaming ------------------------------------------------------------------------------------------------
    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        yield from self._transform_stream_with_config(iter([input]), self._transform, config, **kwargs)

    def transform(self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    def _transform(
        self, inputs: Iterator[Any], run_manager: Any, config: RunnableConfig, **kwargs: Any
    ) -> Iterator[Any]:
        value, _ = _joined(list(inputs))  # the chain gets the joined value alone
        conv = input_conversation(value, self.input_key)
        unsafe_like = _streamed_like(self.bound.OutputType)
        if self._overlaps():
            check = partial(self._verdict_of, conv, run_manager)
            verdict, held = stream_overlapped(self._inner(kwargs), value, config, run_manager, check)
            if held is None:
                yield self._unsafe("input", verdict, {"input": value}, unsafe_like, config)
                return
            chunks: Iterator[Any] = held
        else:
            if self.check_input:
                verdict = self._verdicts([conv], "User", [run_manager], "input")[0]
                if not verdict.safe:
                    yield self._unsafe("input", verdict, {"input": value}, unsafe_like, config)
                    return
            chunks = self._inner(kwargs).stream(value, patch_config(config, callbacks=unstreamed_child(run_manager)))
        if not self.check_output:
            yield from chunks
            return
        yield from self._stream_checked(chunks, _as_messages(conv), run_manager, {"input": value}, config)

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        async for item in self.atransform(_one(input), config, **kwargs):
            yield item

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for item in self._atransform_stream_with_config(input, self._atransform, config, **kwargs):
            yield item

    async def _atransform(
        self, inputs: AsyncIterator[Any], run_manager: Any, config: RunnableConfig, **kwargs: Any
    ) -> AsyncIterator[Any]:
        value, _ = _joined([item async for item in inputs])  # the chain gets the joined value alone
        conv = input_conversation(value, self.input_key)
        unsafe_like = _streamed_like(self.bound.OutputType)
        if self._overlaps():

            async def check() -> AnyVerdict:
                return (await self._averdicts([conv], "User", [run_manager], "input"))[0]

            verdict, held = await astream_overlapped(self._inner(kwargs), value, config, run_manager, check)
            if held is None:
                yield await self._aunsafe("input", verdict, {"input": value}, unsafe_like, config)
                return
            chunks: AsyncIterator[Any] = held
        else:
            if self.check_input:
                verdict = (await self._averdicts([conv], "User", [run_manager], "input"))[0]
                if not verdict.safe:
                    yield await self._aunsafe("input", verdict, {"input": value}, unsafe_like, config)
                    return
            chunks = self._inner(kwargs).astream(value, patch_config(config, callbacks=unstreamed_child(run_manager)))
        if not self.check_output:
            async for c in chunks:
                yield c
            return
        async for c in self._astream_checked(chunks, _as_messages(conv), run_manager, {"input": value}, config):
            yield c


__all__ = ["GuardStep", "GuardedRunnable", "input_conversation", "output_message"]
