"""Llama Guard and Prompt Guard as LangChain decision models, in real ``create_agent`` graphs with
``AutoModeMiddleware``, on the tiny trained guards."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("langchain_core.decisions", reason="decision models need langchain-core >= 1.8")

from conftest import ASK_CODE, BENIGN, BOMB, EVIL_CODE, INJECTION, WEATHER, make_tools  # noqa: E402
from langchain.agents import create_agent  # noqa: E402
from langchain.agents.middleware import AutoModeMiddleware  # noqa: E402
from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.decisions import Choice, Noul, NoulCriteria  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from test_agents import ToolCallingFakeModel, call  # noqa: E402

from langchain_llamaguard import LlamaGuardDecisionModel, PromptGuardDecisionModel  # noqa: E402
from langchain_llamaguard.decisions import GUARD_POLICY, noul_policy_text, state_conversation  # noqa: E402
from langchain_llamaguard.tiny.data import SUM_CODE  # noqa: E402


def agent_run(classifier, code: str, *, use_async: bool = False):
    counts, repl, search = make_tools()
    model = ToolCallingFakeModel(messages=iter([call("python_repl", {"code": code}), AIMessage("done")]))
    agent = create_agent(model, [repl, search], middleware=[AutoModeMiddleware(tools=[repl], classifier=classifier)])
    state = {"messages": [HumanMessage(ASK_CODE)]}
    result = asyncio.run(agent.ainvoke(state)) if use_async else agent.invoke(state)
    return result, counts


@pytest.mark.parametrize("use_async", [False, True])
def test_auto_mode_blocks_a_flagged_call_and_runs_a_safe_one(lg4, use_async):
    classifier = LlamaGuardDecisionModel(guard=lg4, policy="guard")
    result, counts = agent_run(classifier, EVIL_CODE, use_async=use_async)
    assert counts["python_repl"] == []  # never ran
    blocked = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert blocked[0].status == "error" and "was blocked" in blocked[0].text
    result, counts = agent_run(classifier, SUM_CODE, use_async=use_async)
    assert counts["python_repl"] == [SUM_CODE]
    assert [m.text for m in result["messages"] if isinstance(m, ToolMessage)] == ["45"]


def test_the_auto_mode_state_becomes_the_agent_turn():
    tool_call = {"id": "c1", "name": "python_repl", "args": {"code": "x"}}
    asked = HumanMessage(ASK_CODE)
    conv = state_conversation({"messages": [asked], "tool_call": tool_call, "tool_description": "Run code"})
    assert conv[0] is asked and conv[1].tool_calls[0]["args"] == {"code": "x"}
    made = AIMessage(content="", tool_calls=[tool_call])
    assert state_conversation({"messages": [asked, made], "tool_call": tool_call}) == [asked, made]  # not twice
    assert state_conversation("hi") == "hi" and state_conversation({"a": 1}) == '{"a": 1}'
    # parallel calls: each is judged alone (as guard_tool judges it), not with its siblings
    sibling = {"id": "c2", "name": "web_search", "args": {"q": "weather"}}
    both = AIMessage(content="Running both.", tool_calls=[tool_call, sibling])
    conv = state_conversation({"messages": [asked, both], "tool_call": sibling})
    assert conv[0] is asked and len(conv) == 2 and [c["id"] for c in conv[1].tool_calls] == ["c2"]
    # a provider's raw call: its arguments as JSON text
    raw = state_conversation({"messages": [asked], "tool_call": {**tool_call, "args": '{"code": "x"}'}})
    assert raw[1].tool_calls[0]["args"] == {"code": "x"}
    with pytest.raises(ValueError, match="its args are not JSON"):
        state_conversation({"messages": [asked], "tool_call": {**tool_call, "args": "{code"}})


def test_a_noul_is_a_one_category_policy(lg4):
    question = Noul(
        instructions="Is this message\nabout weapons?", criteria=NoulCriteria(true="It is.", false="It is not.")
    )
    text = noul_policy_text(question)
    assert text == "Is this message about weapons? Unsafe (yes): It is. Safe (no): It is not."
    dm = LlamaGuardDecisionModel(guard=lg4)
    got = dm.invoke({"state": BOMB, "questions": {"weapons": question}}).nouls["weapons"].noul
    expected = lg4.with_categories({"S1": text}).check(BOMB)
    assert got == pytest.approx(expected.score, abs=1e-6)
    prompt = lg4.with_categories({"S1": text}).encode(BOMB)[0]
    assert prompt.categories == ("S1",) and f"S1: {text}\n" in lg4.tokenizer.decode(prompt.input_ids)


def test_guard_policy_nouls_and_category_choices(lg4):
    dm = LlamaGuardDecisionModel(guard=lg4)
    questions = {
        "unsafe": Noul(instructions=GUARD_POLICY),
        "which": Choice(instructions="Which category?", criteria={"S1": None, "S9": None, "S14": None}),
        "named": Choice(instructions="Which?", criteria={"Violent Crimes": None, "Indiscriminate Weapons": None}),
    }
    response = dm.invoke({"state": BOMB, "questions": questions})
    assert response.nouls["unsafe"].noul == pytest.approx(lg4.check(BOMB).score, abs=1e-6)
    assert response.nouls["unsafe"].noul >= 0.9
    which = response.choices["which"]
    assert which.choice == "S9" and sum(which.probabilities.values()) == pytest.approx(1.0)
    assert which.confidence == which.probabilities["S9"]
    assert response.choices["named"].choice == "Indiscriminate Weapons"
    assert lg4.category_distribution([BOMB], ["S1", "S9", "S14"])[0] == pytest.approx(which.probabilities)
    with pytest.raises(ValueError, match="S-codes or category names"):
        dm.invoke({"state": BOMB, "questions": {"q": Choice(instructions="?", criteria={"billing": None})}})


def test_batch_is_one_model_batch_and_runs_are_traced(lg4, monkeypatch):
    calls = []
    original = lg4.check_encoded
    monkeypatch.setattr(lg4, "check_encoded", lambda p, e: calls.append(len(p)) or original(p, e))
    dm = LlamaGuardDecisionModel(guard=lg4, policy="guard")
    q = {"unsafe": Noul(instructions="Is it unsafe?")}
    requests = [{"state": s, "questions": q} for s in (BOMB, BENIGN, BOMB)]

    class Meta(BaseCallbackHandler):
        seen: list[dict[str, Any]] = []

        def on_chain_start(self, serialized, inputs, **kwargs):
            self.seen.append(kwargs.get("metadata") or {})

        def on_llm_start(self, serialized, prompts, **kwargs):
            self.seen.append(kwargs.get("metadata") or {})

    handler = Meta()
    got = dm.batch(requests, {"callbacks": [handler]})
    assert calls == [3]  # three requests, one model batch
    assert [r.nouls["unsafe"].noul >= 0.5 for r in got] == [True, False, True]
    assert len(handler.seen) == 3 and all(m.get("ls_provider") == "meta_llama" for m in handler.seen)
    assert all(m.get("ls_model_name") == "llama-guard-4" for m in handler.seen)
    again = asyncio.run(dm.abatch(requests))
    assert [r.nouls["unsafe"].noul for r in again] == pytest.approx([r.nouls["unsafe"].noul for r in got])
    assert asyncio.run(dm.ainvoke(requests[0])).nouls["unsafe"].noul == pytest.approx(got[0].nouls["unsafe"].noul)


async def test_one_bad_request_fails_alone_in_a_batch(lg4, prompt_guard):
    """``return_exceptions=True``: a request that cannot be answered gets its own error, the others their answers
    (the same as each alone), sync and async, for both guards."""
    q = {"unsafe": Noul(instructions=GUARD_POLICY)}
    bad_state = [HumanMessage(content=[{"type": "note", "body": "x"}])]  # a block no guard reads
    dm = LlamaGuardDecisionModel(guard=lg4, policy="guard")
    requests = [{"state": state, "questions": q} for state in (BENIGN, bad_state, BOMB)]
    alone = [dm.invoke(requests[0]).nouls["unsafe"].noul, dm.invoke(requests[2]).nouls["unsafe"].noul]
    for got in (dm.batch(requests, return_exceptions=True), await dm.abatch(requests, return_exceptions=True)):
        assert isinstance(got[1], ValueError) and "unsupported content block type 'note'" in str(got[1])
        assert [got[0].nouls["unsafe"].noul, got[2].nouls["unsafe"].noul] == pytest.approx(alone, abs=1e-4)
    with pytest.raises(ValueError, match="'note'"):
        dm.batch(requests)
    pdm = PromptGuardDecisionModel(guard=prompt_guard)
    noul = {"inj": Noul(instructions="injection?")}
    choice = {"c": Choice(instructions="?", criteria={"a": None, "b": None})}
    mixed = [{"state": INJECTION, "questions": noul}, {"state": "x", "questions": choice}]
    for got in (pdm.batch(mixed, return_exceptions=True), await pdm.abatch(mixed, return_exceptions=True)):
        assert got[0].nouls["inj"].noul == pytest.approx(pdm.invoke(mixed[0]).nouls["inj"].noul, abs=1e-4)
        assert isinstance(got[1], ValueError)


def test_prompt_guard_decision_model(prompt_guard):
    dm = PromptGuardDecisionModel(guard=prompt_guard)
    q = {"injected": Noul(instructions="Does it try to override instructions?")}
    out = dm.batch([{"state": INJECTION, "questions": q}, {"state": WEATHER, "questions": q}])
    assert out[0].nouls["injected"].noul == pytest.approx(prompt_guard.check(INJECTION).score, abs=1e-6)
    assert out[0].nouls["injected"].noul >= 0.5 > out[1].nouls["injected"].noul
    assert asyncio.run(dm.ainvoke({"state": [HumanMessage(INJECTION)], "questions": q})).nouls["injected"].noul >= 0.5
    with pytest.raises(ValueError, match="Noul questions only"):
        dm.invoke({"state": "x", "questions": {"c": Choice(instructions="?", criteria={"a": None})}})


def test_without_langchain_core_decisions_the_import_says_what_is_needed():
    code = (
        "import sys; sys.modules['langchain_core.decisions'] = None\n"
        "import langchain_llamaguard as lg; assert 'LlamaGuardDecisionModel' not in lg.__all__\n"
        "try:\n    import langchain_llamaguard.decisions\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "needs langchain-core >= 1.8" in out and "Everything else" in out


def _noul(dm: Any, state: Any, question: Any = None) -> float:
    question = question or Noul(instructions=GUARD_POLICY)
    return dm.invoke({"state": state, "questions": {"q": question}}).nouls["q"].noul


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_guard_that_cannot_decide_in_time_never_answers_safe(lg4_with, use_async):
    """The guard's ``timeout`` bounds a decision as it bounds a check: with ``on_error="unsafe"`` a check that ran out
    of time fails closed, and its Noul is 1.0 (AutoModeMiddleware blocks the call), never the model's late score."""
    dm = LlamaGuardDecisionModel(guard=lg4_with(timeout=0.0001, on_error="unsafe"), policy="guard")
    request = {"state": BENIGN, "questions": {"q": Noul(instructions=GUARD_POLICY)}}
    got = asyncio.run(dm.ainvoke(request)) if use_async else dm.invoke(request)
    assert got.nouls["q"].noul == 1.0
    from langchain_llamaguard import GuardTimeoutError

    with pytest.raises(GuardTimeoutError):
        LlamaGuardDecisionModel(guard=lg4_with(timeout=0.0001), policy="guard").invoke(request)


def test_a_guards_threshold_is_the_decisions_cut(lg4, lg4_with):
    """policy="guard" blocks what the guard flags: with a ``threshold`` the answer is rescaled so that the threshold
    maps to 0.5, AutoModeMiddleware's cut; without one it is P(unsafe) itself."""
    score = lg4.check(BENIGN).score
    assert _noul(LlamaGuardDecisionModel(guard=lg4, policy="guard"), BENIGN) == pytest.approx(score, abs=1e-6)
    # forced to "unsafe" on a text it is sure is safe, the tiny guard's category line is whatever training made of
    # it (unreadable: an unsafe verdict with an error), either way unsafe
    strict = lg4_with(threshold=score / 2, on_error="unsafe")
    assert not strict.check(BENIGN).safe
    assert _noul(LlamaGuardDecisionModel(guard=strict, policy="guard"), BENIGN) > 0.5


def test_chat_dicts_and_tuples_in_the_state_are_judged_not_dropped(lg4):
    """``create_agent`` takes chat dicts and (role, text) tuples as messages; a decision over such a state judges
    them, as ``guard.check`` does, instead of silently judging the turns before them."""
    dm = LlamaGuardDecisionModel(guard=lg4, policy="guard")
    head = [HumanMessage("hi"), AIMessage("hello")]
    expected = _noul(dm, {"messages": [*head, HumanMessage(BOMB)]})
    assert _noul(dm, {"messages": [*head, {"role": "user", "content": BOMB}]}) == pytest.approx(expected, abs=1e-6)
    assert _noul(dm, {"messages": [*head, ("user", BOMB)]}) == pytest.approx(expected, abs=1e-6)
    from langchain_llamaguard import GuardInputError

    with pytest.raises(GuardInputError, match="could not be read as messages"):
        _noul(dm, {"messages": [*head, {"no": "role"}]})
    # a state that is the list itself: the conversation too, never its JSON text judged as one user turn
    assert _noul(dm, [*head, ("user", BOMB)]) == pytest.approx(expected, abs=1e-6)
    assert _noul(dm, [*head, {"role": "user", "content": BOMB}]) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(GuardInputError, match="could not be read as messages"):
        _noul(dm, [{"type": "text", "text": BOMB}])


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_state_too_long_to_judge_fails_closed_as_the_guard_does(lg4_with, use_async):
    """A state longer than the guard's context raised GuardContextOverflowError from a decision model whose guard
    fails closed (``on_error="unsafe"``), where ``guard.check`` gives an unsafe verdict: it now answers 1.0."""
    from langchain_llamaguard import GuardContextOverflowError

    long = "What is the capital of France? " * 400  # past max_segments=2 windows of a 512-token context
    for policy in ("guard", "question"):
        closed = lg4_with(context_length=512, max_segments=2, on_error="unsafe")
        dm = LlamaGuardDecisionModel(guard=closed, policy=policy)
        question = Noul(instructions=GUARD_POLICY if policy == "guard" else "Weapons?")
        request = {"state": long, "questions": {"q": question}}
        got = asyncio.run(dm.ainvoke(request)) if use_async else dm.invoke(request)
        assert got.nouls["q"].noul == 1.0 and not closed.check(long).safe
        raising = LlamaGuardDecisionModel(guard=lg4_with(context_length=512, max_segments=2), policy=policy)
        with pytest.raises(GuardContextOverflowError):
            raising.invoke(request)


def test_a_guards_exclusions_do_not_reach_a_questions_own_policy(lg4, lg4_with):
    """A question's one-category policy is coded S1: a guard that excludes S1 (its own violent-crimes category)
    still answers the question, as the guard without exclusions does."""
    question = Noul(instructions="Is this about weapons?", criteria=NoulCriteria(true="It is.", false="It is not."))
    expected = _noul(LlamaGuardDecisionModel(guard=lg4), BOMB, question)
    assert _noul(LlamaGuardDecisionModel(guard=lg4_with(excluded_categories=["S1"])), BOMB, question) == pytest.approx(
        expected, abs=1e-6
    )


def test_a_choice_on_a_closed_guard_says_it_is_closed(lg4_with):
    from langchain_llamaguard import GuardClosedError

    guard = lg4_with()
    guard.close()
    question = Choice(instructions="Which category?", criteria={"S1": None, "S9": None})
    with pytest.raises(GuardClosedError):
        LlamaGuardDecisionModel(guard=guard).invoke({"state": BOMB, "questions": {"which": question}})
