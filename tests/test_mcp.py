"""Tools from a real MCP server, guarded end to end.

The server (tests/mcp_server.py, the ``mcp`` package's FastMCP) runs once per module in a subprocess, over
streamable HTTP on loopback, and logs every call it receives; the agent gets its tools through
``langchain-mcp-adapters`` (``MultiServerMCPClient(...).get_tools()``: async-only tools with a JSON-schema
``args_schema`` that answer with content blocks and an artifact). The log proves which calls reached the server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ASK_CODE, BENIGN_ANSWER, EVIL_CODE, INJECTION, UNSAFE_ANSWER, WEATHER
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_mcp_adapters.client import MultiServerMCPClient
from test_agents import ToolCallingFakeModel, call

from langchain_llamaguard.middleware import LlamaGuardMiddleware, PromptGuardMiddleware
from langchain_llamaguard.tiny.data import SUM_CODE, WEATHER_QUESTION
from langchain_llamaguard.tools import guard_code_tool, guard_tool

SERVER = Path(__file__).resolve().with_name("mcp_server.py")


class McpServer:
    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log

    def calls(self) -> list[tuple[str, dict]]:
        """Every call the server has received so far, in order."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [(c["tool"], c["args"]) for c in map(json.loads, lines)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory):
    """The server, up and answering on 127.0.0.1; stopped after the module (and, as its stdin closes, with the
    test process however that ends)."""
    tmp = tmp_path_factory.mktemp("mcp")
    port, log, output = _free_port(), tmp / "calls.jsonl", tmp / "server.log"
    with open(output, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(SERVER), "http", str(port)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MCP_CALL_LOG": str(log)},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the MCP server did not start (exit {proc.poll()}):\n{output.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        yield McpServer(f"http://127.0.0.1:{port}/mcp", log)
    finally:
        proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
async def mcp_tools(mcp_server):
    client = MultiServerMCPClient({"tools": {"transport": "streamable_http", "url": mcp_server.url}})
    tools = {t.name: t for t in await client.get_tools()}
    assert set(tools) == {"get_weather", "read_page", "python_repl", "lookup"}
    assert all(t.coroutine and not t.func and isinstance(t.args_schema, dict) for t in tools.values())  # the shape
    return tools


def text(content) -> str:
    """The text of a tool result: a string, or MCP's content blocks."""
    return content if isinstance(content, str) else "".join(b["text"] for b in content if b.get("type") == "text")


def agent_over(tools, script, middleware=()):
    return create_agent(ToolCallingFakeModel(messages=iter(script)), tools, middleware=list(middleware))


# -- guarded tools: the MCP tools as they come ------------------------------------------------------------------------
async def test_guard_tool_and_guard_code_tool_take_mcp_tools_unchanged(lg4, mcp_tools, mcp_server):
    repl = mcp_tools["python_repl"]
    for guarded in (guard_tool(repl, lg4), guard_code_tool(repl, lg4)):
        assert (guarded.name, guarded.description) == (repl.name, repl.description)
        assert guarded.tool_call_schema == repl.tool_call_schema  # the model sees the same tool
        before = mcp_server.calls()
        refusal = await guarded.ainvoke({"code": EVIL_CODE})
        assert refusal.startswith("Refused: Llama Guard flagged this") and "S14" in refusal
        assert mcp_server.calls() == before  # the flagged call never reached the server
        assert text(await guarded.ainvoke({"code": SUM_CODE})) == "45"
        assert mcp_server.calls() == [*before, ("python_repl", {"code": SUM_CODE})]
        # Called as a tool call (how an agent calls it): the same message as the MCP tool's, artifact included.
        tool_call = {"type": "tool_call", "name": repl.name, "args": {"code": SUM_CODE}, "id": "call_1"}
        got, plain = await guarded.ainvoke(tool_call), await repl.ainvoke(tool_call)
        assert (text(got.content), got.artifact) == (text(plain.content), plain.artifact)
        assert got.artifact == {"structured_content": {"result": "45"}}
        refused = await guarded.ainvoke({**tool_call, "args": {"code": EVIL_CODE}})
        assert "S14" in refused.content and refused.artifact is None
    with pytest.raises(ValueError, match=r"no argument 'source'; its arguments: \['code'\]"):
        guard_code_tool(repl, lg4, code_arg="source")


async def test_check_output_reads_mcp_content_blocks(lg4, mcp_tools, mcp_server):
    lookup = guard_tool(mcp_tools["lookup"], lg4, check_output=True)
    flagged = await lookup.ainvoke({"topic": "chemistry"})
    assert UNSAFE_ANSWER not in flagged and "tool output" in flagged and "S9" in flagged
    assert text(await lookup.ainvoke({"topic": "geography"})) == BENIGN_ANSWER
    assert mcp_server.calls()[-2:] == [("lookup", {"topic": "chemistry"}), ("lookup", {"topic": "geography"})]


async def test_guarded_mcp_tool_in_an_agent_sees_the_conversation(lg4, mcp_tools, mcp_server, monkeypatch):
    """langgraph injects the agent state into a guarded MCP tool (JSON-schema args), so the call is judged in
    context, and the flagged call stops at the guard."""
    repl = guard_code_tool(mcp_tools["python_repl"], lg4)
    seen: list = []
    moderator = repl.func.__self__.moderator
    acheck = moderator.acheck

    async def recording_acheck(convs, **kwargs):
        seen.extend(convs)
        return await acheck(convs, **kwargs)

    monkeypatch.setattr(moderator, "acheck", recording_acheck)
    before = mcp_server.calls()
    results = []
    for code in (EVIL_CODE, SUM_CODE):  # one run each: each call is judged after the user's turn alone
        agent = agent_over([repl], [call("python_repl", {"code": code}), AIMessage("The sum is 45.")])
        result = await agent.ainvoke({"messages": [HumanMessage(ASK_CODE)]})
        results += [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert "S14" in results[0].text and EVIL_CODE not in results[0].text
    assert text(results[1].content) == "45" and results[1].artifact == {"structured_content": {"result": "45"}}
    assert mcp_server.calls()[len(before) :] == [("python_repl", {"code": SUM_CODE})]
    assert [[(m.type, m.text) for m in conv[:1]] for conv in seen] == [[("human", ASK_CODE)]] * 2  # in context


async def test_an_argument_the_schema_does_not_list_is_judged_too(lg4, mcp_tools, monkeypatch):
    """An MCP tool's JSON schema is not validated: an argument it does not list still goes to the server, so the
    guard is shown it (guard_tool in the call's arguments, guard_code_tool beside the code)."""
    repl = mcp_tools["python_repl"]
    for guarded in (guard_tool(repl, lg4), guard_code_tool(repl, lg4)):
        moderator = guarded.func.__self__.moderator
        seen: list = []
        acheck = moderator.acheck

        async def recording_acheck(convs, _acheck=acheck, _seen=seen, **kwargs):
            _seen.extend(convs)
            return await _acheck(convs, **kwargs)

        monkeypatch.setattr(moderator, "acheck", recording_acheck)
        await guarded.ainvoke({"code": SUM_CODE, "setup": EVIL_CODE})
        turn = seen[0][-1]
        shown = turn.text + "".join(str(v) for c in turn.tool_calls for v in c["args"].values())
        assert SUM_CODE in shown and EVIL_CODE in shown, shown


# -- middleware over MCP tools -------------------------------------------------------------------------------------
async def test_llama_guard_middleware_keeps_a_flagged_call_from_the_server(lg4, mcp_tools, mcp_server):
    tools = [mcp_tools["python_repl"]]
    mw = LlamaGuardMiddleware(lg4, apply_to_tool_results=True)
    before = mcp_server.calls()
    agent = agent_over(tools, [call("python_repl", {"code": EVIL_CODE}), AIMessage("done")], [mw])
    blocked = await agent.ainvoke({"messages": [HumanMessage(ASK_CODE)]})
    assert blocked["messages"][-1].text.startswith("I can't help with that") and "S14" in blocked["messages"][-1].text
    assert "done" not in [m.text for m in blocked["messages"]]
    assert mcp_server.calls() == before  # never reached the server
    agent = agent_over(tools, [call("python_repl", {"code": SUM_CODE}), AIMessage("The sum is 45.")], [mw])
    allowed = await agent.ainvoke({"messages": [HumanMessage(ASK_CODE)]})
    assert allowed["messages"][-1].text == "The sum is 45."  # the MCP result (content blocks) passed its check
    assert mcp_server.calls() == [*before, ("python_repl", {"code": SUM_CODE})]


async def test_prompt_guard_middleware_withholds_an_injected_mcp_result(prompt_guard, mcp_tools, mcp_server):
    tools = [mcp_tools["get_weather"], mcp_tools["read_page"]]
    both = AIMessage(
        content="",
        tool_calls=[
            {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"},
            {"name": "read_page", "args": {"url": "https://example.com/paris"}, "id": "call_2"},
        ],
    )
    before = mcp_server.calls()
    agent = agent_over(tools, [both, AIMessage("It is sunny.")], [PromptGuardMiddleware(prompt_guard)])
    result = await agent.ainvoke({"messages": [HumanMessage(WEATHER_QUESTION)]})
    weather, page = (m for m in result["messages"] if isinstance(m, ToolMessage))
    assert text(weather.content) == WEATHER  # the clean result is untouched
    assert "prompt injection" in page.text and INJECTION not in page.text
    assert all(INJECTION not in m.text for m in result["messages"])  # the model never read it
    assert result["messages"][-1].text == "It is sunny."
    assert sorted(mcp_server.calls()[len(before) :]) == [  # both reached the server (in parallel)
        ("get_weather", {"city": "Paris"}),
        ("read_page", {"url": "https://example.com/paris"}),
    ]
