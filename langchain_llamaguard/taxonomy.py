"""The hazard taxonomy: categories S1-S14 and which Llama Guard model knows which.

S1-S13 follow the MLCommons hazard taxonomy; S14 (Code Interpreter Abuse) is Llama Guard's own.
Category keys can be given as codes (``"S9"``, any case) or names (``"Indiscriminate Weapons"``,
the model card's long name ``"Suicide & Self-Harm"`` too, any case).

Example:
    >>> from langchain_llamaguard.taxonomy import resolve_categories
    >>> resolve_categories(["s9", "Hate"])
    ('S9', 'S10')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

ModelName = Literal["llama-guard-4", "llama-guard-3-8b", "llama-guard-3-1b"]
MODEL_NAMES: tuple[str, ...] = ("llama-guard-4", "llama-guard-3-8b", "llama-guard-3-1b")


class Category(BaseModel):
    """One hazard category.

    Example:
        >>> CATEGORIES["S14"].name
        'Code Interpreter Abuse'
    """

    model_config = ConfigDict(frozen=True)

    code: str
    """``S1`` .. ``S14``."""
    name: str
    """The short name the model sees in its prompt (``S{n}: {name}.``)."""
    card_name: str
    """The name used on Meta's model cards."""
    description: str


def _c(code: str, name: str, card_name: str, description: str) -> Category:
    return Category(code=code, name=name, card_name=card_name, description=description)


CATEGORIES: dict[str, Category] = {
    c.code: c
    for c in (
        _c("S1", "Violent Crimes", "Violent Crimes", "Unlawful violence toward people or animals."),
        _c(
            "S2",
            "Non-Violent Crimes",
            "Non-Violent Crimes",
            "Personal, financial, property, drug, weapons and cyber crimes.",
        ),
        _c(
            "S3",
            "Sex Crimes",
            "Sex-Related Crimes",
            "Sex trafficking, sexual assault, sexual harassment, prostitution.",
        ),
        _c("S4", "Child Exploitation", "Child Sexual Exploitation", "Sexual abuse of children."),
        _c(
            "S5",
            "Defamation",
            "Defamation",
            "Verifiably false statements likely to injure a living person's reputation.",
        ),
        _c(
            "S6",
            "Specialized Advice",
            "Specialized Advice",
            "Specialized financial, medical or legal advice, or saying dangerous things are safe.",
        ),
        _c("S7", "Privacy", "Privacy", "Sensitive nonpublic personal information."),
        _c("S8", "Intellectual Property", "Intellectual Property", "Violating intellectual property rights."),
        _c(
            "S9",
            "Indiscriminate Weapons",
            "Indiscriminate Weapons",
            "Chemical, biological, radiological, nuclear and high-yield explosive weapons.",
        ),
        _c("S10", "Hate", "Hate", "Demeaning people on protected characteristics."),
        _c("S11", "Self-Harm", "Suicide & Self-Harm", "Suicide, self-injury, disordered eating."),
        _c("S12", "Sexual Content", "Sexual Content", "Erotica."),
        _c("S13", "Elections", "Elections", "Factually incorrect information about electoral processes."),
        _c(
            "S14",
            "Code Interpreter Abuse",
            "Code Interpreter Abuse",
            "Abuse of code interpreters: denial of service, container escapes, privilege escalation.",
        ),
    )
}

ALL_CODES: tuple[str, ...] = tuple(CATEGORIES)

MODEL_CATEGORIES: dict[str, tuple[str, ...]] = {
    "llama-guard-4": ALL_CODES,
    "llama-guard-3-8b": ALL_CODES,
    "llama-guard-3-1b": ALL_CODES[:13],
}
"""Which categories each model was trained on (and lists in its default prompt)."""

TEXT_ONLY_CATEGORIES: frozenset[str] = frozenset({"S14"})
"""Categories Llama Guard 4 leaves out of the prompt when the conversation contains an image."""

_LOOKUP: dict[str, str] = {}
for _cat in CATEGORIES.values():
    for _key in (_cat.code, _cat.name, _cat.card_name):
        _LOOKUP[_key.casefold()] = _cat.code


def _valid_keys_hint() -> str:
    return "S1..S14 or their names (e.g. 'Hate', 'Indiscriminate Weapons', 'Code Interpreter Abuse')"


def resolve_category(key: str) -> str:
    """Return the S-code for a category code or name; raise ``ValueError`` for anything else.

    Example:
        >>> resolve_category("Suicide & Self-Harm")
        'S11'
    """
    if not isinstance(key, str):
        raise TypeError(f"category key must be a str, got {type(key).__name__}; valid: {_valid_keys_hint()}")
    code = _LOOKUP.get(key.strip().casefold())
    if code is None:
        raise ValueError(f"unknown category {key!r}; valid: {_valid_keys_hint()}")
    return code


def resolve_categories(keys: Iterable[str] | str | None) -> tuple[str, ...]:
    """Resolve several keys into sorted, de-duplicated S-codes (taxonomy order).

    A single string is one key, not an iterable of characters.
    """
    if keys is None:
        return ()
    if isinstance(keys, str):
        keys = [keys]
    codes = {resolve_category(k) for k in keys}
    return tuple(c for c in ALL_CODES if c in codes)


def check_model_name(model: str) -> str:
    """Validate a model format name."""
    if model not in MODEL_CATEGORIES:
        raise ValueError(f"unknown model format {model!r}; valid: {', '.join(MODEL_NAMES)}")
    return model


def category_names(codes: Iterable[str]) -> list[str]:
    """Short names for S-codes, in the same order."""
    return [CATEGORIES[c].name for c in codes]
