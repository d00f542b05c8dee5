"""Guard nodes (``guard.as_node``) in real ``StateGraph``s with real checkpointers, sync and async, all stream modes.

A flagged model answer is replaced by id (gone from the checkpointed state), a flagged user turn gets a refusal
after it, routing goes through ``Command(goto=...)``, and the verdicts in state are plain JSON that a checkpointer
loads back with no "unregistered type" warning. Every learned verdict is a check-set case of the tiny guards
(``langchain_llamaguard.tiny.data``); the verdicts a node writes are compared with the guard's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
import warnings
from typing import Annotated, Any

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, INJECTION, UNSAFE_ANSWER, answering_chat_model
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, Send

from langchain_llamaguard import (
    GuardConfigurationError,
    GuardInputError,
    GuardKeyError,
    GuardNode,
    GuardTypeError,
    UnsafeContentError,
    Verdict,
)
from langchain_llamaguard.replacements import DEFAULT_REFUSAL, describe, replacement
from langchain_llamaguard.tiny.data import ASK_CODE, SOURDOUGH, SUM_CODE, WEATHER

REFUSAL_S9 = DEFAULT_REFUSAL.format(categories="S9 Indiscriminate Weapons")
NOTICE_S9 = "[message removed by Llama Guard: S9 Indiscriminate Weapons]"  # the agent middleware's words
ANSWERS = {SOURDOUGH: UNSAFE_ANSWER, BENIGN: BENIGN_ANSWER}  # SOURDOUGH is harmless; its answer is not


class State(MessagesState):
    guard_verdicts: Annotated[list[dict], operator.add]


@contextlib.contextmanager
def serde_complaints():
    """Everything langgraph's serializer says about types it does not know: its events, logs and warnings."""
    found: list[str] = []
    unregister = None
    try:
        from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
    except ImportError:  # older langgraph-checkpoint: its log lines still tell
        pass
    else:
        unregister = register_serde_event_listener(lambda e: found.append(f"{e['kind']}: {e['module']}.{e['name']}"))

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    handler, logger = Handler(logging.WARNING), logging.getLogger("langgraph")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
        found.extend(str(w.message) for w in caught if "checkpoint" in str(w.message) or "serial" in str(w.message))
    finally:
        logger.removeHandler(handler)
        if unregister is not None:
            unregister()


def build(guard: Any, *, output_node: GuardNode | None = None, review: bool = False):
    """check_in (routes: END when flagged, else the model) -> model -> check_out; ``calls`` records the nodes run."""
    llm = answering_chat_model(ANSWERS)
    calls: list[str] = []

    def model(state: State) -> dict:
        calls.append("model")
        return {"messages": [llm.invoke(state["messages"])]}

    builder = StateGraph(State)
    check_in = guard.as_node(check="input", goto=END, goto_safe="model", verdict_key="guard_verdicts")
    check_out = output_node or guard.as_node(check="output", verdict_key="guard_verdicts")
    builder.add_node("check_in", check_in, destinations=check_in.destinations)
    builder.add_node("model", model)
    builder.add_node("check_out", check_out, destinations=check_out.destinations)
    builder.add_edge(START, "check_in")
    builder.add_edge("model", "check_out")
    if review:
        builder.add_node("review", lambda state: calls.append("review") or {})
        builder.add_edge("review", END)
    else:
        builder.add_edge("check_out", END)
    return builder, calls


def thread(name: str) -> dict:
    return {"configurable": {"thread_id": name}}


def kinds(messages: list) -> list[tuple[str, str]]:
    return [(type(m).__name__, m.text) for m in messages]


def assert_json_verdicts(records: list[dict], guard: Any, conversations: list[list]) -> None:
    """Plain dicts that survive JSON, with the guard's own verdicts on the same conversations."""
    assert all(type(r) is dict for r in records)
    assert json.loads(json.dumps(records)) == records
    direct = [guard.check(c) for c in conversations]
    assert [(r["safe"], r["categories"], r["role"]) for r in records] == [
        (v.safe, v.categories, v.role) for v in direct
    ]
    assert [r["score"] for r in records] == pytest.approx([v.score for v in direct], abs=1e-3)


# -- a checkpointed graph, sync (SqliteSaver) and async (AsyncSqliteSaver) ----------------------------------------
@pytest.mark.parametrize("run", ["sync", "async"])
async def test_flagged_answer_is_replaced_by_id_in_the_checkpoint(lg4, tmp_path, run):
    builder, calls = build(lg4)
    path = str(tmp_path / "checkpoints.sqlite")
    answer = {"messages": [HumanMessage(SOURDOUGH)]}
    with serde_complaints() as complaints:
        if run == "sync":
            with SqliteSaver.from_conn_string(path) as saver:
                graph = builder.compile(checkpointer=saver)
                updates = list(graph.stream(answer, thread("flagged"), stream_mode="updates"))
                graph.invoke({"messages": [HumanMessage(BENIGN)]}, thread("safe"))
                flagged, safe = graph.get_state(thread("flagged")), graph.get_state(thread("safe"))
                history = [s.values for s in graph.get_state_history(thread("flagged"))]
        else:
            async with AsyncSqliteSaver.from_conn_string(path) as saver:
                graph = builder.compile(checkpointer=saver)
                updates = [u async for u in graph.astream(answer, thread("flagged"), stream_mode="updates")]
                await graph.ainvoke({"messages": [HumanMessage(BENIGN)]}, thread("safe"))
                flagged, safe = await graph.aget_state(thread("flagged")), await graph.aget_state(thread("safe"))
                history = [s.values async for s in graph.aget_state_history(thread("flagged"))]
    assert complaints == []

    original = updates[1]["model"]["messages"][0]
    assert original.text == UNSAFE_ANSWER
    messages = flagged.values["messages"]
    assert kinds(messages) == [("HumanMessage", SOURDOUGH), ("AIMessage", REFUSAL_S9)]
    assert messages[1].id == original.id  # replaced in place: the flagged answer is gone
    assert not any(UNSAFE_ANSWER in m.text for m in messages)
    assert any(UNSAFE_ANSWER in m.text for v in history for m in v.get("messages", []))  # earlier steps' checkpoints
    assert_json_verdicts(
        flagged.values["guard_verdicts"], lg4, [[HumanMessage(SOURDOUGH)], [HumanMessage(SOURDOUGH), original]]
    )
    assert [r["message_id"] for r in flagged.values["guard_verdicts"]] == [messages[0].id, original.id]
    assert kinds(safe.values["messages"]) == [("HumanMessage", BENIGN), ("AIMessage", BENIGN_ANSWER)]
    assert [r["safe"] for r in safe.values["guard_verdicts"]] == [True, True]
    assert calls == ["model", "model"]


def test_durability_exit_keeps_flagged_text_out_of_every_checkpoint(lg4, tmp_path):
    builder, _ = build(lg4)
    with SqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"messages": [HumanMessage(SOURDOUGH)]}, thread("t"), durability="exit")
        history = [s.values for s in graph.get_state_history(thread("t"))]
    assert history and not any(UNSAFE_ANSWER in m.text for v in history for m in v.get("messages", []))


def test_a_verdict_object_in_state_is_what_the_serializer_complains_about(tmp_path):
    """The control of the check above: storing a ``Verdict`` itself is reported (so no report means none was)."""

    class Raw(MessagesState):
        verdict: Any

    verdict = Verdict(safe=True, score=0.01, role="User", model="llama-guard-4", raw="safe")
    builder = StateGraph(Raw)
    builder.add_node("judge", lambda state: {"verdict": verdict})
    builder.add_edge(START, "judge")
    builder.add_edge("judge", END)
    with serde_complaints() as complaints, SqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"messages": [HumanMessage(BENIGN)]}, thread("t"))
        graph.get_state(thread("t"))
    assert any("Verdict" in c for c in complaints), complaints


# -- stream modes and routing ----------------------------------------------------------------------------------
async def _stream(graph: Any, value: dict, config: dict, mode: str, run: str) -> list:
    if run == "sync":
        return list(graph.stream(value, config, stream_mode=mode))
    return [c async for c in graph.astream(value, config, stream_mode=mode)]


@pytest.mark.parametrize(
    ("mode", "run"), [("values", "sync"), ("updates", "async"), ("messages", "sync"), ("messages", "async")]
)
async def test_stream_modes(lg4, mode, run):
    builder, calls = build(lg4)
    graph = builder.compile(checkpointer=InMemorySaver())
    bomb = await _stream(graph, {"messages": [HumanMessage(BOMB)]}, thread("bomb"), mode, run)
    answer = await _stream(graph, {"messages": [HumanMessage(SOURDOUGH)]}, thread("answer"), mode, run)

    assert calls == ["model"]  # the flagged question never reached the model (goto=END)
    end_bomb, end_answer = graph.get_state(thread("bomb")).values, graph.get_state(thread("answer")).values
    assert kinds(end_bomb["messages"]) == [("HumanMessage", NOTICE_S9), ("AIMessage", REFUSAL_S9)]
    assert kinds(end_answer["messages"]) == [("HumanMessage", SOURDOUGH), ("AIMessage", REFUSAL_S9)]
    if mode == "values":
        assert bomb[-1] == end_bomb and answer[-1] == end_answer
        flagged = answer[-2]["messages"][-1]  # the state after the model node
        assert flagged.text == UNSAFE_ANSWER and end_answer["messages"][-1].id == flagged.id
    elif mode == "updates":
        assert [list(u) for u in bomb] == [["check_in"]]
        assert [list(u) for u in answer] == [["check_in"], ["model"], ["check_out"]]
        replaced = answer[2]["check_out"]["messages"]
        assert [m.id for m in replaced] == [answer[1]["model"]["messages"][0].id]
        assert [m.text for m in replaced] == [REFUSAL_S9]
    else:  # messages: the refusal of a flagged question is streamed by the guard node
        assert [(meta["langgraph_node"], m.text) for m, meta in bomb] == [("check_in", REFUSAL_S9)]
        assert {meta["langgraph_node"] for _, meta in answer} == {"model"}  # the model's tokens, as it made them


def test_routes_a_flagged_answer_to_a_named_node(lg4):
    review = lg4.as_node(check="output", goto="review", goto_safe=END)
    builder, calls = build(lg4, output_node=review, review=True)
    graph = builder.compile()
    assert "check_out -.-> review" in graph.get_graph().draw_mermaid()  # destinations= draws the routes

    graph.invoke({"messages": [HumanMessage(BENIGN)]})
    assert calls == ["model"]
    out = graph.invoke({"messages": [HumanMessage(SOURDOUGH)]})
    assert calls == ["model", "model", "review"]
    assert kinds(out["messages"]) == [("HumanMessage", SOURDOUGH), ("AIMessage", REFUSAL_S9)]


# -- the node as a Runnable --------------------------------------------------------------------------------------
FLAGGED_ANSWER = {"messages": [HumanMessage(SOURDOUGH, id="q"), AIMessage(UNSAFE_ANSWER, id="a")]}
FLAGGED_QUESTION = {"messages": [HumanMessage(BOMB, id="q")]}


def _shape(update: Any) -> list[tuple[str, str, str | None]]:
    return [(type(m).__name__, m.text, m.id) for m in update["messages"]]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "abatch", "stream", "astream", "astream_events"])
async def test_lcel_modes(lg4, mode):
    node = lg4.as_node()  # check="last": the answer as the Agent's turn, the question as the User's
    inputs = [FLAGGED_ANSWER, FLAGGED_QUESTION]
    names: set[str] = set()
    if mode in ("invoke", "ainvoke"):
        outs = [node.invoke(i) if mode == "invoke" else await node.ainvoke(i) for i in inputs]
    elif mode in ("batch", "abatch"):
        outs = node.batch(inputs) if mode == "batch" else await node.abatch(inputs)
    elif mode == "stream":
        outs = [list(node.stream(i))[-1] for i in inputs]
    elif mode == "astream":
        outs = [[c async for c in node.astream(i)][-1] for i in inputs]
    else:
        outs = []
        for i in inputs:
            events = [e async for e in node.astream_events(i, version="v2")]
            names |= {e["name"] for e in events if e["event"] == "on_chain_end"}
            outs.append(events[-1]["data"]["output"])
        assert "llama_guard" in names  # each verdict is a run of its own
    assert _shape(outs[0]) == [("AIMessage", REFUSAL_S9, "a")]  # in the answer's place
    notice, (kind, text, new_id) = _shape(outs[1])  # the notice in the question's place, the refusal after it
    assert notice == ("HumanMessage", NOTICE_S9, "q")
    assert (kind, text) == ("AIMessage", REFUSAL_S9) and new_id not in (None, "q")


def test_tool_results_are_judged_after_the_call_and_replaced_by_id(lg4):
    def state(question: str, name: str, args: dict, result: str) -> dict:
        call = AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call_{name}"}], id="call")
        return {
            "messages": [
                HumanMessage(question),
                call,
                ToolMessage(result, tool_call_id=f"call_{name}", name=name, id="result"),
            ]
        }

    node = lg4.as_node(check="tool_results", verdict_key="v")
    unsafe = node.invoke(state(BENIGN, "web_search", {"query": "what is the capital of france"}, UNSAFE_ANSWER))
    [replaced] = unsafe["messages"]
    assert isinstance(replaced, ToolMessage) and replaced.status == "error" and replaced.text == REFUSAL_S9
    assert (replaced.id, replaced.tool_call_id, replaced.name) == ("result", "call_web_search", "web_search")
    assert [(r["stage"], r["message_id"], r["safe"]) for r in unsafe["v"]] == [("tool_result", "result", False)]
    safe = node.invoke(state(ASK_CODE, "python_repl", {"code": SUM_CODE}, "45"))
    assert "messages" not in safe and [r["safe"] for r in safe["v"]] == [True]


def test_on_unsafe_raise_a_callable_and_a_message(lg4):
    with pytest.raises(UnsafeContentError) as err:
        lg4.as_node(on_unsafe="raise").invoke(FLAGGED_ANSWER)
    assert err.value.stage == "output" and err.value.verdict.categories == ["S9"]

    seen: list[Any] = []

    def reroute(payload: dict) -> str:
        seen.append(payload)
        return f"Not that ({describe(payload['verdict'])})."

    out = lg4.as_node(on_unsafe=reroute).invoke(FLAGGED_ANSWER)
    assert _shape(out) == [("AIMessage", "Not that (S9 Indiscriminate Weapons).", "a")]
    assert seen[0]["stage"] == "output" and seen[0]["message"].id == "a" and len(seen[0]["messages"]) == 2
    out = lg4.as_node(on_unsafe=AIMessage("No.")).invoke(FLAGGED_ANSWER)
    assert _shape(out) == [("AIMessage", "No.", "a")]


def test_prompt_guard_node(prompt_guard):
    out = prompt_guard.as_node(check="input").invoke({"messages": [HumanMessage(INJECTION, id="q")]})
    notice, refusal = out["messages"]
    assert notice.id == "q" and notice.text.startswith("[message removed by Prompt Guard: score ")
    assert refusal.text.startswith("I can't continue: Prompt Guard flagged a likely prompt injection (MALICIOUS")
    assert prompt_guard.as_node().invoke({"messages": [HumanMessage(BENIGN)]}) == {}
    with pytest.raises(GuardConfigurationError, match="judges nothing"):
        prompt_guard.as_node(check="output")  # type: ignore[arg-type]


# -- mistakes, told clearly --------------------------------------------------------------------------------------
def test_configuration_errors(lg4):
    with pytest.raises(GuardConfigurationError, match="goto_safe") as err:
        lg4.as_node(goto=END)
    assert isinstance(err.value, ValueError)
    with pytest.raises(GuardConfigurationError, match="'last', 'input', 'output', 'tool_results'"):
        lg4.as_node(check="everything")  # type: ignore[arg-type]
    with pytest.raises(GuardConfigurationError, match="categories"):
        lg4.as_node(on_unsafe="Sorry {user}")
    with pytest.raises(GuardTypeError):
        lg4.as_node(on_unsafe=42)
    with pytest.raises(GuardKeyError, match="'chat'"):
        lg4.as_node(messages_key="chat").invoke({"messages": []})
    assert lg4.as_node(check="input").invoke({"messages": [HumanMessage(BENIGN), AIMessage("hello")]}) == {}
    assert lg4.as_node(check="input", goto="x", goto_safe="y").invoke({"messages": []}) == Command(update={}, goto="y")


def test_a_flagged_message_without_an_id_is_an_error(lg4):
    state = {"messages": [HumanMessage(SOURDOUGH), AIMessage(UNSAFE_ANSWER)]}  # no add_messages: no ids
    with pytest.raises(GuardInputError, match="add_messages"):
        lg4.as_node(check="output").invoke(state)


def test_a_guard_step_used_as_a_node_points_to_as_node(lg4):
    builder = StateGraph(MessagesState)
    builder.add_node("guard", lg4.as_input_guard(on_unsafe="Sorry."))
    builder.add_edge(START, "guard")
    builder.add_edge("guard", END)
    with pytest.raises(GuardConfigurationError, match="as_node"):
        builder.compile().invoke({"messages": [HumanMessage(BOMB)]})


def test_every_model_message_of_a_step_is_judged_and_a_flagged_one_replaced(lg4):
    """A node may add several model messages at once (and parallel branches add one each in one step): each of
    them is judged, and the flagged one is replaced wherever it sits, not only the last message."""
    builder = StateGraph(MessagesState)
    builder.add_node("model", lambda state: {"messages": [AIMessage(UNSAFE_ANSWER), AIMessage(BENIGN_ANSWER)]})
    builder.add_node("check_out", lg4.as_node(check="output", verdict_key=None))
    builder.add_edge(START, "model")
    builder.add_edge("model", "check_out")
    builder.add_edge("check_out", END)
    out = builder.compile().invoke({"messages": [HumanMessage(BENIGN)]})["messages"]
    assert [type(m).__name__ for m in out] == ["HumanMessage", "AIMessage", "AIMessage"]
    assert UNSAFE_ANSWER not in out[1].text and out[1].text.startswith("I can't help with that")
    assert out[2].text == BENIGN_ANSWER  # the safe one stays


def test_a_model_message_judged_by_an_earlier_guard_node_is_not_judged_again(lg4):
    """writer -> check -> editor -> check: with ``verdict_key``, the second node judges the editor's message only."""
    builder = StateGraph(State)
    builder.add_node("writer", lambda state: {"messages": [AIMessage(BENIGN_ANSWER)]})
    builder.add_node("check_1", lg4.as_node(check="output", verdict_key="guard_verdicts"))
    builder.add_node("editor", lambda state: {"messages": [AIMessage("Paris, France's capital.")]})
    builder.add_node("check_2", lg4.as_node(check="output", verdict_key="guard_verdicts"))
    for a, b in [
        (START, "writer"),
        ("writer", "check_1"),
        ("check_1", "editor"),
        ("editor", "check_2"),
        ("check_2", END),
    ]:
        builder.add_edge(a, b)
    out = builder.compile().invoke({"messages": [HumanMessage(BENIGN)]})
    ids = [r["message_id"] for r in out["guard_verdicts"]]
    assert len(ids) == len(set(ids)) == 2  # one verdict per model message


def test_a_model_message_rewritten_under_the_same_id_is_judged_again(lg4):
    """verdict records carry a fingerprint of the judged content: a draft an editor node rewrote in place (same id,
    new text) is judged by the next guard node, and replaced when flagged."""
    builder = StateGraph(State)
    builder.add_node(
        "drafts",
        lambda state: {"messages": [AIMessage(BENIGN_ANSWER, id="d1"), AIMessage(BENIGN_ANSWER, id="d2")]},
    )
    builder.add_node("check_1", lg4.as_node(check="output", verdict_key="guard_verdicts"))
    builder.add_node("rewrite", lambda state: {"messages": [AIMessage(UNSAFE_ANSWER, id="d1")]})  # d1, in place
    builder.add_node("check_2", lg4.as_node(check="output", verdict_key="guard_verdicts"))
    for a, b in [
        (START, "drafts"),
        ("drafts", "check_1"),
        ("check_1", "rewrite"),
        ("rewrite", "check_2"),
        ("check_2", END),
    ]:
        builder.add_edge(a, b)
    out = builder.compile().invoke({"messages": [HumanMessage(BENIGN, id="q")]})
    assert [(m.id, m.text) for m in out["messages"][1:]] == [("d1", REFUSAL_S9), ("d2", BENIGN_ANSWER)]
    records = [(r["message_id"], r["safe"]) for r in out["guard_verdicts"]]
    assert records == [("d1", True), ("d2", True), ("d1", False), ("d2", True)]
    fingerprints = [r["fingerprint"] for r in out["guard_verdicts"]]
    assert fingerprints[0] != fingerprints[2] and fingerprints[1] == fingerprints[3]


def test_a_prompt_guard_node_refuses_in_the_words_of_the_guard_that_flagged(prompt_guard, lg4):
    """``pg.as_node(llama_guard=guard)``: Llama Guard's refusal when Llama Guard flagged, Prompt Guard's when it did
    (BOMB is Llama Guard's S9 and no injection; INJECTION is Prompt Guard's), a text given is used for both."""
    from langchain_llamaguard.graph import PROMPT_GUARD_REFUSAL

    node = prompt_guard.as_node(llama_guard=lg4, verdict_key="v")
    bomb = node.invoke({"messages": [HumanMessage(BOMB, id="q")]})
    assert [m.text for m in bomb["messages"]] == [NOTICE_S9, REFUSAL_S9] and bomb["v"][0]["categories"] == ["S9"]
    injected = node.invoke({"messages": [HumanMessage(INJECTION, id="q")]})["messages"][1].text
    assert injected.startswith(PROMPT_GUARD_REFUSAL.split("{")[0]) and "MALICIOUS" in injected
    mine = prompt_guard.as_node(llama_guard=lg4, on_unsafe="No ({categories}).")
    [_, refusal] = mine.invoke({"messages": [HumanMessage(BOMB, id="q")]})["messages"]
    assert refusal.text == "No (S9 Indiscriminate Weapons)."


# -- one verdict_key shared by nodes of different policies, a flagged turn in a checkpointed thread, Send ----------
def test_a_node_skips_only_the_model_messages_judged_under_its_own_policy(lg4):
    """Two output nodes share one verdict_key: a strict node judges again what a lenient node (S9 excluded) judged,
    whatever that verdict was; a node of the lenient policy (built again) skips it. The last message is always
    judged, so the draft before it is the one a record could skip."""
    state = {
        "messages": [
            HumanMessage(BENIGN, id="q"),
            AIMessage(UNSAFE_ANSWER, id="a"),  # two drafts of one step (parallel writers)
            AIMessage(BENIGN_ANSWER, id="b"),
        ]
    }
    lenient = lg4.as_node(check="output", excluded_categories=["S9"], verdict_key="v")
    strict = lg4.as_node(check="output", verdict_key="v")
    records = lenient.invoke(state)["v"]
    assert [(r["message_id"], r["policy"]) for r in records] == [("a", lenient.policy), ("b", lenient.policy)]
    assert strict.policy != lenient.policy and json.loads(json.dumps(records)) == records

    out = strict.invoke({**state, "v": records})
    assert _shape(out) == [("AIMessage", REFUSAL_S9, "a")]  # judged, flagged, replaced
    assert [(r["message_id"], r["safe"], r["policy"]) for r in out["v"]] == [
        ("a", False, strict.policy),
        ("b", True, strict.policy),
    ]
    again = lg4.as_node(check="output", excluded_categories=["S9"], verdict_key="v").invoke({**state, "v": records})
    assert [r["message_id"] for r in again["v"]] == ["b"]  # same policy: the recorded draft is not judged again


def _checked_model_graph(guard: Any, handed: list[list[str]]) -> StateGraph:
    """check_in -> model (a model that records the texts it is handed and answers BENIGN_ANSWER), not compiled."""

    def model(state: MessagesState) -> dict:
        handed.append([m.text for m in state["messages"]])
        return {"messages": [AIMessage(BENIGN_ANSWER)]}

    check_in = guard.as_node(check="input", goto=END, goto_safe="model")
    builder = StateGraph(MessagesState)
    builder.add_node("check_in", check_in, destinations=check_in.destinations)
    builder.add_node("model", model)
    builder.add_edge(START, "check_in")
    builder.add_edge("model", END)
    return builder


@pytest.mark.parametrize("guard_name", ["prompt_guard", "lg4"])
def test_a_flagged_user_turn_leaves_the_thread_so_the_next_turn_does_not_hand_it_to_the_model(request, guard_name):
    """check_in -> model, checkpointed: the refused turn is replaced by the guard's notice (same id, the agent
    middleware's words), so the thread's next run hands the model the notice, never the flagged text."""
    guard = request.getfixturevalue(guard_name)
    if guard_name == "lg4":  # the second turn, after the notice, is no check-set conversation: it fails closed
        guard = request.getfixturevalue("lg4_with")(on_error="unsafe")
    flagged = INJECTION if guard_name == "prompt_guard" else BOMB
    handed: list[list[str]] = []
    builder = _checked_model_graph(guard, handed)
    graph = builder.compile(checkpointer=InMemorySaver())

    graph.invoke({"messages": [HumanMessage(flagged, id="turn-1")]}, thread("t"))
    notice, refusal = graph.get_state(thread("t")).values["messages"]
    assert (notice.id, type(notice).__name__) == ("turn-1", "HumanMessage") and refusal.id != "turn-1"
    assert notice.text.startswith(f"[message removed by {'Prompt Guard' if guard_name == 'prompt_guard' else 'Llama'}")
    assert handed == []
    graph.invoke({"messages": [HumanMessage(BENIGN)]}, thread("t"))
    assert not any(flagged in text for turn in handed for text in turn)  # whether turn 2 reached the model or not
    if guard_name == "prompt_guard":  # Prompt Guard reads the newest turn alone: BENIGN passes, the model runs
        assert handed == [[notice.text, refusal.text, BENIGN]]


@pytest.mark.parametrize("guard_name", ["lg4", "prompt_guard"])
@pytest.mark.parametrize("after", ["prefill", "tool result"])
def test_an_input_node_judges_the_user_turn_under_messages_the_caller_sent_after_it(request, guard_name, after):
    """A caller sends the question with an assistant "prefill" (or a tool message) after it: the newest message is
    no user turn, but the model reads the turn all the same, so an input node judges it (it routed to the model
    having judged nothing)."""
    guard = request.getfixturevalue(guard_name)
    flagged = INJECTION if guard_name == "prompt_guard" else BOMB
    handed: list[list[str]] = []
    builder = _checked_model_graph(guard, handed)
    tail = AIMessage("", id="tail") if after == "prefill" else ToolMessage("ok", tool_call_id="c1", id="tail")
    for run in (lambda x: builder.compile().invoke(x), lambda x: asyncio.run(builder.compile().ainvoke(x))):
        handed.clear()
        out = run({"messages": [HumanMessage(flagged, id="turn"), tail]})
        assert handed == [] and flagged not in str(out["messages"])  # judged, replaced, never handed to the model
        assert out["messages"][0].id == "turn" and out["messages"][0].text.startswith("[message removed by")


def test_a_flagged_user_turn_without_an_id_stays_with_the_refusal_after_it(lg4):
    """No id (no add_messages reducer): the turn cannot be replaced, so only the refusal is written, as before."""
    [refusal] = lg4.as_node(check="input").invoke({"messages": [HumanMessage(BOMB)]})["messages"]
    assert (type(refusal).__name__, refusal.text) == ("AIMessage", REFUSAL_S9)


def test_a_flagged_message_of_a_send_payload_says_to_give_it_an_id(lg4):
    """A Send payload skips the state's reducers, so its messages have no id even with add_messages: the error names
    that cause and the fix; with an id given, the refusal goes into the state and the flagged text does not."""

    def build_fan(with_ids: bool) -> Any:
        def fan(state: MessagesState) -> list:
            return [
                Send(
                    "check_out",
                    {"messages": [*state["messages"], AIMessage(text, id=f"draft-{i}" if with_ids else None)]},
                )
                for i, text in enumerate([BENIGN_ANSWER, UNSAFE_ANSWER])
            ]

        builder = StateGraph(MessagesState)
        builder.add_node("check_out", lg4.as_node(check="output"))
        builder.add_conditional_edges(START, fan, ["check_out"])
        builder.add_edge("check_out", END)
        return builder.compile()

    with pytest.raises(GuardInputError, match=r"AIMessage has no id.*Send payload.*Give the message an id"):
        build_fan(with_ids=False).invoke({"messages": [HumanMessage(BENIGN)]})
    out = build_fan(with_ids=True).invoke({"messages": [HumanMessage(BENIGN)]})
    assert kinds(out["messages"]) == [("HumanMessage", BENIGN), ("AIMessage", REFUSAL_S9)]


PARALLEL = [{"name": n, "args": {"query": "france"}, "id": f"c{i}"} for i, n in enumerate(["search_a", "search_b"])]
PARIS_CALL = {"name": "web_search", "args": {"query": "paris"}, "id": "c1"}


@pytest.mark.parametrize("check", ["tool_results", "last"])
def test_a_note_a_tool_adds_beside_its_result_does_not_hide_the_round_results(lg4_with, check):
    """A ToolNode round where one tool returns a Command adding its result and a user-side note: the note was the
    newest message, so a "tool_results" node judged nothing and a "last" node judged only the note, and the other
    tool's flagged result stayed in the state for the model to read. The round's messages are now judged."""

    @tool
    def search_a(query: str) -> str:
        """Search A."""
        return UNSAFE_ANSWER

    @tool
    def search_b(query: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Search B."""
        note = HumanMessage("(note from search_b: results are cached)")
        return Command(update={"messages": [ToolMessage("Sunny.", tool_call_id=tool_call_id, name="search_b"), note]})

    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode([search_a, search_b]))
    guard = lg4_with(on_error="unsafe")  # the note is no check-set text: unreadable, it is withheld, not raised
    builder.add_node("check", guard.as_node(check=check))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", "check")
    builder.add_edge("check", END)
    out = builder.compile().invoke({"messages": [HumanMessage(BENIGN), AIMessage("", tool_calls=PARALLEL)]})
    assert not any(UNSAFE_ANSWER in m.text for m in out["messages"])
    [result_a] = [m for m in out["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "c0"]
    assert (result_a.text, result_a.status) == (REFUSAL_S9, "error")


def test_a_system_note_after_the_model_answer_does_not_hide_it(lg4):
    """A node between the model and the output guard adds a SystemMessage: the answer was no longer the newest
    message, and the output node passed it unjudged. System messages after it are skipped over."""
    builder = StateGraph(MessagesState)
    builder.add_node("model", lambda state: {"messages": [AIMessage(UNSAFE_ANSWER)]})
    builder.add_node("notes", lambda state: {"messages": [SystemMessage("Note: the user is on the free plan.")]})
    builder.add_node("check_out", lg4.as_node(check="output"))
    builder.add_edge(START, "model")
    builder.add_edge("model", "notes")
    builder.add_edge("notes", "check_out")
    builder.add_edge("check_out", END)
    out = builder.compile().invoke({"messages": [HumanMessage(SOURDOUGH)]})
    assert kinds(out["messages"]) == [
        ("HumanMessage", SOURDOUGH),
        ("AIMessage", REFUSAL_S9),
        ("SystemMessage", "Note: the user is on the free plan."),
    ]


@pytest.mark.parametrize(
    "note",
    [
        HumanMessage("(sent from the mobile app)", id="note"),
        ToolMessage("18 degrees", tool_call_id="lookup-1", name="lookup", id="note"),
    ],
    ids=["user note", "tool result"],
)
def test_a_user_note_a_parallel_branch_adds_after_the_answer_does_not_hide_it_from_an_output_node(lg4, note):
    """The model and a branch that adds a HumanMessage (or a ToolMessage) run in one step: the note lands after
    the answer, and a ``check="output"`` node judged nothing, so the flagged answer stayed. An output node looks
    past user messages and tool results after the model's words (a ``"last"`` node still judges such a note as
    what it is)."""
    builder = StateGraph(MessagesState)
    builder.add_node("model", lambda state: {"messages": [AIMessage(UNSAFE_ANSWER, id="answer")]})
    builder.add_node("note", lambda state: {"messages": [note]})
    builder.add_node("check_out", lg4.as_node(check="output"))
    builder.add_edge(START, "model")
    builder.add_edge(START, "note")
    builder.add_edge(["model", "note"], "check_out")
    builder.add_edge("check_out", END)
    out = builder.compile().invoke({"messages": [HumanMessage(SOURDOUGH)]})
    assert ("AIMessage", REFUSAL_S9) in kinds(out["messages"]) and UNSAFE_ANSWER not in str(out["messages"])
    assert [m.id for m in out["messages"][1:]] == ["answer", "note"]  # replaced in place, the note kept


def test_a_refusal_message_with_an_id_never_overwrites_an_earlier_one(prompt_guard):
    """``on_unsafe=AIMessage(..., id="refusal")`` after a flagged user turn: the second flagged turn's refusal took
    the same id, so add_messages replaced the first one and the thread lost a message. Each gets an id of its own.
    (Prompt Guard reads each turn alone, so both turns are check-set verdicts.)"""
    builder = StateGraph(MessagesState)
    builder.add_node("check_in", prompt_guard.as_node(check="input", on_unsafe=AIMessage("Sorry.", id="refusal")))
    builder.add_edge(START, "check_in")
    builder.add_edge("check_in", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    for _ in range(2):
        graph.invoke({"messages": [HumanMessage(INJECTION)]}, thread("t"))
    messages = graph.get_state(thread("t")).values["messages"]
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage"] * 2
    assert [m.text for m in messages[1::2]] == ["Sorry.", "Sorry."]
    assert all(m.text.startswith("[message removed by Prompt Guard") for m in messages[::2])
    assert len({m.id for m in messages}) == 4


def test_a_tool_message_refusal_answers_the_flagged_results_call(lg4):
    """``on_unsafe=ToolMessage(...)`` kept its own tool_call_id and a success status, so the model's call was left
    without a result (providers refuse such a history). It now answers the flagged result's call, as an error."""
    flagged = ToolMessage(UNSAFE_ANSWER, tool_call_id="c1", id="result-1")
    node = lg4.as_node(check="tool_results", on_unsafe=ToolMessage("Result withheld.", tool_call_id="withheld"))
    [placed] = node.invoke({"messages": [HumanMessage(BENIGN), AIMessage("", tool_calls=[PARIS_CALL]), flagged]})[
        "messages"
    ]
    assert (placed.text, placed.id, placed.tool_call_id) == ("Result withheld.", "result-1", "c1")
    assert placed.status == "error"


def test_tuples_in_a_send_payload_are_named_with_the_cause(lg4):
    """A Send payload skips the reducers that turn ("user", text) into messages: the error said "got list"."""
    builder = StateGraph(MessagesState)
    builder.add_node("check_in", lg4.as_node(check="input"))
    builder.add_conditional_edges(
        START, lambda state: [Send("check_in", {"messages": [("user", BENIGN)]})], ["check_in"]
    )
    builder.add_edge("check_in", END)
    with pytest.raises(GuardTypeError, match=r"state\['messages'\]\[0\] is a tuple, not a message.*Send"):
        builder.compile().invoke({"messages": [HumanMessage(BENIGN)]})


def test_a_run_stopped_before_the_guard_node_is_guarded_by_resuming_it(lg4):
    """The README's advice for a run stopped between the model node and the guard node (a client that went away):
    the thread holds the unjudged answer, and resuming the pending run (``invoke(None, config)``) replaces it."""
    builder = StateGraph(MessagesState)
    builder.add_node("model", lambda state: {"messages": [AIMessage(UNSAFE_ANSWER)]})
    builder.add_node("check_out", lg4.as_node(check="output"))
    builder.add_edge(START, "model")
    builder.add_edge("model", "check_out")
    builder.add_edge("check_out", END)
    graph = builder.compile(checkpointer=InMemorySaver(), interrupt_before=["check_out"])  # stops where a cancel can
    graph.invoke({"messages": [HumanMessage(SOURDOUGH)]}, thread("t"))
    stopped = graph.get_state(thread("t"))
    assert stopped.next == ("check_out",) and stopped.values["messages"][-1].text == UNSAFE_ANSWER
    graph.invoke(None, thread("t"))
    assert kinds(graph.get_state(thread("t")).values["messages"]) == [
        ("HumanMessage", SOURDOUGH),
        ("AIMessage", REFUSAL_S9),
    ]


def test_a_user_turn_after_a_round_a_guard_already_judged_is_a_new_turn(lg4):
    """After a guard replaced a flagged tool result and the run ended, the next user turn was read as a note of that
    round and judged as a tool result: replaced by the refusal text, with no notice and no refusal after it."""
    refused = replacement(ToolMessage(UNSAFE_ANSWER, tool_call_id="c1", id="t1"), REFUSAL_S9)
    state = {"messages": [HumanMessage(BENIGN), AIMessage("", tool_calls=[PARIS_CALL]), refused]}
    update = lg4.as_node(verdict_key="v").invoke({"messages": [*state["messages"], HumanMessage(BOMB, id="h2")]})
    [record] = update["v"]  # judged once, as the user's turn, whatever the tiny guard makes of it in this context
    assert (record["stage"], record["message_id"]) == ("input", "h2")
    if not record["safe"]:  # a user turn's notice and a refusal after it, not the refusal text in its place
        from langchain_llamaguard.taxonomy import category_names

        codes = record["categories"]  # S9 here, unless the tiny guard reads this context otherwise
        named = ", ".join(f"{c} {n}" for c, n in zip(codes, category_names(codes), strict=True))
        refusal = DEFAULT_REFUSAL.format(categories=named)
        assert kinds(update["messages"]) == [("HumanMessage", f"[message removed by Llama Guard: {named}]"),
                                             ("AIMessage", refusal)]  # fmt: skip


def test_a_flagged_note_keeps_its_type_under_a_tool_message_refusal(prompt_guard):
    """``on_unsafe=ToolMessage(...)`` put a ToolMessage answering no call in a flagged note's place (providers refuse
    such a history); the note keeps its type, with the refusal's text."""
    node = prompt_guard.as_node(check="tool_results", on_unsafe=ToolMessage("Result withheld.", tool_call_id="unused"))
    round_ = [ToolMessage(WEATHER, tool_call_id="c1", id="t1"), HumanMessage(INJECTION, id="n1")]
    update = node.invoke({"messages": [HumanMessage(BENIGN), AIMessage("", tool_calls=[PARIS_CALL]), *round_]})
    [note] = [m for m in update["messages"] if m.id == "n1"]
    assert (type(note).__name__, note.text) == ("HumanMessage", "Result withheld.")
    assert all(m.tool_call_id == "c1" for m in update["messages"] if isinstance(m, ToolMessage))
