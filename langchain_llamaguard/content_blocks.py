"""What a guard reads of the content blocks a tool hands back besides text and images.

LangChain's tool messages carry these block types (``langchain_core.tools.base.TOOL_MESSAGE_BLOCK_TYPES``), and MCP
tools make ``file`` blocks of their resources. Each is read as the text the model would read:

=============================  ==================================================================================
block                          read as
=============================  ==================================================================================
``json``                       its JSON
``search_result``              ``[search result] title (source)`` and its content's text
``custom_tool_call_output``    its output (a text, or its JSON)
``document`` / ``file``        ``[file: name]`` and its text: inline text, or base64 of a text type (``text/*``,
                               JSON, XML, YAML, CSV) decoded as UTF-8 (or UTF-16 with its byte-order mark)
=============================  ==================================================================================

A file the guard cannot read (a PDF or other binary data, a provider's file id, a file given by ``url`` only,
which a provider may fetch for the model) and an image or file nested in a search result, a document or a custom
tool's output raise :class:`~langchain_llamaguard.errors.GuardInputError`: nothing is passed on unjudged.

Example:
    >>> block_text({"type": "json", "json": {"rows": 2}}, where="tool result")
    '{"rows": 2}'
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from typing import Any

from .errors import GuardInputError

READABLE_BLOCK_TYPES = frozenset({"json", "search_result", "custom_tool_call_output", "document", "file"})
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


def _file_text(block: dict[str, Any], where: str) -> str:
    """A ``file`` (LangChain v0 and v1) or ``document`` (Anthropic) block's text, as the model reads it."""
    btype = block["type"]
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    mime = str(block.get("mime_type") or block.get("media_type") or source.get("media_type") or "")
    kind = block.get("source_type") or source.get("type")
    extras = block.get("extras") if isinstance(block.get("extras"), dict) else {}
    name = block.get("title") or block.get("filename") or extras.get("filename") or block.get("name")
    head = f"[{btype}{': ' + str(name) if name else ''}]"
    text: str | None = block.get("text") if isinstance(block.get("text"), str) else None
    if text is None and kind == "text":
        text = block.get("data") if isinstance(block.get("data"), str) else source.get("data")
    if text is None and kind == "content":
        text = _inner_texts(source.get("content"), where)
    encoded = block.get("base64")
    if encoded is None and kind == "base64":
        encoded = block.get("data", source.get("data"))
    if text is None and encoded is not None:
        if not _readable_mime(mime):
            raise GuardInputError(
                f"{where}: a {btype} block of {mime or 'unknown type'} data the guard cannot read (it reads text, "
                "images, and files of a text type: text/*, JSON, XML, YAML, CSV); give the model the file's text"
            )
        text = _decoded(encoded, mime, btype, where)
    if text is None:
        keys = sorted(k for k in block if k != "type")
        raise GuardInputError(
            f"{where}: a {btype} block the guard cannot read (it has {keys}; a linked or uploaded file is read by "
            "the provider, not the guard); readable: 'text', or 'base64' of a text type with its 'mime_type'"
        )
    context = block.get("context")
    return f"{head}\n{text}" if not isinstance(context, str) else f"{head} ({context})\n{text}"


def carries_text(block: dict[str, Any]) -> bool:
    """Whether a block of :data:`READABLE_BLOCK_TYPES` holds text (JSON, a search result, a text file...), as
    opposed to binary data or a reference (a PDF, an image file, a link): what Prompt Guard has text to scan in.

    Example:
        >>> carries_text({"type": "file", "url": "https://a.example/notes.txt", "mime_type": "text/plain"})
        False
    """
    if block.get("type") not in ("document", "file"):
        return True
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    kind = block.get("source_type") or source.get("type")
    if isinstance(block.get("text"), str) or kind in ("text", "content"):
        return True
    mime = str(block.get("mime_type") or block.get("media_type") or source.get("media_type") or "")
    return _readable_mime(mime) and (block.get("base64") is not None or kind == "base64")


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
    if btype in ("document", "file"):
        return _file_text(block, where)
    raise GuardInputError(f"{where}: not a block type read as text: {btype!r}")


__all__ = ["READABLE_BLOCK_TYPES", "block_text", "carries_text"]
