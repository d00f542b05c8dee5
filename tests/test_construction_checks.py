"""Options given wrong the way users give them: each is refused when the step, middleware, tool or guard is built,
with what was wrong and what is accepted, never accepted to fail (or pass content unguarded) at the first
flagged request."""

from __future__ import annotations

import asyncio

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, EVIL_CODE, INJECTION, WEATHER
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from langchain_llamaguard import (
    GuardConfigurationError,
    GuardServerError,
    LlamaGuardError,
    PromptGuard,
    UnsafeContentError,
)
from langchain_llamaguard.decisions import LlamaGuardDecisionModel, PromptGuardDecisionModel
from langchain_llamaguard.graph import GuardNode
from langchain_llamaguard.middleware import LlamaGuardMiddleware, PromptGuardMiddleware
from langchain_llamaguard.replacements import fingerprint
from langchain_llamaguard.tools import guard_code_tool, guard_tool


@tool
def python_repl(code: str) -> str:
    """Run Python code."""
    ran.append(code)
    return "ok"


@tool
def search(query: str) -> str:
    """Search the web."""
    return "Sunny."


ran: list[str] = []


def test_a_prompt_guard_in_a_llama_guards_place_and_back_is_refused(lg3_8b, prompt_guard):
    """A Llama Guard where a Prompt Guard goes judged the hazard categories and passed the injection to the model;
    the other way round failed at the first check with a bare TypeError."""
    with pytest.raises(GuardConfigurationError, match=r"must be a PromptGuard .*got LlamaGuard \(a Llama Guard goes"):
        PromptGuardMiddleware(lg3_8b)
    with pytest.raises(GuardConfigurationError, match="must be a PromptGuard"):
        lg3_8b.wrap(RunnableLambda(lambda x: x), prompt_guard=lg3_8b)
    with pytest.raises(GuardConfigurationError, match=r"must be a LlamaGuard .*got PromptGuard \(a Prompt Guard goes"):
        LlamaGuardMiddleware(prompt_guard)
    with pytest.raises(GuardConfigurationError, match="must be a LlamaGuard"):
        prompt_guard.as_input_guard(llama_guard=prompt_guard)
    for wrong in (None, True, "meta-llama/Llama-Guard-4-12B"):
        with pytest.raises(GuardConfigurationError, match="must be a LlamaGuard"):
            guard_tool(search, wrong)
        if wrong is not None:  # None: no Prompt Guard (the default)
            with pytest.raises(GuardConfigurationError, match="must be a PromptGuard"):
                lg3_8b.wrap(RunnableLambda(lambda x: x), prompt_guard=wrong)
    with pytest.raises(GuardConfigurationError, match="LlamaGuardDecisionModel's guard must be a LlamaGuard"):
        LlamaGuardDecisionModel(guard=prompt_guard)
    with pytest.raises(GuardConfigurationError, match="PromptGuardDecisionModel's guard must be a PromptGuard"):
        PromptGuardDecisionModel(guard=lg3_8b)
    with pytest.raises(GuardConfigurationError, match=r"guard.as_node"):
        GuardNode(lg3_8b)
    with pytest.raises(GuardConfigurationError, match="check must be one of"):
        lg3_8b.as_node(check=["input"])
    assert PromptGuardMiddleware(prompt_guard).guard is prompt_guard  # the right guards still go in


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda lg, pg: LlamaGuardMiddleware(lg, refusal_message='{"error": "blocked"}'), "refusal_message"),
        (lambda lg, pg: LlamaGuardMiddleware(lg, tool_refusal_message="{tool} blocked"), "tool_refusal_message"),
        (lambda lg, pg: LlamaGuardMiddleware(lg, refusal_message=5), "refusal_message"),
        (lambda lg, pg: PromptGuardMiddleware(pg, notice='Withheld: {"reason": "injection"}'), "notice"),
        (lambda lg, pg: PromptGuardMiddleware(pg, notice="Withheld {0}"), "notice"),
        (lambda lg, pg: PromptGuardMiddleware(pg, refusal_message="Blocked ({categories})"), "refusal_message"),
        (lambda lg, pg: PromptGuardMiddleware(pg, refusal_message="{score:d}"), "refusal_message"),
        (lambda lg, pg: PromptGuardMiddleware(pg, parts_notice="{reason}"), "parts_notice"),
        (lambda lg, pg: guard_tool(search, lg, refusal_message="{tool} blocked"), "refusal_message"),
        (lambda lg, pg: guard_code_tool(python_repl, lg, refusal_message='{"error": 1}'), "refusal_message"),
    ],
)
def test_a_refusal_template_that_cannot_be_filled_in_is_refused_when_built(lg3_8b, prompt_guard, build, field):
    """Each failed with a bare KeyError / IndexError / ValueError at the moment content was flagged."""
    with pytest.raises(GuardConfigurationError, match=rf"^{field} .*(cannot be filled in|must be a str)"):
        build(lg3_8b, prompt_guard)


def test_templates_that_fill_in_still_refuse_as_written(lg4):
    """Doubled braces (a JSON refusal) are text, and the fields are filled in when a tool call is blocked."""
    guarded = guard_code_tool(python_repl, lg4, refusal_message='{{"error": "{what} blocked: {categories}"}}')
    ran.clear()
    out = guarded.invoke({"code": EVIL_CODE})
    assert out.startswith('{"error": "code blocked: S14') and ran == []


def test_a_middleware_that_checks_nothing_is_refused(lg3_8b, prompt_guard):
    """Every apply_to_* False built a middleware that let the bomb question reach the model."""
    nothing = dict(apply_to_input=False, apply_to_output=False, apply_to_tool_calls=False, apply_to_tool_results=False)
    with pytest.raises(GuardConfigurationError, match="would check nothing"):
        LlamaGuardMiddleware(lg3_8b, **nothing)
    with pytest.raises(GuardConfigurationError, match="would scan nothing"):
        PromptGuardMiddleware(prompt_guard, apply_to_input=False, apply_to_tool_results=False)
    with pytest.raises(GuardConfigurationError, match="apply_to_input must be True or False, got 'no'"):
        LlamaGuardMiddleware(lg3_8b, apply_to_input="no")
    with pytest.raises(GuardConfigurationError, match="judge_parts must be True or False"):
        PromptGuardMiddleware(prompt_guard, judge_parts=0)
    with pytest.raises(GuardConfigurationError, match="exit_behavior must be 'end', 'error' or 'replace', got ''"):
        LlamaGuardMiddleware(lg3_8b, exit_behavior="")
    only_output = LlamaGuardMiddleware(lg3_8b, apply_to_input=False, apply_to_tool_calls=False)
    assert only_output.apply_to_output and not only_output.apply_to_input


@pytest.mark.parametrize("word", ["error", "end", "Raise", "raise ", "refuse", "REPLACE"])
def test_an_on_unsafe_text_that_reads_like_a_behaviour_is_refused(lg3_8b, word):
    """``wrap(llm, on_unsafe="error")`` answered a flagged input with the text "error"."""
    with pytest.raises(GuardConfigurationError, match="reads like a behaviour.*exactly 'raise'"):
        lg3_8b.wrap(RunnableLambda(lambda x: x), on_unsafe=word)
    with pytest.raises(GuardConfigurationError, match="reads like a behaviour"):
        lg3_8b.as_input_guard(on_unsafe=word)
    with pytest.raises(GuardConfigurationError, match="reads like a behaviour"):
        lg3_8b.as_node(on_unsafe=word)


def test_with_fallbacks_never_hands_a_flagged_input_to_the_fallback(lg4):
    """LangChain's default catches every exception: the backup model answered the bomb question, unguarded.
    (Llama Guard 4: its verdicts on these turns are in the tiny guard's check set.)"""
    asked: list[str] = []
    primary = RunnableLambda(lambda x: BENIGN_ANSWER)
    backup = RunnableLambda(lambda x: asked.append(str(x)) or "backup answered")
    with pytest.raises(GuardConfigurationError, match=r"exceptions_to_handle=\(Exception,\)\) would catch"):
        lg4.wrap(primary).with_fallbacks([backup])
    with pytest.raises(GuardConfigurationError, match="would catch"):
        lg4.as_input_guard().with_fallbacks([backup], exceptions_to_handle=(ConnectionError, LlamaGuardError))
    listed = lg4.wrap(primary).with_fallbacks([backup], exceptions_to_handle=(GuardServerError, TimeoutError))
    with pytest.raises(UnsafeContentError):
        listed.invoke(BOMB)
    assert listed.invoke(BENIGN) == BENIGN_ANSWER and asked == []
    on_purpose = lg4.wrap(primary).with_fallbacks([backup], exceptions_to_handle=(UnsafeContentError,))
    assert on_purpose.invoke(BOMB) == "backup answered"


def test_a_code_tool_whose_guard_cannot_flag_code_abuse_is_refused(lg3_8b, lg3_1b):
    """With S14 out of the policy every program ran, ``rm -rf /`` included."""
    with pytest.raises(GuardConfigurationError, match="llama-guard-3-1b has no S14"):
        guard_code_tool(python_repl, lg3_1b)
    with pytest.raises(GuardConfigurationError, match=r"S14 is excluded"):
        guard_code_tool(python_repl, lg3_8b, excluded_categories=["S14"])
    with pytest.raises(GuardConfigurationError, match="this custom policy has no S14"):
        guard_code_tool(python_repl, lg3_8b.with_categories({"S1": "Violent Crimes.", "S15": "Fraud."}))
    guard_code_tool(python_repl, lg3_8b, excluded_categories=["S6"])  # S14 still judged
    guard_tool(search, lg3_1b)  # arguments that are not code: any policy


def test_a_code_check_keeps_s14_when_the_chat_holds_an_image(lg4):
    """Llama Guard 4's template drops S14 from the policy of a conversation with an image: a picture earlier in the
    chat left the code unjudged for code abuse. The code check leaves the images out of its context."""
    from PIL import Image

    picture = {"type": "image", "image": Image.new("RGB", (32, 32), "red")}
    state = {"messages": [HumanMessage([picture, {"type": "text", "text": "Plot this for me."}])]}
    guarded = guard_code_tool(python_repl, lg4)
    helper = guarded.func.__self__
    conversation = helper.call_conversation({"code": EVIL_CODE}, state)
    prompt, _ = lg4.encode(conversation)
    assert "S14" in prompt.categories and not prompt.images
    assert "Plot this for me." in lg4.tokenizer.decode(prompt.input_ids)
    with_image, _ = lg4.encode([*state["messages"], AIMessage("ok")])
    assert "S14" not in with_image.categories  # what the template does with images, which the code check avoids


def test_a_lone_surrogate_in_a_message_is_judged_not_a_crash(prompt_guard, lg3_8b):
    """A request whose JSON carried "\\ud800" crashed the agent with UnicodeEncodeError in the middleware's
    message fingerprint, before any guard looked at it."""
    text = f"{WEATHER} \ud800"
    assert fingerprint(HumanMessage(text)) != fingerprint(HumanMessage(WEATHER))
    model = GenericFakeChatModel(messages=iter([AIMessage("It is sunny.")] * 8))
    for mw in (PromptGuardMiddleware(prompt_guard), LlamaGuardMiddleware(lg3_8b, apply_to_output=False)):
        for said in (text, f"{INJECTION} \ud800"):  # whatever the tiny guards make of it: judged, answered or refused
            out = create_agent(model, [], middleware=[mw]).invoke({"messages": [HumanMessage(said)]})
            assert isinstance(out["messages"][-1], AIMessage) and out["messages"][-1].text
    out = asyncio.run(
        create_agent(model, [], middleware=[PromptGuardMiddleware(prompt_guard)]).ainvoke(
            {"messages": [HumanMessage("hi"), AIMessage("", tool_calls=[]), ToolMessage(text, tool_call_id="1")]}
        )
    )
    assert isinstance(out["messages"][-1], AIMessage) and out["messages"][-1].text


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(timeout=5), "timeout= is a LlamaGuard option, not this guard's"),
        (dict(excluded_categories=["S1"]), "excluded_categories= is a LlamaGuard option"),
        (dict(window_overlap=True), "window_overlap must be a whole number >= 0, got True"),
        (dict(window_overlap=2.5), "window_overlap must be a whole number"),
        (dict(window_overlap="64"), "window_overlap must be a whole number"),
        (dict(labels={0: "MALICIOUS", 5: "BENIGN"}), r"labels key 5 is not a class index \(this model has 2 classes"),
        (dict(labels={0: "BENIGN", 1: None}), "label 1 must be named by a non-empty str"),
        (dict(normalize_whitespace="no"), "normalize_whitespace must be True or False"),
        (dict(reveal_hidden_text=1), "reveal_hidden_text must be True or False"),
        (dict(device="meta"), "device='meta' holds no weights"),
        (dict(device="tpu9"), "device='tpu9' is not a torch device"),
        (dict(backend="onnx", onnx_threads=0), "onnx_threads must be a whole number >= 1 or None, got 0"),
        (dict(backend="onnx", onnx_threads="2"), "onnx_threads must be a whole number"),
    ],
)
def test_prompt_guard_options_given_wrong_are_refused_when_loaded(pg_path, options, message):
    """Each used to build a guard whose first check raised a bare numpy / torch / transformers error (or, for
    ``window_overlap=True`` and ``normalize_whitespace="no"``, ran with a setting the caller did not choose)."""
    with pytest.raises(GuardConfigurationError, match=message):
        PromptGuard.from_pretrained(str(pg_path), **options)


def test_prompt_guard_labels_as_a_config_json_writes_them_are_read(pg_path, prompt_guard):
    guard = PromptGuard.from_pretrained(str(pg_path), labels={"0": "BENIGN", "1": "MALICIOUS"})
    assert guard.labels == {0: "BENIGN", 1: "MALICIOUS"}
    assert guard.score(INJECTION) == pytest.approx(prompt_guard.score(INJECTION), abs=1e-6)


def test_a_llama_guard_given_a_prompt_guard_option_names_it(lg3_8b_path):
    from langchain_llamaguard import LlamaGuard

    with pytest.raises(GuardConfigurationError, match="window_overlap= is a PromptGuard option, not this guard's"):
        LlamaGuard.from_pretrained(str(lg3_8b_path), window_overlap=32)
    with pytest.raises(GuardConfigurationError, match="did you mean device_map="):
        LlamaGuard.from_pretrained(str(lg3_8b_path), device="cpu")


def test_a_copy_of_a_closed_prompt_guard_is_refused(pg_path):
    import copy

    from langchain_llamaguard import GuardClosedError

    guard = PromptGuard.from_pretrained(str(pg_path))
    guard.close()
    with pytest.raises(GuardClosedError):
        copy.copy(guard)


def test_shapes_given_wrong_name_what_is_accepted(lg3_8b):
    """A bare TypeError / AttributeError from deep inside, or an empty key accepted as no key."""
    with pytest.raises(GuardConfigurationError, match="categories are given as a list of codes or names"):
        lg3_8b.as_input_guard(excluded_categories=1)
    with pytest.raises(GuardConfigurationError, match="must be a LangChain tool .*got function"):
        guard_tool(lambda x: x, lg3_8b)
    with pytest.raises(GuardConfigurationError, match="must be a LangChain tool"):
        guard_code_tool(print, lg3_8b)
    with pytest.raises(GuardConfigurationError, match="input_key must be a dict key"):
        lg3_8b.as_input_guard(input_key="")
    with pytest.raises(GuardConfigurationError, match="output_key must be a dict key"):
        lg3_8b.as_output_guard(output_key="")


def test_every_guard_runnable_refuses_a_fallback_catch_all(lg3_8b, prompt_guard):
    """Document filters (``on_flagged="raise"``), graph nodes (``on_unsafe="raise"``) and guarded tools
    (``on_unsafe="error"``) raise verdicts too; LangChain's default fallback would catch them."""
    backup = RunnableLambda(lambda x: x)
    for runnable in (
        prompt_guard.as_document_filter(),
        lg3_8b.as_node(on_unsafe="raise"),
        guard_tool(search, lg3_8b, on_unsafe="error"),
    ):
        with pytest.raises(GuardConfigurationError, match="would catch this guard's verdict"):
            runnable.with_fallbacks([backup])
        runnable.with_fallbacks([backup], exceptions_to_handle=(GuardServerError,))  # the failures, listed
