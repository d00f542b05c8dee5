"""Every public guard Runnable, in every position of a chain, over every kind of inner step, in every LCEL mode.

Each case runs one guarded chain and the same chain unguarded (the step replaced by a pass-through, or ``wrap``
replaced by what it wraps) and asserts:

* a safe input gives exactly the unguarded chain's output: same types, and for streams the same chunks;
* an unsafe input gives the ``on_unsafe`` behaviour: ``"raise"`` raises :class:`UnsafeContentError`, a canned
  answer comes back shaped like what it replaces, a Runnable's answer comes back (and it saw the verdict);
* the guard's verdict runs show up in callbacks, ``astream_events`` and ``astream_log``;
* a batch makes one model batch per stage wherever LangChain hands the step a batch.

The probes are check-set cases of the tiny guards (``langchain_llamaguard.tiny.data``): their verdicts are
checked, with a margin, when the guards are trained.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import answering_chat_model
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import (
    Runnable,
    RunnableBranch,
    RunnableConfig,
    RunnableGenerator,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)
from langchain_core.tracers.log_stream import RunLogPatch

from langchain_llamaguard import UnsafeContentError
from langchain_llamaguard.tiny.data import MATRIX

REFUSAL = "Sorry, I can't help with that."
REROUTED = "Rerouted by the guard."
GUARD_RUNS = {"llama_guard", "prompt_guard", "prompt_guard+llama_guard"}  # the verdict runs, by name
ANSWERS = {
    MATRIX.safe_question: MATRIX.safe_answer,
    MATRIX.unsafe_answer_question: MATRIX.unsafe_answer,
}


def answer(question: str) -> str:
    """The inner model's answer (an unknown text, such as a canned replacement, is echoed)."""
    return ANSWERS.get(question, question)


# -- inner kinds: the answering step and an identity step of the same kind --------------------------------------
def _split(chunks: Iterator[Any]) -> Iterator[Any]:
    for chunk in chunks:
        if isinstance(chunk, str):
            words = chunk.split(" ")
            yield from (w if i == len(words) - 1 else w + " " for i, w in enumerate(words))
        else:
            yield chunk


async def _asplit(chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for chunk in chunks:
        for piece in _split(iter([chunk])):
            yield piece


def _text(value: Any) -> str:
    return value.text if isinstance(value, BaseMessage) else value


async def _aanswer(value: Any) -> str:
    await asyncio.sleep(0)
    return answer(_text(value))


async def _aidentity(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


INNERS: dict[str, tuple[Any, Any]] = {
    # kind: (build the answering step, build an identity step of the same kind)
    "sync_fn": (lambda: RunnableLambda(lambda v: answer(_text(v))), lambda: RunnableLambda(lambda v: v)),
    "async_fn": (lambda: RunnableLambda(_aanswer), lambda: RunnableLambda(_aidentity)),
    "chat_model": (lambda: answering_chat_model(ANSWERS), lambda: RunnableGenerator(_split, _asplit)),  # streams
}

# -- the public Runnables under test --------------------------------------------------------------------------
STEPS = {
    # name: (stage, safe probe, unsafe probes); "wrap*" guard an inner step, the others are steps of their own
    "llama_guard_input": ("input", MATRIX.safe_question, [MATRIX.unsafe_question]),
    "llama_guard_output": ("output", MATRIX.safe_question, [MATRIX.unsafe_answer_question]),
    "prompt_guard_input": ("input", MATRIX.safe_question, [MATRIX.injection]),
    "combined_input": ("input", MATRIX.safe_question, [MATRIX.unsafe_question, MATRIX.injection]),
    "wrap": ("wrap", MATRIX.safe_question, [MATRIX.unsafe_question, MATRIX.unsafe_answer_question]),
    "wrap_prompt_guard": ("wrap", MATRIX.safe_question, [MATRIX.injection, MATRIX.unsafe_answer_question]),
}
POSITIONS = ["alone", "head", "middle", "tail", "parallel", "branch", "fallbacks"]
SYNC_MODES = ["invoke", "batch", "batch_as_completed", "stream", "transform"]
ASYNC_MODES = ["ainvoke", "abatch", "abatch_as_completed", "astream", "astream_events", "astream_log", "atransform"]
BATCH_MODES = {"batch", "abatch", "batch_as_completed", "abatch_as_completed"}
ON_UNSAFE = ["raise", "canned", "runnable"]


def build_step(name: str, guards: Any, inner: Runnable | None, on_unsafe: Any) -> Runnable:
    lg4, pg = guards
    if name == "llama_guard_input":
        return lg4.as_input_guard(on_unsafe=on_unsafe)
    if name == "llama_guard_output":
        return lg4.as_output_guard(on_unsafe=on_unsafe)
    if name == "prompt_guard_input":
        return pg.as_input_guard(on_unsafe=on_unsafe)
    if name == "combined_input":
        return pg.as_input_guard(llama_guard=lg4, on_unsafe=on_unsafe)
    return lg4.wrap(inner, on_unsafe=on_unsafe, prompt_guard=pg if name == "wrap_prompt_guard" else None)


def place(position: str, stage: str, guarded: Runnable, make_inner: Any, make_identity: Any) -> Runnable:
    """``guarded`` is the step (or the wrapped inner step) standing where ``position`` says.

    An input step goes before the inner step, an output step after it; ``wrap`` is the inner step itself.
    """
    if stage == "input":
        core = guarded | make_inner()
    elif stage == "output":
        core = make_inner() | guarded
    else:
        core = guarded
    if position == "alone":
        return guarded
    if position == "head":
        return guarded | make_identity()
    if position == "middle":
        if stage == "output":
            return core | make_identity()
        return make_identity() | core | make_identity()
    if position == "tail":
        return core if stage == "output" else make_identity() | guarded
    if position == "parallel":
        return RunnableParallel(answer=core, echo=RunnablePassthrough())
    if position == "branch":
        return RunnableBranch((lambda _: True, core), make_inner())
    if position == "fallbacks":  # a fallback for another error: the guard's own behaviour must come through
        return core.with_fallbacks([RunnableLambda(lambda _: "fallback")], exceptions_to_handle=(ConnectionError,))
    raise AssertionError(position)


def caller_input(position: str, stage: str, probe: str) -> str:
    """What the caller sends: for an output step that reads the caller's input directly, the answer itself."""
    if stage == "output" and position in ("alone", "head"):
        return answer(probe)
    return probe


class Recorder(BaseCallbackHandler):
    """Records every guard verdict run (name and verdict)."""

    def __init__(self) -> None:
        self.names: dict[Any, str] = {}
        self.verdicts: list[tuple[str, dict]] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.names[run_id] = kwargs.get("name") or ""

    def on_chain_end(self, outputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        if self.names.get(run_id) in GUARD_RUNS:
            self.verdicts.append((self.names[run_id], outputs["verdict"]))


def norm(value: Any, exact: bool = True) -> Any:
    """What a caller sees, without run ids: a message's type and text, a dict's items, an error's type.
    ``exact=False`` takes a message chunk for the message it adds up to (a replacement built outside a stream)."""
    if isinstance(value, BaseException):
        return ("error", type(value).__name__)
    if isinstance(value, BaseMessage):
        name = type(value).__name__
        return (name if exact else name.removesuffix("Chunk"), value.text)
    if isinstance(value, dict):
        return {k: norm(v, exact) for k, v in value.items()}
    return ("str", value)


def stream_view(chunks: list[Any]) -> Any:
    """The chunks a caller sees, normalized; a RunnableParallel's keys stream concurrently, so each key's own
    chunks are compared in order."""
    if chunks and all(isinstance(c, dict) for c in chunks):
        return {k: [norm(c[k]) for c in chunks if k in c] for k in sorted({k for c in chunks for k in c})}
    return [norm(c) for c in chunks]


def concat(chunks: list[Any]) -> Any:
    if chunks and all(isinstance(c, dict) for c in chunks):
        keys = dict.fromkeys(k for c in chunks for k in c)
        return {k: concat([c[k] for c in chunks if k in c]) for k in keys}
    out = chunks[0]
    for chunk in chunks[1:]:
        out = out + chunk
    return out


async def run_mode(chain: Runnable, mode: str, inputs: list[str], config: dict) -> tuple[list[Any], list[Any]]:
    """Results per input (an exception where it raised) and, for streaming modes, the chunks per input."""
    results: list[Any] = []
    streams: list[Any] = []
    if mode in BATCH_MODES:
        if mode == "batch":
            return chain.batch(inputs, config, return_exceptions=True), []
        if mode == "abatch":
            return await chain.abatch(inputs, config, return_exceptions=True), []
        got: dict[int, Any] = {}
        if mode == "batch_as_completed":
            got = dict(chain.batch_as_completed(inputs, config, return_exceptions=True))
        else:
            got = {i: r async for i, r in chain.abatch_as_completed(inputs, config, return_exceptions=True)}
        return [got[i] for i in range(len(inputs))], []
    for value in inputs:
        chunks: list[Any] = []
        try:
            if mode == "invoke":
                chunks.append(chain.invoke(value, config))
            elif mode == "ainvoke":
                chunks.append(await chain.ainvoke(value, config))
            elif mode == "stream":  # chunks are kept as they come: what went out before an error counts too
                for c in chain.stream(value, config):
                    chunks.append(c)
            elif mode == "transform":  # fed by a real upstream stream: the input arrives in pieces
                for c in chain.transform(RunnableGenerator(_split).transform(iter([value])), config):
                    chunks.append(c)
            elif mode == "astream":
                async for c in chain.astream(value, config):
                    chunks.append(c)
            elif mode == "atransform":
                upstream = RunnableGenerator(_split, _asplit).atransform(_aone(value))
                async for c in chain.atransform(upstream, config):
                    chunks.append(c)
            elif mode == "astream_events":
                root = None
                async for e in chain.astream_events(value, config, version="v2"):
                    root = root or e["run_id"]
                    config.setdefault("events", []).append(e)
                    if e["event"].endswith("_stream") and e["run_id"] == root:
                        chunks.append(e["data"]["chunk"])
            elif mode == "astream_log":
                log = RunLogPatch()  # patches add up to a RunLog with the state so far
                async for patch in chain.astream_log(value, config):
                    log = log + patch
                    chunks[:] = list(log.state.get("streamed_output", []))
                config.setdefault("logs", []).extend(log.state["logs"])
            else:
                raise AssertionError(mode)
            results.append(concat(chunks) if chunks else None)
        except Exception as exc:
            results.append(exc)
        streams.append(chunks)
    return results, streams


async def _aone(value: Any) -> AsyncIterator[Any]:
    yield value


def shaped(canned: str, value: Any) -> Any:
    """A canned answer shaped like what it replaces (as the guard does)."""
    if isinstance(value, AIMessageChunk):
        return AIMessageChunk(content=canned)
    if isinstance(value, BaseMessage):
        return AIMessage(content=canned)
    return canned


async def expected_outputs(stage: str, position: str, kind: str, on_unsafe: str, probes: list[str]) -> list[Any]:
    """What the caller must get for each unsafe probe, built from the unguarded chain with the step swapped for
    the replacement it makes (``None``: an :class:`UnsafeContentError`)."""
    if on_unsafe == "raise":
        return [None] * len(probes)
    make_inner, make_identity = INNERS[kind]
    canned = REFUSAL if on_unsafe == "canned" else REROUTED
    if stage == "wrap":
        like = AIMessage("") if kind == "chat_model" else ""
        stand_in: Runnable = RunnableLambda(lambda _: shaped(canned, like) if on_unsafe == "canned" else canned)
    else:
        stand_in = RunnableLambda(lambda v: shaped(canned, v) if on_unsafe == "canned" else canned)
    chain = place(position, stage, stand_in, make_inner, make_identity)
    inputs = [caller_input(position, stage, p) for p in probes]
    return (await run_mode(chain, "ainvoke" if kind == "async_fn" else "invoke", inputs, {}))[0]


def unguarded(stage: str, position: str, kind: str) -> Runnable:
    make_inner, make_identity = INNERS[kind]
    stand_in = make_inner() if stage == "wrap" else RunnablePassthrough()
    return place(position, stage, stand_in, make_inner, make_identity)


CASES = [
    (name, position, kind, mode)
    for name, position, kind in itertools.product(STEPS, POSITIONS, INNERS)
    if not (position == "alone" and STEPS[name][0] != "wrap" and kind != "sync_fn")  # no inner step: one kind
    for mode in (ASYNC_MODES if kind == "async_fn" else SYNC_MODES + ASYNC_MODES)
]


def on_unsafe_for(name: str, position: str, kind: str, mode: str) -> str:
    """Each (step, position, kind) meets every behaviour across its modes, and so does each (step, mode)."""
    modes = SYNC_MODES + ASYNC_MODES
    return ON_UNSAFE[(modes.index(mode) + POSITIONS.index(position) + list(INNERS).index(kind)) % 3]


@pytest.fixture(scope="module")
def guards(lg4, prompt_guard):
    return lg4, prompt_guard


@pytest.fixture
def model_batches(guards, monkeypatch):
    """How many model batches each guard ran (the real models still run)."""
    counts = {"llama_guard": 0, "prompt_guard": 0}
    # Llama Guard's sync and async paths both score one engine batch through _score_encoded (which may split it
    # into memory-bounded sub-batches: still one batch of the step); Prompt Guard's through _score_flat (the windows
    # of every text of a call, in forward passes of up to max_batch_size).
    for key, guard, method in zip(counts, guards, ("_score_encoded", "_score_flat"), strict=True):
        original = getattr(guard, method)

        def counting(*args, _original=original, _key=key, **kw):
            counts[_key] += 1
            return _original(*args, **kw)

        monkeypatch.setattr(guard, method, counting)
    return counts


STAGES_PER_GUARD = {  # model batches a batch of inputs needs, per guard, when LangChain hands the step the batch
    "llama_guard_input": {"llama_guard": 1, "prompt_guard": 0},
    "llama_guard_output": {"llama_guard": 1, "prompt_guard": 0},
    "prompt_guard_input": {"llama_guard": 0, "prompt_guard": 1},
    "combined_input": {"llama_guard": 1, "prompt_guard": 1},
    "wrap": {"llama_guard": 2, "prompt_guard": 0},
    "wrap_prompt_guard": {"llama_guard": 2, "prompt_guard": 1},
}


@pytest.mark.parametrize(("name", "position", "kind", "mode"), CASES)
async def test_matrix(guards, model_batches, name, position, kind, mode):
    stage, safe_probe, unsafe_probes = STEPS[name]
    on_unsafe = on_unsafe_for(name, position, kind, mode)
    seen: list[dict] = []

    def reroute(payload: dict) -> str:
        seen.append(payload)
        return REROUTED

    behaviour = {"raise": "raise", "canned": REFUSAL, "runnable": RunnableLambda(reroute)}[on_unsafe]
    make_inner, make_identity = INNERS[kind]
    inner = make_inner() if stage == "wrap" else None
    guarded = place(position, stage, build_step(name, guards, inner, behaviour), make_inner, make_identity)
    probes = [safe_probe, *unsafe_probes]
    inputs = [caller_input(position, stage, p) for p in probes]

    baseline, baseline_streams = await run_mode(unguarded(stage, position, kind), mode, inputs[:1], {})
    for key in model_batches:
        model_batches[key] = 0
    recorder = Recorder()
    config: dict[str, Any] = {"callbacks": [recorder]}
    results, streams = await run_mode(guarded, mode, inputs, config)

    # a safe input: exactly the unguarded output, chunk for chunk
    assert not isinstance(baseline[0], Exception), baseline[0]
    assert norm(results[0]) == norm(baseline[0])  # same types too (the baseline ran in the same mode)
    if streams:
        assert stream_view(streams[0]) == stream_view(baseline_streams[0])
    # an unsafe input: the on_unsafe behaviour
    expected = await expected_outputs(stage, position, kind, on_unsafe, unsafe_probes)
    for k, (probe, got, want) in enumerate(zip(unsafe_probes, results[1:], expected, strict=True)):
        if want is None:
            assert isinstance(got, UnsafeContentError), (probe, got)
            if streams:  # nothing of the guarded answer went out before the error
                sent = streams[k + 1]
                if position == "parallel":
                    sent = [c["answer"] for c in sent if "answer" in c]
                assert sent == [], (probe, sent)
        else:
            assert norm(got, exact=False) == norm(want, exact=False), (probe, got)
    if on_unsafe == "runnable":
        assert len(seen) == len(unsafe_probes) and all(not p["verdict"].safe for p in seen)
    # the verdicts are runs of their own, in callbacks and in the event stream / run log
    verdicts = [v for _, v in recorder.verdicts]
    assert verdicts and any(not v["safe"] for v in verdicts) and any(v["safe"] for v in verdicts)
    if mode == "astream_events":
        names = {e["name"] for e in config["events"] if e["event"] == "on_chain_end"}
        assert names & GUARD_RUNS
    if mode == "astream_log":
        assert any(key.split(":")[0] in GUARD_RUNS for key in config["logs"])
    # batches: one model batch per stage where LangChain passes the batch on (RunnableParallel and RunnableBranch
    # run each input on its own, and a sequence's *_as_completed runs each input through the whole chain)
    keeps_batch = position in ("alone", "head", "middle", "tail", "fallbacks") and (
        mode in ("batch", "abatch") or position == "alone"
    )
    if mode in BATCH_MODES and keeps_batch:
        assert model_batches == STAGES_PER_GUARD[name]


# -- guarded tools are Runnables too ------------------------------------------------------------------------------
def _repl_tools(ran: list[str]) -> dict[str, Any]:
    from langchain_core.tools import StructuredTool

    def python_repl(code: str) -> str:
        """Run Python code in a sandbox and return what it prints."""
        ran.append(code)
        return "45"

    async def apython_repl(code: str) -> str:
        """Run Python code in a sandbox and return what it prints."""
        await asyncio.sleep(0)
        return python_repl(code)

    return {
        "sync_tool": StructuredTool.from_function(func=python_repl, name="python_repl"),
        "async_tool": StructuredTool.from_function(coroutine=apython_repl, name="python_repl"),
    }


TOOL_POSITIONS = POSITIONS
TOOL_CASES = [
    (helper, position, kind, mode)
    for helper, position, kind in itertools.product(
        ["guard_tool", "guard_code_tool"], TOOL_POSITIONS, ["sync_tool", "async_tool"]
    )
    for mode in (ASYNC_MODES if kind == "async_tool" else SYNC_MODES + ASYNC_MODES)
]


def place_tool(position: str, tool: Runnable) -> Runnable:
    if position == "alone":
        return tool
    if position == "head":
        return tool | RunnableLambda(lambda out: out)
    if position == "middle":
        return RunnableLambda(lambda args: dict(args)) | tool | RunnableLambda(lambda out: out)
    if position == "tail":
        return RunnableLambda(lambda args: dict(args)) | tool
    if position == "parallel":
        return RunnableParallel(result=tool, echo=RunnablePassthrough())
    if position == "branch":
        return RunnableBranch((lambda _: True, tool), RunnableLambda(lambda _: "not taken"))
    return tool.with_fallbacks([RunnableLambda(lambda _: "fallback")], exceptions_to_handle=(ConnectionError,))


@pytest.mark.parametrize(("helper", "position", "kind", "mode"), TOOL_CASES)
async def test_guarded_tools(lg4, helper, position, kind, mode):
    from langchain_llamaguard.tiny.data import EVIL_CODE, SUM_CODE
    from langchain_llamaguard.tools import guard_code_tool, guard_tool

    on_unsafe = ["refuse", "error"][(SYNC_MODES + ASYNC_MODES).index(mode) % 2]
    ran: list[str] = []
    inner = _repl_tools(ran)[kind]
    wrap = guard_code_tool if helper == "guard_code_tool" else guard_tool
    guarded = place_tool(position, wrap(inner, lg4, on_unsafe=on_unsafe))
    safe, unsafe = {"code": SUM_CODE}, {"code": EVIL_CODE}
    baseline, _ = await run_mode(place_tool(position, inner), mode, [safe], {})
    ran.clear()
    recorder = Recorder()
    results, _ = await run_mode(guarded, mode, [safe, unsafe], {"callbacks": [recorder]})
    assert norm(results[0]) == norm(baseline[0]) and ran == [SUM_CODE]  # the unsafe code never ran
    flagged = results[1]["result"] if position == "parallel" and isinstance(results[1], dict) else results[1]
    if on_unsafe == "error":
        assert isinstance(flagged, UnsafeContentError) and flagged.verdict.categories == ["S14"]
    else:
        assert isinstance(flagged, str) and flagged.startswith("Refused: Llama Guard flagged") and "S14" in flagged
    assert sorted(v["safe"] for _, v in recorder.verdicts) == [False, True]  # each check is a run of its own


async def test_a_guarded_tool_passes_the_callers_config_on(lg4):
    from langchain_core.tools import StructuredTool

    from langchain_llamaguard.tiny.data import SUM_CODE
    from langchain_llamaguard.tools import guard_code_tool

    seen: list[RunnableConfig] = []

    def python_repl(code: str, config: RunnableConfig) -> str:
        """Run Python code."""
        seen.append(config)
        return "45"

    async def apython_repl(code: str, config: RunnableConfig) -> str:
        """Run Python code."""
        return python_repl(code, config)

    repl = guard_code_tool(StructuredTool.from_function(python_repl, coroutine=apython_repl, name="python_repl"), lg4)
    config = {"tags": ["request-7"], "metadata": {"user": "u1"}, "configurable": {"sandbox": "strict"}}
    assert repl.invoke({"code": SUM_CODE}, config) == "45" and await repl.ainvoke({"code": SUM_CODE}, config) == "45"
    for got in seen:
        assert "request-7" in got["tags"] and got["metadata"]["user"] == "u1"
        assert got["configurable"]["sandbox"] == "strict"
