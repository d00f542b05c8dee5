"""Shared fixtures: real tokenizers and tiny real-architecture guards, built once and cached on disk.

The cache lives in ``LLAMAGUARD_CACHE`` (the Makefile points it at ``.cache/`` in the repository), so a fresh
clone builds and trains the tiny guards once and later runs reuse them. ``LLAMAGUARD_TINY_SEED`` picks the
training seed (each seed has its own cache).

On a fresh cache, training starts at once in two background processes (one thread each) while the tests that
need no trained guard run first; a test that needs a guard waits for it (a file lock), and tests are ordered by
when their guards are ready. Every learned verdict a test relies on is in the check set of
``langchain_llamaguard.tiny.data``, which each guard is checked against, with a margin, before it is cached.

The remote-backend tests need a real vLLM server (``.venv-vllm``) on the tiny Llama Guard 3 8B: the controller
starts one as soon as that guard is trained (a thread), every worker uses it, and it stops with the session.
A server that does not start fails those tests; it never skips them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel

os.environ.setdefault("LLAMAGUARD_CACHE", str(Path(__file__).resolve().parent.parent / ".cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Two xdist workers share the 2-core machine: torch's default of one thread per core in each worker (and in the
# scripts tests run) oversubscribes it, and OpenMP's spin-waits then cost about a third of the suite's time.
# Set before torch loads, here in the controller, so the workers and their subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from langchain_llamaguard.tiny import data  # noqa: E402

# The names tests rely on; each learned verdict on them is in the tiny guards' check set.
BOMB, POISON, INJECTION, WEATHER = data.BOMB, data.POISON, data.INJECTION, data.WEATHER
BENIGN, BENIGN_ANSWER, UNSAFE_ANSWER = data.BENIGN_QUESTION, data.BENIGN_ANSWER, data.UNSAFE_ANSWER
CODE_ABUSE, ASK_CODE, EVIL_CODE = data.CODE_ABUSE_REQUEST, data.ASK_CODE, data.EVIL_CODE

SPEC = Path(__file__).resolve().parent / "data"  # the spec's reference renders, copied into the repository

# Which tiny guards each fixture needs, and the order the background trainers finish them in.
_GUARDS_OF = {
    "prompt_guard": "prompt-guard-2",
    "pg_path": "prompt-guard-2",
    "lg4": "llama-guard-4",
    "lg4_path": "llama-guard-4",
    "lg4_with": "llama-guard-4",
    "lg3_8b": "llama-guard-3-8b",
    "lg3_8b_path": "llama-guard-3-8b",
    "lg3_1b": "llama-guard-3-1b",
    "lg3_1b_path": "llama-guard-3-1b",
    "vllm_server": "vllm",
    "remote_lg3": "vllm",
}
_TRAINERS = (("llama-guard-4", "llama-guard-3-1b"), ("prompt-guard-2", "llama-guard-3-8b"))
_READY_RANK = {"prompt-guard-2": 1, "llama-guard-4": 2, "llama-guard-3-8b": 3, "llama-guard-3-1b": 3, "vllm": 4}
_background: list[subprocess.Popen] = []
VLLM_MODEL = "llama-guard-3-8b"  # served by the test vLLM server (head_dim 64, which vLLM's CPU attention takes)
VLLM_NAME = "lg3-tiny"


def _vllm_state() -> Path:
    """Where this session's server is described: a file of this session's own (its controller sets the variable
    for its xdist workers), so two sessions at once never stop or read each other's server."""
    from langchain_llamaguard.tiny.tokenizers import cache_dir

    given = os.environ.get("LLAMAGUARD_VLLM_STATE")
    return Path(given) if given else cache_dir() / f"vllm-server-{os.getpid()}.json"


def _own_vllm_state() -> None:
    """The controller's own state file (never one inherited from an outer session), for it and its workers."""
    os.environ.pop("LLAMAGUARD_VLLM_STATE", None)
    os.environ["LLAMAGUARD_VLLM_STATE"] = str(_vllm_state())


def _wants_vllm(session: pytest.Session) -> bool:
    """Whether this run may need the server: the whole suite, a folder, or the remote tests."""
    if os.environ.get("LLAMAGUARD_VLLM", "1") == "0":
        return False
    args = [a.split("::")[0] for a in session.config.args]
    return not args or any(Path(a).is_dir() or "remote" in a for a in args)


_server_lock = threading.Lock()
_session_over = False
"""Set when the session finishes: a server that starts after that is stopped at once, never left running."""


def _serve_in_background() -> None:
    from langchain_llamaguard.tiny.serving import VllmServer
    from langchain_llamaguard.tiny.training import trained_llama_guard

    try:
        path = trained_llama_guard(VLLM_MODEL)  # waits for the background trainer (a file lock)
        if _session_over:
            return
        # One thread: the tiny model needs no more, and the other core stays with the tests (timing tests too).
        server = VllmServer.start(path, name=VLLM_NAME, threads=1)
        with _server_lock:
            if _session_over:  # a short session ended while the server was being spawned: no orphan
                server.stop()
            else:
                server.save(_vllm_state())
    except BaseException as exc:  # reported by the fixture, in whichever process needs the server
        _vllm_state().write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))


def _missing_guards() -> list[str]:
    from langchain_llamaguard.tiny.training import TINY_GUARDS, trained_path

    return [g for g in TINY_GUARDS if not (trained_path(g) / "training.json").exists()]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start training what the cache lacks, and the vLLM server, in the background, before any test runs."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest-xdist: the controller starts them once
        return
    _own_vllm_state()  # inherited by the xdist workers, started after this hook
    _vllm_state().unlink(missing_ok=True)
    if _wants_vllm(session):
        threading.Thread(target=_serve_in_background, name="vllm-server", daemon=True).start()
    else:  # a remote test that runs anyway fails at once, with the reason
        off = os.environ.get("LLAMAGUARD_VLLM") == "0"
        why = "LLAMAGUARD_VLLM=0 is set" if off else "this run's paths name no remote tests"
        _vllm_state().write_text(json.dumps({"error": f"not started: {why}"}))
    missing = set(_missing_guards())
    if not missing or os.environ.get("LLAMAGUARD_TRAIN_IN_BACKGROUND", "1") == "0":
        return
    from langchain_llamaguard.tiny.tokenizers import cache_dir
    from langchain_llamaguard.tiny.training import tiny_seed

    for names in _TRAINERS:
        todo = [n for n in names if n in missing]
        if todo:
            log = open(cache_dir() / f"training-{todo[0]}-seed{tiny_seed()}.log", "w")  # noqa: SIM115
            cmd = [sys.executable, "-m", "langchain_llamaguard.tiny.training", *todo]
            _background.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _session_over
    with _server_lock:
        _session_over = True
    if not os.environ.get("PYTEST_XDIST_WORKER") and _vllm_state().exists():
        from langchain_llamaguard.tiny.serving import VllmServer

        try:
            VllmServer.load(_vllm_state()).stop()
        except TypeError:  # the state records a start error, not a server
            pass
        _vllm_state().unlink(missing_ok=True)
    for proc in _background:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Tests that need no trained guard first, then by when the guards they need are ready (stable)."""

    def rank(item: pytest.Item) -> int:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)  # fixtures named by a parameter (request.getfixturevalue)
        names |= {v for v in (callspec.params.values() if callspec else ()) if isinstance(v, str)}
        return max((_READY_RANK[_GUARDS_OF[n]] for n in names if n in _GUARDS_OF), default=0)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    if not (SPEC / "reference-prompts.json").exists():
        pytest.fail(f"the reference renders are missing at {SPEC}")
    return SPEC


@pytest.fixture(scope="session")
def lg4_path() -> Path:
    from langchain_llamaguard.tiny.training import trained_llama_guard

    return trained_llama_guard("llama-guard-4")


@pytest.fixture(scope="session")
def lg3_8b_path() -> Path:
    from langchain_llamaguard.tiny.training import trained_llama_guard

    return trained_llama_guard("llama-guard-3-8b")


@pytest.fixture(scope="session")
def lg3_1b_path() -> Path:
    from langchain_llamaguard.tiny.training import trained_llama_guard

    return trained_llama_guard("llama-guard-3-1b")


@pytest.fixture(scope="session")
def pg_path() -> Path:
    from langchain_llamaguard.tiny.training import trained_prompt_guard

    return trained_prompt_guard()


@pytest.fixture(scope="session")
def lg4(lg4_path):
    from langchain_llamaguard import LlamaGuard

    return LlamaGuard.from_pretrained(str(lg4_path))


@pytest.fixture(scope="session")
def lg4_with(lg4):
    """Another Llama Guard 4 with other settings over the same loaded tiny model (loading is the slow part)."""
    from langchain_llamaguard import LlamaGuard

    return lambda **settings: LlamaGuard.from_model(lg4.backend.model, lg4.backend.processor, **settings)


@pytest.fixture(scope="session")
def lg3_8b(lg3_8b_path):
    from langchain_llamaguard import LlamaGuard

    return LlamaGuard.from_pretrained(str(lg3_8b_path))


@pytest.fixture(scope="session")
def lg3_1b(lg3_1b_path):
    from langchain_llamaguard import LlamaGuard

    return LlamaGuard.from_pretrained(str(lg3_1b_path))


@pytest.fixture(scope="session")
def prompt_guard(pg_path):
    from langchain_llamaguard import PromptGuard

    return PromptGuard.from_pretrained(str(pg_path))


@pytest.fixture(scope="session")
def vllm_server():
    """The session's vLLM server (started by the controller), ready to answer."""
    from langchain_llamaguard.tiny.serving import VllmServer

    state = _vllm_state()
    deadline = time.monotonic() + 600
    while not state.exists():
        if time.monotonic() > deadline:
            pytest.fail("the vLLM server was never started (is LLAMAGUARD_VLLM=0 set?)")
        time.sleep(0.5)
    got = json.loads(state.read_text())
    if "error" in got:
        pytest.fail(f"the vLLM server could not start: {got['error']}")
    server = VllmServer(**got)
    try:
        server.wait_ready()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return server


@pytest.fixture(scope="session")
def remote_lg3(vllm_server, lg3_8b_path):
    """The tiny Llama Guard 3 8B served by vLLM, as ``LlamaGuard.from_endpoint`` builds it."""
    from langchain_llamaguard import LlamaGuard

    return LlamaGuard.from_endpoint(vllm_server.url, model=vllm_server.name, tokenizer=str(lg3_8b_path))


@pytest.fixture(scope="session")
def tok4():
    from langchain_llamaguard.tiny.tokenizers import llama4_tokenizer

    return llama4_tokenizer()


@pytest.fixture(scope="session")
def tok3():
    from langchain_llamaguard.tiny.tokenizers import llama3_tokenizer

    return llama3_tokenizer()


async def loop_ticks_during(awaitable):
    """Await ``awaitable`` while a 2 ms ticker runs on the same event loop; return (result, ticks, seconds).

    Many ticks mean the loop stayed free while the guard's model worked (the work ran in threads)."""
    import asyncio
    import time

    ticks: list[float] = []

    async def ticker():
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.002)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.perf_counter()
    result = await awaitable
    elapsed = time.perf_counter() - start
    task.cancel()
    return result, len([t for t in ticks if t > start]), elapsed


def same_verdicts(a, b) -> bool:
    """Verdicts that agree in everything but floating-point noise: safe, categories, raw answer, and scores
    within 1e-4 (a check that reuses a stored prefix differs from a whole-prompt one in the last digits)."""
    assert [(v.safe, v.categories, v.raw) for v in a] == [(v.safe, v.categories, v.raw) for v in b]
    assert [v.score for v in a] == pytest.approx([v.score for v in b], abs=1e-4)
    return True


def make_tools(search_result: str | None = None):
    """A REPL and a web search that record every call; the search returns ``search_result``, or the weather
    (with an injected instruction when the query says "inject")."""
    from langchain_core.tools import tool

    counts: dict[str, list[str]] = {"python_repl": [], "web_search": []}

    @tool
    def python_repl(code: str) -> str:
        """Run Python code in a sandbox and return what it prints."""
        counts["python_repl"].append(code)
        return "45"

    @tool
    def web_search(query: str) -> str:
        """Search the web."""
        counts["web_search"].append(query)
        if search_result is not None:
            return search_result
        return WEATHER + " " + (INJECTION if "inject" in query else "")

    return counts, python_repl, web_search


def answering_chat_model(answers: dict[str, str]):
    """A real LangChain chat model that answers the last human turn from ``answers`` (other text is echoed) and
    streams its answer word by word."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    class AnsweringChatModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "answering-test-model"

        def _answer(self, messages: list) -> str:
            text = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), messages[-1]).text
            return answers.get(text, text)

        def _generate(self, messages: list, stop=None, run_manager=None, **kwargs):
            return ChatResult(generations=[ChatGeneration(message=AIMessage(self._answer(messages)))])

        def _stream(self, messages: list, stop=None, run_manager=None, **kwargs):
            words = self._answer(messages).split(" ")
            for i, word in enumerate(words):
                yield ChatGenerationChunk(message=AIMessageChunk(word if i == len(words) - 1 else word + " "))

    return AnsweringChatModel()


class ScriptedToolModel(GenericFakeChatModel):
    """LangChain's offline chat model, scripted with tool calls: ``bind_tools`` keeps the script."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedToolModel:
        return self


class SentPrompts(BaseCallbackHandler):
    """Every message list a chat model was sent (to assert what the model read)."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.sent.append(messages[0])

    def read(self, text: str) -> bool:
        return any(text in str(m.content) for prompt in self.sent for m in prompt)
