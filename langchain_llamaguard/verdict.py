"""Verdicts and the strict parser of Llama Guard's output.

Example:
    >>> v = parse_output("\\n\\nunsafe\\nS1,S10")
    >>> v.safe, v.categories
    (False, ['S1', 'S10'])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import GuardOutputError
from .taxonomy import category_names

_CODE = re.compile(r"S[1-9][0-9]*")


class Verdict(BaseModel):
    """What a guard decided about one conversation.

    Example:
        >>> Verdict(safe=True, score=0.01, role="User", model="llama-guard-4", raw="safe").categories
        []
    """

    model_config = ConfigDict(frozen=True)

    safe: bool
    categories: list[str] = Field(default_factory=list)
    """Violated S-codes (excluded categories are never reported)."""
    category_names: list[str] = Field(default_factory=list)
    score: float | None = Field(ge=0.0, le=1.0)
    """P(first verdict token is ``unsafe``): softmax over the whole vocabulary. ``None`` only where the model's
    server gives no probabilities (``LlamaGuard.from_endpoint(..., mode="chat")``)."""
    role: Literal["User", "Agent"]
    model: str
    raw: str
    """The model's text (``unsafe\\nS9``), or the reason when the guard failed closed."""
    error: str | None = None
    """Set when the verdict is a fail-closed stand-in for an error."""
    segments: int = 1
    """How many prompts the conversation was checked in (more than one when its judged turn was longer than the
    model's context and was cut into overlapping windows; the verdict is then unsafe if any part was)."""
    omitted_turns: int = Field(default=0, ge=0)
    """Earlier turns left out of what was judged because the conversation did not fit the model's context
    (``on_overflow="split"``): the judged turn is checked with the user turn it answers, or alone when that
    question is too long too (it then counts here). Turns as Llama Guard reads them: consecutive messages of one
    role are one turn. ``0``: the whole conversation was judged."""

    @property
    def unsafe(self) -> bool:
        return not self.safe


@dataclass(frozen=True)
class ParsedOutput:
    safe: bool
    categories: tuple[str, ...]


def parse_output(raw: str) -> ParsedOutput:
    """Parse ``safe`` / ``unsafe\\nS1,S10`` strictly (surrounding whitespace is allowed).

    Raises:
        GuardOutputError: on anything else. Never returns safe for text it cannot read.
    """
    if not isinstance(raw, str):
        raise GuardOutputError(repr(raw), "not a string")
    text = raw.strip()
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise GuardOutputError(raw, "empty output")
    head = lines[0].lower()
    if head == "safe":
        if len(lines) > 1:
            raise GuardOutputError(raw, "text after 'safe'")
        return ParsedOutput(True, ())
    if head != "unsafe":
        raise GuardOutputError(raw, "first line is neither 'safe' nor 'unsafe'")
    if len(lines) == 1:
        return ParsedOutput(False, ())
    if len(lines) > 2:
        raise GuardOutputError(raw, "more than two lines")
    codes: list[str] = []
    for item in lines[1].split(","):
        item = item.strip()
        if not _CODE.fullmatch(item):
            raise GuardOutputError(raw, f"{item!r} is not a category code (S1, S2, ...)")
        if item not in codes:
            codes.append(item)
    return ParsedOutput(False, tuple(codes))


NOT_IN_POLICY = "(not in the policy)"
"""The name a verdict gives a category the model named that its policy does not list (the verdict fails closed,
but the model did decide: unsafe)."""


def make_verdict(
    parsed: ParsedOutput,
    *,
    score: float | None,
    role: Literal["User", "Agent"],
    model: str,
    raw: str,
    excluded: Iterable[str] = (),
    threshold: float | None = None,
    listed: Iterable[str] | None = None,
    policy: Mapping[str, str] | None = None,
    omitted_turns: int = 0,
) -> Verdict:
    """Combine the parsed text, the score and the exclusions into a :class:`Verdict`.

    Excluded codes are filtered out; an unsafe verdict whose codes are all excluded is safe. With a
    ``threshold``, ``safe`` is ``score < threshold``; otherwise the model's own first token decides. A code the
    prompt did not list (``listed``) nor exclude is kept and fails the verdict closed (unsafe, with ``error``
    set): the model answered outside its policy. ``policy`` (a custom code -> text mapping) names the codes.
    ``omitted_turns``: earlier turns the prompt left out (see :attr:`Verdict.omitted_turns`).
    """
    excluded_set = set(excluded)
    codes = [c for c in parsed.categories if c not in excluded_set]
    safe = parsed.safe if threshold is None or score is None else score < threshold
    if not safe and parsed.categories and not codes:
        safe = True  # the model only named categories the user excluded
    if safe:
        codes = []
    known = None if listed is None else set(listed)
    unknown = [c for c in codes if known is not None and c not in known]
    return Verdict(
        safe=safe,
        categories=codes,
        category_names=[NOT_IN_POLICY if c in unknown else category_names([c], policy)[0] for c in codes],
        score=None if score is None else min(max(float(score), 0.0), 1.0),
        role=role,
        model=model,
        raw=raw,
        error=f"the model named {', '.join(unknown)}, which the policy does not list" if unknown else None,
        omitted_turns=omitted_turns,
    )


def merge_verdicts(parts: list[Verdict]) -> Verdict:
    """One verdict for a conversation checked in several parts: unsafe if any part is (categories united,
    highest score, the most turns any part left out); a part that failed closed makes the whole fail closed."""
    if len(parts) == 1:
        return parts[0]
    unsafe = [v for v in parts if not v.safe]
    base = unsafe[0] if unsafe else parts[0]
    names: dict[str, str] = {}
    for v in unsafe:
        for c, n in zip(v.categories, v.category_names, strict=True):
            names.setdefault(c, n)
    codes = sorted(names, key=lambda c: int(c[1:]))
    errors = [v.error for v in parts if v.error]
    return base.model_copy(
        update={
            "categories": codes,
            "category_names": [names[c] for c in codes],
            "score": max((v.score for v in parts if v.score is not None), default=None),
            "error": errors[0] if errors else None,
            "segments": len(parts),
            "omitted_turns": max(v.omitted_turns for v in parts),
        }
    )
