"""Copies, pickles and retries of guards, steps, wrapped chains, guarded tools and middleware.

A deep copy shares the loaded model and has its own settings, micro-batcher and caches; a pickle reloads the
model the way it was loaded (``from_pretrained(path)``); a step's ``with_retry`` never re-runs a verdict.
"""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import socket
from typing import Any

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, EVIL_CODE, INJECTION, UNSAFE_ANSWER, WEATHER
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from langchain_llamaguard import (
    GuardBatchError,
    GuardClosedError,
    GuardServerError,
    GuardTimeoutError,
    LlamaGuard,
    LlamaGuardError,
    UnsafeContentError,
    pickling,
)
from langchain_llamaguard.errors import GuardPickleError
from langchain_llamaguard.middleware import LlamaGuardMiddleware, PromptGuardMiddleware
from langchain_llamaguard.retry import GuardRetry, is_transient_error
from langchain_llamaguard.tiny.data import SUM_CODE
from langchain_llamaguard.tools import GuardedTool, guard_code_tool, guard_tool

MODES = ("deepcopy", "pickle")
LG4_CASES = [  # all in the tiny guards' check set
    ("input", BENIGN),
    ("input", BOMB),
    ("output", AIMessage(BENIGN_ANSWER)),
    ("output", AIMessage(UNSAFE_ANSWER)),
]


def _copied(obj: Any, mode: str) -> Any:
    return copy.deepcopy(obj) if mode == "deepcopy" else pickle.loads(pickle.dumps(obj))


def _outcome(runnable: Any, value: Any) -> tuple[Any, ...]:
    """What a step or chain does with ``value``: its output, or the flagged verdict's categories and score."""
    try:
        return ("passed", runnable.invoke(value))
    except UnsafeContentError as exc:
        found = getattr(exc.verdict, "categories", None) or getattr(exc.verdict, "label", None)
        return ("flagged", exc.stage, str(found), exc.verdict.score)


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    assert a[:-1] == b[:-1]
    if a[0] == "flagged":
        assert a[-1] == pytest.approx(b[-1], abs=1e-6)
    else:
        assert getattr(a[-1], "content", a[-1]) == getattr(b[-1], "content", b[-1])


class CodeArgs(BaseModel):
    code: str


class PythonRepl(BaseTool):
    """A code tool that pickles (LangChain's ``@tool`` functions do not: their argument schema is made on the fly)."""

    name: str = "python_repl"
    description: str = "Run Python code in a sandbox and return what it prints."
    args_schema: type[BaseModel] = CodeArgs

    def _run(self, code: str) -> str:
        return "45"


class TopicArgs(BaseModel):
    topic: str


class Lookup(BaseTool):
    name: str = "lookup"
    description: str = "Look a topic up."
    args_schema: type[BaseModel] = TopicArgs

    def _run(self, topic: str) -> str:
        return UNSAFE_ANSWER if topic == "chemistry" else BENIGN_ANSWER


class GuardRuns(BaseCallbackHandler):
    """Counts the guard checks a run makes (each is a named child run, see runnables.checked)."""

    def __init__(self) -> None:
        self.checks = 0

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        if kwargs.get("name") == "llama_guard":
            self.checks += 1


# -- guards -----------------------------------------------------------------------------------------------------
def test_deep_copy_shares_the_model_and_has_its_own_settings_and_batcher(lg4_with):
    guard = lg4_with(threshold=0.4, batch_window_ms=1, categories=None)
    dup = copy.deepcopy(guard)
    assert dup is not guard and dup.backend is guard.backend and dup.backend.model is guard.backend.model
    assert dup.threshold == 0.4 and dup._batcher is not None and dup._batcher is not guard._batcher
    for text in (BENIGN, BOMB):
        a, b = guard.check(text), dup.check(text)
        assert (a.safe, a.categories) == (b.safe, b.categories) and a.score == pytest.approx(b.score, abs=1e-6)
    dup.threshold = 0.99  # its own settings
    assert guard.threshold == 0.4
    dup.close()  # the model stays with the guard it was copied from
    assert not guard.check(BOMB).safe
    guard.close()
    with pytest.raises(GuardClosedError):
        copy.deepcopy(guard)


def test_closing_a_shallow_copy_leaves_the_guard_it_was_copied_from_working(lg4_with):
    """``copy.copy(guard)`` (a per-tenant variant with its own threshold) is one more user of the model, as a deep
    copy is: closing it neither releases the model under the original nor stops the original's micro-batcher."""
    guard = lg4_with(batch_window_ms=1)
    variant = copy.copy(guard)
    variant.threshold = 0.3
    assert variant.backend is guard.backend and variant._batcher is guard._batcher
    assert not variant.check(BOMB).safe
    variant.close()
    assert guard.backend is not None and guard.backend.model is not None
    assert not guard.check(BOMB).safe and guard.check(BENIGN).safe  # through its micro-batcher, still running
    with pytest.raises(GuardClosedError):
        variant.check(BENIGN)
    guard.close()
    with pytest.raises(GuardClosedError):
        copy.copy(guard)


def test_views_and_copies_keep_judging_after_their_micro_batched_guard_closes(lg4_with):
    """A ``with_categories`` view and a shallow copy share their guard's micro-batcher; once the guard is closed,
    they are still open and still hold the model, so they judge on their own (sync and async), as views of a guard
    without batching do, rather than fail every check."""
    guard = lg4_with(batch_window_ms=1, on_error="unsafe")
    view = guard.with_categories({"S1": "Violent Crimes.", "S9": "Indiscriminate Weapons."})
    variant = copy.copy(guard)
    said = lambda v: (v.safe, v.categories, v.error)  # noqa: E731 - a closed batcher's failure is in .error
    before = [[said(other.check(text)) for text in (BOMB, BENIGN)] for other in (view, variant)]
    guard.close()
    for other, (bomb, benign) in zip((view, variant), before, strict=True):
        assert said(other.check(BOMB)) == said(asyncio.run(other.acheck(BOMB))) == bomb
        assert said(other.check(BENIGN)) == benign
    assert said(variant.check(BOMB)) == (False, ["S9"], None)  # the guard's own policy: a check-set verdict


def test_a_view_with_other_categories_copies_its_policy(lg4):
    view = lg4.with_categories({"S1": "Violent Crimes.", "S9": "Indiscriminate Weapons."})
    dup = copy.deepcopy(view)
    assert dup.categories == view.categories and dup.categories is not view.categories
    assert dup.backend.model is lg4.backend.model and dup._view_of is None
    assert dup.check(BOMB).categories == view.check(BOMB).categories == ["S9"]


def test_a_guard_from_model_cannot_be_pickled_but_can_be_copied(lg4_with):
    guard = lg4_with()
    for obj in (guard, guard.as_input_guard(), guard.wrap(RunnableLambda(lambda x: x))):
        with pytest.raises(GuardPickleError, match="from_model cannot be pickled; load it with from_pretrained"):
            pickle.dumps(obj)
    err = GuardPickleError("x")
    assert isinstance(err, LlamaGuardError) and isinstance(err, TypeError)
    assert copy.deepcopy(guard).backend is guard.backend


def test_a_pickled_guard_loads_its_model_again_from_its_path(lg3_1b_path, monkeypatch, tmp_path):
    """Reloaded from the (relative, made absolute) path, once for every step that shares the guard."""
    monkeypatch.setattr(pickling, "_LIVE", {})  # nothing loaded in this process to share
    guard = LlamaGuard.from_pretrained(
        os.path.relpath(lg3_1b_path), on_error="unsafe", max_segments=8, reveal_hidden_text=False
    )
    steps = [guard.as_input_guard(), guard.as_output_guard(), guard.as_input_guard(excluded_categories=["S1"])]
    data = pickle.dumps(steps)
    monkeypatch.setattr(pickling, "_LIVE", {})
    monkeypatch.chdir(tmp_path)  # the pickle names the checkpoint by its absolute path
    restored = pickle.loads(data)
    guards = [s.moderator.guard for s in restored]
    assert guards[0] is guards[1] is guards[2]  # one guard, loaded once
    again = guards[0]
    assert again.backend.model is not guard.backend.model
    assert (again.on_error, again.max_segments, again.reveal_hidden_text) == ("unsafe", 8, False)
    for original, copied in zip(steps, restored, strict=True):
        for text in (BENIGN, BOMB):  # check set, all tiny guards
            _same(_outcome(original, text), _outcome(copied, text))
    assert _outcome(restored[0], BOMB)[:3] == ("flagged", "input", "['S9']")
    # Unpickled again in this process: the model loaded above is shared, not loaded a second time.
    second = pickle.loads(data)[0].moderator.guard
    model = again.backend.model
    assert second.backend.model is model
    again.close()
    second.close()  # closed guards share nothing: the next one loads the model again
    third = pickle.loads(data)[0].moderator.guard
    assert third.backend.model is not model and third.check(BOMB).categories == ["S9"]


def test_a_pickled_prompt_guard_loads_its_model_again(prompt_guard, monkeypatch):
    pg = copy.deepcopy(prompt_guard)  # from_pretrained(path), then a setting of its own
    pg.threshold = 0.6
    data = pickle.dumps(pg.as_input_guard())
    monkeypatch.setattr(pickling, "_LIVE", {})
    step = pickle.loads(data)
    again = step.moderator.guard
    assert again.model is not pg.model and again.threshold == 0.6
    texts = [BENIGN, WEATHER, INJECTION, f"{WEATHER} {INJECTION}"]  # check set
    verdicts = pg.batch_check(texts)
    assert [v.safe for v in verdicts] == [True, True, False, False]
    for a, b in zip(verdicts, again.batch_check(texts), strict=True):
        assert a.safe == b.safe and a.score == pytest.approx(b.score, abs=1e-6)
    assert copy.deepcopy(pg).model is pg.model


# -- steps and chains ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_steps_give_the_same_verdicts_after_a_round_trip(lg4, mode):
    steps = {"input": lg4.as_input_guard(), "output": lg4.as_output_guard()}
    copies = _copied(steps, mode)
    for step in copies.values():
        assert step.moderator.guard.backend.model is lg4.backend.model  # shared, in this process, both ways
        assert step.moderator.guard is not lg4
    assert copies["input"].moderator.guard is copies["output"].moderator.guard  # shared references stay shared
    for stage, value in LG4_CASES:
        _same(_outcome(steps[stage], value), _outcome(copies[stage], value))


@pytest.mark.parametrize("mode", MODES)
def test_a_wrapped_chain_gives_the_same_answers_after_a_round_trip(lg4, mode):
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = lg4.wrap(prompt | FakeListChatModel(responses=[UNSAFE_ANSWER]))
    copied = _copied(chain, mode)
    assert copied.moderator.guard.backend.model is lg4.backend.model
    for question in (BENIGN, BOMB):  # flagged on the way out, and on the way in
        _same(_outcome(chain, {"question": question}), _outcome(copied, {"question": question}))
    assert _outcome(copied, {"question": BENIGN})[1] == "output"


@pytest.mark.parametrize("mode", MODES)
def test_a_prompt_guard_step_with_llama_guard_after_a_round_trip(prompt_guard, lg4, mode):
    step = prompt_guard.as_input_guard(llama_guard=lg4)
    copied = _copied(step, mode)
    pg_copy, lg_copy = (m.guard for m in copied.moderator.moderators)
    assert pg_copy.model is prompt_guard.model and lg_copy.backend.model is lg4.backend.model
    for text in (BENIGN, BOMB, INJECTION, WEATHER):
        _same(_outcome(step, text), _outcome(copied, text))


# -- guarded tools and middleware ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_guarded_tools_after_a_round_trip(lg4, mode):
    repl = guard_code_tool(PythonRepl(), lg4)
    lookup = guard_tool(Lookup(), lg4, check_output=True)
    for tool, calls in ((repl, [{"code": EVIL_CODE}, {"code": SUM_CODE}]), (lookup, [{"topic": "chemistry"}])):
        copied = _copied(tool, mode)
        assert isinstance(copied, GuardedTool) and copied.name == tool.name and copied.metadata == tool.metadata
        assert copied.func.__self__.moderator.guard.backend.model is lg4.backend.model
        assert copied.args_schema.model_json_schema() == tool.args_schema.model_json_schema()
        outputs = [tool.invoke(args) for args in calls]
        assert [copied.invoke(args) for args in calls] == outputs
        assert outputs[0].startswith("Refused") and outputs[1:] in ([], ["45"])


@pytest.mark.parametrize("mode", MODES)
def test_middleware_after_a_round_trip(lg4, prompt_guard, mode):
    lg_mw, pg_mw = LlamaGuardMiddleware(lg4), PromptGuardMiddleware(prompt_guard)
    flagged = {"messages": [HumanMessage(BOMB)]}
    injected = {"messages": [HumanMessage(INJECTION)]}
    assert lg_mw.before_agent(flagged, None)["jump_to"] == "end" and pg_mw.before_agent(injected, None)
    assert lg_mw.moderator.cache._items  # the original has cached a verdict
    lg_copy, pg_copy = _copied([lg_mw, pg_mw], mode)
    assert not lg_copy.moderator.cache._items and lg_copy.moderator.cache.size == lg_mw.moderator.cache.size
    assert lg_copy.moderator.guard.backend.model is lg4.backend.model and pg_copy.guard.model is prompt_guard.model
    assert lg_copy.name == lg_mw.name and all(t.keywords["judge"] is lg_copy for t in lg_copy.transformers)
    for state in (flagged, {"messages": [HumanMessage(BENIGN)]}):
        assert lg_copy.before_agent(state, None) == lg_mw.before_agent(state, None)
    for state in (injected, {"messages": [HumanMessage(BENIGN)]}):
        assert pg_copy.before_agent(state, None) == pg_mw.before_agent(state, None)


# -- retries ------------------------------------------------------------------------------------------------------
async def test_with_retry_never_runs_a_verdict_again(lg4):
    step = lg4.as_input_guard().with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    assert isinstance(step, GuardRetry) and isinstance(_copied(step, "pickle"), GuardRetry)
    runs = GuardRuns()
    with pytest.raises(UnsafeContentError):
        step.invoke(BOMB, {"callbacks": [runs]})
    assert runs.checks == 1
    with pytest.raises(UnsafeContentError):
        await step.ainvoke(BOMB, {"callbacks": [runs]})
    assert runs.checks == 2
    out = step.batch([BOMB, BENIGN], {"callbacks": [runs]}, return_exceptions=True)
    assert isinstance(out[0], UnsafeContentError) and out[1] == BENIGN and runs.checks == 4
    out = await step.abatch([BOMB, BENIGN], {"callbacks": [runs]}, return_exceptions=True)
    assert isinstance(out[0], UnsafeContentError) and out[1] == BENIGN and runs.checks == 6
    wrapped = lg4.wrap(FakeListChatModel(responses=[BENIGN_ANSWER])).with_retry(wait_exponential_jitter=False)
    with pytest.raises(UnsafeContentError):
        wrapped.invoke(BOMB, {"callbacks": [runs]})
    assert runs.checks == 7


def test_a_whole_chain_retries_only_transient_errors_when_told_so(lg4):
    """LangChain's own with_retry (on a chain) retries every exception; the README's retry_if_exception_type
    keeps verdicts out of it."""
    chain = lg4.as_input_guard() | RunnableLambda(lambda x: x)
    runs = GuardRuns()
    with pytest.raises(UnsafeContentError):
        chain.with_retry(wait_exponential_jitter=False).invoke(BOMB, {"callbacks": [runs]})
    assert runs.checks == 3  # the problem: three checks of one unsafe input
    for transient in ((GuardServerError, GuardTimeoutError, ConnectionError), is_transient_error):
        with pytest.raises(UnsafeContentError):
            chain.with_retry(retry_if_exception_type=transient).invoke(BOMB, {"callbacks": [runs]})
    assert runs.checks == 5
    assert not is_transient_error(GuardServerError("bad request", status=400))
    assert is_transient_error(GuardBatchError([None], {0: GuardTimeoutError("slow")}))
    # an answer that is not the protocol (no status) is not an outage; one that never came is, and pickles so
    assert not is_transient_error(GuardServerError("returned malformed logprobs: ..."))
    assert is_transient_error(pickle.loads(pickle.dumps(GuardServerError("cannot reach", unreachable=True))))


def test_a_fail_closed_verdicts_error_names_the_cause():
    """on_error="unsafe" during an outage: the raised UnsafeContentError says the check failed and why, so logs and
    alerts do not blame the user's text."""
    from langchain_llamaguard import Verdict

    failed = Verdict(safe=False, score=1.0, role="User", model="m", raw="", error="GuardServerError: cannot reach x")
    message = str(UnsafeContentError(failed, stage="input"))
    assert "failed closed" in message and "cannot reach x" in message
    assert "failed closed" not in str(UnsafeContentError(failed.model_copy(update={"error": None})))


def test_a_transient_server_error_is_still_retried_and_a_served_guard_pickles(lg3_1b_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = LlamaGuard.from_endpoint(
        f"http://127.0.0.1:{port}/v1", model="lg3-tiny", tokenizer=str(lg3_1b_path), context_length=2048, max_retries=0
    )
    unreachable = (GuardServerError, GuardBatchError)  # one row's server error, alone or in its batch's error
    runs = GuardRuns()
    step = served.as_input_guard().with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    with pytest.raises(unreachable, match="cannot reach") as caught:
        step.invoke(BENIGN, {"callbacks": [runs]})
    assert runs.checks == 3 and is_transient_error(caught.value)
    chain = (served.as_input_guard() | RunnableLambda(lambda x: x)).with_retry(
        retry_if_exception_type=is_transient_error, wait_exponential_jitter=False
    )
    with pytest.raises(unreachable, match="cannot reach"):
        chain.invoke(BENIGN, {"callbacks": [runs]})
    assert runs.checks == 6
    data = pickle.dumps(step)
    monkeypatch.setattr(pickling, "_LIVE", {})  # not sharing the guard above: from_endpoint is called again
    restored = pickle.loads(data)  # nothing is asked of the server until a check
    assert restored.bound.moderator.guard.backend is not served.backend
    with pytest.raises(unreachable, match=f"127.0.0.1:{port}"):
        restored.invoke(BENIGN)
    served.close()
