"""Guarded tools called in the shapes LangChain and LangGraph allow: a plain string for a one-argument tool, and a
``ToolNode`` in a graph whose state is a pydantic model or a dataclass, or keeps its messages under another key.

Real tools, real graphs and the tiny Llama Guard 4. Every learned verdict relied on is in the check set
(``langchain_llamaguard.tiny.data``): a code tool's call is judged as ``code_block(code)``, alone or after the
user's question; that the guard read the conversation is asserted by parity with a direct check of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Annotated, Any, TypedDict

import pytest
from conftest import ASK_CODE, EVIL_CODE
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import StructuredTool, Tool, tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel, Field, field_validator

from langchain_llamaguard.conversation import to_turns
from langchain_llamaguard.tiny.data import SUM_CODE, code_block
from langchain_llamaguard.tools import guard_code_tool, guard_tool

REFUSED_S14 = "Refused: Llama Guard flagged this code before it ran (S14 Code Interpreter Abuse)."


@tool
def python_repl(code: str) -> str:
    """Run Python code."""
    return "45"


@tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


legacy_repl = Tool(name="python_repl", func=lambda code: "45", description="Run Python code.")  # one str: tool_input


class Verdicts(BaseCallbackHandler):
    """The verdicts of the guard checks (each check is a child run whose output is its verdict)."""

    def __init__(self) -> None:
        self.verdicts: list[dict] = []

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        if isinstance(outputs, dict) and "verdict" in outputs:
            self.verdicts.append(outputs["verdict"])


# -- a plain string, as LangChain takes it for a one-argument tool ------------------------------------------------
@pytest.mark.parametrize("run", ["invoke", "ainvoke"])
def test_a_string_input_works_as_on_the_unguarded_tool(lg4, run):
    """``tool.invoke("...")``: the string is the tool's one argument, judged like any call (a flagged one is
    refused), for a ``@tool``, a legacy single-input ``Tool`` and a code tool; sync and async."""

    def call(t: Any, value: str) -> Any:
        return t.invoke(value) if run == "invoke" else asyncio.run(t.ainvoke(value))

    assert call(guard_tool(lookup, lg4), "geography") == call(lookup, "geography") == "notes on geography"
    for repl in (guard_code_tool(python_repl, lg4), guard_code_tool(legacy_repl, lg4, code_arg="tool_input")):
        assert call(repl, SUM_CODE) == "45"
        assert call(repl, EVIL_CODE) == REFUSED_S14  # judged: the string is the code


# -- ToolNode in graphs of every state shape ----------------------------------------------------------------------
class PydanticState(BaseModel):
    messages: Annotated[list[AnyMessage], add_messages] = []


@dataclasses.dataclass
class DataclassState:
    messages: Annotated[list[AnyMessage], add_messages] = dataclasses.field(default_factory=list)


class ChatState(TypedDict):
    chat: Annotated[list[AnyMessage], add_messages]


def tool_graph(state: Any, guarded: Any, code: str, messages_key: str = "messages") -> Any:
    """model (calls python_repl with ``code``) -> ToolNode -> END."""

    def model(_: Any) -> dict:
        return {messages_key: [AIMessage("", tool_calls=[{"name": "python_repl", "args": {"code": code}, "id": "c1"}])]}

    builder = StateGraph(state)
    builder.add_node("model", model)
    builder.add_node("tools", ToolNode([guarded], messages_key=messages_key))
    builder.add_edge(START, "model")
    builder.add_edge("model", "tools")
    builder.add_edge("tools", END)
    return builder.compile()


@pytest.mark.parametrize(
    ("state", "messages_key"),
    [(PydanticState, "messages"), (DataclassState, "messages"), (ChatState, "chat")],
    ids=["pydantic", "dataclass", "messages_key"],
)
def test_a_guarded_tool_in_a_tool_node_judges_the_call_after_the_conversation(lg4, state, messages_key, monkeypatch):
    """The injected state is taken as the graph has it (a pydantic model, a dataclass, a dict), and the conversation
    is read where the ToolNode reads it (``messages_key``): the verdict is that of the call after the question."""
    judged: list = []
    real = lg4.batch_check
    monkeypatch.setattr(lg4, "batch_check", lambda convs, **kw: judged.extend(convs) or real(convs, **kw))
    guarded = guard_code_tool(python_repl, lg4)
    for code, expected in [(SUM_CODE, "45"), (EVIL_CODE, REFUSED_S14)]:
        judged.clear()
        seen = Verdicts()
        out = tool_graph(state, guarded, code, messages_key).invoke(
            {messages_key: [HumanMessage(ASK_CODE)]}, {"callbacks": [seen]}
        )
        result = (out[messages_key] if isinstance(out, dict) else getattr(out, messages_key))[-1]
        assert (result.status, result.text) == ("success", expected)
        [verdict] = seen.verdicts
        [conversation] = judged  # the call, after the question the graph's state holds
        assert [(type(m).__name__, m.text) for m in conversation] == [
            ("HumanMessage", ASK_CODE),
            ("AIMessage", code_block(code)),
        ]
        in_context = real([[HumanMessage(ASK_CODE), AIMessage(code_block(code))]])[0]
        assert verdict["score"] == pytest.approx(in_context.score, abs=1e-5)  # ...and that is the verdict reported


# -- the arguments as the model sent them --------------------------------------------------------------------------
class AuditedCode(BaseModel):
    code: str

    @field_validator("code")
    @classmethod
    def audited(cls, code: str) -> str:  # transforms its value: run twice, it would add the line twice
        return code + "\n# audited"


class Job(BaseModel):
    language: str
    script: str = Field(repr=False)  # kept out of logs, and out of the model's repr


@tool
def run_job(job: Job) -> str:
    """Run a job in the sandbox."""
    return "done"


@pytest.mark.parametrize("run", ["invoke", "ainvoke"])
def test_a_guarded_tool_judges_the_arguments_the_model_sent_and_validates_them_once(lg4, monkeypatch, run):
    """The guard judges the model's own arguments (a pydantic argument's repr would leave out a ``repr=False``
    field), and the inner tool validates them once, as it would unguarded: a validator that transforms its value
    runs once, and the guard's verdict is that of the code the model sent."""
    ran: list[str] = []
    repl = StructuredTool.from_function(
        lambda code: ran.append(code) or "45", name="python_repl", description="Run code.", args_schema=AuditedCode
    )
    guarded = guard_code_tool(repl, lg4)
    out = tool_graph(ChatState, guarded, SUM_CODE, "chat")
    call = (lambda x: out.invoke(x)) if run == "invoke" else (lambda x: asyncio.run(out.ainvoke(x)))
    result = call({"chat": [HumanMessage(ASK_CODE)]})["chat"][-1]
    assert (result.status, result.text) == ("success", "45")  # [ASK_CODE, code_block(SUM_CODE)] is safe
    assert ran == [SUM_CODE + "\n# audited"]  # validated once, as unguarded

    asked: list[str] = []
    real = lg4.batch_check
    monkeypatch.setattr(
        lg4, "batch_check", lambda convs, **kw: asked.extend(to_turns(c)[-1].text for c in convs) or real(convs, **kw)
    )
    for guarded in (guard_tool(run_job, lg4), guard_code_tool(run_job, lg4, code_arg="job")):
        asked.clear()
        guarded.invoke({"job": {"language": "python", "script": EVIL_CODE}})
        assert len(asked) == 1 and json.dumps(EVIL_CODE)[1:-1] in asked[0], asked

    class Aliased(BaseModel):
        code: str = Field(alias="source")

    aliased = StructuredTool.from_function(lambda code: "45", name="python_repl", description=".", args_schema=Aliased)
    asked.clear()
    assert guard_code_tool(aliased, lg4).invoke({"source": SUM_CODE}) == "45"  # sent by its alias
    assert asked == [code_block(SUM_CODE)]  # shown as the code, not as an extra argument
