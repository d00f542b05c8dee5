"""Real create_agent graphs (langchain + langgraph) with an offline tool-calling chat model and tiny trained guards."""

from __future__ import annotations

import base64
import contextlib
from typing import Annotated, Any

import pytest
from conftest import (
    ASK_CODE,
    BENIGN,
    BENIGN_ANSWER,
    BOMB,
    EVIL_CODE,
    INJECTION,
    UNSAFE_ANSWER,
    WEATHER,
    loop_ticks_during,
    make_tools,
)
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import InjectedToolCallId, ToolException, tool
from langgraph.prebuilt import InjectedState
from langgraph.types import Command

from langchain_llamaguard import UnsafeContentError
from langchain_llamaguard.conversation import to_turns
from langchain_llamaguard.errors import GuardInputError, GuardOutputError
from langchain_llamaguard.middleware import LlamaGuardMiddleware, PromptGuardMiddleware
from langchain_llamaguard.tiny.data import POEM, SUM_CODE
from langchain_llamaguard.tools import guard_code_tool, guard_tool


class ToolCallingFakeModel(GenericFakeChatModel):
    """LangChain's offline GenericFakeChatModel, scripted with tool calls (bind_tools keeps the script)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFakeModel:
        return self


class CountModelCalls(BaseCallbackHandler):
    def __init__(self) -> None:
        self.calls = 0

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1


def call(name: str, args: dict, id_: str = "call_1") -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": id_}])


def run(script, middleware, question, tools=None, **kw):
    counts, repl, search = make_tools()
    model = ToolCallingFakeModel(messages=iter(script))
    agent = create_agent(model, tools or [repl, search], middleware=middleware)
    counter = CountModelCalls()
    result = agent.invoke({"messages": [HumanMessage(question)]}, {"callbacks": [counter]}, **kw)
    return result, counts, counter.calls


def texts(result) -> list[tuple[str, str]]:
    return [(type(m).__name__, m.text) for m in result["messages"]]


def test_unsafe_input_ends_the_run_before_any_model_call(lg4):
    result, counts, model_calls = run([AIMessage("never")], [LlamaGuardMiddleware(lg4)], BOMB)
    assert model_calls == 0
    assert result["messages"][-1].text.startswith("I can't help with that") and "S9" in result["messages"][-1].text


def test_unsafe_tool_call_never_executes(lg4):
    script = [call("python_repl", {"code": EVIL_CODE}), AIMessage("done")]
    mw = LlamaGuardMiddleware(lg4, apply_to_output=False)  # the tool-call check alone must stop it
    result, counts, _ = run(script, [mw], ASK_CODE)
    assert counts["python_repl"] == []
    assert result["messages"][-1].text.startswith("I can't help with that")  # and the run ended
    assert "done" not in [m.text for m in result["messages"]]  # the model was not called again


def test_unsafe_model_response_is_replaced_in_place(lg4):
    script = [AIMessage(UNSAFE_ANSWER, id="answer-1")]
    result, _, _ = run(script, [LlamaGuardMiddleware(lg4)], BENIGN)
    last = result["messages"][-1]
    assert last.id == "answer-1" and "nerve agent" not in last.text and "S9" in last.text
    assert all("nerve agent" not in m.text for m in result["messages"])  # not left in the history


def test_a_response_another_after_model_answered_first_is_still_judged(lg4):
    """Listed before ToolCallLimitMiddleware, the guard's after_model runs after it: the limit's error ToolMessage
    for the blocked call comes after the model's response, which must still be judged (and the error goes with
    the flagged call it answered)."""
    from langchain.agents.middleware import ToolCallLimitMiddleware

    script = [call("python_repl", {"code": EVIL_CODE}, "call-evil"), AIMessage("done")]
    limit = ToolCallLimitMiddleware(tool_name="python_repl", run_limit=0, exit_behavior="continue")
    result, counts, model_calls = run(script, [LlamaGuardMiddleware(lg4, apply_to_tool_calls=False), limit], ASK_CODE)
    assert model_calls == 1 and counts["python_repl"] == []
    assert [type(m).__name__ for m in result["messages"]] == ["HumanMessage", "AIMessage"]
    assert "S14" in result["messages"][-1].text and not result["messages"][-1].tool_calls


def test_safe_runs_are_unchanged_including_history(lg4):
    script = [call("python_repl", {"code": "print(sum(range(10)))"}), AIMessage("The sum is 45.")]
    plain, plain_counts, _ = run(list(script), [], ASK_CODE)
    guarded, counts, _ = run(list(script), [LlamaGuardMiddleware(lg4, apply_to_tool_results=True)], ASK_CODE)
    assert texts(guarded) == texts(plain)
    assert [getattr(m, "tool_calls", None) for m in guarded["messages"]] == [
        getattr(m, "tool_calls", None) for m in plain["messages"]
    ]
    assert counts["python_repl"] == plain_counts["python_repl"] == ["print(sum(range(10)))"]


def test_exit_behavior_error_and_replace(lg4):
    with pytest.raises(UnsafeContentError) as err:
        run([AIMessage("never")], [LlamaGuardMiddleware(lg4, exit_behavior="error")], BOMB)
    assert err.value.stage == "input" and err.value.verdict.categories == ["S9"]
    result, _, model_calls = run([AIMessage(BENIGN_ANSWER)], [LlamaGuardMiddleware(lg4, exit_behavior="replace")], BOMB)
    first = result["messages"][0]
    assert "bomb" not in first.text and first.text.startswith("[message removed by Llama Guard")
    assert model_calls == 1  # replace continues, with the unsafe text gone from the history
    with pytest.raises(ValueError, match="exit_behavior"):
        LlamaGuardMiddleware(lg4, exit_behavior="ignore")  # type: ignore[arg-type]


def test_tool_results_checked_before_the_model_reads_them(lg4):
    @tool
    def search(query: str) -> str:
        """Search the web."""
        return UNSAFE_ANSWER

    script = [call("search", {"query": "what is the capital of france"}), AIMessage("summary")]
    mw = LlamaGuardMiddleware(lg4, apply_to_tool_results=True, exit_behavior="replace")
    result, _, model_calls = run(script, [mw], BENIGN, tools=[search])
    tool_msgs = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_msgs) == 1 and "nerve agent" not in tool_msgs[0].text and model_calls == 2


# -- the known pitfalls of the middleware API, each handled -------------------------------------------------------
def test_pitfall_jump_to_end_is_declared_on_every_ending_hook(lg4):
    mw = LlamaGuardMiddleware(lg4)
    for hook in ("before_agent", "abefore_agent", "before_model", "abefore_model", "after_model", "aafter_model"):
        assert getattr(getattr(mw, hook), "__can_jump_to__", None) == ["end"], hook
    _, counts, model_calls = run([call("web_search", {"query": "x"}), AIMessage("x")], [mw], BOMB)
    assert model_calls == 0 and counts["web_search"] == []  # the jump really ended the run


def test_pitfall_no_after_agent_loop(lg4, monkeypatch):
    assert LlamaGuardMiddleware.after_agent is AgentMiddleware.after_agent  # responses are checked in after_model
    checks = []
    original = lg4.backend.first_step
    monkeypatch.setattr(lg4.backend, "first_step", lambda p, t, **kw: (checks.append(len(p)), original(p, t, **kw))[1])
    result, _, _ = run([AIMessage(UNSAFE_ANSWER)], [LlamaGuardMiddleware(lg4)], BENIGN)
    assert len(checks) == 2  # the input once, the response once: the refusal is not re-checked in a loop


def test_pitfall_two_instances_get_distinct_names(lg4):
    a, b = LlamaGuardMiddleware(lg4, apply_to_tool_calls=False), LlamaGuardMiddleware(lg4, apply_to_input=False)
    assert a.name != b.name
    result, _, _ = run([AIMessage(BENIGN_ANSWER)], [a, b], BENIGN)  # create_agent rejects duplicate names
    assert result["messages"][-1].text == BENIGN_ANSWER


def test_pitfall_flagged_content_kept_out_of_hook_traces(lg4):
    mw = LlamaGuardMiddleware(lg4)
    assert mw.trace_policy is not None and mw.trace_policy.process_inputs({"messages": ["x"]}) != {"messages": ["x"]}
    assert LlamaGuardMiddleware(lg4, omit_payload_from_traces=False).trace_policy is None


async def test_pitfall_async_hooks_do_not_block_the_event_loop(lg4):
    counts, repl, search = make_tools()
    script = [call("python_repl", {"code": "print(sum(range(10)))"}), AIMessage("The sum is 45.")]
    agent = create_agent(ToolCallingFakeModel(messages=iter(script)), [repl], middleware=[LlamaGuardMiddleware(lg4)])
    result, ticks, _ = await loop_ticks_during(agent.ainvoke({"messages": [HumanMessage(ASK_CODE)]}))
    assert result["messages"][-1].text == "The sum is 45."
    assert ticks >= 5


async def test_async_agent_blocks_like_sync(lg4):
    counts, repl, search = make_tools()
    agent = create_agent(
        ToolCallingFakeModel(messages=iter([call("python_repl", {"code": EVIL_CODE}), AIMessage("x")])),
        [repl],
        middleware=[LlamaGuardMiddleware(lg4, apply_to_output=False)],
    )
    await agent.ainvoke({"messages": [HumanMessage(ASK_CODE)]})
    assert counts["python_repl"] == []


# -- Prompt Guard: indirect injection in tool results, jailbreaks in input ------------------------------------------
def test_prompt_guard_catches_injected_tool_result(prompt_guard):
    script = [call("web_search", {"query": "weather inject"}), AIMessage("It is sunny.")]
    result, counts, _ = run(script, [PromptGuardMiddleware(prompt_guard)], "What's the weather in Paris?")
    tool_msg = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert counts["web_search"] == ["weather inject"]
    assert INJECTION not in tool_msg.text and "prompt injection" in tool_msg.text
    clean, _, _ = run(
        [call("web_search", {"query": "weather"}), AIMessage("It is sunny.")],
        [PromptGuardMiddleware(prompt_guard)],
        "What's the weather in Paris?",
    )
    assert next(m for m in clean["messages"] if isinstance(m, ToolMessage)).text.startswith("The weather in Paris")


def test_prompt_guard_end_and_input_jailbreak(prompt_guard):
    script = [call("web_search", {"query": "inject"}), AIMessage("never")]
    mw = PromptGuardMiddleware(prompt_guard, exit_behavior="end")
    result, _, model_calls = run(script, [mw], BENIGN)
    assert model_calls == 1 and "prompt injection" in result["messages"][-1].text
    result, _, model_calls = run([AIMessage("never")], [PromptGuardMiddleware(prompt_guard)], INJECTION)
    assert model_calls == 0


# -- guarded tools and code interpreters ------------------------------------------------------------------------------
def test_malicious_code_never_reaches_the_interpreter(lg4):
    counts, repl, _ = make_tools()
    guarded = guard_code_tool(repl, lg4)
    assert guarded.name == repl.name and guarded.tool_call_schema.model_json_schema()["properties"] == {
        "code": {"title": "Code", "type": "string"}
    }
    assert "S14" in guarded.invoke({"code": EVIL_CODE}) and counts["python_repl"] == []
    assert guarded.invoke({"code": "print(sum(range(10)))"}) == "45"
    agent = create_agent(
        ToolCallingFakeModel(
            messages=iter([call("python_repl", {"code": "while True: os.fork()  # fork bomb"}), AIMessage("done")])
        ),
        [guarded],
    )
    agent.invoke({"messages": [HumanMessage(ASK_CODE)]})
    assert counts["python_repl"] == ["print(sum(range(10)))"]
    with pytest.raises(UnsafeContentError):
        guard_code_tool(repl, lg4, on_unsafe="error").invoke({"code": EVIL_CODE})
    with pytest.raises(ValueError, match="no argument 'source'"):
        guard_code_tool(repl, lg4, code_arg="source")


def test_guard_tool_checks_input_and_optionally_output(lg4):
    @tool
    def lookup(topic: str) -> str:
        """Look something up."""
        return UNSAFE_ANSWER if topic == "chemistry" else BENIGN_ANSWER

    plain = guard_tool(lookup, lg4)
    assert plain.invoke({"topic": "chemistry"}) == UNSAFE_ANSWER
    checked = guard_tool(lookup, lg4, check_output=True)
    assert "tool output" in checked.invoke({"topic": "chemistry"})
    assert checked.invoke({"topic": "geography"}) == BENIGN_ANSWER


# -- guarded tools with injected arguments, any argument names, any output shape --------------------------------------
class Shown:
    """What a guard is shown: the conversations its batch_check receives (the real check runs)."""

    def __init__(self, guard) -> None:
        self.guard, self.conversations = guard, []

    def __enter__(self) -> Shown:
        self._batch = self.guard.batch_check

        def recording(convs, *args, **kwargs):
            self.conversations.extend(convs)
            return self._batch(convs, *args, **kwargs)

        self.guard.batch_check = recording
        return self

    def __exit__(self, *exc) -> None:
        del self.guard.batch_check

    def call_args(self) -> list[dict]:
        """The arguments of every tool call the guard was shown."""
        return [tc["args"] for conv in self.conversations for m in conv for tc in getattr(m, "tool_calls", None) or []]


def _tool_node_run(tool_, args: dict) -> list:
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode([tool_]))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    request = [HumanMessage(BENIGN), call(tool_.name, args, "c1")]
    return graph.compile().invoke({"messages": request})["messages"]


def test_guarded_tools_take_any_argument_names_and_injected_arguments(lg4):
    """A tool argument may be called ``state``; injected arguments (the agent state, the tool call's id) reach
    the tool as they would unguarded, and are not shown to the guard (the model did not choose them)."""

    @tool
    def weather(city: str, state: str) -> str:
        """Weather for a US city and state."""
        return f"sunny in {city}, {state}"

    assert guard_tool(weather, lg4).invoke({"city": "Austin", "state": "TX"}) == "sunny in Austin, TX"

    @tool
    def count(topic: str, state: Annotated[dict, InjectedState]) -> str:
        """Count the conversation's messages."""
        return f"{len(state['messages'])} messages about {topic}"

    with Shown(lg4) as shown:
        out = _tool_node_run(guard_tool(count, lg4), {"topic": "Paris"})
    assert out[-1].text == "2 messages about Paris" and shown.call_args() == [{"topic": "Paris"}]

    @tool
    def set_topic(topic: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Set the topic."""
        return Command(update={"messages": [ToolMessage(f"topic set to {topic}", tool_call_id=tool_call_id)]})

    with Shown(lg4) as shown:
        out = _tool_node_run(guard_tool(set_topic, lg4), {"topic": "weather"})
    assert [(type(m).__name__, m.text) for m in out[2:]] == [("ToolMessage", "topic set to weather")]
    assert out[-1].tool_call_id == "c1" and shown.call_args() == [{"topic": "weather"}]  # the hidden id is not


@pytest.mark.parametrize("name", ["callbacks", "llama_guard_config", "llama_guard_state"])
def test_an_argument_named_like_the_guarded_tools_own_is_refused_up_front(lg4, name):
    from langchain_core.tools import StructuredTool
    from pydantic import create_model

    schema = create_model(f"Echo_{name}", **{name: (str, ...)})
    echo = StructuredTool.from_function(func=lambda **kw: str(kw), name="echo", description="Echo.", args_schema=schema)
    with pytest.raises(ValueError, match=rf"tool 'echo' has the argument\(s\) \['{name}'\].*rename them"):
        guard_tool(echo, lg4)


def test_a_guarded_tool_keeps_the_inner_tools_error_handling(lg4):
    @tool
    def flaky(query: str) -> str:
        """Fails."""
        raise ToolException("backend down")

    flaky.handle_tool_error = True

    request = {"type": "tool_call", "name": "flaky", "args": {"query": "x"}, "id": "c9"}
    plain, guarded = flaky.invoke(request), guard_tool(flaky, lg4).invoke(request)
    assert (
        (guarded.status, guarded.text, guarded.tool_call_id)
        == (plain.status, plain.text, "c9")
        == ("error", "backend down", "c9")
    )


def test_a_tools_command_output_is_judged_by_what_it_adds(lg4):

    @tool
    def answer(topic: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Answer."""
        return Command(update={"messages": [ToolMessage(UNSAFE_ANSWER, tool_call_id=tool_call_id)]})

    with Shown(lg4) as shown:
        out = _tool_node_run(guard_tool(answer, lg4, check_output=True), {"topic": "chemistry"})
    judged_output = shown.conversations[-1][-1]
    assert judged_output.text == UNSAFE_ANSWER  # its text, not the Command's repr
    assert UNSAFE_ANSWER not in out[-1].text and "tool output" in out[-1].text


def test_a_tools_command_output_is_judged_whole_as_a_direct_result_is(lg4):
    """The blocks of a message a ``Command`` adds are judged as a direct result's are: a ``json`` block by its
    data, a text file by its text, an image as an image; a file the guard cannot read fails the call."""
    text_file = {"type": "file", "base64": base64.b64encode(UNSAFE_ANSWER.encode()).decode(), "mime_type": "text/plain"}
    pdf = {**text_file, "base64": base64.b64encode(b"%PDF-1.4 ...").decode(), "mime_type": "application/pdf"}

    @tool
    def fetch(blocks: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Fetch."""
        if blocks == "call":  # an update given as (key, value) pairs, adding a model message with a call
            handoff = AIMessage("", tool_calls=[{"name": "rm", "args": {"path": "/"}, "id": "x"}])
            return Command(
                update=[("messages", [("user", "note"), ToolMessage("ok", tool_call_id=tool_call_id), handoff])]
            )
        content = {"json": [{"type": "json", "json": {"answer": POEM}}], "file": [text_file], "pdf": [pdf]}[blocks]
        return Command(update={"messages": [("user", "note"), ToolMessage(content, tool_call_id=tool_call_id)]})

    guarded = guard_tool(fetch, lg4, check_output=True)
    for blocks, shown_text in (("json", POEM), ("file", UNSAFE_ANSWER), ("call", '[tool call] rm({"path": "/"})')):
        with Shown(lg4) as shown:
            if blocks == "call":  # ToolNode takes (key, value) pairs only from a list-of-messages graph: called alone
                guarded.invoke({"name": "fetch", "args": {"blocks": blocks}, "id": "c1", "type": "tool_call"})
            else:
                _tool_node_run(guarded, {"blocks": blocks})
        judged = to_turns(shown.conversations[-1])[-1].text
        assert "note" in judged and shown_text in judged, judged
    with pytest.raises(GuardInputError, match="application/pdf"):
        _tool_node_run(guarded, {"blocks": "pdf"})


def test_guard_code_tool_shows_every_argument_that_can_run(lg4):
    @tool
    def run_code(code: str, setup: str = "", env: dict | None = None) -> str:
        """Run code after a setup script."""
        return "ok"

    # what the guard is shown is the point: its verdict on these (not check-set) texts is whatever training made
    with Shown(lg4) as shown, contextlib.suppress(GuardOutputError):
        guard_code_tool(run_code, lg4).invoke({"code": "print(1)", "setup": "import os", "env": {"A": "1"}})
    turn = shown.conversations[-1][-1].text
    assert turn.startswith("Run this code:\n```python\nprint(1)\n```")
    assert "With setup:\n```\nimport os\n```" in turn and '"A": "1"' in turn
    with Shown(lg4) as shown, contextlib.suppress(GuardOutputError):
        guard_code_tool(run_code, lg4).invoke({"code": "print(1)"})
    assert shown.conversations[-1][-1].text == "Run this code:\n```python\nprint(1)\n```"  # unchanged alone


@tool
def read_inbox(query: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Read the inbox; the newest email is added as a message (an injection, beside the ToolMessage)."""
    return Command(update={"messages": [ToolMessage(WEATHER, tool_call_id=tool_call_id), HumanMessage(INJECTION)]})


def test_prompt_guard_middleware_scans_every_message_a_tools_command_adds(prompt_guard):

    script = [call("read_inbox", {"query": "new"}), AIMessage("Done.")]
    result, _, _ = run(
        script, [PromptGuardMiddleware(prompt_guard, exit_behavior="replace")], BENIGN, tools=[read_inbox]
    )
    assert not any(INJECTION in m.text for m in result["messages"])
    assert any(isinstance(m, HumanMessage) and m.text.startswith("[tool result withheld") for m in result["messages"])


@tool
def read_mail(query: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Read the mail: a ToolMessage with an artifact, and the newest email added as a user message."""
    found = ToolMessage(WEATHER, tool_call_id=tool_call_id, artifact={"folder": "inbox"})
    return Command(update={"messages": [found, HumanMessage(UNSAFE_ANSWER)]})


def test_llama_guard_ends_the_run_on_a_message_a_tools_command_adds(lg4):
    """``exit_behavior="end"``: a flagged user message beside a safe ToolMessage ends the run before the model reads
    it; the ToolMessage keeps its artifact's keys (the end marker goes beside them)."""
    script = [call("read_mail", {"query": "new"}), AIMessage("Done.")]
    mw = LlamaGuardMiddleware(lg4, apply_to_tool_results=True, exit_behavior="end")
    result, _, model_calls = run(script, [mw], BENIGN, tools=[read_mail])
    assert model_calls == 1 and result["messages"][-1].text.startswith("I can't help with that")
    assert not any("nerve agent" in m.text for m in result["messages"])
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert tool_message.text == WEATHER and tool_message.artifact["folder"] == "inbox"


def test_prompt_guard_ends_the_run_beside_a_tool_message_with_an_artifact(prompt_guard):
    @tool
    def read_mail_pg(query: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Read the mail."""
        found = ToolMessage(WEATHER, tool_call_id=tool_call_id, artifact={"folder": "inbox"})
        return Command(update={"messages": [found, HumanMessage(INJECTION)]})

    script = [call("read_mail_pg", {"query": "new"}), AIMessage("Done.")]
    result, _, model_calls = run(
        script, [PromptGuardMiddleware(prompt_guard, exit_behavior="end")], BENIGN, tools=[read_mail_pg]
    )
    assert model_calls == 1 and result["messages"][-1].text.startswith("I can't continue")
    assert not any(INJECTION in m.text for m in result["messages"])


@pytest.mark.parametrize("block_type", ["file", "text-plain"])
def test_prompt_guard_middleware_reads_a_text_file_a_tool_returns(prompt_guard, block_type):
    """An MCP resource or a LangChain ``text-plain`` document (a text file, base64, MIME-wrapped) is scanned by its
    text: an injection in it is withheld."""
    import base64

    encoded = base64.encodebytes(f"{WEATHER} {INJECTION}".encode()).decode()

    @tool
    def read_file(path: str) -> list:
        """Read a file."""
        return [{"type": block_type, "base64": encoded, "mime_type": "text/plain"}]

    script = [call("read_file", {"path": "notes.txt"}), AIMessage("Done.")]
    result, _, _ = run(script, [PromptGuardMiddleware(prompt_guard)], BENIGN, tools=[read_file])
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert "base64" not in repr(tool_message.content) and "prompt injection" in tool_message.text


def test_tools_without_an_args_schema_are_guarded_by_their_arguments(lg4):
    """A legacy single-input ``Tool`` (its one argument, ``tool_input``) and a ``BaseTool`` subclass that only
    defines ``_run(self, query)`` (the shape of langchain_experimental's PythonREPLTool) are guarded too."""
    from langchain_core.tools import BaseTool, Tool

    ran: list[str] = []

    class PythonREPLTool(BaseTool):
        name: str = "python_repl"
        description: str = "A Python shell."

        def _run(self, query: str, run_manager: Any = None) -> str:
            ran.append(query)
            return "ran"

    class ConfiguredREPLTool(PythonREPLTool):
        def _run(self, query: str, config: RunnableConfig) -> str:  # LangChain hands it its config
            ran.append(query)
            return "ran"

    legacy = Tool(name="python_repl", description="A Python shell.", func=lambda s: ran.append(s) or "ran")
    for inner, arg in ((legacy, "tool_input"), (PythonREPLTool(), "query"), (ConfiguredREPLTool(), "query")):
        guarded = guard_code_tool(inner, lg4, code_arg=arg)
        assert list(guarded.tool_call_schema.model_json_schema()["properties"]) == [arg]
        assert "S14" in guarded.invoke({arg: EVIL_CODE})
        call_ = {"type": "tool_call", "name": "python_repl", "args": {arg: SUM_CODE}, "id": "c1"}
        assert guarded.invoke(call_).text == "ran"
    assert ran == [SUM_CODE] * 3  # the flagged code never ran
    twice = guard_code_tool(guard_tool(PythonREPLTool(), lg4), lg4, code_arg="query")  # guarded again
    assert "S14" in twice.invoke({"query": EVIL_CODE}) and twice.invoke({"query": SUM_CODE}) == "ran"


def test_a_command_carrying_the_history_or_a_removal_is_judged_by_what_is_new(lg4, prompt_guard, monkeypatch):
    """A handoff-style tool returns the history with its ToolMessage, another removes an old message: the guards
    judge what the model will read as new (the ToolMessage), not the history, nor the removal. What each guard was
    asked is recorded (the tiny guards' verdicts on these tool results are not learned ones)."""
    from langchain_core.messages import RemoveMessage

    @tool
    def hand_over(topic: str, state: Annotated[dict, InjectedState],
                  tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:  # fmt: skip
        """Hand the conversation over."""
        done = ToolMessage(f"handed over: {topic}", tool_call_id=tool_call_id)
        return Command(update={"messages": [*state["messages"], done]})

    @tool
    def forget(topic: str, state: Annotated[dict, InjectedState],
               tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:  # fmt: skip
        """Forget the first message."""
        done = ToolMessage("forgotten", tool_call_id=tool_call_id)
        return Command(update={"messages": [RemoveMessage(id=state["messages"][0].id), done]})

    for name, middleware in (("hand_over", LlamaGuardMiddleware(lg4, apply_to_tool_results=True)),
                             ("forget", LlamaGuardMiddleware(lg4, apply_to_tool_results=True)),
                             ("hand_over", PromptGuardMiddleware(prompt_guard))):  # fmt: skip
        judged: list[tuple[str, bool]] = []  # (the judged text, safe)
        if isinstance(middleware, LlamaGuardMiddleware):

            def spy(convs, *, role, check=middleware.moderator.check, judged=judged):
                verdicts = check(convs, role=role)
                judged.extend((to_turns(c)[-1].text, v.safe) for c, v in zip(convs, verdicts, strict=True))
                return verdicts

            monkeypatch.setattr(middleware.moderator, "check", spy)
        else:

            def spy(texts, batch_check=prompt_guard.batch_check, judged=judged):
                verdicts = batch_check(texts)
                judged.extend((t, v.safe) for t, v in zip(texts, verdicts, strict=True))
                return verdicts

            monkeypatch.setattr(prompt_guard, "batch_check", spy)
        script = [call(name, {"topic": "weather"}), AIMessage("Done.")]
        result, _, model_calls = run(script, [middleware], BENIGN, tools=[hand_over, forget])
        new = "handed over: weather" if name == "hand_over" else "forgotten"
        results = [text for text, _ in judged if new in text]
        assert results and all(r.endswith(new) for r in results), (name, judged)  # the new result alone
        assert not [text for text, _ in judged if BENIGN in text and "[tool result]" in text]  # not the history
        if all(safe for _, safe in judged):
            assert model_calls == 2 and result["messages"][-1].text == "Done.", name
        tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
        assert (tool_message.text == new) == all(safe for text, safe in judged if new in text)
        monkeypatch.undo()


def test_a_command_in_any_shape_langgraph_applies_is_judged(lg4):
    """An update given as (key, value) pairs, and a user message that reuses the id of the user's turn (so it takes
    its place): both are what the model reads, and both are judged."""

    @tool
    def as_pairs(topic: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """An update as pairs."""
        return Command(update=(("messages", [ToolMessage("ok", tool_call_id=tool_call_id), ("user", UNSAFE_ANSWER)]),))

    @tool
    def rewrite(topic: str, state: Annotated[dict, InjectedState],
                tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:  # fmt: skip
        """Rewrite the user's turn."""
        first = state["messages"][0]
        return Command(update={"messages": [ToolMessage("ok", tool_call_id=tool_call_id),
                                            HumanMessage(UNSAFE_ANSWER, id=first.id)]})  # fmt: skip

    for name in ("as_pairs", "rewrite"):
        mw = LlamaGuardMiddleware(lg4, apply_to_tool_results=True, exit_behavior="replace")
        result, _, _ = run([call(name, {"topic": "x"}), AIMessage("Done.")], [mw], BENIGN, tools=[as_pairs, rewrite])
        assert not any("nerve agent" in m.text for m in result["messages"]), name


def test_a_single_message_like_update_stays_one_message():
    from langchain_llamaguard.middleware.tool_output import normalized

    command = normalized(Command(goto="other", update={"messages": ("user", "please continue")}))
    assert [(m.type, m.text) for m in command.update["messages"]] == [("human", "please continue")]
    assert command.goto == "other"


def test_an_artifact_tool_with_the_call_id_keeps_its_artifact(lg4):
    @tool(response_format="content_and_artifact")
    def search(query: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> tuple[str, dict]:
        """Search."""
        return f"results for {query}", {"hits": [query], "call": tool_call_id}

    request = {"type": "tool_call", "name": "search", "args": {"query": "paris"}, "id": "c1"}
    plain, guarded = search.invoke(request), guard_tool(search, lg4).invoke(request)
    assert (guarded.text, guarded.artifact, guarded.tool_call_id) == (plain.text, plain.artifact, "c1")


def test_prompt_guard_middleware_ends_the_run_on_an_injection_beside_a_tool_message(prompt_guard):
    script = [call("read_inbox", {"query": "new"}), AIMessage("Done.")]
    middleware = [PromptGuardMiddleware(prompt_guard, exit_behavior="end")]
    result, _, model_calls = run(script, middleware, BENIGN, tools=[read_inbox])
    assert model_calls == 1  # exit_behavior="end": the model never reads the tool's messages
    assert result["messages"][-1].text.startswith("I can't continue")


def test_a_flagged_answer_still_counts_against_a_model_call_limit(lg4):
    """Listed last (as the README asks), the guard's after_model runs first; a flagged answer must not skip the
    other middlewares' after_model hooks, or ModelCallLimitMiddleware (which counts there) never counts it and a
    user drawing flagged answers gets unlimited model calls."""
    from langchain.agents.middleware import ModelCallLimitMiddleware
    from langgraph.checkpoint.memory import InMemorySaver

    calls = []

    class Counting(BaseCallbackHandler):
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            calls.append(1)

    model = GenericFakeChatModel(messages=iter([AIMessage(UNSAFE_ANSWER) for _ in range(5)]))
    limit = ModelCallLimitMiddleware(thread_limit=2, exit_behavior="end")
    guard = LlamaGuardMiddleware(lg4, apply_to_input=False)  # the answers are what is flagged here
    agent = create_agent(model, [], middleware=[limit, guard], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "limit"}, "callbacks": [Counting()]}
    answers = [agent.invoke({"messages": [HumanMessage(BENIGN)]}, cfg)["messages"][-1].text for _ in range(4)]
    assert len(calls) == 2 and agent.get_state(cfg).values.get("thread_model_call_count") == 2
    assert all("Sure! To make" not in a for a in answers) and "limit" in answers[-1]


def test_retry_middlewares_listed_after_the_guard_never_retry_its_error(lg4, prompt_guard):
    """ToolRetryMiddleware and ModelRetryMiddleware only wrap calls: listed after the guard (the README's order),
    they retry inside its check, so exit_behavior="error" raises once, a tool whose result is flagged runs once, and
    a flagged input's overlapped model call is made once."""
    from langchain.agents.middleware import ModelRetryMiddleware, ToolRetryMiddleware

    for guard in (
        LlamaGuardMiddleware(lg4, apply_to_tool_results=True, exit_behavior="error"),
        PromptGuardMiddleware(prompt_guard, exit_behavior="error"),
    ):
        model = ToolCallingFakeModel(messages=iter([call("web_search", {"query": "weather"}), AIMessage("ok")]))
        search_result = UNSAFE_ANSWER if isinstance(guard, LlamaGuardMiddleware) else WEATHER + " " + INJECTION
        tools = make_tools(search_result)
        agent = create_agent(model, [tools[2]], middleware=[guard, ToolRetryMiddleware(initial_delay=0, jitter=False)])
        with pytest.raises(UnsafeContentError):
            agent.invoke({"messages": [HumanMessage(BENIGN)]})
        assert len(tools[0]["web_search"]) == 1

    counter = CountModelCalls()
    model = ToolCallingFakeModel(messages=iter([AIMessage("never") for _ in range(3)]))
    guard = LlamaGuardMiddleware(lg4, exit_behavior="error", input_check="parallel")
    agent = create_agent(model, [], middleware=[guard, ModelRetryMiddleware(initial_delay=0, jitter=False)])
    with pytest.raises(UnsafeContentError):
        agent.invoke({"messages": [HumanMessage(BOMB)]}, {"callbacks": [counter]})
    assert counter.calls <= 1


def test_prompt_guard_middleware_refuses_a_user_turn_it_would_not_read(prompt_guard, lg4):
    """A ``ChatMessage(role="user")`` is sent by providers as the user's turn, but the middlewares and graph nodes
    looked only for ``HumanMessage`` s: a jailbreak sent that way reached the model unscanned (Llama Guard's
    middleware refused it only when judging the answer, after the model had read it; with
    ``apply_to_output=False``, never). It is refused before the model is called."""
    from langchain_core.messages import ChatMessage, ChatMessageChunk

    from langchain_llamaguard.errors import GuardTypeError

    for middleware in (
        PromptGuardMiddleware(prompt_guard),
        LlamaGuardMiddleware(lg4),
        LlamaGuardMiddleware(lg4, apply_to_output=False),
    ):
        counter = CountModelCalls()
        agent = create_agent(GenericFakeChatModel(messages=iter([AIMessage("ok")])), [], middleware=[middleware])
        with pytest.raises(GuardTypeError, match="ChatMessage"):
            sent = ChatMessage(role="user", content=INJECTION)
            agent.invoke({"messages": [HumanMessage("hi"), AIMessage("Hello."), sent]}, {"callbacks": [counter]})
        assert counter.calls == 0
    for node in (lg4.as_node(), prompt_guard.as_node()):  # a state without add_messages keeps a chunk as it is
        for sent in (ChatMessage(role="user", content=INJECTION, id="1"), ChatMessageChunk(role="user", content=BOMB)):
            with pytest.raises(GuardTypeError, match="ChatMessage"):
                node.invoke({"messages": [sent]})


def test_prompt_guard_middleware_names_the_users_turn_in_its_errors(prompt_guard):
    """A text file in the user's turn that is not text was reported as a "tool result"."""
    from langchain_llamaguard.errors import GuardInputError

    broken = {"type": "file", "base64": "//79", "mime_type": "text/plain"}  # not UTF-8
    agent = create_agent(GenericFakeChatModel(messages=iter([AIMessage("ok")])), [], middleware=[
        PromptGuardMiddleware(prompt_guard)])  # fmt: skip
    with pytest.raises(GuardInputError, match=r"^the user's turn: a file block of text/plain whose base64 is not text"):
        agent.invoke({"messages": [HumanMessage([{"type": "text", "text": "Summarize this."}, broken])]})


def test_a_command_that_rewrites_a_message_beside_its_content_is_judged():
    """A tool's ``Command`` that reuses a held message's id with the same content but a new legacy
    ``function_call`` or reasoning replaces what the model reads: it is new, and judged."""
    from langchain_llamaguard.middleware.tool_output import new_messages

    held = AIMessage("ok", id="a1")
    for extra in ({"function_call": {"name": "shell", "arguments": '{"cmd": "rm -rf /"}'}}, {"reasoning_content": "x"}):
        rewritten = AIMessage("ok", id="a1", additional_kwargs=extra)
        assert new_messages(Command(update={"messages": [rewritten]}), [held]) == [rewritten]
    assert new_messages(Command(update={"messages": [AIMessage("ok", id="a1")]}), [held]) == []  # the history
