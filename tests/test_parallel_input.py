"""input_check="parallel": the input check beside the model call, on the tiny LG4 and a chat model that sleeps."""

from __future__ import annotations

import asyncio
import operator
import threading
import time
from typing import Annotated, Any, NotRequired

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, make_tools
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain.agents.middleware.types import ExtendedModelResponse
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.types import Command
from pydantic import Field

from langchain_llamaguard import UnsafeContentError
from langchain_llamaguard.errors import GuardConfigurationError
from langchain_llamaguard.middleware import LlamaGuardMiddleware
from langchain_llamaguard.parallel import DISCARDED_EVENT, OVERLAP_METADATA_KEY

REFUSAL = "Sorry, I can't help with that."


class SleepyChatModel(BaseChatModel):
    """Answers ``reply`` after ``delay`` seconds (streamed in words) and records what happened to each call."""

    reply: str = BENIGN_ANSWER
    delay: float = 0.3
    record: dict[str, int] = Field(default_factory=lambda: {"started": 0, "finished": 0, "cancelled": 0})

    @property
    def _llm_type(self) -> str:
        return "sleepy-test-model"

    def _words(self) -> list[str]:
        words = self.reply.split(" ")
        return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]

    def _generate(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.record["started"] += 1
        time.sleep(self.delay)
        self.record["finished"] += 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.reply))])

    async def _agenerate(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.record["started"] += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.record["cancelled"] += 1
            raise
        self.record["finished"] += 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.reply))])

    def _stream(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any):
        self.record["started"] += 1
        words = self._words()
        for word in words:
            time.sleep(self.delay / len(words))
            yield ChatGenerationChunk(message=AIMessageChunk(word))
        self.record["finished"] += 1

    async def _astream(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any):
        self.record["started"] += 1
        words = self._words()
        try:
            for word in words:
                await asyncio.sleep(self.delay / len(words))
                yield ChatGenerationChunk(message=AIMessageChunk(word))
        except asyncio.CancelledError:
            self.record["cancelled"] += 1
            raise
        self.record["finished"] += 1


class Trace(BaseCallbackHandler):
    """The model runs (id, metadata), the guard checks and the custom events a run reports."""

    def __init__(self) -> None:
        self.models: list[tuple[str, dict]] = []
        self.checks: list[str] = []
        self.events: list[tuple[str, Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.models.append((str(run_id), dict(kwargs.get("metadata") or {})))

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        if kwargs.get("name") == "llama_guard":
            self.checks.append(str(run_id))

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def texts(chunks: list[Any]) -> str:
    return "".join(c.text if hasattr(c, "text") else str(c) for c in chunks)


def test_input_check_is_validated(lg4):
    with pytest.raises(GuardConfigurationError, match="'before' or 'parallel'"):
        lg4.wrap(SleepyChatModel(), input_check="overlap")
    with pytest.raises(GuardConfigurationError, match="'before' or 'parallel'"):
        LlamaGuardMiddleware(lg4, input_check="later")
    assert lg4.wrap(SleepyChatModel()).input_check == "before"  # the default stays "before"


def test_safe_input_same_output_as_before_in_every_mode(lg4):
    model = SleepyChatModel(delay=0.1)
    before = lg4.wrap(model, on_unsafe=REFUSAL)
    parallel = lg4.wrap(model, on_unsafe=REFUSAL, input_check="parallel")
    assert parallel.invoke(BENIGN).text == before.invoke(BENIGN).text
    assert asyncio.run(parallel.ainvoke(BENIGN)).text == asyncio.run(before.ainvoke(BENIGN)).text
    assert texts(list(parallel.stream(BENIGN))) == texts(list(before.stream(BENIGN)))

    async def astream(chain):
        return texts([c async for c in chain.astream(BENIGN)])

    assert asyncio.run(astream(parallel)) == asyncio.run(astream(before))
    got = [m.text for m in parallel.batch([BENIGN, BOMB])]
    assert got == [m.text for m in before.batch([BENIGN, BOMB])]
    assert got[1] == REFUSAL and got[0] != REFUSAL
    got = [m.text for m in asyncio.run(parallel.abatch([BENIGN, BOMB]))]
    assert got == [m.text for m in asyncio.run(before.abatch([BENIGN, BOMB]))]


def test_safe_input_overlaps_the_model_call(lg4):
    """The model starts before the input verdict is in (and the answer still waits for it)."""
    model = SleepyChatModel(delay=0.3)
    trace = Trace()
    out = lg4.wrap(model, input_check="parallel").invoke(BENIGN, {"callbacks": [trace]})
    assert out.text == BENIGN_ANSWER
    assert len(trace.checks) == 2  # the input check and the output check, each a run
    [(_, metadata)] = trace.models
    assert metadata[OVERLAP_METADATA_KEY] is True
    assert not trace.events  # nothing discarded


def test_unsafe_input_sync_returns_at_once_and_drops_the_model_result(lg4):
    model = SleepyChatModel(delay=1.0)
    trace = Trace()
    out = lg4.wrap(model, on_unsafe=REFUSAL, input_check="parallel").invoke(BOMB, {"callbacks": [trace]})
    assert out.text == REFUSAL
    assert model.record["finished"] == 0  # returned without waiting for the model
    [(model_run, metadata)] = trace.models  # traces show both runs ...
    assert metadata[OVERLAP_METADATA_KEY] is True and len(trace.checks) == 1
    [(name, data)] = trace.events  # ... and mark the model's as discarded
    assert name == DISCARDED_EVENT and data["run_id"] == model_run and data["how"] == "dropped"
    assert data["categories"]


def test_unsafe_input_async_cancels_the_model_call(lg4):
    model = SleepyChatModel(delay=0.5)
    trace = Trace()

    async def go():
        out = await lg4.wrap(model, on_unsafe=REFUSAL, input_check="parallel").ainvoke(BOMB, {"callbacks": [trace]})
        await asyncio.sleep(0.6)  # past the model's own end: it must not finish
        return out

    assert asyncio.run(go()).text == REFUSAL
    assert model.record == {"started": 1, "finished": 0, "cancelled": 1}
    [(model_run, _)] = trace.models
    [(name, data)] = trace.events
    assert name == DISCARDED_EVENT and data["run_id"] == model_run and data["how"] == "cancelled"


def test_unsafe_input_raise_and_runnable_on_unsafe_as_before(lg4):
    for input_check in ("before", "parallel"):
        with pytest.raises(UnsafeContentError) as info:
            lg4.wrap(SleepyChatModel(delay=0.2), input_check=input_check).invoke(BOMB)
        assert info.value.stage == "input"
    seen: list[dict] = []

    def replace(payload: dict) -> str:
        seen.append(payload)
        return "replaced: " + ",".join(payload["verdict"].categories)

    outs = [
        lg4.wrap(SleepyChatModel(delay=0.2), on_unsafe=replace, input_check=mode).invoke(BOMB)
        for mode in ("before", "parallel")
    ]
    assert outs[0] == outs[1] and set(seen[0]) == set(seen[1]) == {"input", "verdict"}


def test_unsafe_input_streams_nothing_of_the_model(lg4):
    model = SleepyChatModel(delay=0.5)
    chain = lg4.wrap(model, on_unsafe=REFUSAL, input_check="parallel")
    assert [c.text for c in chain.stream(BOMB)] == [REFUSAL]

    async def go():
        trace = Trace()
        chunks = [c.text async for c in chain.astream(BOMB, {"callbacks": [trace]})]
        await asyncio.sleep(0.6)
        return chunks, trace

    chunks, trace = asyncio.run(go())
    assert chunks == [REFUSAL]
    assert model.record["cancelled"] == 1 and trace.events[0][0] == DISCARDED_EVENT


def test_combined_prompt_guard_and_llama_guard_in_parallel(lg4, prompt_guard):
    model = SleepyChatModel(delay=0.5)
    chain = lg4.wrap(model, on_unsafe=REFUSAL, prompt_guard=prompt_guard, input_check="parallel")

    async def go():
        out = await chain.ainvoke(BOMB)
        await asyncio.sleep(0.6)
        return out

    assert asyncio.run(go()).text == REFUSAL
    assert model.record["finished"] == 0 and model.record["cancelled"] == 1
    before = lg4.wrap(model, prompt_guard=prompt_guard, on_unsafe=REFUSAL)
    assert chain.invoke(BENIGN).text == before.invoke(BENIGN).text


# -- the agent middleware --------------------------------------------------------------------------------------------
class SlowToolCallingModel(GenericFakeChatModel):
    """An offline tool-calling model (its script) that takes ``delay`` seconds per call and records calls."""

    delay: float = 0.3
    record: dict[str, int] = Field(default_factory=lambda: {"started": 0, "finished": 0, "cancelled": 0})

    def bind_tools(self, tools: Any, **kwargs: Any) -> SlowToolCallingModel:
        return self

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        self.record["started"] += 1
        time.sleep(self.delay)
        self.record["finished"] += 1
        return super()._generate(*args, **kwargs)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        self.record["started"] += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.record["cancelled"] += 1
            raise
        self.record["finished"] += 1
        return self._generate_no_sleep(*args, **kwargs)

    def _generate_no_sleep(self, *args: Any, **kwargs: Any) -> ChatResult:
        return super()._generate(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any):
        self.record["started"] += 1
        time.sleep(self.delay)
        self.record["finished"] += 1
        yield from super()._stream(*args, **kwargs)


def _script() -> list[AIMessage]:
    call = {"name": "web_search", "args": {"query": "weather in Paris"}, "id": "call_1"}
    return [AIMessage(content="Let me look that up.", tool_calls=[call]), AIMessage("It is sunny.")]


def _agent(lg4, input_check: str, **kw: Any):
    counts, repl, search = make_tools()
    model = SlowToolCallingModel(messages=iter(_script()), delay=0.4)
    mw = LlamaGuardMiddleware(lg4, input_check=input_check, apply_to_output=False, apply_to_tool_calls=False, **kw)
    return create_agent(model, [repl, search], middleware=[mw]), counts, model


def test_agent_flagged_input_no_tool_runs_nothing_streamed(lg4):
    before, _, _ = _agent(lg4, "before")
    expected = [(type(m).__name__, m.text) for m in before.invoke({"messages": [HumanMessage(BOMB)]})["messages"]]

    agent, counts, model = _agent(lg4, "parallel")
    streamed = list(agent.stream({"messages": [HumanMessage(BOMB)]}, stream_mode=["messages", "values"]))
    message_chunks = [data[0] for mode, data in streamed if mode == "messages"]
    final = [s[1] for s in streamed if s[0] == "values"][-1]
    assert counts == {"python_repl": [], "web_search": []}  # the tool the model called never ran
    assert model.record["started"] == 1  # the model did run, beside the check
    assert not any("look that up" in m.text or getattr(m, "tool_calls", None) for m in message_chunks)
    assert message_chunks  # only the refusal streamed
    assert all(m.text.startswith("I can't help with that") for m in message_chunks)
    assert [(type(m).__name__, m.text) for m in final["messages"]] == expected


def test_agent_flagged_input_async_cancels_the_model_and_runs_no_tool(lg4):
    agent, counts, model = _agent(lg4, "parallel")

    async def go():
        trace = Trace()
        result = await agent.ainvoke({"messages": [HumanMessage(BOMB)]}, {"callbacks": [trace]})
        await asyncio.sleep(0.5)
        return result, trace

    result, trace = asyncio.run(go())
    assert counts == {"python_repl": [], "web_search": []}
    assert model.record == {"started": 1, "finished": 0, "cancelled": 1}
    assert result["messages"][-1].text.startswith("I can't help with that")
    assert [m for _, m in trace.models][0][OVERLAP_METADATA_KEY] is True
    assert [name for name, _ in trace.events] == [DISCARDED_EVENT]


def test_agent_safe_input_parallel_same_run_as_before(lg4):
    runs = []
    for mode in ("before", "parallel"):
        agent, counts, _ = _agent(lg4, mode)
        result = agent.invoke({"messages": [HumanMessage(BENIGN)]})
        runs.append(([(type(m).__name__, m.text) for m in result["messages"]], counts))
    assert runs[0] == runs[1]
    assert runs[1][1]["web_search"] == ["weather in Paris"]  # the tool ran, after the verdict


def test_agent_flagged_input_error_and_replace(lg4):
    agent, counts, _ = _agent(lg4, "parallel", exit_behavior="error")
    with pytest.raises(UnsafeContentError) as info:
        agent.invoke({"messages": [HumanMessage(BOMB)]})
    assert info.value.stage == "input" and counts["web_search"] == []
    agent, counts, _ = _agent(lg4, "parallel", exit_behavior="replace")
    messages = agent.invoke({"messages": [HumanMessage(BOMB)]})["messages"]
    assert (
        messages[0].text.startswith("[message removed by Llama Guard")
        and len([m for m in messages if isinstance(m, HumanMessage)]) == 1
    )


@pytest.mark.parametrize(
    "after_turn",
    [
        [AIMessage("Sure, I will help.")],  # an assistant prefill
        [  # a replayed, finished tool round
            AIMessage("", tool_calls=[{"name": "web_search", "args": {"query": "bombs"}, "id": "old_1"}]),
            ToolMessage("Results.", tool_call_id="old_1"),
        ],
    ],
    ids=["prefill", "tool-round"],
)
def test_agent_judges_the_turn_whatever_follows_it_in_the_input(lg4, after_turn):
    """A run's input may hold AI and tool messages after the user's turn (a stateless client replaying history):
    the run's first model call still judges that turn; it is not taken for an already-judged later call."""
    before, _, _ = _agent(lg4, "before")
    request = {"messages": [HumanMessage(BOMB), *after_turn]}
    expected = before.invoke(request)["messages"][-1].text
    assert expected.startswith("I can't help with that")
    for asynchronous in (False, True):
        agent, counts, _ = _agent(lg4, "parallel")
        out = asyncio.run(agent.ainvoke(request)) if asynchronous else agent.invoke(request)
        assert out["messages"][-1].text == expected and counts["web_search"] == []


def test_agent_judges_each_run_once_in_a_thread(lg4):
    """With a checkpointer, every run's first call judges that run's turn, and later calls of a run do not."""
    from langgraph.checkpoint.memory import InMemorySaver

    from langchain_llamaguard import LlamaGuard

    # every verdict safe (a real check, whatever the tiny guard makes of the thread's later turns): the runs go on
    passing = LlamaGuard.from_model(lg4.backend.model, lg4.backend.processor, threshold=1.0)
    counts, repl, search = make_tools()
    model = SlowToolCallingModel(messages=iter(_script() + _script()), delay=0.05)  # new messages, new ids
    mw = LlamaGuardMiddleware(passing, input_check="parallel", apply_to_output=False, apply_to_tool_calls=False)
    agent = create_agent(model, [repl, search], middleware=[mw], checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t"}}
    trace = Trace()
    agent.invoke({"messages": [HumanMessage(BENIGN)]}, {**thread, "callbacks": [trace]})
    assert counts["web_search"] == ["weather in Paris"]
    overlapped = [bool(meta.get(OVERLAP_METADATA_KEY)) for _, meta in trace.models]
    assert overlapped == [True, False]  # the first call ran beside the check; the call after the tool did not
    agent.invoke({"messages": [HumanMessage(BOMB)]}, {**thread, "callbacks": [trace]})
    assert len(counts["web_search"]) == 2  # the second run's turn judged at its first call, then on as before
    assert [bool(meta.get(OVERLAP_METADATA_KEY)) for _, meta in trace.models] == [True, False, True, False]


class Interrupted(BaseException):
    """Not an ``Exception``: what a provider's stream may raise when it is torn down."""


class BrokenStreamModel(SleepyChatModel):
    async def _astream(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any):
        yield ChatGenerationChunk(message=AIMessageChunk("Hello "))
        raise Interrupted("connection torn down")


def test_a_stream_that_dies_of_a_base_exception_reaches_the_caller(lg4):
    """A model stream that ends in a ``BaseException`` (not an ``Exception``) must not leave the caller waiting."""
    chain = lg4.wrap(BrokenStreamModel(), on_unsafe=REFUSAL, input_check="parallel")

    async def go():
        return [c async for c in chain.astream(BENIGN)]

    with pytest.raises(Interrupted):
        asyncio.run(asyncio.wait_for(go(), 60))


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_agent_a_tool_result_edited_before_the_first_call_is_judged_in_parallel_mode(lg4, asynchronous):
    """A run paused before the model node whose tool result is then edited (``update_state``) resumes straight
    into the model call: "before" mode judges that result in ``wrap_model_call``; the parallel first call judged
    only the user's turn, and the model read the flagged result."""
    from conftest import UNSAFE_ANSWER, SentPrompts
    from langgraph.checkpoint.memory import InMemorySaver

    for mode in ("before", "parallel"):
        counts, repl, search = make_tools()
        model = SlowToolCallingModel(messages=iter([AIMessage("ok, noted.")]), delay=0.05)
        mw = LlamaGuardMiddleware(
            lg4, input_check=mode, apply_to_tool_results=True, apply_to_output=False, apply_to_tool_calls=False
        )
        saver = InMemorySaver()
        agent = create_agent(model, [repl, search], middleware=[mw], checkpointer=saver, interrupt_before=["model"])
        thread = {"configurable": {"thread_id": mode}}
        call = {"name": "web_search", "args": {"query": "paris"}, "id": "c1"}
        turn = [HumanMessage(BENIGN, id="h1"), AIMessage("", tool_calls=[call], id="a1")]
        agent.invoke({"messages": [*turn, ToolMessage("Sunny.", tool_call_id="c1", id="t1")]}, thread)
        agent.update_state(thread, {"messages": [ToolMessage(UNSAFE_ANSWER, tool_call_id="c1", id="t1")]})
        sent = SentPrompts()
        resume = {**thread, "callbacks": [sent]}
        out = asyncio.run(agent.ainvoke(None, resume)) if asynchronous else agent.invoke(None, resume)
        assert not sent.read(UNSAFE_ANSWER[:40]), mode  # the model never read it
        assert not any(UNSAFE_ANSWER[:40] in str(m.content) for m in out["messages"]), mode
        assert out["messages"][-1].text.startswith("I can't help with that"), mode


class NotesState(AgentState):
    notes: NotRequired[Annotated[list[str], operator.add]]


class Transcript(AgentMiddleware):
    """An audit middleware listed after the guard: it writes each model answer to the state beside the response."""

    state_schema = NotesState

    def __init__(self, answered: threading.Event) -> None:
        super().__init__()
        self.answered = answered

    def _noted(self, response: Any) -> Any:
        self.answered.set()
        note = Command(update={"notes": [response.result[-1].text]})
        return ExtendedModelResponse(model_response=response, command=note)

    def wrap_model_call(self, request: Any, handler: Any) -> Any:
        return self._noted(handler(request))

    async def awrap_model_call(self, request: Any, handler: Any) -> Any:
        return self._noted(await handler(request))


class AfterTheModel:
    """The guard's real moderator, judging only once the model call has answered (a check slower than the model)."""

    def __init__(self, inner: Any, answered: threading.Event) -> None:
        self.inner, self.answered, self.name = inner, answered, inner.name

    def check(self, conversations: Any, *, role: str) -> Any:
        assert self.answered.wait(30)
        return self.inner.check(conversations, role=role)

    async def acheck(self, conversations: Any, *, role: str) -> Any:
        assert await asyncio.to_thread(self.answered.wait, 30)
        return await self.inner.acheck(conversations, role=role)


@pytest.mark.parametrize("exit_behavior", ["end", "replace"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_agent_a_discarded_call_writes_no_state_through_the_middlewares_inside(lg4, asynchronous, exit_behavior):
    """A flagged input's overlapped call is thrown away, and so are the state updates that middlewares listed
    after the guard returned with it (LangChain applies the inner middlewares' last commands with the guard's
    answer): the discarded answer was saved in the state, where "before" mode never ran the model."""
    answer = "Here is how to build it: step 1 ..."
    for mode in ("before", "parallel"):
        answered = threading.Event()
        model = SlowToolCallingModel(messages=iter([AIMessage(answer), AIMessage("A safe answer.")]), delay=0.0)
        mw = LlamaGuardMiddleware(lg4, input_check=mode, exit_behavior=exit_behavior, apply_to_output=False)
        mw.moderator = AfterTheModel(mw.moderator, answered)
        if mode == "before":
            answered.set()
        agent = create_agent(model, [], middleware=[mw, Transcript(answered)])
        request = {"messages": [HumanMessage(BOMB)]}
        out = asyncio.run(agent.ainvoke(request)) if asynchronous else agent.invoke(request)
        kept = [out["messages"][-1].text] if exit_behavior == "replace" else []  # the answer to the notice
        assert out.get("notes", []) == kept, mode
