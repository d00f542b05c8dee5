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
                               JSON, XML, YAML, CSV) decoded as UTF-8; a file given by ``url`` only is read as
                               its address (what the model gets)
=============================  ==================================================================================

A file the guard cannot read (a PDF or other binary data, a provider's file id) raises
:class:`~langchain_llamaguard.errors.GuardInputError`: it is never passed on unjudged.

Example:
    >>> block_text({"type": "json", "json": {"rows": 2}}, where="tool result")
    '{"rows": 2}'
"""

from __future__ import annotations

import base64
import binascii
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


def _inner_texts(content: Any) -> str:
    """The text of a nested content list (a search result's or a document's), text blocks only."""
    if isinstance(content, str):
        return content
    parts = [b if isinstance(b, str) else b.get("text") for b in content or [] if isinstance(b, (str, dict))]
    return "\n".join(p for p in parts if isinstance(p, str))


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
        text = _inner_texts(source.get("content"))
    encoded = block.get("base64")
    if encoded is None and kind == "base64":
        encoded = block.get("data", source.get("data"))
    if text is None and encoded is not None:
        if not _readable_mime(mime):
            raise GuardInputError(
                f"{where}: a {btype} block of {mime or 'unknown type'} data the guard cannot read (it reads text, "
                "images, and files of a text type: text/*, JSON, XML, YAML, CSV); give the model the file's text"
            )
        try:
            text = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, TypeError) as exc:
            raise GuardInputError(f"{where}: a {btype} block of {mime} whose base64 is not UTF-8 text ({exc})") from exc
    if text is None:
        url = block.get("url") or source.get("url")
        if not isinstance(url, str):
            keys = sorted(k for k in block if k != "type")
            raise GuardInputError(
                f"{where}: a {btype} block the guard cannot read (it has {keys}); readable: 'text', 'base64' of a "
                "text type with its 'mime_type', or a 'url'"
            )
        return f"{head} {url}"
    context = block.get("context")
    return f"{head}\n{text}" if not isinstance(context, str) else f"{head} ({context})\n{text}"


def block_text(block: dict[str, Any], *, where: str) -> str:
    """The text of one of :data:`READABLE_BLOCK_TYPES`; raises :class:`GuardInputError` for data it cannot read."""
    btype = block.get("type")
    if btype == "json":
        return _as_text(block.get("json"))
    if btype == "custom_tool_call_output":
        output = block.get("output")
        return _inner_texts(output) if isinstance(output, list) else _as_text(output)
    if btype == "search_result":
        title, source = block.get("title") or "", block.get("source") or ""
        return f"[search result] {title} ({source})\n{_inner_texts(block.get('content'))}".strip()
    if btype in ("document", "file"):
        return _file_text(block, where)
    raise GuardInputError(f"{where}: not a block type read as text: {btype!r}")


__all__ = ["READABLE_BLOCK_TYPES", "block_text"]
