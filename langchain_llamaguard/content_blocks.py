"""What a guard reads of the content blocks besides text and images: what tools hand back, and documents.

LangChain's tool messages carry these block types (``langchain_core.tools.base.TOOL_MESSAGE_BLOCK_TYPES``), MCP
tools make ``file`` blocks of their resources, and a message can carry a document as a ``text-plain`` block
(``create_plaintext_block``). Each is read as the text the model would read:

=============================  ==================================================================================
block                          read as
=============================  ==================================================================================
``json``                       its JSON
``search_result``              ``[search result] title (source)`` and its content's text
``custom_tool_call_output``    its output (a text, or its JSON)
``document`` / ``file``        ``[file: name]`` and its text: inline text, or base64 of a text type (``text/*``,
                               JSON, XML, YAML, CSV) decoded as UTF-8 (or UTF-16 with its byte-order mark), both
                               when a block has both and they differ (providers send the base64); its ``context``
                               (which some providers pass to the model) after the name; OpenAI's ``{"file":
                               {"file_data": "data:...;base64,...", "filename": ...}}`` too
``input_file``                 the same (OpenAI Responses' shape)
``media``                      the same (langchain-google-genai's: ``mime_type`` and ``data``, base64 or bytes;
                               a ``file_uri`` is a reference)
``text-plain``                 the same, its ``title`` as the name; a block with neither title nor context is read
                               as its text alone
=============================  ==================================================================================

A file the guard cannot read (a PDF or other binary data, a provider's file id, a file given by ``url``, which a
provider fetches for the model, even beside a text it would not send) and an image or file nested in a search
result, a document or a custom tool's output raise :class:`~langchain_llamaguard.errors.GuardInputError`: nothing
is passed on unjudged.

Example:
    >>> block_text({"type": "json", "json": {"rows": 2}}, where="tool result")
    '{"rows": 2}'
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from dataclasses import dataclass
from typing import Any

from .errors import GuardInputError

_FILE_BLOCK_TYPES = ("document", "file", "text-plain", "input_file", "media")
READABLE_BLOCK_TYPES = frozenset({"json", "search_result", "custom_tool_call_output", *_FILE_BLOCK_TYPES})
_TEXT_MIME_TYPES = ("text/", "application/json", "application/xml", "application/yaml", "application/x-yaml")
_TEXT_MIME_SUFFIXES = ("+json", "+xml", "/csv", "/x-ndjson")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _readable_mime(mime: str) -> bool:
    mime = mime.split(";")[0].strip().lower()
    return mime.startswith(_TEXT_MIME_TYPES) or mime.endswith(_TEXT_MIME_SUFFIXES)


def _inner_texts(content: Any, where: str) -> str:
    """The text of a nested content list (a search result's, a document's, a custom tool's output): text only; any
    other nested block (an image, a file) is an error, never dropped."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        return _as_text(content)
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in (None, "text") and isinstance(block.get("text"), str):
            parts.append(block["text"])
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise GuardInputError(
                f"{where}: a {kind!r} block inside a search result, document or tool output; the guard reads only "
                "text there: give the image or file as a block of its own"
            )
    return "\n".join(parts)


def _decoded(encoded: Any, mime: str, btype: str, where: str) -> str:
    """Base64 of a text type as text: UTF-8, or UTF-16 with its byte-order mark; line breaks in the base64 are
    ignored (MIME wraps it at 76 characters)."""
    try:
        data = base64.b64decode("".join(str(encoded).split()), validate=True)
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except (binascii.Error, ValueError) as exc:
        raise GuardInputError(f"{where}: a {btype} block of {mime} whose base64 is not text ({exc})") from None


@dataclass
class _File:
    """What a document or file block holds, in every shape: LangChain's (v0 ``source_type`` / ``data``; v1
    ``text``, ``base64``, ``url``, ``file_id``, with ``title`` / ``context`` at the top or in ``extras``),
    Anthropic's ``document`` (``source``), OpenAI's (``{"file": {"file_data", "filename", "file_id"}}``,
    ``input_file``)."""

    name: Any
    context: str | None
    mime: str
    text: str | None
    content: Any
    """A ``source`` of ``type: content`` (Anthropic): blocks whose text is the document's."""
    encoded: Any
    references: list[str]
    """What a provider fetches or looks up for the model, which the guard cannot read: ``url``, ``file_id``."""


def data_url(value: Any) -> tuple[str, str] | None:
    """``(mime, base64)`` of a ``data:...;base64,...`` URL (its scheme in any case); ``None`` for anything else.

    Example:
        >>> data_url("data:text/plain;base64,aGk=")
        ('text/plain', 'aGk=')
    """
    if not isinstance(value, str) or value[:5].lower() != "data:":
        return None
    header, comma, data = value[5:].partition(",")
    return (header.split(";")[0], data) if comma and ";base64" in header.lower() else None


def _file(block: dict[str, Any]) -> _File:
    def part(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    source, nested, extras, metadata = (part(block.get(k)) for k in ("source", "file", "extras", "metadata"))
    kind = block.get("source_type") or source.get("type")
    text = block.get("text") if isinstance(block.get("text"), str) else None
    if text is None and kind == "text":
        text = block.get("data") if isinstance(block.get("data"), str) else source.get("data")
    encoded = block.get("base64")
    if encoded is None and kind == "base64":
        encoded = block.get("data", source.get("data"))
    mime = block.get("mime_type") or block.get("media_type") or source.get("media_type")
    if encoded is None and block.get("type") == "media":  # Gemini's: base64 text or the bytes themselves
        data = block.get("data")
        text_bytes = isinstance(data, (bytes, bytearray)) and _readable_mime(str(mime or ""))
        encoded = base64.b64encode(data).decode("ascii") if text_bytes else data  # audio, video: never copied
    inline = data_url(nested.get("file_data", block.get("file_data")))
    if inline is not None and encoded is None:
        encoded, mime = inline[1], mime or inline[0]
    references = [
        ref
        for ref, given in (
            (
                "url",
                block.get("url")
                or block.get("file_url")
                or block.get("file_uri")
                or kind == "url"
                or source.get("url"),
            ),
            ("file_id", block.get("file_id") or nested.get("file_id") or kind in ("id", "file")),
        )
        if given
    ]
    return _File(
        name=block.get("title") or block.get("filename") or extras.get("title") or extras.get("filename")
        or metadata.get("title") or nested.get("filename") or block.get("name"),
        context=next((c for c in (block.get("context"), extras.get("context"), metadata.get("context"))
                      if isinstance(c, str)), None),
        mime=str(mime or ("text/plain" if block.get("type") == "text-plain" else "")),
        text=text,
        content=source.get("content") if kind == "content" else None,
        encoded=encoded,
        references=references,
    )  # fmt: skip


def _file_text(block: dict[str, Any], where: str) -> str:
    """A ``file`` (LangChain v0 and v1, OpenAI), ``text-plain`` (LangChain v1), ``document`` (Anthropic) or
    ``input_file`` (OpenAI Responses) block's text, as the model reads it."""
    btype = block["type"]
    f = _file(block)
    text = f.text if f.content is None else _inner_texts(f.content, where)
    if f.references:  # sent in place of any text beside it: nothing the guard can read
        keys = sorted(k for k in block if k != "type")
        beside = f"; its {f.references[0]} is sent, not the text beside it" if text is not None else ""
        raise GuardInputError(
            f"{where}: a {btype} block the guard cannot read (it has {keys}; a linked or uploaded file is read by "
            f"the provider, not the guard{beside}); readable: 'text', or 'base64' of a text type with its "
            "'mime_type'"
        )
    if f.encoded is not None:  # what providers send where a block has text too: both are read when they differ
        if not _readable_mime(f.mime):
            raise GuardInputError(
                f"{where}: a {btype} block of {f.mime or 'unknown type'} data the guard cannot read (it reads "
                "text, images, and files of a text type: text/*, JSON, XML, YAML, CSV); give the model the file's "
                "text"
            )
        decoded = _decoded(f.encoded, f.mime, btype, where)
        text = decoded if text in (None, decoded) else f"{text}\n{decoded}"
    if text is None:
        keys = sorted(k for k in block if k != "type")
        raise GuardInputError(
            f"{where}: a {btype} block the guard cannot read (it has {keys}); readable: 'text', or 'base64' of a "
            "text type with its 'mime_type'"
        )
    if btype == "text-plain" and not f.name and f.context is None:
        return text  # a message's plain text, as a block of its own
    head = f"[{btype}{': ' + str(f.name) if f.name else ''}]"
    return f"{head}\n{text}" if f.context is None else f"{head} ({f.context})\n{text}"


def carries_text(block: dict[str, Any]) -> bool:
    """Whether a block of :data:`READABLE_BLOCK_TYPES` holds text (JSON, a search result, a text file...), as
    opposed to binary data or a reference only (a PDF, an image file, a link): what Prompt Guard has text to scan
    in.

    Example:
        >>> carries_text({"type": "file", "url": "https://a.example/notes.txt", "mime_type": "text/plain"})
        False
    """
    if block.get("type") not in _FILE_BLOCK_TYPES:
        return True
    f = _file(block)
    return f.text is not None or f.content is not None or (f.encoded is not None and _readable_mime(f.mime))


def block_text(block: dict[str, Any], *, where: str) -> str:
    """The text of one of :data:`READABLE_BLOCK_TYPES`; raises :class:`GuardInputError` for data it cannot read."""
    btype = block.get("type")
    if btype == "json":
        return _as_text(block.get("json"))
    if btype == "custom_tool_call_output":
        output = block.get("output")
        return _inner_texts(output, where) if isinstance(output, list) else _as_text(output)
    if btype == "search_result":
        title, source = block.get("title") or "", block.get("source") or ""
        return f"[search result] {title} ({source})\n{_inner_texts(block.get('content'), where)}".strip()
    if btype in _FILE_BLOCK_TYPES:
        return _file_text(block, where)
    raise GuardInputError(f"{where}: not a block type read as text: {btype!r}")


__all__ = ["READABLE_BLOCK_TYPES", "block_text", "carries_text", "data_url"]
