"""Turn what LangChain passes around into the alternating user/assistant turns Llama Guard reads.

Accepted: a plain string (one user turn), a ``PromptValue``, one ``BaseMessage``, a list of messages, a list of
``{"role": ..., "content": ...}`` dicts (the chat-template form), or one such dict (a conversation of one message).
Nothing to check (``""``, ``[]``, a prompt with no messages) is one empty user turn, judged like any other.
Anything else raises :class:`~langchain_llamaguard.errors.GuardInputError` (a ``ValueError``; a wrong type or shape
is a :class:`~langchain_llamaguard.errors.GuardTypeError`, also a ``TypeError``). A ``Document`` is not a
conversation: guard retrieved documents with a document filter (:mod:`~langchain_llamaguard.documents`).

The official Llama Guard formats know only ``user`` and ``assistant`` turns that alternate, starting with
``user``. Everything else is mapped in one documented way, never dropped:

=====================  =====================================================================
LangChain              rendered as
=====================  =====================================================================
``HumanMessage``       a user turn
``AIMessage``          an assistant turn; each tool call adds a text part
                       ``[tool call] name({"arg": ...})`` after the message's text; reasoning
                       (content blocks, ``additional_kwargs["reasoning_content"]`` /
                       ``["reasoning"]``) comes before it, an audio answer's transcript and a
                       ``refusal`` after it, a legacy ``function_call`` as a tool call
``ToolMessage``        a user turn with the text ``[tool result] name: <content>`` (tool output is
                       input to the model, not the model's own words)
``SystemMessage``      a user turn with the text ``[system] <content>``
consecutive turns      of the same role are merged into one turn, their texts joined by a newline
assistant first        an empty user turn is put before it (the format must start with ``user``)
=====================  =====================================================================

Example:
    >>> from langchain_core.messages import HumanMessage, AIMessage
    >>> turns = to_turns([HumanMessage("hi"), AIMessage("hello")])
    >>> [(t.role, t.text_parts) for t in turns]
    [('user', ['hi']), ('assistant', ['hello'])]
"""

from __future__ import annotations

import base64
import json
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue

from .content_blocks import READABLE_BLOCK_TYPES, block_text
from .errors import GuardInputError, GuardTypeError
from .provider_blocks import ENCRYPTED_BLOCK_TYPES, json_text, parsed_args, provider_call, provider_text

Role = Literal["user", "assistant"]

ConversationInput = str | PromptValue | BaseMessage | dict[str, Any] | Sequence[BaseMessage | dict[str, Any] | str]


@dataclass(frozen=True)
class ImageRef:
    """An image in a turn: where it comes from, not yet decoded.

    ``kind`` is one of ``"url"`` (an http(s), data or file URL, or a path where there is no scheme), ``"path"``,
    ``"base64"`` (with ``mime_type``) or ``"pil"`` (``value`` is a ``PIL.Image.Image``).
    """

    kind: Literal["url", "path", "base64", "pil"]
    value: Any
    mime_type: str | None = None


@dataclass
class Turn:
    """One alternating turn: its role, its images (in order) and its text parts (in order)."""

    role: Role
    text_parts: list[str] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def short(value: Any, keep: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``keep`` characters (an image payload can be megabytes)."""
    text = repr(value)
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text):,} characters)"


def _image_value(value: Any, mime: str | None = None) -> ImageRef:
    """An ``image`` key's value: a PIL image, bytes, or a string read like an ``image_url``'s (a data, http(s) or
    file URL, else a path: :func:`~langchain_llamaguard.images.load_image` tells them apart)."""
    if isinstance(value, (bytes, bytearray)):
        return ImageRef("base64", base64.b64encode(bytes(value)).decode(), mime)
    return ImageRef("url", value) if isinstance(value, str) else ImageRef("pil", value)


def _image_from_block(block: dict[str, Any]) -> ImageRef:
    btype = block.get("type")
    if btype == "image_url":  # OpenAI style: {"type": "image_url", "image_url": {"url": ...}} or str
        url = block.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str):
            raise GuardInputError(f"image_url block without a url: {short(block)}")
        return ImageRef("url", url)
    # LangChain standard image blocks (v0.3 and v1 shapes), and the chat-template shape.
    source_type = block.get("source_type")
    mime = block.get("mime_type")
    if block.get("image") is not None:
        return _image_value(block["image"], mime)
    source = block.get("source")  # Anthropic's own: {"source": {"type": "base64" | "url", ...}}
    if isinstance(source, dict) and source.get("type") == "base64" and source.get("data") is not None:
        return ImageRef("base64", source["data"], source.get("media_type"))
    if isinstance(source, dict) and source.get("type") == "url" and source.get("url") is not None:
        return ImageRef("url", source["url"])
    if block.get("url") is not None:  # before base64: a block with both, the providers send the URL
        return ImageRef("url", block["url"])
    if block.get("base64") is not None:
        b64 = block["base64"]
        return _image_value(b64, mime) if isinstance(b64, (bytes, bytearray)) else ImageRef("base64", b64, mime)
    if source_type == "base64" and block.get("data") is not None:
        return ImageRef("base64", block["data"], mime)
    if block.get("path") is not None:
        return ImageRef("path", str(block["path"]))
    if source_type == "url" and block.get("data") is not None:
        return ImageRef("url", block["data"])
    raise GuardInputError(
        f"unsupported image block {short(block)} (keys: {sorted(map(str, block))}); accepted: "
        "{'type': 'image', 'url'|'path'|'base64'|'image': ...}, {'type': 'image', 'source_type': 'base64', "
        "'data': ...}, Anthropic's {'type': 'image', 'source': {'type': 'base64'|'url', ...}} or "
        "{'type': 'image_url', 'image_url': {'url': ...}}"
    )


_TEXT_BLOCK_TYPES = {"text", "input_text", "output_text"}  # OpenAI Responses' too; a "text-plain" block (a
# document: base64, title, context) is one of READABLE_BLOCK_TYPES
_IMAGE_BLOCK_TYPES = {"image", "image_url"}


def _parse_content(content: Any, *, where: str, model: bool = False) -> tuple[list[str], list[ImageRef]]:
    """Split message content into text parts and images; anything else is an error, never dropped. ``model``: the
    content is a model's (an AI message), where a provider's own blocks are read (:func:`_provider_block`)."""
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        got = type(content).__name__
        raise GuardTypeError(f"{where}: content must be a str or a list of content blocks, got {got}")
    texts: list[str] = []
    images: list[ImageRef] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
            continue
        if not isinstance(block, dict):
            raise GuardTypeError(f"{where}: content block must be a str or dict, got {type(block).__name__}")
        btype = block.get("type")
        if btype in _TEXT_BLOCK_TYPES:
            text = block.get("text")
            if not isinstance(text, str):
                raise GuardInputError(f"{where}: text block without a 'text' string: {short(block)}")
            texts.append(text)
            texts += _cited(block)
        elif btype in _IMAGE_BLOCK_TYPES:
            images.append(_image_from_block(block))
        elif btype in {"tool_call", "tool_use", "function_call", "server_tool_call"}:
            # Tool-use blocks inside content (not also listed in ``tool_calls``): render like tool calls.
            texts.append(_render_tool_call(block.get("name", ""), _block_call_args(block)))
        elif btype in {"invalid_tool_call", "tool_call_chunk", "server_tool_call_chunk"}:
            # A call whose arguments are not (yet) valid JSON, e.g. half-way through a stream: the text as it is.
            texts.append(f"[tool call] {block.get('name') or ''}({block.get('args') or ''})")
        elif btype == "server_tool_result":
            texts.append(f"[tool result] {block.get('output', '')}")
        elif btype in {"reasoning", "thinking"}:
            texts.append(_reasoning_text(block))
        elif btype == "refusal" and isinstance(block.get("refusal"), str):  # a provider's refusal, as content
            texts.append(block["refusal"])
        elif btype in READABLE_BLOCK_TYPES:  # what tools hand back (JSON, search results, files) and documents
            texts.append(block_text(block, where=where))
        elif btype == "non_standard" and isinstance(block.get("value"), dict) and _known(block["value"]):
            more_texts, more_images = _parse_content([block["value"]], where=where, model=model)  # sent as it is
            texts += more_texts
            images += more_images
        elif model and (btype == "non_standard" or btype in ENCRYPTED_BLOCK_TYPES):  # a provider's own block
            texts += filter(None, [_provider_block(block.get("value") if btype == "non_standard" else block)])
        else:
            raise GuardInputError(
                f"{where}: unsupported content block type {btype!r}; accepted: text, image, image_url, tool_call, "
                "tool_call_chunk, invalid_tool_call, server_tool_call, server_tool_call_chunk, server_tool_result, "
                f"reasoning, refusal, non_standard, {', '.join(sorted(READABLE_BLOCK_TYPES))}; a provider's own "
                "blocks in an AI message are read where response_metadata['model_provider'] names the provider (as "
                "its LangChain package sets it)"
            )
    return texts, images


def content_text_parts(content: Any, *, where: str) -> list[str]:
    """The text parts of a message's content as a guard reads them (text blocks; documents, files and JSON by their
    text; an image has none); content a guard cannot read raises :class:`GuardInputError` naming ``where``.

    Example:
        >>> content_text_parts(["a", {"type": "json", "json": [1]}], where="row 3")
        ['a', '[1]']
    """
    return _parse_content(content, where=where)[0]


def _cited(block: dict[str, Any]) -> list[str]:
    """The passages a text block cites (Anthropic's ``citations``, LangChain's ``annotations`` of type
    ``citation``), each ``[cited] passage``: a provider sends them back with the text, and they quote what the
    model read (a web page, a document), which the guard may not have seen (Anthropic's search results come
    encrypted)."""
    found: list[str] = []
    for key in ("citations", "annotations"):
        items = block.get(key)
        for item in items if isinstance(items, list) else []:
            cited = item.get("cited_text") if isinstance(item, dict) else None
            if isinstance(cited, str) and cited.strip() and f"[cited] {cited}" not in found:
                found.append(f"[cited] {cited}")
    return found


def _known(value: dict[str, Any]) -> bool:
    """Whether a ``non_standard`` block wraps a block of a type the guard reads as such (an image, a file): it is
    read as that block (an image judged as an image, a PDF refused), never as JSON text."""
    return value.get("type") in _KNOWN_BLOCK_TYPES and value.get("type") != "non_standard"


def _provider_block(value: Any) -> str:
    """A provider block LangChain has no standard for (:mod:`~langchain_llamaguard.provider_blocks`): a call as
    a tool call, encrypted reasoning as nothing, anything else as its JSON."""
    call = provider_call(value) if isinstance(value, dict) else None
    return _render_tool_call(*call) if call else provider_text(value)


def _reasoning_text(block: dict[str, Any]) -> str:
    """All the text of a reasoning block: LangChain's ``reasoning``, Anthropic's ``thinking``, and the OpenAI
    Responses API's ``summary`` and ``content`` parts (``summary_text`` / ``reasoning_text``), in that order."""
    parts: list[Any] = [block.get("reasoning"), block.get("thinking")]
    for key in ("summary", "content"):
        items = block.get(key)
        if isinstance(items, str):
            parts.append(items)
        elif isinstance(items, list):
            parts += [item.get("text") if isinstance(item, dict) else item for item in items]
    return "\n".join(p for p in parts if isinstance(p, str) and p)


def _from_extra_fields(extra: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """What providers put in an AI message's ``additional_kwargs`` that the model said: (reasoning before the
    answer, text after it, calls). Reasoning: ``reasoning_content`` (DeepSeek, vLLM and other OpenAI-compatible
    servers) and ``reasoning`` (langchain-openai's Responses API, v0 output); text: ``audio.transcript`` (an
    audio answer) and ``refusal``; calls: the legacy OpenAI ``function_call``, and the Responses API's built-in
    tool calls with their outputs (``tool_outputs``: MCP calls, code interpreter runs, searches...), each as
    ``[tool output]`` and its JSON, since the model reads them all back on the next turn."""
    calls = [f"[tool output] {json_text(_without_image(item))}" for item in _tool_outputs(extra)]
    before: list[str] = []
    if isinstance(extra.get("reasoning_content"), str):
        before.append(extra["reasoning_content"])
    if isinstance(extra.get("reasoning"), dict):
        before.append(_reasoning_text(extra["reasoning"]))
    after: list[str] = []
    audio = extra.get("audio")
    if isinstance(audio, dict) and isinstance(audio.get("transcript"), str):
        after.append(audio["transcript"])
    if isinstance(extra.get("refusal"), str):
        after.append(extra["refusal"])
    call = extra.get("function_call")
    if isinstance(call, dict):
        args = call.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:  # arguments not (yet) valid JSON: the text as it is, like an invalid tool call
                calls.append(f"[tool call] {call.get('name') or ''}({args})")
                return before, after, calls
        calls.append(_render_tool_call(str(call.get("name") or ""), args))
    return before, after, calls


def _tool_outputs(extra: dict[str, Any]) -> list[dict[str, Any]]:
    outputs = extra.get("tool_outputs")
    return [item for item in outputs if isinstance(item, dict)] if isinstance(outputs, list) else []


def _generated_image(item: dict[str, Any]) -> str | None:
    """The base64 image an image-generation call made (the Responses API's ``image_generation_call``)."""
    result = item.get("result")
    return result if item.get("type") == "image_generation_call" and isinstance(result, str) else None


def _without_image(item: dict[str, Any]) -> dict[str, Any]:
    """A built-in tool's output with its generated image (judged as an image) out of its text."""
    return item if _generated_image(item) is None else {**item, "result": "[image]"}


def _block_call_args(block: dict[str, Any]) -> Any:
    """A call block's arguments as its provider sends them: Anthropic's ``input``, LangChain's ``args`` (or the raw
    ``extras["arguments"]`` text, which langchain-openai sends where it is kept), OpenAI's ``arguments`` text;
    JSON text parsed (text that is not JSON as it is)."""
    extras = block.get("extras") if isinstance(block.get("extras"), dict) else {}
    args = extras.get("arguments", block.get("input", block.get("args", block.get("arguments", {}))))
    if not args and isinstance(block.get("partial_json"), str):  # a streamed Anthropic tool_use: its input so far
        args = block["partial_json"] or "{}"
    return parsed_args(args)


def _render_tool_call(name: str, args: Any) -> str:
    return f"[tool call] {name}({json_text(args)})"


_CALL_BLOCK_TYPES = {"tool_call", "tool_use", "function_call", "invalid_tool_call", "tool_call_chunk"}
CALL_BLOCK_TYPES = frozenset(_CALL_BLOCK_TYPES | {"server_tool_call", "server_tool_call_chunk", "input_json_delta"})
"""Content blocks that are (part of) a tool call, in every provider's shape."""


_KNOWN_BLOCK_TYPES = (
    _TEXT_BLOCK_TYPES
    | _IMAGE_BLOCK_TYPES
    | {"tool_call", "tool_use", "function_call", "server_tool_call", "invalid_tool_call", "tool_call_chunk"}
    | {"server_tool_call_chunk", "server_tool_result", "reasoning", "thinking", "refusal", "non_standard"}
    | READABLE_BLOCK_TYPES
    | ENCRYPTED_BLOCK_TYPES
)


def _standard_content(msg: BaseMessage) -> Any:
    """An AI message's content, with a provider's own blocks (Anthropic's ``server_tool_use`` and
    ``web_search_tool_result``, Gemini's ``executable_code``...) translated to LangChain's standard ones by
    ``content_blocks``, where the message names its provider (``response_metadata["model_provider"]``, as the
    provider packages set it). Other content as it is."""
    content = msg.content
    unknown = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") not in _KNOWN_BLOCK_TYPES for b in content
    )
    if not unknown or not (msg.response_metadata or {}).get("model_provider"):
        return content
    blocks = list(msg.content_blocks)  # its tool_call blocks that tool_calls lists go in _without_listed_calls
    # The translation can lose a call the provider still sends (langchain-core 1.8 turns every Anthropic tool_use
    # into the first listed call, and drops an OpenAI function_call beside a built-in tool's call): kept as given.
    seen = {b.get("id") for b in blocks}
    lost = [
        b
        for b in content
        if isinstance(b, dict)
        and b.get("type") in _CALL_BLOCK_TYPES
        and (ids := {b.get("id"), b.get("call_id")} - {None})
        and not ids & seen
    ]
    return blocks + lost


def _without_listed_calls(msg: BaseMessage) -> Any:
    """An AI message's content minus the tool-call blocks its ``tool_calls`` / ``invalid_tool_calls`` also list.

    Streamed (v1), Anthropic-style and OpenAI Responses messages carry each call twice, as a content block
    (matched by ``id`` or ``call_id``) and in ``tool_calls``; the call is rendered once, from ``tool_calls``, so a
    streamed message and its non-streamed twin render alike. A block whose arguments differ from its listed
    call's (``tool_calls`` edited, by a person reviewing the call or a middleware, where the provider sends the
    block: OpenAI's ``function_call``, Anthropic's ``tool_use`` with a ``caller``) is rendered too.
    """
    content = _standard_content(msg)
    calls = [*(getattr(msg, "tool_calls", None) or []), *(getattr(msg, "invalid_tool_calls", None) or [])]
    listed = {c.get("id"): c for c in calls if c.get("id") is not None}
    if not isinstance(content, list) or not listed:
        return content
    whole = not isinstance(msg, AIMessageChunk)  # a chunk's arguments may be cut half-way

    def said_twice(b: Any) -> bool:
        if isinstance(b, dict) and b.get("type") == "non_standard" and isinstance(b.get("value"), dict):
            value = b["value"]  # a provider's own call (a freeform custom_tool_call) that tool_calls lists
            ids = [i for i in (value.get("call_id"), value.get("id")) if isinstance(i, str)]
            call = next((listed[i] for i in ids if i in listed), None)
            return call is not None and provider_call(value) == (call.get("name"), call.get("args"))
        if not (isinstance(b, dict) and b.get("type") in _CALL_BLOCK_TYPES):
            return False
        call = listed.get(b.get("id")) or listed.get(b.get("call_id"))
        if call is None:
            return False
        sent_as_is = b.get("type") == "function_call" or b.get("caller") or "arguments" in (b.get("extras") or {})
        return not (whole and sent_as_is) or _block_call_args(b) == call.get("args")

    return [b for b in content if not said_twice(b)]


def _message_to_turn(msg: BaseMessage, index: int) -> Turn:
    where = f"message {index} ({type(msg).__name__})"
    is_ai = isinstance(msg, AIMessage) or msg.type in {"ai", "AIMessageChunk"}
    texts, images = _parse_content(_without_listed_calls(msg) if is_ai else msg.content, where=where, model=is_ai)
    if isinstance(msg, HumanMessage) or msg.type == "human":
        return Turn("user", texts, images)
    if is_ai:
        listed = getattr(msg, "tool_calls", None) or []
        calls = [_render_tool_call(c.get("name", ""), c.get("args", {})) for c in listed]
        for call in getattr(msg, "invalid_tool_calls", None) or []:
            calls.append(f"[tool call] {call.get('name') or ''}({call.get('args') or ''})")
        extra = msg.additional_kwargs or {}
        before, after, extra_calls = _from_extra_fields(extra)
        after = [text for text in after if text not in texts]  # a refusal given as a block and a field alike
        calls += extra_calls
        images = images + [
            ImageRef("base64", image, "image/png") for item in _tool_outputs(extra) if (image := _generated_image(item))
        ]
        if calls and msg.content == "":  # no text beside the calls: "" renders like [] (a streamed message)
            texts = []
        return Turn("assistant", before + texts + after + calls, images)
    if isinstance(msg, ToolMessage) or msg.type == "tool":
        name = getattr(msg, "name", None) or ""
        body = "".join(texts)
        return Turn("user", [f"[tool result] {name}: {body}" if name else f"[tool result] {body}"], images)
    if isinstance(msg, SystemMessage) or msg.type in {"system", "developer"}:
        return Turn("user", ["[system] " + "".join(texts)], images)
    raise GuardTypeError(f"{where}: unsupported message type {msg.type!r}; accepted: human, ai, tool, system messages")


def _merge(turns: list[Turn]) -> list[Turn]:
    """Consecutive turns of one role as one: their texts joined by a newline (a turn's own parts kept when it is
    the only one with text), images in order. Linear in the turns (each text is joined once)."""
    merged: list[Turn] = []
    texts: list[list[list[str]]] = []  # per merged turn: the text parts of each of its turns that has text
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            merged[-1].images += turn.images
        else:
            merged.append(Turn(turn.role, [], list(turn.images)))
            texts.append([])
        if turn.text_parts:
            texts[-1].append(turn.text_parts)
    for turn, parts in zip(merged, texts, strict=True):
        if len(parts) == 1:
            turn.text_parts = list(parts[0])
        elif parts:
            turn.text_parts = ["\n".join("".join(p) for p in parts)]
    return merged


_ACCEPTED = (
    "accepted: str, PromptValue, BaseMessage, one {'role': ..., 'content': ...} dict, or a list of messages / "
    "such dicts"
)
_DICT_ROLES = ("user", "human", "assistant", "ai", "system", "developer", "tool")


def is_documents(value: Any) -> bool:
    """Whether ``value`` is a ``Document`` or a list holding one (retrieved content, not a conversation)."""
    if isinstance(value, Document):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, Document) for v in value)


def documents_error() -> GuardTypeError:
    """The error for documents given where a conversation is expected: what to do instead."""
    return GuardTypeError(
        "a Document is not a conversation: guards check messages and text. To guard retrieved documents, use a "
        "document filter: retriever | pg.as_document_filter() (or guard.as_document_filter(), or both with "
        "pg.as_document_filter(llama_guard=guard)), or guard_retriever(retriever, pg); it judges each document "
        "and keeps the clean ones"
    )


def _dict_role(value: dict[str, Any]) -> str | None:
    role = value.get("role", value.get("type"))
    return role if isinstance(role, str) and "content" in value else None


MESSAGE_FIELDS = frozenset(
    {"role", "type", "content", "name", "id", "tool_calls", "tool_call_id", "invalid_tool_calls", "artifact", "status"}
    | {"additional_kwargs", "response_metadata", "usage_metadata"}
    | {"refusal", "annotations", "audio", "function_call"}  # OpenAI's message dicts
)
"""The keys of a message dict (LangChain's message fields and OpenAI's); any other key is not part of the message."""


def is_message_dict(value: Any) -> bool:
    """Whether ``value`` is one chat message as a dict, ``{"role": "user", "content": ...}``, with a role the guard
    reads (``user``, ``assistant``, ``system``, ``tool``, ``human``, ``ai``, ``developer``)."""
    return isinstance(value, dict) and _dict_role(value) in _DICT_ROLES


def coerce_message(item: Any, index: int = 0) -> BaseMessage:
    """One message from a ``BaseMessage``, a ``{"role": ..., "content": ...}`` dict, a string (a user message)
    or a ``(role, content)`` pair; :class:`~langchain_llamaguard.errors.GuardTypeError` for anything else."""
    if isinstance(item, BaseMessage):
        return item
    if isinstance(item, Document):
        raise documents_error()
    if isinstance(item, dict):
        role = _dict_role(item)
        if role is None:
            raise GuardTypeError(
                f"message {index}: a dict message needs a 'role' string and a 'content', e.g. "
                f"{{'role': 'user', 'content': 'hi'}}; got keys {sorted(map(str, item))}"
            )
        if role not in _DICT_ROLES:
            raise GuardTypeError(
                f"message {index}: unknown role {role!r}; accepted: 'user', 'assistant', 'system', 'tool' "
                "(or 'human', 'ai', 'developer')"
            )
    elif not isinstance(item, (str, list, tuple)):
        raise GuardTypeError(f"message {index} is a {type(item).__name__}; {_ACCEPTED}")
    try:
        return convert_to_messages([item])[0]
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise GuardTypeError(f"message {index}: cannot read {reprlib.repr(item)}: {exc}; {_ACCEPTED}") from exc


def _coerce_messages(conversation: Any) -> list[BaseMessage]:
    if isinstance(conversation, PromptValue):
        return conversation.to_messages()
    if isinstance(conversation, BaseMessage):
        return [conversation]
    if is_documents(conversation):
        raise documents_error()
    if isinstance(conversation, dict):
        if _dict_role(conversation) is None:
            raise GuardTypeError(
                "a dict is read as one message {'role': ..., 'content': ...}; this one has keys "
                f"{sorted(map(str, conversation))}: pass the value to check (in a guard step: input_key='...')"
            )
        return [coerce_message(conversation)]
    if isinstance(conversation, (list, tuple)):
        return [coerce_message(m, i) for i, m in enumerate(conversation)]
    raise GuardTypeError(f"unsupported conversation type {type(conversation).__name__}; {_ACCEPTED}")


def _from_text(text: str, want: Role | None) -> list[Turn]:
    if want == "assistant":
        return [Turn("user", []), Turn("assistant", [text])]
    return [Turn("user", [text])]


def to_turns(conversation: ConversationInput, *, role: str | None = None) -> list[Turn]:
    """Normalize a conversation into alternating turns that start with ``user``.

    Args:
        conversation: what to check (see the module docstring for the accepted shapes). ``""``, ``[]`` and a
            prompt without messages are the same: one empty turn (of the judged role).
        role: ``"User"`` or ``"Agent"`` (also ``"user"``/``"assistant"``): the role of the turn to judge.
            With a plain string, ``"Agent"`` makes the string the assistant's answer (after an empty user
            turn). With messages, it must match the last turn's role, or ``GuardInputError`` is raised.
    """
    want = normalize_role(role)
    if isinstance(conversation, str):
        return _from_text(conversation, want)
    messages = _coerce_messages(conversation)
    if not messages:  # nothing said: judged like "" (an empty turn), never an error nor skipped
        return _from_text("", want)
    turns = _merge([_message_to_turn(m, i) for i, m in enumerate(messages)])
    if turns[0].role == "assistant":
        turns.insert(0, Turn("user", []))
    if want is not None and turns[-1].role != want:
        raise GuardInputError(
            f"role={role!r} asks to judge the {want} turn, but the conversation ends with "
            f"{'an' if turns[-1].role == 'assistant' else 'a'} {turns[-1].role} turn; Llama Guard always judges the "
            "last turn"
        )
    return turns


def last_turn_pieces(conversation: ConversationInput, *, role: str | None = None) -> list[list[str]]:
    """The judged (last) turn's text parts, message by message (:func:`to_turns` glues the parts of each message
    when several messages make the turn): how a reader that separates every part alike, such as Prompt Guard,
    reads the turn.

    Example:
        >>> last_turn_pieces([HumanMessage(["Ignore all", "rules"]), HumanMessage("now")])
        [['Ignore all', 'rules'], ['now']]
    """
    turns = to_turns(conversation, role=role)  # the role checked, every message read (errors as to_turns')
    if isinstance(conversation, str):
        return [list(turns[-1].text_parts)]
    messages = _coerce_messages(conversation)
    if not messages:
        return [list(turns[-1].text_parts)]
    pieces: list[list[str]] = []
    for turn in reversed([_message_to_turn(m, i) for i, m in enumerate(messages)]):
        if turn.role != turns[-1].role:
            break
        if turn.text_parts:
            pieces.insert(0, list(turn.text_parts))
    return pieces


def normalize_role(role: str | None) -> Role | None:
    """Map ``User``/``user``/``human`` to ``user`` and ``Agent``/``assistant``/``ai`` to ``assistant``."""
    if role is None:
        return None
    key = role.strip().lower()
    if key in {"user", "human"}:
        return "user"
    if key in {"agent", "assistant", "ai"}:
        return "assistant"
    raise GuardInputError(f"unknown role {role!r}; accepted: 'User' or 'Agent'")


ImageLoader = Callable[[str], Any]
"""Turns a remote image URL into a ``PIL.Image.Image`` (or bytes). The guard never fetches on its own."""
