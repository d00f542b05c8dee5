"""A provider's own content blocks that LangChain has no standard block for: how a guard reads them.

langchain-core's ``content_blocks`` turns such a block into ``{"type": "non_standard", "value": <the block>}``,
and the provider sends the block back to the model as it is: OpenAI Responses' ``custom_tool_call`` (a freeform
tool's input), ``computer_call`` and ``mcp_approval_request``, Anthropic's ``redacted_thinking``. A guard reads

* a call by its name and arguments (``[tool call] run_sql({"__arg1": "SELECT 1"})``, as langchain-openai lists a
  freeform call in ``tool_calls``; a computer-use action as a call of ``computer``);
* encrypted reasoning (``redacted_thinking``) as nothing: only its provider can read it, as with OpenAI's
  ``encrypted_content``;
* anything else as its JSON after its type (``[web_fetch_result] {...}``): read whole, never refused and never
  skipped.

Example:
    >>> provider_call({"type": "custom_tool_call", "name": "run_sql", "input": "SELECT 1", "call_id": "c2"})
    ('run_sql', {'__arg1': 'SELECT 1'})
    >>> provider_text({"type": "redacted_thinking", "data": "EmwKAhgB"})
    ''
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

ENCRYPTED_BLOCK_TYPES = frozenset({"redacted_thinking"})
"""Provider blocks whose content is encrypted for their provider alone: no text a guard could read."""

_NOT_CONTENT = ("type", "id", "call_id", "status")  # identifiers, not what the model reads


def provider_call(value: Mapping[str, Any]) -> tuple[str, Any] | None:
    """``(name, arguments)`` of a provider block that is a call, else ``None``; arguments given as JSON text are
    parsed as langchain-core parses them (text that is not JSON stays text)."""
    kind = value.get("type")
    if kind == "computer_call" and "action" in value:
        return "computer", value["action"]
    name = value.get("name")
    if not isinstance(name, str):
        return None
    if kind == "custom_tool_call" and isinstance(value.get("input"), str):
        return name, {"__arg1": value["input"]}
    for key in ("arguments", "input"):
        if key in value:
            return name, parsed_args(value[key])
    return None


def parsed_args(args: Any) -> Any:
    """A call's arguments: JSON text parsed as langchain-core parses it (control characters kept), text that is not
    JSON as it is, anything else unchanged."""
    if isinstance(args, str):
        try:
            return json.loads(args, strict=False)
        except ValueError:
            return args
    return args


def provider_text(value: Any) -> str:
    """What a guard reads of a provider block that is not a call: nothing for encrypted reasoning, else its type
    and its JSON (without its identifiers)."""
    if not isinstance(value, Mapping):
        return f"[provider block] {json_text(value)}"
    kind = value.get("type")
    if kind in ENCRYPTED_BLOCK_TYPES:
        return ""
    rest = {k: v for k, v in value.items() if k not in _NOT_CONTENT}
    return f"[{kind if isinstance(kind, str) and kind else 'provider block'}] {json_text(rest)}"


def _plain(value: Any) -> Any:
    """What ``json.dumps`` cannot write: a pydantic model as its data (every field; its ``str`` can leave fields
    out), anything else as its ``str``."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def json_text(value: Any) -> str:
    """``value`` as a guard reads data: its JSON (keys sorted, text as it is), its repr where it has none."""
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=_plain)
    except (TypeError, ValueError):
        return repr(value)


__all__ = ["ENCRYPTED_BLOCK_TYPES", "json_text", "parsed_args", "provider_call", "provider_text"]
