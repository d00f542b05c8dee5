"""Retrieved documents guarded one by one: the document filter as an LCEL step, a document compressor and a guarded
retriever, and Prompt Guard's middleware withholding only the injected part of a tool result.

Real retrievers (``InMemoryVectorStore`` over a deterministic fake embedding), real agents, tiny real guards. Every
learned verdict relied on is in the tiny guards' check sets (``langchain_llamaguard.tiny.data``): the documents'
texts are check-set texts; anything else is asserted by parity with a direct check.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, INJECTION, UNSAFE_ANSWER, WEATHER, SentPrompts
from langchain.agents import create_agent
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.tools import InjectedToolCallId, create_retriever_tool, tool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests
from langgraph.types import Command

from langchain_llamaguard import (
    DocumentFilter,
    GuardBatchError,
    GuardConfigurationError,
    GuardInputError,
    GuardTypeError,
    PromptGuard,
    UnsafeContentError,
    UnsafeDocumentError,
    guard_retriever,
)
from langchain_llamaguard.middleware import PromptGuardMiddleware
from langchain_llamaguard.middleware.prompt_guard import PARAGRAPH
from langchain_llamaguard.tiny.data import POEM, SOURDOUGH, SPLIT_INJECTION, WEATHER_QUESTION

pytestmark = pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")

# A small knowledge base: four clean entries, one injected, one unsafe (each text's verdicts are in the check sets).
CLEAN = {"capital": BENIGN, "weather": WEATHER_QUESTION, "bread": SOURDOUGH, "poem": POEM}
DOCS = [
    *(Document(text, id=i, metadata={"source": f"{i}.md", "page": n}) for n, (i, text) in enumerate(CLEAN.items())),
    Document(INJECTION, id="injected", metadata={"source": "forum.html", "page": 7}),
    Document(BOMB, id="bomb", metadata={"source": "forum.html", "page": 8}),
]
ANSWERS = [Document(BENIGN_ANSWER, id="answer"), Document(UNSAFE_ANSWER, id="unsafe-answer")]  # for BENIGN


def vector_store(docs: list[Document]) -> InMemoryVectorStore:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(docs)
    return store


@pytest.fixture(scope="module")
def retriever() -> BaseRetriever:
    return vector_store(DOCS).as_retriever(search_kwargs={"k": len(DOCS)})


def ids(docs: list[Document]) -> set[str]:
    return {d.id for d in docs}


def scores(docs: list[Document], guard: str) -> dict[str, float]:
    return {d.id: d.metadata["guard"][guard]["score"] for d in docs}


# -- the filter as an LCEL step -----------------------------------------------------------------------------------
def test_prompt_guard_filter_keeps_the_clean_documents_with_their_scores(retriever, prompt_guard):
    docs = (retriever | prompt_guard.as_document_filter()).invoke("anything")
    assert ids(docs) == {*CLEAN, "bomb"}  # Prompt Guard looks for injected instructions, not unsafe content
    originals = {d.id: d for d in DOCS}
    for doc in docs:  # a copy: same id, text and metadata, plus the verdict as plain data
        meta = dict(doc.metadata)
        guard = meta.pop("guard")
        assert meta == originals[doc.id].metadata and doc.page_content == originals[doc.id].page_content
        assert guard == json.loads(json.dumps(guard)) and guard["flagged"] is False
        assert guard["prompt_guard"]["score"] == pytest.approx(prompt_guard.check(doc.page_content).score, abs=1e-5)
        assert guard["prompt_guard"]["label"] == "BENIGN" and "llama_guard" not in guard
    assert all("guard" not in d.metadata for d in DOCS)  # the retriever's documents are left alone


@pytest.mark.parametrize("on_flagged", ["drop", "notice", "annotate", "raise"])
def test_what_happens_to_a_flagged_document(prompt_guard, on_flagged):
    step = prompt_guard.as_document_filter(on_flagged=on_flagged)
    if on_flagged == "raise":
        with pytest.raises(UnsafeDocumentError) as caught:
            step.invoke(DOCS)
        err = caught.value
        assert isinstance(err, UnsafeContentError) and err.stage == "document" and err.verdict.label == "MALICIOUS"
        assert (err.index, err.document.id) == (4, "injected") and "document 4 (id 'injected')" in str(err)
        return
    out = step.invoke(DOCS)
    if on_flagged == "drop":
        assert [d.id for d in out] == [d.id for d in DOCS if d.id != "injected"]
        return
    assert [d.id for d in out] == [d.id for d in DOCS]  # same places, same ids
    flagged = out[4]
    assert flagged.metadata["guard"]["flagged"] and flagged.metadata["source"] == "forum.html"
    if on_flagged == "notice":
        assert INJECTION not in flagged.page_content and "likely prompt injection" in flagged.page_content
    else:
        assert flagged.page_content == INJECTION
    assert [d.page_content for d in out[:4]] == list(CLEAN.values())


def test_the_combined_filter_catches_injected_and_unsafe_documents(retriever, lg4, prompt_guard):
    step = prompt_guard.as_document_filter(llama_guard=lg4)
    assert ids((retriever | step).invoke("anything")) == set(CLEAN)
    annotated = {d.id: d for d in prompt_guard.as_document_filter(llama_guard=lg4, on_flagged="annotate").invoke(DOCS)}
    assert lg4.as_document_filter(prompt_guard=prompt_guard).invoke(DOCS) == step.invoke(DOCS)  # the same step
    injected, bomb = annotated["injected"].metadata["guard"], annotated["bomb"].metadata["guard"]
    assert injected["flagged"] and injected["prompt_guard"]["label"] == "MALICIOUS"
    assert bomb["flagged"] and bomb["llama_guard"] == {
        "safe": False,
        "categories": ["S9"],
        "score": pytest.approx(lg4.check(BOMB).score, abs=1e-5),
    }  # without a question, a document is judged as the user's turn
    assert step.get_name() == "prompt_guard+llama_guard_document_filter"


def test_llama_guard_judges_a_document_as_the_answer_to_the_question(lg4):
    """With a question, ``[User: question, Agent: document]``: the document is judged in its context."""
    step = lg4.as_document_filter(documents_key="context", on_flagged="annotate")
    chain = {"context": lambda q: ANSWERS, "question": RunnablePassthrough()} | step
    out = chain.invoke(BENIGN)
    assert out["question"] == BENIGN and [d.id for d in out["context"]] == ["answer", "unsafe-answer"]
    verdicts = [d.metadata["guard"]["llama_guard"] for d in out["context"]]
    assert [v["safe"] for v in verdicts] == [True, False] and verdicts[1]["categories"] == ["S9"]
    direct = lg4.batch_check([[HumanMessage(BENIGN), AIMessage(d.page_content)] for d in ANSWERS])
    assert [v["score"] for v in verdicts] == pytest.approx([v.score for v in direct], abs=1e-5)
    question = HumanMessage(BENIGN)  # a message works as the question too
    dropped = lg4.as_document_filter().invoke({"documents": ANSWERS, "question": question})
    assert [d.id for d in dropped["documents"]] == ["answer"]


def test_a_document_the_guard_cannot_judge_is_flagged(lg4_with):
    """Fail closed: a document too long for a guard that may not split it gets an unsafe verdict with the error."""
    guard = lg4_with(context_length=1024, on_overflow="unsafe", on_error="unsafe")
    long_doc = Document("the quick brown fox jumps over the lazy dog " * 150, id="long")
    docs = [Document(BENIGN, id="capital"), long_doc]
    assert [d.id for d in guard.as_document_filter().invoke(docs)] == ["capital"]
    annotated = guard.as_document_filter(on_flagged="annotate").invoke(docs)[1].metadata["guard"]
    assert annotated["flagged"] and "does not fit" in annotated["llama_guard"]["error"]
    notice = guard.as_document_filter(on_flagged="notice").invoke(docs)[1].page_content
    assert "could not judge" in notice


def test_bad_input_and_configuration_say_what_is_accepted(prompt_guard, lg4):
    step = prompt_guard.as_document_filter()
    for value, match in [
        (DOCS[0], "takes a list of Documents"),
        (["text"], "item 0 of the documents is a str"),
        ({"docs": DOCS}, "documents_key 'documents' is not in the input"),
        ({"documents": DOCS, "question": 3}, "must be a str or a message"),
    ]:
        with pytest.raises((GuardTypeError, KeyError), match=match):
            step.invoke(value)
    assert step.invoke([]) == [] and step.invoke({"documents": [], "x": 1}) == {"documents": [], "x": 1}
    with pytest.raises(GuardConfigurationError, match="on_flagged must be one of 'drop', 'notice'"):
        prompt_guard.as_document_filter(on_flagged="skip")  # type: ignore[arg-type]
    with pytest.raises(GuardConfigurationError, match="llama_guard must be a LlamaGuard"):
        prompt_guard.as_document_filter(llama_guard=prompt_guard)
    with pytest.raises(GuardConfigurationError, match="needs prompt_guard"):
        DocumentFilter()
    with pytest.raises(GuardTypeError, match=r"retriever \| pg\.as_document_filter\(\)"):
        lg4.as_input_guard().invoke(DOCS)  # a guard step points at the filter


# -- every LCEL mode, one model batch per guard -----------------------------------------------------------------
class GuardRuns(BaseCallbackHandler):
    def __init__(self) -> None:
        self.verdicts: list[dict] = []

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        if isinstance(outputs, dict) and "verdict" in outputs:
            self.verdicts.append(outputs["verdict"])


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "abatch", "stream", "astream", "astream_events"])
async def test_every_lcel_mode(retriever, prompt_guard, monkeypatch, mode):
    calls: list[int] = []
    original = prompt_guard._score_flat  # every forward pass of a call: the windows of all its texts
    monkeypatch.setattr(prompt_guard, "_score_flat", lambda w, *a: (calls.append(len(w)), original(w, *a))[1])
    chain = retriever | prompt_guard.as_document_filter()
    runs = GuardRuns()
    config = {"callbacks": [runs]}
    queries = ["weather", "bread"]
    if mode == "batch":
        outs = chain.batch(queries, config)
    elif mode == "abatch":
        outs = await chain.abatch(queries, config)
    else:
        outs = []
        for q in queries:
            if mode == "invoke":
                outs.append(chain.invoke(q, config))
            elif mode == "ainvoke":
                outs.append(await chain.ainvoke(q, config))
            elif mode == "stream":
                outs.append([d for chunk in chain.stream(q, config) for d in chunk])
            elif mode == "astream":
                outs.append([d async for chunk in chain.astream(q, config) for d in chunk])
            else:
                events = [e async for e in chain.astream_events(q, config, version="v2")]
                assert "prompt_guard" in {e["name"] for e in events}  # the verdicts are runs of their own
                outs.append(events[-1]["data"]["output"])
    assert [ids(o) for o in outs] == [{*CLEAN, "bomb"}] * 2
    assert calls == ([2 * len(DOCS)] if mode in ("batch", "abatch") else [len(DOCS)] * 2)  # one model batch
    assert len(runs.verdicts) == 2 * len(DOCS) and sum(not v["safe"] for v in runs.verdicts) == 2


# -- the filter as a document compressor, and a guarded retriever --------------------------------------------------
async def test_contextual_compression_retriever(retriever, lg4, prompt_guard):
    compressor = prompt_guard.as_document_filter()
    assert isinstance(compressor, BaseDocumentCompressor)
    guarded = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
    assert ids(guarded.invoke("anything")) == ids(await guarded.ainvoke("anything")) == {*CLEAN, "bomb"}
    # Llama Guard reads the query as the question: each document is judged as the answer to it
    answers = vector_store(ANSWERS).as_retriever(search_kwargs={"k": 2})
    guarded = ContextualCompressionRetriever(base_compressor=lg4.as_document_filter(), base_retriever=answers)
    assert ids(guarded.invoke(BENIGN)) == ids(await guarded.ainvoke(BENIGN)) == {"answer"}
    both = prompt_guard.as_document_filter(llama_guard=lg4, on_flagged="annotate")
    kept = both.compress_documents([*ANSWERS, DOCS[4]], BENIGN)
    for doc in kept:  # as the two guards would judge it directly
        guard = doc.metadata["guard"]
        lg = lg4.check([HumanMessage(BENIGN), AIMessage(doc.page_content)])
        assert guard["flagged"] == (prompt_guard.check(doc.page_content).unsafe or lg.unsafe)
        assert guard["llama_guard"]["score"] == pytest.approx(lg.score, abs=1e-5)
    assert [d.metadata["guard"]["flagged"] for d in kept][1:] == [True, True]


class ToolCallingFakeModel(GenericFakeChatModel):
    """LangChain's offline fake chat model, scripted with tool calls, which it also streams (one chunk each)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFakeModel:
        return self

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any):
        message = next(self.messages)
        calls = [{**c, "args": json.dumps(c["args"]), "index": i} for i, c in enumerate(message.tool_calls)]
        yield ChatGenerationChunk(message=AIMessageChunk(content=message.content, tool_call_chunks=calls))


def agent_run(tools: list, middleware: list, question: str = WEATHER_QUESTION, **kw: Any) -> list[ToolMessage]:
    """One tool call (to the first tool, with ``question`` as its query), then an answer; the tool messages."""
    name = tools[0].name
    script = [AIMessage("", tool_calls=[{"name": name, "args": {"query": question}, "id": "c1"}]), AIMessage("ok")]
    agent = create_agent(ToolCallingFakeModel(messages=iter(script)), tools, middleware=middleware)
    result = agent.invoke({"messages": [HumanMessage(question)]}, **kw)
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


def test_guard_retriever_gives_an_agent_only_the_clean_documents(retriever, prompt_guard):
    guarded = guard_retriever(retriever, prompt_guard)
    assert isinstance(guarded, BaseRetriever)
    search = create_retriever_tool(guarded, "search_docs", "Search the knowledge base.")
    (result,) = agent_run([search], [])
    assert INJECTION not in result.text and all(text in result.text for text in CLEAN.values())
    with pytest.raises(GuardConfigurationError, match="a DocumentFilter alone"):
        guard_retriever(retriever, prompt_guard.as_document_filter(), on_flagged="notice")


class _Pages(BaseRetriever):
    """A retriever that returns its documents in their order (a vector store's order is the embedding's)."""

    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return list(self.docs)


def test_middleware_withholds_only_the_injected_document_of_a_retriever_tool(prompt_guard):
    """``create_retriever_tool`` joins documents with a blank line: each one is a part, judged on its own; the parts
    kept are judged together too (clean here: ``WEATHER`` and ``POEM`` together are a benign check-set text)."""
    pages = _Pages(docs=[Document(WEATHER), Document(INJECTION), Document(POEM)])
    search = create_retriever_tool(pages, "search_docs", "Search the knowledge base.")
    (result,) = agent_run([search], [PromptGuardMiddleware(prompt_guard)])
    assert INJECTION not in result.text and "1 of 3 parts of this tool result withheld" in result.text
    assert result.text.startswith(f"{WEATHER}\n\n{POEM}")


BLOCKS = [{"type": "text", "text": WEATHER}, {"type": "text", "text": INJECTION}, {"type": "text", "text": POEM}]


@tool
def fetch(query: str) -> list:
    """Fetch pages (a result of three content blocks, one injected)."""
    return BLOCKS


def only_the_injected_block_withheld(content: Any) -> bool:
    return content[:2] == [BLOCKS[0], BLOCKS[2]] and "1 of 3 parts of this tool result withheld" in content[2]["text"]


def test_middleware_withholds_only_the_injected_content_block(prompt_guard):
    (result,) = agent_run([fetch], [PromptGuardMiddleware(prompt_guard)])
    assert only_the_injected_block_withheld(result.content)
    script = [AIMessage("", tool_calls=[{"name": "fetch", "args": {"query": "x"}, "id": "c1"}]), AIMessage("ok")]
    agent = create_agent(
        ToolCallingFakeModel(messages=iter(script)), [fetch], middleware=[PromptGuardMiddleware(prompt_guard)]
    )
    run = agent.stream_events({"messages": [HumanMessage(WEATHER_QUESTION)]}, version="v3")
    log = "\n".join(repr(event["params"]["data"]) for event in run)  # what a v3 stream consumer receives
    assert INJECTION not in log and WEATHER in log and "1 of 3 parts" in log


def test_a_partly_withheld_result_loses_its_artifact(prompt_guard):
    """An MCP-style tool keeps a structured copy of its parts in the artifact: withholding one part drops it."""

    @tool(response_format="content_and_artifact")
    def fetch_all(query: str) -> tuple[list, dict]:
        """Fetch pages, with their structured copy."""
        return BLOCKS, {"pages": [b["text"] for b in BLOCKS]}

    (result,) = agent_run([fetch_all], [PromptGuardMiddleware(prompt_guard)])
    assert only_the_injected_block_withheld(result.content) and result.artifact is None


async def test_async_middleware_withholds_only_the_injected_content_block(prompt_guard):
    script = [AIMessage("", tool_calls=[{"name": "fetch", "args": {"query": "x"}, "id": "c1"}]), AIMessage("ok")]
    agent = create_agent(
        ToolCallingFakeModel(messages=iter(script)), [fetch], middleware=[PromptGuardMiddleware(prompt_guard)]
    )
    out = await agent.ainvoke({"messages": [HumanMessage(WEATHER_QUESTION)]})
    assert only_the_injected_block_withheld(next(m for m in out["messages"] if isinstance(m, ToolMessage)).content)


def test_middleware_parts_decisions(prompt_guard):
    """Every part flagged: withheld whole; one part: judged whole as before; ``judge_parts=False``: whole (Prompt
    Guard reads a blank line as a space, so the whole of ``f"{WEATHER}\\n\\n{INJECTION}"`` is a check-set text)."""
    mw = PromptGuardMiddleware(prompt_guard)

    def judged(content: Any, middleware: PromptGuardMiddleware = mw) -> Any:
        return middleware.wrap_tool_call(None, lambda _: ToolMessage(content, tool_call_id="1", id="m1")).content

    assert judged(f"{INJECTION}\n\nSunny. {INJECTION}").startswith("[tool result withheld")
    clean = f"{WEATHER}\n\n{POEM}"
    assert judged(clean) == clean  # clean parts (and whole, a benign check-set text): unchanged
    assert judged(f"{WEATHER} {INJECTION}").startswith("[tool result withheld")
    assert judged(f"{WEATHER}\n\n{INJECTION}", PromptGuardMiddleware(prompt_guard, judge_parts=False)).startswith(
        "[tool result withheld"
    )
    with pytest.raises(UnsafeContentError):
        PromptGuardMiddleware(prompt_guard, exit_behavior="error").wrap_tool_call(
            None, lambda _: ToolMessage(f"{WEATHER}\n\n{INJECTION}", tool_call_id="1")
        )


def test_the_parts_kept_are_judged_together(prompt_guard):
    """A decoy part draws the flag while an injection split across the other parts (each harmless alone) would go
    on: the parts kept are judged together, and the result is withheld whole when they are flagged (sync and
    async). Each of ``SPLIT_INJECTION`` is a benign check-set text, and the two joined a malicious one."""
    mw = PromptGuardMiddleware(prompt_guard)

    def judged(content: str) -> tuple[str, str]:
        result = lambda _: ToolMessage(content, tool_call_id="1", id="m1")  # noqa: E731

        async def result_async(_: Any) -> ToolMessage:
            return result(_)

        return mw.wrap_tool_call(None, result).content, asyncio.run(mw.awrap_tool_call(None, result_async)).content

    for text in judged(f"{INJECTION}\n\n" + "\n\n".join(SPLIT_INJECTION)):
        assert text.startswith("[tool result withheld") and SPLIT_INJECTION[1] not in text
    for text in judged(f"{INJECTION}\n\n{WEATHER}\n\n{POEM}"):  # kept together, still clean: they go on
        assert text.startswith(f"{WEATHER}\n\n{POEM}") and "1 of 3 parts of this tool result withheld" in text


@tool
def page_a(query: str) -> str:
    """Fetch page A."""
    return query.split("|")[0]


@tool
def page_b(query: str) -> str:
    """Fetch page B."""
    return query.split("|")[1]


@tool
def page_and_note(query: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Fetch a page and leave a note."""
    page, note = query.split("|")
    return Command(update={"messages": [ToolMessage(page, tool_call_id=tool_call_id), HumanMessage(note)]})


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize("shape", ["two calls", "decoy", "command", "clean"])
def test_an_injection_split_across_the_results_of_one_round_is_judged_together(prompt_guard, shape, mode):
    """Each half of ``SPLIT_INJECTION`` is harmless alone (both benign check-set texts) and flagged joined: split
    across two tool calls of one model turn (behind a decoy part, too) or across a ``Command``'s messages, the
    model read both halves. The round's results are judged together before the model call; flagged, each is
    withheld whole. A clean round (``WEATHER`` and ``POEM``, a benign check-set text together) is left alone."""
    first, second = SPLIT_INJECTION if shape != "clean" else (WEATHER, POEM)
    if shape == "decoy":
        first = f"{first}\n\n{INJECTION}"
    calls = [{"name": "page_a", "args": {"query": f"{first}|"}, "id": "c1"},
             {"name": "page_b", "args": {"query": f"|{second}"}, "id": "c2"}]  # fmt: skip
    if shape == "command":
        calls = [{"name": "page_and_note", "args": {"query": f"{first}|{second}"}, "id": "c1"}]
    script = [AIMessage("", tool_calls=calls), AIMessage("ok")]
    tools = [page_a, page_b, page_and_note]
    agent = create_agent(
        ToolCallingFakeModel(messages=iter(script)), tools, middleware=[PromptGuardMiddleware(prompt_guard)]
    )
    sent = SentPrompts()
    request = {"messages": [HumanMessage(WEATHER_QUESTION)]}
    if mode == "invoke":
        agent.invoke(request, {"callbacks": [sent]})
    else:
        asyncio.run(agent.ainvoke(request, {"callbacks": [sent]}))
    read = [str(m.content) for m in sent.sent[-1]]
    if shape == "clean":
        assert sent.read(WEATHER) and sent.read(POEM)
    else:
        assert not sent.read(SPLIT_INJECTION[0]) and not sent.read(SPLIT_INJECTION[1]), read
        assert sum(text.startswith("[tool result withheld") for text in read) >= 1, read


def test_a_clean_result_of_hundreds_of_parts_is_judged_once(pg_path):
    """A clean tool result of more parts than the verdict cache holds was judged twice: after the tool, and again
    by the scan before the model call (its texts evicted). Results judged clean are known by their content."""
    pg = PromptGuard.from_pretrained(str(pg_path), threshold=1.0)  # flags nothing: every result is clean
    scanned: list[str] = []
    judge = pg.batch_check
    pg.batch_check = lambda texts, **kw: (scanned.extend(texts), judge(texts, **kw))[1]

    @tool
    def search(query: str) -> str:
        """Search."""
        return PARAGRAPH.join(f"{WEATHER} (station {i})" for i in range(300))

    (result,) = agent_run([search], [PromptGuardMiddleware(pg)])
    assert result.text == search.invoke({"query": "x"})  # passed on whole
    assert len(scanned) == 1 + 1 + 300 and len(set(scanned)) == len(scanned)  # the question, the whole, its parts


def test_an_unreadable_block_of_a_tool_result_is_named_by_its_call(prompt_guard):
    broken = {"type": "file", "base64": "//79", "mime_type": "text/plain"}  # bytes that are not UTF-8
    result = ToolMessage([{"type": "text", "text": WEATHER}, broken], tool_call_id="c1", name="search")
    with pytest.raises(GuardInputError, match=r"^the tool result of 'search' \(call 'c1'\): a file block"):
        PromptGuardMiddleware(prompt_guard).wrap_tool_call(None, lambda _: result)


# -- LangChain's standard retriever tests -------------------------------------------------------------------------
class _Standard(RetrieversIntegrationTests):
    """The standard tests need exact counts, so flagged documents keep their place (``on_flagged="notice"``); ``k``
    (constructor or ``invoke``) is the wrapped retriever's, passed through."""

    @pytest.fixture(autouse=True)
    def _guard(self, prompt_guard) -> None:
        self.pg = prompt_guard

    @property
    def retriever_constructor_params(self) -> dict:
        return {"k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "weather"


class TestGuardRetrieverStandard(_Standard):
    @property
    def retriever_constructor(self) -> Any:
        store = vector_store(DOCS)
        return lambda k: guard_retriever(store.as_retriever(search_kwargs={"k": k}), self.pg, on_flagged="notice")


class TestContextualCompressionStandard(_Standard):
    @property
    def retriever_constructor(self) -> Any:
        store = vector_store(DOCS)
        compressor = self.pg.as_document_filter(on_flagged="notice")
        return lambda k: ContextualCompressionRetriever(
            base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": k})
        )


@pytest.mark.parametrize("asynchronous", [False, True], ids=["batch", "abatch"])
def test_a_document_that_cannot_be_judged_fails_only_its_own_input(lg4_with, asynchronous):
    """In a batch of retrievals, one input's unjudgeable document fails that input alone (a GuardBatchError
    naming the document within it); the other inputs are filtered as they would be on their own."""
    import asyncio

    guard = lg4_with(context_length=1024, on_overflow="raise")
    step = guard.as_document_filter()
    good = [Document(BENIGN, id="capital")]
    bad = [Document(WEATHER, id="weather"), Document("the quick brown fox jumps over the lazy dog " * 150, id="long")]
    if asynchronous:
        out = asyncio.run(step.abatch([good, bad], return_exceptions=True))
    else:
        out = step.batch([good, bad], return_exceptions=True)
    assert [d.id for d in out[0]] == [d.id for d in step.invoke(good)] == ["capital"]
    assert isinstance(out[1], GuardBatchError) and list(out[1].errors) == [1]  # the long one, second in its input
    assert type(out[1].verdicts[0]).__name__ == "Verdict" and out[1].verdicts[1] is None  # a verdict per document


def test_annotating_filters_in_a_row_keep_every_guards_verdict(prompt_guard, lg4):
    """``pg_filter | lg_filter`` (or a compressor pipeline): the second filter adds its entry to the first one's
    record and ``flagged`` stays set; data of the user's own under the key is never overwritten."""
    from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline

    docs = [Document(WEATHER, id="weather", metadata={"source": "a"}), DOCS[4]]
    pg_f, lg_f = prompt_guard.as_document_filter(on_flagged="annotate"), lg4.as_document_filter(on_flagged="annotate")
    chained = (pg_f | lg_f).invoke(docs)
    piped = DocumentCompressorPipeline(transformers=[pg_f, lg_f]).compress_documents(docs, BENIGN)
    for out in (chained, piped):
        injected = out[1].metadata["guard"]
        assert injected["flagged"] is True and injected["prompt_guard"]["label"] == "MALICIOUS"
        assert set(injected) == {"flagged", "prompt_guard", "llama_guard"} and out[1].metadata["source"] == "forum.html"
        assert out[0].metadata["guard"]["prompt_guard"]["safe"] is True and "llama_guard" in out[0].metadata["guard"]
    mine = [Document(BENIGN, id="capital", metadata={"guard": "reviewed by Ann"})]
    with pytest.raises(GuardConfigurationError, match=r"metadata\['guard'\].*metadata_key="):
        lg_f.invoke(mine)
    kept = DocumentFilter(llama_guard=lg4, metadata_key="llama_guard_filter").invoke(mine)
    assert kept[0].metadata["guard"] == "reviewed by Ann" and kept[0].metadata["llama_guard_filter"]["flagged"] is False


def test_metadata_set_to_none_after_the_document_was_made_is_none_and_other_kinds_are_refused(prompt_guard):
    """pydantic does not check assignments: ``doc.metadata = None`` is read as no metadata (the copy gets a dict
    with the record), and a list is refused by name instead of failing with a bare AttributeError."""
    step = prompt_guard.as_document_filter(on_flagged="annotate")
    bare = Document(WEATHER, id="bare")
    bare.metadata = None  # type: ignore[assignment]
    out = step.invoke([bare])
    assert out[0].metadata["guard"]["prompt_guard"]["safe"] is True and set(out[0].metadata) == {"guard"}
    listed = Document(WEATHER, id="listed")
    listed.metadata = [("source", "a")]  # type: ignore[assignment]
    with pytest.raises(GuardTypeError, match=r"document 0 \(id 'listed'\) has metadata of type list.*accepted: a dict"):
        step.invoke([listed])


@pytest.mark.parametrize("asynchronous", [False, True], ids=["batch", "abatch"])
def test_a_lone_document_that_cannot_be_judged_fails_only_its_input_as_a_batch_error(lg4_with, asynchronous):
    """One document in the whole call: its error is that input's GuardBatchError, like with several documents."""
    import asyncio

    step = lg4_with(context_length=1024, on_overflow="raise").as_document_filter()
    long_doc = Document("the quick brown fox jumps over the lazy dog " * 150, id="long")
    inputs = [[], {"documents": [], "question": BENIGN}, [long_doc]]
    if asynchronous:
        out = asyncio.run(step.abatch(inputs, return_exceptions=True))
    else:
        out = step.batch(inputs, return_exceptions=True)
    assert out[0] == [] and out[1] == {"documents": [], "question": BENIGN}
    assert isinstance(out[2], GuardBatchError) and list(out[2].errors) == [0] and out[2].verdicts == [None]
    with pytest.raises(GuardBatchError) as caught:
        step.invoke([long_doc])
    assert list(caught.value.errors) == [0] and "does not fit" in str(caught.value)


@pytest.mark.parametrize(
    "notice", ["[withheld from {source}: {reason}]", '{"withheld": true, "why": "{reason}"}', "{0}", "{reason.x}"]
)
def test_a_notice_that_cannot_be_filled_in_is_refused_up_front(prompt_guard, notice):
    with pytest.raises(GuardConfigurationError, match=r"the only field is \{reason\}"):
        prompt_guard.as_document_filter(on_flagged="notice", notice=notice)
    with pytest.raises(GuardConfigurationError, match=r"\{reason\}"):
        guard_retriever(vector_store(DOCS).as_retriever(), prompt_guard, on_flagged="notice", notice=notice)
    step = prompt_guard.as_document_filter(on_flagged="notice", notice='{{"withheld": "{reason}"}}')
    assert json.loads(step.invoke(DOCS)[4].page_content)["withheld"].startswith("Prompt Guard detected")


def test_with_retry_never_judges_a_flagged_document_again(prompt_guard, monkeypatch):
    """A verdict is not a failure: ``with_retry`` raises UnsafeDocumentError after one check (as guard steps do)."""
    from langchain_llamaguard.retry import GuardRetry

    calls: list[int] = []
    original = prompt_guard._score_flat  # every forward pass of a call: the windows of all its texts
    monkeypatch.setattr(prompt_guard, "_score_flat", lambda w, *a: (calls.append(len(w)), original(w, *a))[1])
    step = prompt_guard.as_document_filter(on_flagged="raise").with_retry(
        stop_after_attempt=3, wait_exponential_jitter=False
    )
    assert isinstance(step, GuardRetry)
    with pytest.raises(UnsafeDocumentError):
        step.invoke([DOCS[4]])
    assert calls == [1]
    out = step.batch([[DOCS[0]], [DOCS[4]]], return_exceptions=True)
    assert [d.id for d in out[0]] == ["capital"] and isinstance(out[1], UnsafeDocumentError) and calls == [1, 2]


def test_a_guard_that_is_down_fails_the_call_as_it_is(tok3):
    """A server that cannot be reached is the guard's failure, not a document's: the call raises it as it is (so a
    retry on ``GuardServerError`` still sees it), for one document and several alike."""
    from langchain_llamaguard import GuardServerError, LlamaGuard
    from langchain_llamaguard.tiny.serving import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    down = LlamaGuard.from_endpoint(url, model="lg3-tiny", tokenizer=tok3, model_format="llama-guard-3-8b")
    docs = [Document(page_content=WEATHER), Document(page_content=BENIGN_ANSWER)]
    for batch in ([docs], [docs[:1]], [docs, docs[:1]]):
        with pytest.raises(GuardServerError, match="cannot reach"):
            down.as_document_filter().batch(batch)


# -- options that are a Llama Guard's, metadata_key, a document whose text is not a str ---------------------------
def test_llama_guard_options_without_a_llama_guard_are_refused(prompt_guard, lg4):
    """``excluded_categories`` / ``categories`` on a filter that runs no Llama Guard would change nothing (and the
    content check they were meant for would not run): refused, naming ``llama_guard=``; with one, they apply."""
    retriever = RunnableLambda(lambda query: DOCS)
    for make in [
        lambda: prompt_guard.as_document_filter(excluded_categories=["S9"]),
        lambda: DocumentFilter(prompt_guard=prompt_guard, categories={"S1": "Fraud."}),
        lambda: guard_retriever(retriever, prompt_guard, excluded_categories=["S99"]),
        lambda: guard_retriever(retriever, prompt_guard, categories={"S1": "Fraud."}),
        lambda: prompt_guard.as_node(excluded_categories=["S1"]),
        lambda: prompt_guard.as_input_guard(excluded_categories=["S1"]),
    ]:
        with pytest.raises(GuardConfigurationError, match=r"of Llama Guard, and this Prompt Guard .*llama_guard=guard"):
            make()
    both = prompt_guard.as_document_filter(llama_guard=lg4, excluded_categories=["S9"])
    assert both.excluded_categories == ["S9"] and both._moderators[1].excluded == ("S9",)
    assert guard_retriever(retriever, prompt_guard, llama_guard=lg4, excluded_categories=["S9"]).document_filter


def test_guard_retriever_writes_its_verdicts_under_metadata_key(prompt_guard, lg4):
    """An app's own ``metadata["guard"]`` stays: ``metadata_key=`` (the way the filter's error points to) puts the
    verdicts elsewhere; given with a ready filter, it is refused like the filter's other options."""
    mine = [Document(BENIGN, id="capital", metadata={"guard": "reviewed by Ann"})]
    retriever = RunnableLambda(lambda query: mine)
    with pytest.raises(GuardConfigurationError, match="metadata_key="):
        guard_retriever(retriever, prompt_guard).invoke(BENIGN)
    [doc] = guard_retriever(retriever, prompt_guard, metadata_key="pg_filter").invoke(BENIGN)
    assert doc.metadata["guard"] == "reviewed by Ann" and doc.metadata["pg_filter"]["prompt_guard"]["safe"] is True
    with pytest.raises(GuardConfigurationError, match="DocumentFilter alone"):
        guard_retriever(retriever, prompt_guard.as_document_filter(), metadata_key="pg_filter")
    for step in (prompt_guard.as_document_filter(metadata_key="filter"), lg4.as_document_filter(metadata_key="filter")):
        [doc] = step.invoke(mine)
        assert doc.metadata["guard"] == "reviewed by Ann" and set(doc.metadata["filter"]) >= {"flagged"}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["batch", "abatch"])
def test_a_document_whose_text_is_not_a_str_fails_only_its_own_input(lg4, prompt_guard, asynchronous):
    """A Document does not check an assignment (``doc.page_content = None``): such a document fails as a row of its
    input's GuardBatchError, saying which document, what it holds and what is accepted; the other documents of
    that input are judged, and the other inputs are filtered as they would be alone. Every filter alike."""
    import asyncio

    good = Document(WEATHER, id="good")
    broken = Document("placeholder", id="broken")
    broken.page_content = None  # type: ignore[assignment]
    inputs = [[good], [good, broken]]
    for step in (
        lg4.as_document_filter(),
        prompt_guard.as_document_filter(),
        prompt_guard.as_document_filter(llama_guard=lg4),
    ):
        if asynchronous:
            out = asyncio.run(step.abatch(inputs, return_exceptions=True))
        else:
            out = step.batch(inputs, return_exceptions=True)
        assert [d.id for d in out[0]] == [d.id for d in step.invoke([good])]
        assert isinstance(out[1], GuardBatchError) and list(out[1].errors) == [1] and out[1].verdicts[0] is not None
        error = out[1].errors[1]
        assert isinstance(error, GuardTypeError)
        assert "document 1 (id 'broken') has a page_content of type NoneType" in str(error)
        assert "accepted: a str" in str(error)
        with pytest.raises(GuardBatchError, match=r"row 0: GuardTypeError: document 0 \(id 'broken'\)"):
            step.invoke([broken])
