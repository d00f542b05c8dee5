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

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import GuardConfigurationError, GuardTypeError

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
    """Return the S-code for a category code or name; anything else raises ``GuardConfigurationError`` (a
    ``ValueError``).

    Example:
        >>> resolve_category("Suicide & Self-Harm")
        'S11'
    """
    if not isinstance(key, str):
        raise GuardTypeError(f"category key must be a str, got {type(key).__name__}; valid: {_valid_keys_hint()}")
    code = _LOOKUP.get(key.strip().casefold())
    if code is None:
        raise GuardConfigurationError(f"unknown category {key!r}; valid: {_valid_keys_hint()}")
    return code


def resolve_categories(keys: Iterable[str] | str | None, policy: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Resolve several keys into sorted, de-duplicated S-codes (by number).

    A single string is one key, not an iterable of characters. With a custom ``policy`` (see
    :func:`check_policy`), its codes (``"S15"``) and its texts (``"Fraud."`` or ``"Fraud"``) are keys too.
    """
    if keys is None:
        return ()
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, Iterable):
        raise GuardConfigurationError(
            f"categories are given as a list of codes or names (['S1', 'Hate'], or one string), got {keys!r}"
        )
    codes = {_resolve_in(k, policy) for k in keys}
    return tuple(sorted(codes, key=lambda c: int(c[1:])))


def _resolve_in(key: str, policy: Mapping[str, str] | None) -> str:
    """A key's code under ``policy``: the policy's codes, then its texts, then the default taxonomy's codes and
    names, except a default name whose code the policy gives to a category of its own (that name would switch
    off the policy's category)."""
    if not policy or not isinstance(key, str):
        return resolve_category(key)
    wanted = key.strip().casefold()
    for code in policy:  # a code first: another category's text may read like it ({"S10": "S7", "S7": ...})
        if wanted == code.casefold():
            return code
    named = [code for code, text in policy.items() if wanted in (text.strip().casefold(), policy_name(text).casefold())]
    if len(named) > 1:
        raise GuardConfigurationError(f"{key!r} is the text of {', '.join(named)} in this policy; name them by code")
    if named:
        return named[0]
    codes = ", ".join(policy)
    try:
        code = resolve_category(key)
    except GuardConfigurationError:
        raise GuardConfigurationError(
            f"unknown category {key!r}; this policy's categories are {codes} (by code or by their text)"
        ) from None
    if code not in policy:
        raise GuardConfigurationError(
            f"{key!r}{'' if wanted == code.casefold() else f' ({code})'} is not a category of this policy, so "
            f"excluding it would do nothing; this policy's "
            f"categories are {codes} (by code or by their text)"
        )
    if policy_name(policy[code]).casefold() != CATEGORIES[code].name.casefold():
        raise GuardConfigurationError(
            f"{key!r} is the default name of {code}, but this policy's {code} is {policy[code]!r}; name this "
            f"policy's categories by code or by their text: {codes}"
        )
    return code


_POLICY_CODE = re.compile(r"S[1-9][0-9]*")
_TEMPLATE_MARKER = re.compile(r"<\s*(BEGIN|END)\s+(UNSAFE\s+CONTENT\s+CATEGORIES|CONVERSATION)\s*>", re.IGNORECASE)


def check_policy(categories: Mapping[str, str] | None) -> dict[str, str] | None:
    """Validate a custom policy: a mapping from ``S<number>`` codes to the texts the model reads.

    The texts are rendered as the official templates render their ``categories`` variable: ``{code}: {text}``,
    one per line, in the mapping's order (the defaults end with a period: ``"Violent Crimes."``).

    Example:
        >>> check_policy({"S1": "Violent Crimes.", "S15": "Fraud."})
        {'S1': 'Violent Crimes.', 'S15': 'Fraud.'}
    """
    if categories is None:
        return None
    if isinstance(categories, str) or not isinstance(categories, Mapping) or not categories:
        raise GuardConfigurationError(
            "categories must be a non-empty mapping of S-codes to texts, e.g. {'S1': 'Violent Crimes.', "
            f"'S15': 'Fraud.'}} (start from default_categories(model)), got {categories!r}"
        )
    for code, text in categories.items():
        if not isinstance(code, str) or not _POLICY_CODE.fullmatch(code):
            raise GuardConfigurationError(
                f"category key {code!r} is not an S-code; accepted: 'S1', 'S2', ... 'S<number>' (the codes the "
                "model answers with)"
            )
        if not isinstance(text, str) or not text.strip():
            raise GuardConfigurationError(f"the text of category {code} must be a non-empty string, got {text!r}")
        if text.splitlines() != [text]:  # \n, \r, and \u2028, \x85, \v ... (what splitlines breaks at)
            raise GuardConfigurationError(
                f"the text of category {code} holds a line break ({text!r}): each category is one line of the "
                "prompt (`S1: text`), so a break would add lines the model reads as categories or instructions; "
                "write it on one line (' '.join(text.split()); a YAML block scalar's trailing newline: .strip())"
            )
        marker = _TEMPLATE_MARKER.search(text)
        if marker:
            raise GuardConfigurationError(
                f"the text of category {code} holds the template's marker {marker.group()!r}, which would end the "
                "category list early in the prompt the model reads; leave it out"
            )
    return dict(categories)


def policy_name(text: str) -> str:
    """The name a verdict reports for a category text: the text without its final period."""
    text = text.strip()
    return text[:-1] if text.endswith(".") else text


def default_categories(model: Any = "llama-guard-4") -> dict[str, str]:
    """The model's default policy as a ``categories`` mapping, to extend or edit.

    ``model`` is a format name or a guard.

    Example:
        >>> policy = default_categories("llama-guard-3-1b") | {"S14": "Fraud."}
        >>> policy["S1"], policy["S14"], len(policy)
        ('Violent Crimes.', 'Fraud.', 14)
    """
    name = getattr(model, "model_name", model)
    return {code: CATEGORIES[code].name + "." for code in MODEL_CATEGORIES[check_model_name(name)]}


def check_model_name(model: str) -> str:
    """Validate a model format name."""
    if model not in MODEL_CATEGORIES:
        raise GuardConfigurationError(f"unknown model format {model!r}; valid: {', '.join(MODEL_NAMES)}")
    return model


def category_names(codes: Iterable[str], policy: Mapping[str, str] | None = None) -> list[str]:
    """Names for S-codes, in the same order: from a custom ``policy`` where given, else the taxonomy's."""
    return [policy_name(policy[c]) if policy and c in policy else CATEGORIES[c].name for c in codes]
