"""Errors a user can catch, and inputs that mean what they look like.

Every error raised for bad input or configuration is a ``LlamaGuardError`` and the builtin it always was
(``ValueError``, ``TypeError``, ``KeyError``); one ``{"role", "content"}`` dict is a conversation of one message;
``""`` and ``[]`` are the same empty turn; documents and missing folders get errors that say what to do; loading a
guard reads its tokenizer once.
"""

from __future__ import annotations

import base64
import re

import pytest
from conftest import BENIGN, BENIGN_ANSWER, BOMB, same_verdicts
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_llamaguard import (
    GuardConfigurationError,
    GuardInputError,
    GuardKeyError,
    GuardTypeError,
    LlamaGuard,
    LlamaGuardError,
    PromptGuard,
    UnsafeContentError,
    format_prompt,
)
from langchain_llamaguard.backends.loading import looks_local
from langchain_llamaguard.conversation import to_turns
from langchain_llamaguard.runnables import input_conversation, output_message

PDF_BLOCK = {"type": "file", "base64": "JVBERi0xLjQK", "mime_type": "application/pdf"}
IMAGE_TURN = [{"role": "user", "content": [{"type": "image", "url": "a.png"}, {"type": "text", "text": "x"}]}]
DOCS = [Document(page_content="Paris is the capital of France.", metadata={"source": "a"})]

BAD = [  # (what, call, package error, builtin it also is, message)
    ("a number", lambda: to_turns(42), GuardTypeError, TypeError, "unsupported conversation type int"),
    ("a bad role", lambda: to_turns([{"role": "bot", "content": "x"}]), GuardTypeError, TypeError,
     "message 0: unknown role 'bot'; accepted: 'user', 'assistant'"),
    ("a dict without a role", lambda: to_turns([HumanMessage("a"), {"text": "x"}]), GuardTypeError, TypeError,
     "message 1: a dict message needs a 'role'"),
    ("a dict that is no message", lambda: to_turns({"question": "x"}), GuardTypeError, TypeError,
     "pass the value to check"),
    ("a bad content block", lambda: to_turns([HumanMessage(content=[{"type": "audio"}])]), GuardInputError,
     ValueError, "unsupported content block type 'audio'"),
    ("a content of the wrong type", lambda: to_turns([{"role": "user", "content": 42}]), GuardTypeError, TypeError,
     "message 0"),
    ("the wrong judged role", lambda: to_turns("x", role="judge"), GuardInputError, ValueError, "unknown role"),
    ("a role the last turn is not", lambda: to_turns([HumanMessage("x")], role="Agent"), GuardInputError,
     ValueError, "always judges the last turn"),
    ("an image for Llama Guard 3", lambda: format_prompt(IMAGE_TURN, model="llama-guard-3-1b"), GuardInputError,
     ValueError, "does not read images"),
    ("an unknown category", lambda: format_prompt("x", excluded_categories=["S99"]), GuardConfigurationError,
     ValueError, "unknown category 'S99'; valid: S1..S14"),
    ("a category that is no str", lambda: format_prompt("x", excluded_categories=[9]), GuardTypeError, TypeError,
     "category key must be a str"),
    ("a bad policy", lambda: format_prompt("x", categories={"Fraud": "x"}), GuardConfigurationError, ValueError,
     "not an S-code"),
    ("an unknown format", lambda: format_prompt("x", model="llama-guard-2"), GuardConfigurationError, ValueError,
     "unknown model format"),
    ("a missing input_key", lambda: input_conversation({"q": "x"}, "question"), GuardKeyError, KeyError,
     "input_key 'question' is not in the input; keys: ['q']"),
    ("an ambiguous dict", lambda: input_conversation({"q": "x", "context": "y"}), GuardInputError, ValueError,
     "pass input_key="),
    ("a step input of the wrong type", lambda: input_conversation(3.5), GuardTypeError, TypeError,
     "cannot check a float"),
    ("a missing output_key", lambda: output_message({"answer": "x"}, "text"), GuardKeyError, ValueError,
     "output_key 'text' is not in the output"),
    ("a dict output without a key", lambda: output_message({"answer": "x"}), GuardInputError, ValueError,
     "pass output_key="),
    ("an output of the wrong type", lambda: output_message(7), GuardTypeError, TypeError, "cannot check a int"),
    ("a Document", lambda: to_turns(DOCS[0]), GuardTypeError, TypeError, "a Document is not a conversation"),
    ("a PDF a tool returned", lambda: to_turns([ToolMessage([PDF_BLOCK], tool_call_id="1")]), GuardInputError,
     ValueError, "a file block of application/pdf data the guard cannot read"),
    ("a provider's file id", lambda: to_turns([HumanMessage([{"type": "file", "file_id": "f-1"}])]),
     GuardInputError, ValueError, "a file block the guard cannot read (it has ['file_id'];"),
]  # fmt: skip


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_what_tools_hand_back_is_read_as_the_text_the_model_reads():
    """LangChain's tool-message block types and MCP's resources are judged by their text, never dropped: JSON, a
    search result, a custom tool's output, a text file given inline (base64 of a text type), a linked file."""
    blocks = [
        {"type": "json", "json": {"rows": [BOMB]}},
        {"type": "search_result", "source": "https://a.example", "title": "A", "content": [{"type": "text",
                                                                                            "text": "found it"}]},
        {"type": "custom_tool_call_output", "output": "exit 0"},
        {"type": "file", "base64": b64("name,plan\nbob,rob the bank"), "mime_type": "text/csv",
         "extras": {"filename": "plans.csv"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "the memo"}, "title": "M"},
        {"type": "file", "base64": base64.encodebytes(b"wrapped at 76 " * 9).decode(), "mime_type": "text/plain"},
        {"type": "file", "base64": base64.b64encode("utf-16 notes".encode("utf-16")).decode(),
         "mime_type": "text/plain"},
    ]  # fmt: skip
    (turn,) = [t for t in to_turns([ToolMessage(blocks, tool_call_id="1", name="t")]) if t.role == "user"]
    text = "\n".join(turn.text_parts)
    for expected in (BOMB, "[search result] A (https://a.example)\nfound it", "exit 0",
                     "[file: plans.csv]\nname,plan\nbob,rob the bank", "[document: M]\nthe memo",
                     "wrapped at 76 " * 9, "[file]\nutf-16 notes"):  # fmt: skip
        assert expected in text, expected
    with pytest.raises(GuardInputError, match="whose base64 is not text"):
        to_turns([ToolMessage([{"type": "file", "base64": "//79", "mime_type": "text/plain"}], tool_call_id="1")])
    # what the provider fetches or reads for the model, the guard cannot: refused, never passed on unjudged
    link = {"type": "file", "url": "https://files.example/instructions.pdf", "mime_type": "application/pdf"}
    with pytest.raises(GuardInputError, match="a linked or uploaded file is read by the provider"):
        to_turns([ToolMessage([link], tool_call_id="1")])
    nested = {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "image", "url": "a.png"}]}
    with pytest.raises(GuardInputError, match="the guard reads only text there"):
        to_turns([ToolMessage([nested], tool_call_id="1")])


def test_a_text_plain_document_is_read_as_the_model_reads_it(lg3_1b):
    """LangChain's ``text-plain`` block (``create_plaintext_block``): its base64 is decoded, its title and context
    (which a provider passes to the model) are read with its text, and one given by URL only is refused."""
    from langchain_core.messages.content import create_plaintext_block

    def parts(block: dict) -> list[str]:
        return to_turns([HumanMessage([block])])[0].text_parts

    encoded = create_plaintext_block(base64=b64(BOMB), mime_type="text/plain")
    assert parts(encoded) == parts({"type": "text-plain", "base64": b64(BOMB)}) == [BOMB]  # text/plain by its type
    assert parts({"type": "text-plain", "text": BOMB}) == [BOMB]
    assert parts({"type": "text-plain", "text": "the memo", "title": "memo.txt", "context": BOMB}) == [
        f"[text-plain: memo.txt] ({BOMB})\nthe memo"
    ]
    assert parts({"type": "file", "text": "the memo", "context": BOMB}) == [f"[file] ({BOMB})\nthe memo"]
    with pytest.raises(GuardInputError, match="a text-plain block the guard cannot read"):
        to_turns([HumanMessage([create_plaintext_block(url="https://a.example/notes.txt")])])
    assert same_verdicts([lg3_1b.check([HumanMessage([encoded])])], [lg3_1b.check(BOMB)])


def test_a_gemini_media_block_of_text_is_read_by_both_guards():
    """langchain-google-genai's ``{"type": "media", "mime_type": "text/plain", "data": ...}`` reaches Gemini as the
    file's bytes: Llama Guard refused it as an unknown block, and Prompt Guard's middleware scanned the JSON of its
    base64, so an injection in it went unseen. Both read its text now; a ``file_uri`` or an image is not text."""
    from langchain_llamaguard.middleware.prompt_guard import _block_text

    def parts(block: dict) -> list[str]:
        return to_turns([HumanMessage([block])])[0].text_parts

    as_base64 = {"type": "media", "mime_type": "text/plain", "data": b64(BOMB)}
    as_bytes = {"type": "media", "mime_type": "text/plain", "data": BOMB.encode()}
    assert parts(as_base64) == parts(as_bytes) == [f"[media]\n{BOMB}"]
    assert _block_text(as_base64) == _block_text(as_bytes) == f"[media]\n{BOMB}"
    with pytest.raises(GuardInputError, match="a media block the guard cannot read .*read by the provider"):
        parts({**as_base64, "file_uri": "gs://bucket/a.txt"})
    image = {"type": "media", "mime_type": "image/png", "data": b64("not really a png")}
    with pytest.raises(GuardInputError, match="a media block of image/png data the guard cannot read"):
        parts(image)
    assert _block_text(image) == ""  # no text for Prompt Guard, as with any image


@pytest.mark.parametrize("what, call, error, builtin, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_package_error_and_its_builtin(what, call, error, builtin, message):
    with pytest.raises(error, match=re.escape(message)) as caught:
        call()
    assert isinstance(caught.value, LlamaGuardError) and isinstance(caught.value, builtin), what


def test_per_call_and_per_step_categories_are_configuration_errors(lg3_1b):
    with pytest.raises(GuardConfigurationError, match="unknown category 'Fraud'") as caught:
        lg3_1b.check(BENIGN, excluded_categories=["Fraud"])
    assert isinstance(caught.value, ValueError)
    with pytest.raises(GuardConfigurationError, match="unknown category 'S99'"):  # the call's error, not each row's
        lg3_1b.batch_check([BENIGN, BOMB], excluded_categories=["S99"])
    with pytest.raises(GuardInputError, match="unknown role 'judge'"):
        lg3_1b.batch_check([BENIGN, BOMB], role="judge")
    listed = lg3_1b.batch_check([BOMB, BOMB], excluded_categories=["S9"])
    once = lg3_1b.batch_check([BOMB, BOMB], excluded_categories=iter(["S9"]))  # read once, not used up
    assert same_verdicts(once, listed)
    with pytest.raises(GuardConfigurationError, match="unknown category 'nope'"):
        lg3_1b.as_input_guard(excluded_categories=["nope"])
    with pytest.raises(GuardConfigurationError, match="not an S-code"):
        lg3_1b.as_output_guard(categories={"fraud": "Fraud."})


def test_one_message_dict_is_a_conversation_of_one_message(lg3_1b):
    message = {"role": "user", "content": BOMB}
    assert to_turns(message)[0].text_parts == [BOMB]
    assert format_prompt(message) == format_prompt([message]) == format_prompt(BOMB)
    assert same_verdicts([lg3_1b.check(message)], [lg3_1b.check(BOMB)])  # scores: a repeat reuses the stored prefix
    as_message = lg3_1b.batch_check([message, {"role": "user", "content": BENIGN}])
    assert same_verdicts(as_message, lg3_1b.batch_check([BOMB, BENIGN]))
    step = lg3_1b.as_input_guard()
    safe = {"role": "user", "content": BENIGN}
    assert step.invoke(safe) is safe  # checked, and passed through unchanged
    with pytest.raises(UnsafeContentError):
        step.invoke(message)
    answer = {"role": "assistant", "content": BENIGN_ANSWER}
    assert output_message(answer) == AIMessage(BENIGN_ANSWER)
    if lg3_1b.check([AIMessage(BENIGN_ANSWER)]).safe:  # the same verdict as the message it stands for
        assert lg3_1b.as_output_guard().invoke(answer) is answer
    else:
        with pytest.raises(UnsafeContentError):
            lg3_1b.as_output_guard().invoke(answer)


def test_empty_string_and_empty_list_are_the_same_check(lg3_1b):
    assert to_turns("") == to_turns([]) == to_turns(())
    assert same_verdicts([lg3_1b.check("")], [lg3_1b.check([])])
    assert same_verdicts([lg3_1b.check("", role="Agent")], [lg3_1b.check([], role="Agent")])
    judged = lg3_1b.as_input_guard(on_unsafe="flagged").invoke([])  # judged like "", not refused
    assert judged == ([] if lg3_1b.check("").safe else "flagged")


def test_documents_are_refused_with_what_to_do(lg4):
    hint = r"not a conversation.*retriever \| pg\.as_document_filter\(\).*guard_retriever\(retriever, pg\)"
    for value in (DOCS[0], DOCS, tuple(DOCS), {"context": DOCS}, [HumanMessage("hi"), DOCS[0]]):
        with pytest.raises(GuardTypeError, match=hint) as caught:
            lg4.as_input_guard().invoke(value)
        assert isinstance(caught.value, TypeError)
        with pytest.raises(GuardTypeError, match=hint):
            lg4.as_output_guard().invoke(value if not isinstance(value, dict) else {"output": DOCS[0]})
    with pytest.raises(GuardTypeError, match=hint):
        lg4.check(DOCS)
    # what the message says to do works: the document is judged, and comes out with its verdict
    (kept,) = lg4.as_document_filter(on_flagged="annotate").invoke(DOCS)
    alone = lg4.check(DOCS[0].page_content).score
    assert kept.metadata["guard"]["llama_guard"]["score"] == pytest.approx(alone, abs=1e-4)


@pytest.mark.parametrize("path", ["./no/such/dir", "../no-such-guard", "~/no-such-guard-folder", "no/such/guard/dir"])
def test_a_missing_local_folder_is_named(path):
    for load in (LlamaGuard.from_pretrained, PromptGuard.from_pretrained):
        with pytest.raises(GuardConfigurationError, match=f"no such folder: '{path}'"):
            load(path)


def test_a_file_is_not_a_checkpoint_folder(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(GuardConfigurationError, match="is a file, not a checkpoint folder"):
        LlamaGuard.from_pretrained(str(file))


def test_what_looks_like_a_local_path():
    local = ["./m", "../m", "/m", "~/m", ".", "a/b/c", "C:\\models\\lg", "models\\lg", "my model"]
    hub = ["meta-llama/Llama-Guard-4-12B", "meta-llama/Llama-Prompt-Guard-2-22M", "gpt2", "org/name.v1_2-x"]
    assert [looks_local(p) for p in local] == [True] * len(local)
    assert [looks_local(p) for p in hub] == [False] * len(hub)


def test_loading_reads_the_tokenizer_once(lg4, lg4_path, monkeypatch):
    """Llama Guard 4's tokenizer.json is about 28 MB: the processor's tokenizer is the only one loaded."""
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained
    calls: list[str] = []

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", staticmethod(counting))
    guard = LlamaGuard.from_pretrained(str(lg4_path))
    assert calls == [str(lg4_path)]
    assert guard.tokenizer is guard.backend.processor.tokenizer
    assert guard.encode(BOMB)[0].input_ids == lg4.encode(BOMB)[0].input_ids


def test_prompt_guard_input_errors(prompt_guard):
    for call, message in ((lambda: prompt_guard.check(42), "scores str, got int"),
                          (lambda: prompt_guard.batch_check("x"), "pass a list of texts")):  # fmt: skip
        with pytest.raises(GuardTypeError, match=message) as caught:
            call()
        assert isinstance(caught.value, TypeError)


def test_settings_the_loader_took_silently_are_checked_up_front(lg3_1b_path):
    """An image bound no image can meet is refused when set (not at every check); a ``quantization_config`` of the
    user's own is reported by ``backend.quantization`` as the package's shortcut is."""
    from transformers import BitsAndBytesConfig

    with pytest.raises(GuardConfigurationError, match=r"max_images must be a whole number >= 0"):
        LlamaGuard.from_pretrained(str(lg3_1b_path), max_images=-1)
    with pytest.raises(GuardConfigurationError, match="not both"):
        LlamaGuard.from_pretrained(str(lg3_1b_path), dtype="float32", torch_dtype="bfloat16")
    int8 = LlamaGuard.from_pretrained(str(lg3_1b_path), quantization_config=BitsAndBytesConfig(load_in_8bit=True))
    assert int8.backend.quantization == "bitsandbytes LLM.int8() (quantization_config)"


@pytest.mark.parametrize("guard", [LlamaGuard, PromptGuard])
def test_a_checkpoint_that_cannot_be_fetched_is_a_load_error_that_says_what_to_do(guard):
    """No network (here: ``local_files_only``, which fails at once where the hub would retry): a
    ``GuardLoadError``, still the ``OSError`` transformers raised, naming the checkpoint and the way out."""
    from langchain_llamaguard import GuardLoadError

    with pytest.raises(GuardLoadError, match=r"cannot load 'meta-llama/Not-A-Guard': .*HF_HUB_OFFLINE=1") as caught:
        guard.from_pretrained("meta-llama/Not-A-Guard", local_files_only=True)
    assert isinstance(caught.value, OSError) and isinstance(caught.value, LlamaGuardError)


def test_a_step_batch_that_raises_names_the_row_that_failed(lg4):
    """LangChain's ``batch`` raises the first failed row's error as it is; that error names only what is wrong
    inside the row ("message 0 ..."), so a note says which row of the batch it was (sync and async)."""
    import asyncio

    from langchain_core.messages import ChatMessage

    step = lg4.as_input_guard()
    rows = [BENIGN, [ChatMessage(content="x", role="narrator")], BENIGN]
    for run in (step.batch, lambda r: asyncio.run(step.abatch(r))):
        with pytest.raises(GuardTypeError, match="unsupported message type") as caught:
            run(rows)
        assert caught.value.__notes__ == ["(row 1 of a batch of 3; pass return_exceptions=True for every row's)"]
    out = step.batch(rows, return_exceptions=True)
    assert isinstance(out[1], GuardTypeError) and out[0] == BENIGN and out[2] == BENIGN
