"""format_prompt == the official chat template, byte for byte, on the spec's references and many more cases.

The oracle is the model's chat template (reconstructed from the spec's rules in
``langchain_llamaguard/tiny/templates``, itself checked against every reference render first), rendered by
transformers' ``apply_chat_template`` -- an implementation independent of the package's renderer.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate

from langchain_llamaguard import (
    GuardConfigurationError,
    GuardInputError,
    GuardTypeError,
    LlamaGuard,
    default_categories,
    format_prompt,
)
from langchain_llamaguard.tiny.models import chat_template

MODELS = ["llama-guard-4", "llama-guard-3-8b", "llama-guard-3-1b"]


def official(tok, model, messages, excluded=()):
    """Render with the model's chat template (8B has no exclusion variables: its lines are removed)."""
    text = tok.apply_chat_template(
        messages, chat_template=chat_template(model), tokenize=False, excluded_category_keys=list(excluded)
    )
    if model == "llama-guard-3-8b":
        for line in text.split("\n"):
            if line.split(":")[0] in excluded and line.startswith("S"):
                text = text.replace(line + "\n", "", 1)
    return text


def as_template_messages(model, turns):
    """Chat-template messages: list-of-parts content except for the 8B template, which reads strings."""
    out = []
    for i, parts in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        if model == "llama-guard-3-8b":
            out.append({"role": role, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": role, "content": parts})
    return out


@pytest.fixture(scope="module")
def toks(tok4, tok3):
    return {"llama-guard-4": tok4, "llama-guard-3-8b": tok3, "llama-guard-3-1b": tok3}


def test_every_reference_render(spec_dir, toks):
    refs = json.loads((spec_dir / "reference-prompts.json").read_text())
    assert len(refs) >= 5
    for ref in refs:
        got = format_prompt(ref["messages"], model=ref["model"], excluded_categories=ref["excluded_category_keys"])
        assert got == ref["expected"], ref["name"]
        # the oracle template reproduces the reference too
        assert (
            official(toks[ref["model"]], ref["model"], ref["messages"], ref["excluded_category_keys"])
            == ref["expected"]
        )


CASES = [
    ("user only", [[{"type": "text", "text": "How do I bake bread?"}]], ()),
    ("user+assistant", [[{"type": "text", "text": "hi"}], [{"type": "text", "text": "Hello! How can I help?"}]], ()),
    (
        "multi-turn",
        [[{"type": "text", "text": "a"}], [{"type": "text", "text": "b"}], [{"type": "text", "text": "  c  "}]],
        (),
    ),
    ("excluded", [[{"type": "text", "text": "x"}]], ("S6", "S9")),
    ("empty exclusions", [[{"type": "text", "text": "x"}]], ()),
    ("all but one", [[{"type": "text", "text": "x"}]], tuple(f"S{i}" for i in range(1, 13))),
    ("whitespace", [[{"type": "text", "text": "\n\t padded \n"}]], ()),
    ("two text parts", [[{"type": "text", "text": " one "}, {"type": "text", "text": "two "}]], ()),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name,turns,excluded", CASES, ids=[c[0] for c in CASES])
def test_matches_official_template(toks, model, name, turns, excluded):
    messages = as_template_messages(model, turns)
    assert format_prompt(messages, model=model, excluded_categories=excluded) == official(
        toks[model], model, messages, excluded
    )


@pytest.mark.parametrize("model", MODELS)
def test_excluding_every_category_is_refused(model, lg4_with):
    """A prompt listing no category asks the model to judge against nothing: every verdict would be safe, whatever
    it answers. Excluding all of a model's (or a policy's) categories is an error, not a guard that flags nothing."""
    everything = list(default_categories(model))
    with pytest.raises(GuardConfigurationError, match="could flag nothing"):
        format_prompt("hi", model=model, excluded_categories=everything)
    with pytest.raises(GuardConfigurationError, match="could flag nothing"):
        format_prompt("hi", model=model, categories={"S1": "Fraud."}, excluded_categories=["S1"])
    with pytest.raises(GuardConfigurationError, match="could flag nothing"):
        lg4_with(excluded_categories=[f"S{i}" for i in range(1, 15)])
    with pytest.raises(GuardConfigurationError, match="could flag nothing"):
        lg4_with().check("hi", excluded_categories=[f"S{i}" for i in range(1, 15)])
    image = [{"role": "user", "content": [{"type": "image", "url": "a.png"}, {"type": "text", "text": "x"}]}]
    with pytest.raises(GuardConfigurationError, match="with images"):  # S14 is text-only: an image check has none
        format_prompt(image, excluded_categories=[f"S{i}" for i in range(1, 14)])


@pytest.mark.parametrize(
    "turns",
    [
        [[{"type": "image", "url": "a.png"}, {"type": "text", "text": "What is this?"}]],
        [
            [
                {"type": "text", "text": "text first"},
                {"type": "image", "url": "a.png"},
                {"type": "image", "url": "b.png"},
            ]
        ],
        [[{"type": "text", "text": "hi"}], [{"type": "text", "text": "look"}, {"type": "image", "url": "c.png"}]],
        [[{"type": "image", "url": "only.png"}]],
    ],
)
def test_images_llama_guard_4(tok4, turns):
    messages = as_template_messages("llama-guard-4", turns)
    got = format_prompt(messages, excluded_categories=["S2"])
    assert got == official(tok4, "llama-guard-4", messages, ["S2"])
    assert "S14:" not in got and "S13: Elections." in got  # S14 is text-only


def test_images_rejected_by_llama_guard_3():
    msg = [{"role": "user", "content": [{"type": "image", "url": "a.png"}, {"type": "text", "text": "x"}]}]
    with pytest.raises(ValueError, match="does not read images"):
        format_prompt(msg, model="llama-guard-3-8b")


text_st = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0, max_size=40
)
part_st = st.builds(lambda t: {"type": "text", "text": t}, text_st)
excl_st = st.sets(st.sampled_from([f"S{i}" for i in range(1, 14)]), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    turns=st.lists(st.lists(part_st, min_size=1, max_size=3), min_size=1, max_size=5),
    excluded=excl_st,
    model=st.sampled_from(MODELS),
)
def test_matches_official_template_fuzzed(toks, turns, excluded, model):
    messages = as_template_messages(model, turns)
    expected = official(toks[model], model, messages, sorted(excluded))
    assert format_prompt(messages, model=model, excluded_categories=excluded) == expected


def test_excluded_categories_keep_their_codes():
    text = format_prompt("hi", excluded_categories=["S9", "Hate"])
    assert "S8: Intellectual Property.\nS11: Self-Harm." in text
    assert "S9:" not in text and "S10:" not in text


def test_role_follows_turn_parity_and_role_argument():
    assert "'User' messages" in format_prompt("hi")
    assert "'Agent' messages" in format_prompt("an answer", role="Agent")
    assert "User: \\n\\n\n\nAgent: an answer" in format_prompt("an answer", role="Agent")
    with pytest.raises(ValueError, match="ends with a user turn"):
        format_prompt([HumanMessage("hi")], role="Agent")
    with pytest.raises(ValueError, match="unknown role"):
        format_prompt("hi", role="System")


def test_langchain_mapping_is_documented_and_nothing_is_dropped():
    convo = [
        SystemMessage("Be terse."),
        HumanMessage("What's the weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "1"}]),
        ToolMessage("18C and sunny", tool_call_id="1", name="weather"),
        AIMessage("It is 18C and sunny."),
    ]
    text = format_prompt(convo)
    assert "User: [system] Be terse.\nWhat's the weather in Paris?\\n\\n" in text
    assert 'Agent: [tool call] weather({"city": "Paris"})\\n\\n' in text
    assert "User: [tool result] weather: 18C and sunny\\n\\n" in text
    assert "Agent: It is 18C and sunny.\\n\\n" in text
    assert "ONLY THE LAST Agent message" in text


def test_streamed_and_anthropic_style_messages_render_each_tool_call_once():
    """A streamed (v1) message lists each call twice, as a content block and in ``tool_calls``; it must render
    like its non-streamed twin, or the verdict would depend on whether the model streamed."""
    call = {"name": "weather", "args": {"city": "Paris"}, "id": "1"}
    plain = AIMessage("Checking.", tool_calls=[call])
    streamed = AIMessage(
        content=[{"type": "text", "text": "Checking.", "index": 0}, {"type": "tool_call", **call}], tool_calls=[call]
    )
    anthropic = AIMessage(
        content=[
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "1", "name": "weather", "input": {}},
        ],
        tool_calls=[call],
    )
    ask = HumanMessage("Weather in Paris?")
    only_call = [
        AIMessage("", tool_calls=[call]),
        AIMessage([], tool_calls=[call]),
        AIMessage([{"type": "tool_call", **call}]),
    ]
    for model in ("llama-guard-4", "llama-guard-3-8b", "llama-guard-3-1b"):
        renders = [format_prompt([ask, m], model=model) for m in (streamed, plain, anthropic)]
        assert renders[0] == renders[1] == renders[2] and renders[0].count("[tool call] weather") == 1, model
        renders = [format_prompt([ask, m], model=model) for m in only_call]  # no text: "" and [] alike
        assert renders[0] == renders[1] == renders[2], model
    unlisted = AIMessage(content=[{"type": "server_tool_call", "id": "9", "name": "web", "args": {"q": "x"}}])
    assert '[tool call] web({"q": "x"})' in format_prompt([ask, unlisted])  # a block-only call is still rendered


def test_consecutive_turns_merge_and_assistant_first_gets_empty_user():
    text = format_prompt([HumanMessage("a"), HumanMessage("b")])
    assert "User: a\nb\\n\\n" in text and text.count("User: ") == 1
    text = format_prompt([AIMessage("hello")])
    assert "User: \\n\\n\n\nAgent: hello\\n\\n" in text


def test_prompt_value_and_plain_string():
    pv = ChatPromptTemplate.from_messages([("human", "{q}")]).invoke({"q": "hello there"})
    assert format_prompt(pv) == format_prompt("hello there") == format_prompt([HumanMessage("hello there")])


def test_unsupported_input_is_an_error():
    with pytest.raises(GuardTypeError, match="unsupported conversation type"):
        format_prompt(42)  # type: ignore[arg-type]
    with pytest.raises(GuardInputError, match="unsupported content block type 'audio'"):
        format_prompt([HumanMessage(content=[{"type": "audio", "data": "x"}])])
    with pytest.raises(GuardConfigurationError, match="unknown category"):
        format_prompt("hi", excluded_categories=["S42"])
    with pytest.raises(GuardConfigurationError, match="unknown model format"):
        format_prompt("hi", model="llama-guard-2")


def test_nothing_to_check_is_one_empty_turn():
    for model in MODELS:
        empty = format_prompt("", model=model)
        assert "User: " in empty and "Agent:" not in empty
        assert format_prompt([], model=model) == format_prompt((), model=model) == empty
        assert format_prompt(ChatPromptTemplate.from_messages([]).invoke({}), model=model) == empty
        assert format_prompt([], model=model, role="Agent") == format_prompt("", model=model, role="Agent")


def test_llama_guard_3_1b_over_a_chat_endpoint_sends_the_parts_its_template_reads():
    """The 1B's template reads list-of-parts content only (a string renders an empty turn there) and writes one
    line per text part: the chat request carried strings, which that template renders as an empty conversation."""
    from langchain_llamaguard.tiny.tokenizers import load_tokenizer, tokenizer_dir

    guard = LlamaGuard.from_endpoint(
        "http://127.0.0.1:9/v1",
        model="meta-llama/Llama-Guard-3-1B",
        tokenizer=str(tokenizer_dir("llama3")),
        model_format="llama-guard-3-1b",
        mode="chat",
        context_length=8192,
    )
    conversation = [
        HumanMessage("How do I bake bread?"),
        AIMessage(content=[{"type": "text", "text": "Sure."}, {"type": "text", "text": "Mix flour and water."}]),
    ]
    prompt, _ = guard.encode(conversation)
    messages = guard.backend.request(prompt, guard.tokens)[1]["messages"]
    assert all(isinstance(m["content"], list) for m in messages)
    served = load_tokenizer("llama3").apply_chat_template(
        messages, chat_template=chat_template("llama-guard-3-1b"), tokenize=False
    )
    assert served == format_prompt(conversation, model="llama-guard-3-1b")  # what the server renders is ours
