"""Hypothesis over message structures and contents: the renderer and the parser only raise documented errors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_llamaguard import GuardOutputError, format_prompt
from langchain_llamaguard.verdict import parse_output

text = st.text(max_size=30)
block = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, text),
    st.builds(lambda u: {"type": "image", "url": u}, text),
    st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, text),
    st.builds(lambda t: {"type": t}, st.sampled_from(["audio", "file", "weird", ""])),
    st.builds(lambda t: {"type": "text", "text": t}, st.integers()),
    text,
)
content = st.one_of(text, st.lists(block, max_size=3))
message = st.one_of(
    st.builds(lambda c: HumanMessage(content=c), content),
    st.builds(lambda c: AIMessage(content=c), content),
    st.builds(lambda c, n: AIMessage(content=c, tool_calls=[{"name": n, "args": {"x": n}, "id": "1"}]), text, text),
    st.builds(lambda c: SystemMessage(content=c), content),
    st.builds(lambda c: ToolMessage(content=c, tool_call_id="1"), text),
    st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["user", "assistant", "system", "bogus"]), text),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(message, max_size=6),
    st.sampled_from(["llama-guard-4", "llama-guard-3-8b", "llama-guard-3-1b"]),
    st.sampled_from([None, "User", "Agent"]),
)
def test_renderer_never_crashes_otherwise(conversation, model, role):
    try:
        out = format_prompt(conversation, model=model, role=role)
    except (TypeError, ValueError):
        return
    assert isinstance(out, str) and "Provide your safety assessment" in out


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.sampled_from(["safe", "unsafe\nS1", "unsafe\nS1,S14", " \nunsafe \n S2 "])))
def test_parser_is_total(raw):
    try:
        parsed = parse_output(raw)
    except GuardOutputError:
        return
    assert raw.strip().lower().startswith(("safe", "unsafe"))
    assert all(c in {f"S{i}" for i in range(1, 15)} for c in parsed.categories)
