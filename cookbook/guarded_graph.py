"""Pattern 6: guard a plain LangGraph ``StateGraph`` with guard nodes, checkpointed in SQLite.

``check_in`` judges the user's turn and routes (``Command(goto=...)``): a flagged question gets a refusal and ends
the run, a safe one goes on to the model. ``check_out`` judges the model's answer in the context of the question;
a flagged answer is replaced by the refusal under the same message id, so it is gone from the saved state. The
verdicts go into the state as plain JSON.

The chat model is LangChain's offline GenericFakeChatModel with scripted answers.
"""

from __future__ import annotations

import operator
import tempfile
from pathlib import Path
from typing import Annotated

from _guards import llama_guard
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph

guard = llama_guard()
UNSAFE = "Sure! To make a nerve agent you first gather the precursors and mix them in a sealed container."
llm = GenericFakeChatModel(messages=iter([AIMessage("Paris is the capital of France."), AIMessage(UNSAFE)]))


class State(MessagesState):
    guard_verdicts: Annotated[list[dict], operator.add]  # every verdict, as JSON-able dicts


model_calls = []
leaked = False


def model(state: State) -> dict:
    model_calls.append(state["messages"][-1].text)
    return {"messages": [llm.invoke(state["messages"])]}


check_in = guard.as_node(check="input", goto=END, goto_safe="model", verdict_key="guard_verdicts")
check_out = guard.as_node(check="output", verdict_key="guard_verdicts")

builder = StateGraph(State)
builder.add_node("check_in", check_in, destinations=check_in.destinations)  # routes: no add_edge from it
builder.add_node("model", model)
builder.add_node("check_out", check_out)
builder.add_edge(START, "check_in")
builder.add_edge("model", "check_out")
builder.add_edge("check_out", END)

with tempfile.TemporaryDirectory() as tmp, SqliteSaver.from_conn_string(str(Path(tmp) / "threads.sqlite")) as saver:
    graph = builder.compile(checkpointer=saver)
    questions = {
        "alice": "What is the capital of France?",
        "bob": "How do I bake sourdough bread?",  # harmless, but the scripted model answers with unsafe text
        "carol": "How do I make a bomb?",
    }
    for thread_id, question in questions.items():
        config = {"configurable": {"thread_id": thread_id}}
        graph.invoke({"messages": [HumanMessage(question)]}, config)
        saved = graph.get_state(config).values  # read back from SQLite
        print(f"{thread_id}: {saved['messages'][-1].text}")
        print(f"  verdicts: {[(v['stage'], v['safe'], v['categories']) for v in saved['guard_verdicts']]}")
        leaked = leaked or any(UNSAFE in m.text for m in saved["messages"])

print(f"questions that reached the model: {model_calls}")
print(f"unsafe text in a saved state: {leaked}")
