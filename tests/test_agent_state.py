"""What a guarded agent leaves in its state and its checkpointed thread: no flagged text survives where a later
turn, the caller or the model reads it (structured answers, parallel tool results, runs that end early, runs that
stop between the model and its check, flagged user turns)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
from typing import Any

import pytest
from conftest import (
    ASK_CODE,
    BENIGN,
    BENIGN_ANSWER,
    BOMB,
    EVIL_CODE,
    INJECTION,
    UNSAFE_ANSWER,
    ScriptedToolModel,
    SentPrompts,
)
from langchain.agents import create_agent
from langchain.agents.middleware import ModelCallLimitMiddleware
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel

from langchain_llamaguard import UnsafeContentError
from langchain_llamaguard.middleware import LlamaGuardMiddleware, PromptGuardMiddleware
from langchain_llamaguard.replacements import guard_written
from langchain_llamaguard.tiny import data
from langchain_llamaguard.tools import guard_tool

DIRTY_BOMB = data.DIRTY_BOMB_ANSWER  # its verdicts, as the middleware sends them, are in the check set


def unsafe_in(messages: list[Any]) -> list[str]:
    return [m.text[:60] for m in messages if "Sure! To make" in m.text]


class Answer(BaseModel):
    answer: str


@pytest.mark.parametrize("strategy", ["tool", "provider"])
def test_a_flagged_structured_answer_is_never_returned(lg4, strategy):
    def agent(answer: str) -> Any:
        if strategy == "tool":
            script = [AIMessage("", tool_calls=[{"name": "Answer", "args": {"answer": answer}, "id": "s1"}])]
            fmt: Any = ToolStrategy(Answer)
        else:
            script, fmt = [AIMessage(json.dumps({"answer": answer}))], ProviderStrategy(Answer)
        return create_agent(
            ScriptedToolModel(messages=iter(script)), [], response_format=fmt, middleware=[LlamaGuardMiddleware(lg4)]
        )

    out = agent(UNSAFE_ANSWER).invoke({"messages": [HumanMessage(BENIGN)]})
    assert out.get("structured_response") is None
    assert not unsafe_in(out["messages"]) and "S9" in out["messages"][-1].text
    assert not any(isinstance(m, ToolMessage) for m in out["messages"])  # no acknowledgement without its call
    safe = agent(BENIGN_ANSWER).invoke({"messages": [HumanMessage(BENIGN)]})
    assert safe["structured_response"] == Answer(answer=BENIGN_ANSWER)


@pytest.mark.parametrize("which", ["llama_guard", "llama_guard_parallel", "prompt_guard"])
def test_a_refused_turn_leaves_no_earlier_structured_answer_in_the_result(lg4, prompt_guard, which):
    """A checkpointed thread keeps ``structured_response``: after a flagged second turn the result still held the
    first turn's answer, which a caller reads as the answer to the turn it sent. A refused turn has none."""
    script = [AIMessage("", tool_calls=[{"name": "Answer", "args": {"answer": BENIGN_ANSWER}, "id": "s1"}])]
    guard = {
        "llama_guard": LlamaGuardMiddleware(lg4),
        "llama_guard_parallel": LlamaGuardMiddleware(lg4, input_check="parallel"),
        "prompt_guard": PromptGuardMiddleware(prompt_guard),
    }[which]
    agent = create_agent(
        ScriptedToolModel(messages=iter(script)),
        [],
        response_format=ToolStrategy(Answer),
        middleware=[guard],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": which}}
    if which == "prompt_guard":  # Prompt Guard reads the turn alone: a first turn run through the agent
        first = agent.invoke({"messages": [HumanMessage(BENIGN)]}, config)["structured_response"]
        flagged = INJECTION
    else:  # Llama Guard reads the history: the first turn is the check set's small talk ("bomb after small talk")
        first = Answer(answer="hello")
        turn = {"messages": [HumanMessage("hi"), AIMessage("hello")], "structured_response": first}
        agent.update_state(config, turn, as_node=f"{guard.name}.after_model")
        flagged = BOMB
    assert agent.get_state(config).values["structured_response"] == first
    refused = agent.invoke({"messages": [HumanMessage(flagged)]}, config)
    assert refused["messages"][-1].text.startswith("I can't")
    assert refused["structured_response"] is None
    assert agent.get_state(config).values.get("structured_response") is None


@pytest.mark.parametrize("exit_behavior", ["replace", "end"])
def test_every_flagged_result_of_parallel_tool_calls_is_replaced(lg4, exit_behavior):
    @tool
    def search_a(query: str) -> str:
        """Search A."""
        return UNSAFE_ANSWER

    @tool
    def search_b(query: str) -> str:
        """Search B."""
        return DIRTY_BOMB

    calls = [{"name": n, "args": {"query": "france"}, "id": f"c{i}"} for i, n in enumerate(["search_a", "search_b"])]
    model = ScriptedToolModel(messages=iter([AIMessage("", tool_calls=calls), AIMessage(BENIGN_ANSWER)]))
    guard = LlamaGuardMiddleware(lg4, apply_to_tool_results=True, apply_to_output=False, exit_behavior=exit_behavior)
    prompts = SentPrompts()
    out = create_agent(model, [search_a, search_b], middleware=[guard]).invoke(
        {"messages": [HumanMessage(BENIGN)]}, {"callbacks": [prompts]}
    )
    assert not unsafe_in(out["messages"]) and not prompts.read("Sure! To make")
    assert len([m for m in out["messages"] if isinstance(m, ToolMessage)]) == 2


def test_a_return_direct_tools_flagged_result_never_reaches_the_user(lg4):
    @tool(return_direct=True)
    def lookup(query: str) -> str:
        """Look something up and answer the user directly."""
        return UNSAFE_ANSWER

    model = ScriptedToolModel(
        messages=iter([AIMessage("", tool_calls=[{"name": "lookup", "args": {"query": "x"}, "id": "c1"}])])
    )
    for behavior in ("end", "replace"):
        guard = LlamaGuardMiddleware(lg4, apply_to_tool_results=True, exit_behavior=behavior)
        out = create_agent(model, [lookup], middleware=[guard]).invoke({"messages": [HumanMessage(BENIGN)]})
        assert not unsafe_in(out["messages"]) and "S9" in out["messages"][-1].text
        model = ScriptedToolModel(
            messages=iter([AIMessage("", tool_calls=[{"name": "lookup", "args": {"query": "x"}, "id": "c2"}])])
        )
    with pytest.raises(UnsafeContentError) as err:
        create_agent(
            model, [lookup], middleware=[LlamaGuardMiddleware(lg4, apply_to_tool_results=True, exit_behavior="error")]
        ).invoke({"messages": [HumanMessage(BENIGN)]})
    assert err.value.stage == "tool_result"


def test_a_tool_result_is_judged_when_another_middleware_ends_the_run_first(lg4_with):
    """``ModelCallLimitMiddleware`` listed before the guard ends the run after the tools ran: the result was judged
    as the tool returned it, so the next turn's model never reads it."""

    @tool
    def search(query: str) -> str:
        """Search the web."""
        return UNSAFE_ANSWER

    script = [AIMessage("", tool_calls=[{"name": "search", "args": {"query": "x"}, "id": "c1"}])]
    model = ScriptedToolModel(messages=iter([*script, AIMessage(BENIGN_ANSWER), AIMessage(BENIGN_ANSWER)]))
    # the second run's turns are no check-set conversation: an unreadable verdict fails closed instead of raising
    lg4 = lg4_with(on_error="unsafe")
    guard = LlamaGuardMiddleware(lg4, apply_to_tool_results=True, exit_behavior="replace")
    saver, cfg, prompts = InMemorySaver(), {"configurable": {"thread_id": "limit"}}, SentPrompts()
    limited = create_agent(
        model, [search], checkpointer=saver, middleware=[ModelCallLimitMiddleware(run_limit=1), guard]
    )
    limited.invoke({"messages": [HumanMessage(BENIGN)]}, {**cfg, "callbacks": [prompts]})
    again = create_agent(model, [search], checkpointer=saver, middleware=[ModelCallLimitMiddleware(run_limit=5), guard])
    out = again.invoke({"messages": [HumanMessage(BENIGN)]}, {**cfg, "callbacks": [prompts]})
    assert len(prompts.sent) == 2 and not prompts.read("Sure! To make") and not unsafe_in(out["messages"])


def test_a_blocked_calls_sibling_result_is_judged_too(lg4):
    @tool
    def python_repl(code: str) -> str:
        """Run Python code."""
        return "ok"

    @tool
    def search(query: str) -> str:
        """Search the web."""
        return UNSAFE_ANSWER

    both = [
        {"name": "python_repl", "args": {"code": EVIL_CODE}, "id": "c1"},
        {"name": "search", "args": {"query": "x"}, "id": "c2"},
    ]
    model = ScriptedToolModel(messages=iter([AIMessage("", tool_calls=both)]))
    guard = LlamaGuardMiddleware(lg4, apply_to_output=False, apply_to_tool_results=True)
    out = create_agent(model, [python_repl, search], middleware=[guard]).invoke({"messages": [HumanMessage(ASK_CODE)]})
    assert not unsafe_in(out["messages"])


async def test_a_guarded_tools_handled_error_text_is_judged(lg4):
    """An error a tool handles (``handle_tool_error=True``) becomes what the model reads: judged like an output
    (check-set conversations: a lookup tool's output, unsafe and safe)."""

    def lookup_failing_with(text: str) -> Any:
        @tool
        def lookup(topic: str) -> str:
            """Look a topic up."""
            raise ToolException(text)  # an HTTP error whose body is echoed back

        lookup.handle_tool_error = True
        return guard_tool(lookup, lg4, check_output=True)

    call = {"type": "tool_call", "name": "lookup", "args": {"topic": "chemistry"}, "id": "c1"}
    guarded = lookup_failing_with(UNSAFE_ANSWER)
    for message in (guarded.invoke(call), await guarded.ainvoke(call)):
        assert message.status == "error" and "S9" in message.text and "Sure!" not in message.text
    message = lookup_failing_with(BENIGN_ANSWER).invoke({**call, "args": {"topic": "geography"}})
    assert message.status == "error" and message.text == BENIGN_ANSWER


class UpstreamError(Exception):
    """The one error a tool's own handler knows (as an MCP tool's handler knows only its own)."""


def only_upstream_errors(exc: Exception) -> str:
    if isinstance(exc.__cause__, UpstreamError) or isinstance(exc, UpstreamError):
        return f"Error executing tool: {exc}"
    raise exc  # langchain-mcp-adapters re-raises every error that is not its own


async def test_a_flagged_error_is_refused_under_a_handler_that_knows_only_its_own_errors(lg4):
    @tool
    def fetch(url: str) -> str:
        """Fetch a page."""
        raise ToolException(UNSAFE_ANSWER) from UpstreamError()

    fetch.handle_tool_error = only_upstream_errors
    guarded = guard_tool(fetch, lg4, check_output=True)
    call = {"type": "tool_call", "name": "fetch", "args": {"url": "http://x"}, "id": "c1"}
    for message in (guarded.invoke(call), await guarded.ainvoke(call)):
        assert message.status == "error" and message.text.startswith("Refused") and "Sure!" not in message.text


async def test_an_error_toolnode_shows_the_model_is_judged(lg4):
    """``ToolNode(handle_tool_errors=True)`` shows the model any tool error's text: with ``check_output=True`` a
    flagged one reaches it as the refusal; a harmless one as it was."""
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    @tool
    def fetch(url: str) -> str:
        """Fetch a page."""
        raise ValueError(UNSAFE_ANSWER if "bad" in url else "404: not found")

    @tool
    def lookup(url: str) -> str:
        """Look it up; its handler re-raises what is not its own, as an MCP tool's does."""
        raise ToolException(UNSAFE_ANSWER if "bad" in url else "404: not found")

    lookup.handle_tool_error = only_upstream_errors
    tools = [guard_tool(fetch, lg4, check_output=True), guard_tool(lookup, lg4, check_output=True)]
    node = ToolNode(tools, handle_tool_errors=True)
    graph = StateGraph(MessagesState).add_node("tools", node).add_edge(START, "tools").add_edge("tools", END).compile()
    cases = [("http://bad", True, "fetch"), ("http://bad", False, "fetch"), ("http://bad", True, "lookup"),
             ("http://ok", True, "fetch")]  # fmt: skip
    for url, sync, name in cases:
        asked = AIMessage("", tool_calls=[{"name": name, "args": {"url": url}, "id": "c1"}])
        state = {"messages": [HumanMessage(BENIGN), asked]}
        out = graph.invoke(state) if sync else await graph.ainvoke(state)
        message = out["messages"][-1]
        assert message.status == "error" and "Sure!" not in message.text
        assert ("Refused: Llama Guard flagged this tool output" in message.text) == (url == "http://bad")
    assert "404: not found" in message.text


def test_rows_with_a_type_key_are_judged_as_the_json_the_model_reads(lg4):
    @tool
    def open_bugs(project: str) -> list:
        """The open bugs."""
        return [{"type": "bug", "title": "login fails"}, {"type": "task", "title": "docs"}]

    guarded = guard_tool(open_bugs, lg4, check_output=True)
    moderator = guarded.func.__self__.moderator
    shown: list = []
    check = moderator.check
    moderator.check = lambda convs, **kw: shown.extend(convs) or check(convs, **kw)
    try:
        got = guarded.invoke({"project": "web"})  # judged, not refused as an unknown content block
    finally:
        del moderator.check
    rows = open_bugs.invoke({"project": "web"})
    assert json.dumps(rows) in shown[-1][-1].text  # the JSON LangChain sends the model
    assert got == rows or got.startswith("Refused: Llama Guard flagged this tool output")


def test_an_answer_left_unjudged_by_an_error_run_is_judged_on_the_next_turn(lg4, monkeypatch):
    """``exit_behavior="error"`` raises from after_model, after the model node's write was checkpointed: the next
    run judges that answer first and replaces it, so the user's next turn is judged without it and the model never
    reads it back (whether the tiny guard then answers the turn is its call, not asserted)."""
    model = ScriptedToolModel(
        messages=iter([AIMessage(UNSAFE_ANSWER, id="a1"), AIMessage(BENIGN_ANSWER), AIMessage(BENIGN_ANSWER)])
    )
    guard = LlamaGuardMiddleware(lg4, exit_behavior="error")
    judged: list[tuple[str, list[str]]] = []
    check = guard.moderator.check
    monkeypatch.setattr(
        guard.moderator,
        "check",
        lambda convs, role: judged.append((role, [m.text for c in convs for m in c])) or check(convs, role=role),
    )
    agent = create_agent(model, [], middleware=[guard], checkpointer=InMemorySaver())
    cfg, prompts = {"configurable": {"thread_id": "error"}}, SentPrompts()
    with pytest.raises(UnsafeContentError):
        agent.invoke({"messages": [HumanMessage(BENIGN)]}, {**cfg, "callbacks": [prompts]})
    assert unsafe_in(agent.get_state(cfg).values["messages"])  # what langgraph checkpointed before the hook raised
    judged.clear()
    try:
        agent.invoke({"messages": [HumanMessage(BENIGN)]}, {**cfg, "callbacks": [prompts]})
        answered = True
    except UnsafeContentError:
        answered = False
    assert judged[0] == ("Agent", [BENIGN, UNSAFE_ANSWER])  # the leftover answer, judged first
    user_checks = [texts for role, texts in judged if role == "User"]
    assert user_checks and all(UNSAFE_ANSWER not in texts for texts in user_checks)
    assert not any("Sure! To make" in m.text for p in prompts.sent[1:] for m in p)
    if answered:
        assert not unsafe_in(agent.get_state(cfg).values["messages"])


async def test_an_answer_left_by_a_cancelled_stream_is_judged_on_the_next_turn(lg4):
    model = ScriptedToolModel(messages=iter([AIMessage(UNSAFE_ANSWER, id="a1"), AIMessage(BENIGN_ANSWER)]))
    guard = LlamaGuardMiddleware(lg4, apply_to_input=False)
    agent = create_agent(model, [], middleware=[guard], checkpointer=InMemorySaver())
    cfg, prompts = {"configurable": {"thread_id": "cancel"}}, SentPrompts()

    answered = asyncio.Event()

    async def client() -> None:
        async for update in agent.astream({"messages": [HumanMessage(BENIGN)]}, cfg, stream_mode="updates"):
            if "model" in update:
                answered.set()
                await asyncio.Event().wait()  # the client disconnects before the guard's after_model runs

    task = asyncio.create_task(client())
    await asyncio.wait_for(answered.wait(), 120)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert unsafe_in(agent.get_state(cfg).values["messages"])  # checkpointed, never judged
    out = await agent.ainvoke({"messages": [HumanMessage(BENIGN)]}, {**cfg, "callbacks": [prompts]})
    assert prompts.read(BENIGN) and not prompts.read("Sure! To make")  # the model ran, without the leftover
    assert not unsafe_in(out["messages"])
    # the new answer, or the guard's refusal of it: the tiny guard has not learned this conversation's verdict
    assert out["messages"][-1].text == BENIGN_ANSWER or guard_written(out["messages"][-1])


def test_a_callers_own_history_costs_no_extra_check(lg4, monkeypatch):
    """Without a checkpointer the caller sends the history each time; only this run's turn and answer are judged."""
    history = [HumanMessage("Hi"), AIMessage("Hello!"), HumanMessage(BENIGN)]
    guard = LlamaGuardMiddleware(lg4)
    judged: list[int] = []
    check = guard.moderator.check
    monkeypatch.setattr(guard.moderator, "check", lambda convs, **kw: judged.append(len(convs)) or check(convs, **kw))
    agent = create_agent(ScriptedToolModel(messages=iter([AIMessage(BENIGN_ANSWER)])), [], middleware=[guard])
    assert agent.invoke({"messages": history})["messages"][-1].text == BENIGN_ANSWER
    assert judged == [1, 1]  # the user's turn, then the answer


@pytest.mark.parametrize("which", ["llama_guard", "prompt_guard"])
def test_a_flagged_user_turn_leaves_the_thread(lg4_with, prompt_guard, which, monkeypatch):
    """A refused turn is replaced by a notice (same id): the next turn's model is never sent it, and Llama Guard
    judges the next turn without it (whether it then answers is the guard's call, not asserted here)."""
    guard, bad = (  # the second turn is no check-set conversation: an unreadable verdict fails closed
        (LlamaGuardMiddleware(lg4_with(on_error="unsafe")), BOMB)
        if which == "llama_guard"
        else (PromptGuardMiddleware(prompt_guard), INJECTION)
    )
    judged: list[str] = []
    if which == "llama_guard":
        check = guard.moderator.check
        monkeypatch.setattr(
            guard.moderator,
            "check",
            lambda convs, **kw: judged.extend(m.text for c in convs for m in c) or check(convs, **kw),
        )
    model = ScriptedToolModel(messages=iter([AIMessage(BENIGN_ANSWER), AIMessage(BENIGN_ANSWER)]))
    agent = create_agent(model, [], middleware=[guard], checkpointer=InMemorySaver())
    cfg, prompts = {"configurable": {"thread_id": which}}, SentPrompts()
    first = agent.invoke({"messages": [HumanMessage(bad)]}, {**cfg, "callbacks": [prompts]})
    assert not prompts.sent and not any(m.text == bad for m in first["messages"])
    assert "removed by" in first["messages"][0].text
    judged.clear()
    second = agent.invoke({"messages": [HumanMessage(BENIGN)]}, {**cfg, "callbacks": [prompts]})
    assert not prompts.read(bad) and not any(m.text == bad for m in second["messages"])
    if which == "llama_guard":
        assert BENIGN in judged and bad not in judged
    else:  # Prompt Guard reads only the new turn
        assert second["messages"][-1].text == BENIGN_ANSWER


def test_a_system_note_between_user_messages_does_not_end_the_users_turn(prompt_guard):
    """``[Human(injection), System(note), Human(screenshot)]``: the provider sends all three, Llama Guard reads them
    as one turn, but Prompt Guard scanned only the messages after the note (here an image, no text), so the model
    read the injection. The turn reaches back to the model's last message; a flagged one leaves the thread whole."""
    buffer = io.BytesIO()
    data.check_images()[1].save(buffer, format="PNG")
    image = {"type": "image", "base64": base64.b64encode(buffer.getvalue()).decode(), "mime_type": "image/png"}
    model = ScriptedToolModel(messages=iter([AIMessage(BENIGN_ANSWER)]))
    agent = create_agent(model, [], middleware=[PromptGuardMiddleware(prompt_guard)])
    prompts = SentPrompts()
    turn = [HumanMessage(INJECTION, id="h1"), SystemMessage("Answer in one line."), HumanMessage([image], id="h2")]
    out = agent.invoke({"messages": turn}, {"callbacks": [prompts]})
    assert not prompts.sent and not any(INJECTION in m.text for m in out["messages"])
    notices = {m.id: m.text for m in out["messages"] if isinstance(m, HumanMessage)}
    assert set(notices) == {"h1", "h2"} and all("removed by Prompt Guard" in t for t in notices.values())


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_turn_another_middleware_ended_before_the_guard_judged_it_is_judged_next_turn(
    lg4_with, monkeypatch, use_async
):
    """A quota middleware listed before the guard ends a run in its ``before_agent`` ("out of credits"): the
    guard's ``before_agent`` never ran, and the next turn's model read that turn, unjudged. It is judged at the
    start of the next run, as the User's turn in its context, and leaves the thread when flagged (whether the tiny
    guard flags it there is its call: what it was asked, and the outcome, are asserted)."""
    from langchain.agents.middleware import AgentMiddleware, hook_config

    class Quota(AgentMiddleware):
        @hook_config(can_jump_to=["end"])
        def before_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
            if state["messages"][-1].text == BOMB:  # this user is out of credits
                return {"messages": [AIMessage("Out of credits.", id="quota")], "jump_to": "end"}
            return None

    lg4 = lg4_with(on_error="unsafe")  # turns in this thread's context are no check-set text: unreadable fails closed
    guard = LlamaGuardMiddleware(lg4)
    judged: list[tuple[str, str]] = []
    check, acheck = guard.moderator.check, guard.moderator.acheck

    def spy(convs: Any, role: str) -> None:
        judged.extend((role, conv[-1].text) for conv in convs)

    monkeypatch.setattr(guard.moderator, "check", lambda convs, **kw: spy(convs, kw["role"]) or check(convs, **kw))
    monkeypatch.setattr(guard.moderator, "acheck", lambda convs, **kw: spy(convs, kw["role"]) or acheck(convs, **kw))
    model = ScriptedToolModel(messages=iter([AIMessage(BENIGN_ANSWER, id=f"a{i}") for i in range(4)]))
    agent = create_agent(model, [], middleware=[Quota(), guard], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": f"quota-{use_async}"}}
    run = agent.ainvoke if use_async else None

    turns = iter(range(100))

    async def invoke(text: str, config: dict) -> dict:
        request = {"messages": [HumanMessage(text, id=f"h{next(turns)}")]}
        return await run(request, config) if run else agent.invoke(request, config)

    await invoke(BENIGN, cfg)
    await invoke(BOMB, cfg)
    assert ("User", BOMB) not in judged  # the quota ended the run before the guard's before_agent
    judged.clear()
    prompts = SentPrompts()
    out = await invoke(BENIGN, {**cfg, "callbacks": [prompts]})
    assert ("User", BOMB) in judged
    if not any(m.text == BOMB for m in out["messages"]):  # flagged: replaced before the model was called
        assert not prompts.read(BOMB) and any("removed by Llama Guard" in m.text for m in out["messages"])
    judged.clear()
    await invoke(BENIGN, cfg)
    assert ("User", BOMB) not in judged  # judged once: the record moved on (or the notice is the guard's own)
    judged.clear()
    await (
        agent.ainvoke({"messages": []}, cfg) if use_async else asyncio.to_thread(agent.invoke, {"messages": []}, cfg)
    )
    assert [role for role, _ in judged].count("User") == 1  # its last turn again (cached), no earlier one


def test_an_agent_built_again_for_each_request_still_repairs_the_thread(lg4):
    """An app that builds its agent per request (or after a restart) finds the record of the agent before: the
    answer an error run left unjudged is judged on the next turn, and the model never reads it back."""
    saver, cfg = InMemorySaver(), {"configurable": {"thread_id": "rebuilt"}}

    def agent(answer: str, **settings: Any) -> Any:
        model = ScriptedToolModel(messages=iter([AIMessage(answer, id=f"a-{len(answer)}")]))
        return create_agent(model, [], middleware=[LlamaGuardMiddleware(lg4, **settings)], checkpointer=saver)

    with pytest.raises(UnsafeContentError):
        agent(UNSAFE_ANSWER, exit_behavior="error").invoke({"messages": [HumanMessage(BENIGN)]}, cfg)
    prompts = SentPrompts()
    out = agent(BENIGN_ANSWER, apply_to_input=False).invoke(
        {"messages": [HumanMessage(BENIGN)]}, {**cfg, "callbacks": [prompts]}
    )
    assert prompts.sent and not prompts.read("Sure! To make") and not unsafe_in(out["messages"])


@pytest.mark.parametrize("which", ["llama_guard", "prompt_guard"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_user_turn_edited_in_a_fork_is_judged_before_the_model_reads_it(lg4, prompt_guard, which, use_async):
    """LangGraph's "edit a message and re-run": the turn is rewritten at the checkpoint right before the model node
    (after every before_* hook) and the thread re-run from there; the guard judges it in wrap_model_call."""
    llama = which == "llama_guard"
    guard, bad = (LlamaGuardMiddleware(lg4), BOMB) if llama else (PromptGuardMiddleware(prompt_guard), INJECTION)
    model = ScriptedToolModel(messages=iter([AIMessage(BENIGN_ANSWER), AIMessage(BENIGN_ANSWER)]))
    agent = create_agent(model, [], middleware=[guard], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "fork"}}
    agent.invoke({"messages": [HumanMessage(BENIGN, id="h1")]}, cfg)
    at_model = next(s for s in agent.get_state_history(cfg) if s.next == ("model",))
    fork = agent.update_state(at_model.config, {"messages": [HumanMessage(bad, id="h1")]})
    prompts = SentPrompts()
    run = {**fork, "callbacks": [prompts]}
    out = await agent.ainvoke(None, run) if use_async else agent.invoke(None, run)
    assert not prompts.read(bad) and not any(bad in m.text for m in out["messages"])
    assert "removed by" in out["messages"][0].text and out["messages"][0].id == "h1"


@pytest.mark.parametrize("which", ["prompt_guard", "llama_guard"])
def test_a_fork_that_flags_the_user_turn_also_withholds_a_flagged_tool_result(prompt_guard, lg4, which):
    """A fork that edits both the user's turn and a tool result into flagged text: the run ends on the turn, and
    the result is withheld too, or a later turn's model would read it (it follows no new model message then)."""
    llama = which == "llama_guard"
    bad = BOMB if llama else INJECTION
    result_text = UNSAFE_ANSWER if llama else INJECTION
    guard = LlamaGuardMiddleware(lg4, apply_to_tool_results=True) if llama else PromptGuardMiddleware(prompt_guard)

    @tool
    def search(query: str) -> str:
        """Search the web."""
        return "Sunny."

    call = AIMessage("", tool_calls=[{"name": "search", "args": {"query": "weather"}, "id": "c1"}])
    model = ScriptedToolModel(messages=iter([call, AIMessage(BENIGN_ANSWER), AIMessage(BENIGN_ANSWER)]))
    agent = create_agent(model, [search], middleware=[guard], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "fork-both"}}
    agent.invoke({"messages": [HumanMessage(BENIGN, id="h1")]}, cfg)
    at_model = next(s for s in agent.get_state_history(cfg) if s.next == ("model",) and len(s.values["messages"]) == 3)
    result = at_model.values["messages"][2]
    edits = [HumanMessage(bad, id="h1"), ToolMessage(result_text, id=result.id, tool_call_id="c1", name="search")]
    out = agent.invoke(None, agent.update_state(at_model.config, {"messages": edits}))
    assert not any(t in m.text for m in out["messages"] for t in (bad, result_text))
    assert "removed by" in out["messages"][0].text


@pytest.mark.parametrize("decision", ["respond", "reject"])
async def test_a_reviewers_words_in_a_tool_results_place_are_scanned(prompt_guard, decision):
    """Human-in-the-loop: a reviewer's answer ("respond") or rejection message becomes the tool result without the
    tool running; the model reads it, so Prompt Guard scans it before the next model call."""
    from langchain.agents.middleware import HumanInTheLoopMiddleware
    from langgraph.types import Command

    @tool
    def ask_user(question: str) -> str:
        """Ask the user a question."""
        return "unused"

    call = AIMessage("", tool_calls=[{"name": "ask_user", "args": {"question": "Which city?"}, "id": "c1"}])
    model = ScriptedToolModel(messages=iter([call, AIMessage(BENIGN_ANSWER)]))
    middleware = [PromptGuardMiddleware(prompt_guard), HumanInTheLoopMiddleware({"ask_user": True})]
    agent = create_agent(model, [ask_user], middleware=middleware, checkpointer=InMemorySaver())
    cfg, prompts = {"configurable": {"thread_id": decision}}, SentPrompts()
    await agent.ainvoke({"messages": [HumanMessage(BENIGN)]}, cfg)
    out = await agent.ainvoke(
        Command(resume={"decisions": [{"type": decision, "message": INJECTION}]}), {**cfg, "callbacks": [prompts]}
    )
    assert not prompts.read(INJECTION) and not any(INJECTION in m.text for m in out["messages"])
    assert any("withheld" in m.text for m in out["messages"] if isinstance(m, ToolMessage))


def test_a_call_a_reviewer_edits_into_one_llama_guard_blocks_ends_the_run_beside_prompt_guard(lg4, prompt_guard):
    """[Prompt Guard, human-in-the-loop, Llama Guard (exit "end")]: the reviewer's edit is blocked before the tool
    runs, and the run ends with Llama Guard's refusal: a notice of Prompt Guard's in the blocked result's place
    keeps Llama Guard's end-of-run mark."""
    from conftest import make_tools
    from langchain.agents.middleware import HumanInTheLoopMiddleware
    from langgraph.types import Command

    counts, repl, _ = make_tools()
    calls = [AIMessage("", tool_calls=[{"name": "python_repl", "args": {"code": "print(1 + 1)"}, "id": "c1"}])]
    model = ScriptedToolModel(messages=iter([*calls, AIMessage(BENIGN_ANSWER), AIMessage(BENIGN_ANSWER)]))
    middleware = [
        PromptGuardMiddleware(prompt_guard),
        HumanInTheLoopMiddleware({"python_repl": True}),
        LlamaGuardMiddleware(lg4),
    ]
    agent = create_agent(model, [repl], middleware=middleware, checkpointer=InMemorySaver())
    cfg, prompts = {"configurable": {"thread_id": "edit"}}, SentPrompts()
    agent.invoke({"messages": [HumanMessage(ASK_CODE)]}, {**cfg, "callbacks": [prompts]})
    edit = {"type": "edit", "edited_action": {"name": "python_repl", "args": {"code": EVIL_CODE}}}
    out = agent.invoke(Command(resume={"decisions": [edit]}), {**cfg, "callbacks": [prompts]})
    assert counts["python_repl"] == [] and len(prompts.sent) == 1  # the tool never ran, the model was not asked again
    assert "flagged by Llama Guard" in out["messages"][-1].text


def test_thread_records_are_named_by_everything_a_verdict_depends_on(lg4_with):
    """A record one middleware (or graph node) leaves in a thread stands in for another's check only when the
    verdicts would be the same: the same model format, categories, exclusions and threshold."""
    names = {
        LlamaGuardMiddleware(lg4_with()).record,
        LlamaGuardMiddleware(lg4_with(threshold=0.9)).record,
        LlamaGuardMiddleware(lg4_with(excluded_categories=["S9"])).record,
        LlamaGuardMiddleware(lg4_with(), categories={"S1": "Violent Crimes."}).record,
    }
    assert len(names) == 4 and LlamaGuardMiddleware(lg4_with()).record in names  # built alike: the same name
    assert lg4_with().as_node().policy != lg4_with(threshold=0.9).as_node().policy


def _two_message_turn() -> list[HumanMessage]:
    """A check-set turn sent as two messages: the bomb question, then forged template markers. Read as one turn,
    their prompt is that of the check-set text, token for token (so its verdict, unsafe, is a learned one)."""
    text = next(
        c.conversation
        for c in data.llama_guard_checks("llama-guard-4")
        if isinstance(c.conversation, str) and c.conversation.startswith(BOMB + data.FAKE_MARKERS[:20])
    )
    question, markers = text.split("\n", 1)
    assert question == BOMB
    return [HumanMessage(question, id="q1"), HumanMessage(markers, id="q2")]


@pytest.mark.parametrize(
    ("input_check", "exit_behavior"), [("before", "end"), ("parallel", "end"), ("parallel", "replace")]
)
def test_a_flagged_turn_sent_as_several_messages_leaves_the_thread_whole(lg4, input_check, exit_behavior):
    """A caller sent its turn as two messages and the guard flagged it (it reads them as one turn), but only the
    last message was replaced by the notice: the bomb question stayed in the thread for the next run's model."""
    turn = _two_message_turn()
    assert lg4.prepare(turn)[0][0].input_ids == lg4.prepare(BOMB + "\n" + turn[1].text)[0][0].input_ids
    model = ScriptedToolModel(messages=iter([AIMessage("Here is another topic.")] * 2))
    guard = LlamaGuardMiddleware(lg4, input_check=input_check, exit_behavior=exit_behavior)
    agent = create_agent(model, [], middleware=[guard], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": f"{input_check}-{exit_behavior}"}}
    agent.invoke({"messages": turn}, config)
    messages = agent.get_state(config).values["messages"]
    assert not any(BOMB in m.text for m in messages)
    assert [m.text.startswith("[message removed by Llama Guard") for m in messages[:2]] == [True, True]
    assert [m.id for m in messages[:2]] == ["q1", "q2"]


def test_a_graph_node_removes_every_message_of_a_flagged_turn(lg4):
    builder = StateGraph(MessagesState)
    builder.add_node("check_in", lg4.as_node(check="input"))
    builder.add_edge(START, "check_in")
    builder.add_edge("check_in", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "node"}}
    graph.invoke({"messages": _two_message_turn()}, config)
    messages = graph.get_state(config).values["messages"]
    assert not any(BOMB in m.text for m in messages)
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "HumanMessage", "AIMessage"]
