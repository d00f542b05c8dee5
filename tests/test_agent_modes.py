"""A ``create_agent`` graph guarded by ``LlamaGuardMiddleware``, in every way a caller runs it.

For each mode: a safe run gives exactly the unguarded agent's messages; a flagged answer never survives into the
result; an unsafe input ends the run before the model is called. LangGraph's v3 event streams are held until
judged. The pre-v3 ``stream(stream_mode=...)`` API has no stream transformers: as the README says, its
``messages``, ``values`` and ``updates`` modes show the model's output before ``after_model`` judged it (the
final state is still clean), and the tests below assert exactly that.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import answering_chat_model
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage

from langchain_llamaguard.middleware import LlamaGuardMiddleware
from langchain_llamaguard.tiny.data import BOMB, POEM, POEM_ANSWER, SOURDOUGH, UNSAFE_ANSWER

ANSWERS = {POEM: POEM_ANSWER, SOURDOUGH: UNSAFE_ANSWER, BOMB: "I won't."}
REFUSAL = "I can't help with that"


def agent(lg4: Any, guarded: bool = True) -> Any:
    return create_agent(answering_chat_model(ANSWERS), [], middleware=[LlamaGuardMiddleware(lg4)] if guarded else [])


def texts(state: dict) -> list[tuple[str, str]]:
    return [(type(m).__name__, m.text) for m in state["messages"]]


def request(question: str) -> dict:
    return {"messages": [HumanMessage(question)]}


def _check_final(question: str, final: dict, baseline: dict) -> None:
    if question == POEM:
        assert texts(final) == texts(baseline)  # a safe run is the unguarded run
    elif question == SOURDOUGH:
        assert final["messages"][-1].text.startswith(REFUSAL) and "S9" in final["messages"][-1].text
        assert all("nerve agent" not in m.text for m in final["messages"])
    else:  # an unsafe input: the run ends before the model
        assert [type(m) for m in final["messages"]] == [HumanMessage, AIMessage]
        assert final["messages"][-1].text.startswith(REFUSAL)


QUESTIONS = [POEM, SOURDOUGH, BOMB]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "abatch"])
async def test_invoke_and_batch(lg4, mode):
    guarded, plain = agent(lg4), agent(lg4, guarded=False)
    baseline = [plain.invoke(request(q)) for q in QUESTIONS]
    if mode == "invoke":
        finals = [guarded.invoke(request(q)) for q in QUESTIONS]
    elif mode == "ainvoke":
        finals = [await guarded.ainvoke(request(q)) for q in QUESTIONS]
    elif mode == "batch":
        finals = guarded.batch([request(q) for q in QUESTIONS])
    else:
        finals = await guarded.abatch([request(q) for q in QUESTIONS])
    for q, final, base in zip(QUESTIONS, finals, baseline, strict=True):
        _check_final(q, final, base)


def _seen_text(stream_mode: str, parts: list[Any]) -> str:
    """Everything a pre-v3 stream consumer received, as text."""
    if stream_mode == "messages":
        return "".join(chunk.text for chunk, _meta in parts)
    return repr(parts)


@pytest.mark.parametrize("stream_mode", ["updates", "values", "messages"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["stream", "astream"])
async def test_pre_v3_streams(lg4, stream_mode, asynchronous):
    guarded, plain = agent(lg4), agent(lg4, guarded=False)
    modes = [stream_mode, "values"] if stream_mode != "values" else ["values"]
    for q in QUESTIONS:
        if asynchronous:
            got = [p async for p in guarded.astream(request(q), stream_mode=modes)]
        else:
            got = list(guarded.stream(request(q), stream_mode=modes))
        parts = [data for mode, data in got if mode == stream_mode]
        final = [data for mode, data in got if mode == "values"][-1]  # the stream's own end state
        _check_final(q, final, plain.invoke(request(q)))
        seen = _seen_text(stream_mode, parts)
        if q == SOURDOUGH:  # documented: these modes show the model's output before after_model judged it
            assert "nerve agent" in seen
            if stream_mode != "messages":  # ... and then the state with the refusal in its place
                assert REFUSAL in seen
        if q == BOMB:
            assert "I won't." not in seen  # the model never ran


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_v3_event_streams_are_held_until_judged(lg4, asynchronous):
    guarded, plain = agent(lg4), agent(lg4, guarded=False)
    for q in QUESTIONS:
        if asynchronous:
            run = await guarded.astream_events(request(q), version="v3")
            log = "\n".join([repr(e["params"]["data"]) async for e in run])
            final = await run.output()
        else:
            run = guarded.stream_events(request(q), version="v3")
            log = "\n".join(repr(e["params"]["data"]) for e in run)
            final = run.output
        _check_final(q, final, plain.invoke(request(q)))
        if q == POEM:
            assert "spring rain" in log
        else:
            assert "nerve agent" not in log and "I won't." not in log and REFUSAL in log
