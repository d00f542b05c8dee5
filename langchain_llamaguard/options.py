"""Checks of a guard's numeric options, shared by Llama Guard and Prompt Guard: a value that would be taken for
another (``True`` for 1, ``inf`` or ``nan`` for a bound) is refused when the guard is built, with what is accepted.

Example:
    >>> finite_number("timeout", 2, accepted="a number of seconds > 0 or None", ok=lambda x: x > 0)
    2.0
    >>> whole_number("max_batch_size", 8, minimum=1)
    8
    >>> template("refusal_message", "Blocked ({categories}).", categories="S9 Indiscriminate Weapons")
    'Blocked ({categories}).'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from .errors import GuardConfigurationError


def finite_number(
    name: str, value: Any, *, accepted: str, ok: Callable[[float], bool], allow_none: bool = True
) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool) that ``ok`` accepts; ``None`` stays ``None``
    where ``allow_none``; anything else raises :class:`GuardConfigurationError` naming ``accepted``."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or not ok(float(value))
    ):
        raise GuardConfigurationError(f"{name} must be {accepted}, got {value!r}")
    return float(value)


def whole_number(name: str, value: Any, *, minimum: int, allow_none: bool = False) -> int | None:
    """``value`` as an int if it is a whole number (not a bool) >= ``minimum``; else a
    :class:`GuardConfigurationError`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        accepted = f"a whole number >= {minimum}" + (" or None" if allow_none else "")
        raise GuardConfigurationError(f"{name} must be {accepted}, got {value!r}")
    return int(value)


def threshold(value: Any, *, allow_none: bool = True) -> float | None:
    """A score threshold: a number in [0, 1] (or ``None``: the model's own verdict)."""
    accepted = "a number in [0, 1]" + (" or None" if allow_none else "")
    return finite_number("threshold", value, accepted=accepted, ok=lambda x: 0.0 <= x <= 1.0, allow_none=allow_none)


def timeout(value: Any) -> float | None:
    """Seconds a check may take: a finite number > 0, or ``None`` (no limit)."""
    return finite_number(
        "timeout", value, accepted="a finite number of seconds > 0, or None (no limit)", ok=lambda x: x > 0
    )


def batch_window_ms(value: Any) -> float | None:
    """How long a micro-batch waits for more callers: ``None`` (no micro-batching) or a finite number >= 0."""
    return finite_number(
        "batch_window_ms", value, accepted="None or a finite number of milliseconds >= 0", ok=lambda x: x >= 0
    )


def flag(name: str, value: Any) -> bool:
    """A switch: ``True`` or ``False`` only (``"no"`` or ``0`` would read as a choice the caller did not make)."""
    if not isinstance(value, bool):
        raise GuardConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def template(name: str, value: Any, **fields: Any) -> str:
    """A text filled in with ``str.format(**fields)`` when content is flagged: checked now, with example values,
    so a stray brace (a JSON refusal) is a clear error when the step is built, not a ``KeyError`` at the moment it
    should refuse."""
    listed = ", ".join("{" + f + "}" for f in fields) or "none"
    fields_are = "the only field is" if len(fields) == 1 else "its fields are"
    if not isinstance(value, str):
        raise GuardConfigurationError(f"{name} must be a str (fields: {listed}), got a {type(value).__name__}")
    try:
        value.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise GuardConfigurationError(
            f"{name} {value!r} cannot be filled in ({exc!r}): {fields_are} {listed}; write other braces twice "
            '({{ }}), e.g. \'{{"error": "blocked"}}\''
        ) from None
    return value


_BEHAVIOURS = frozenset({"raise", "error", "end", "replace", "refuse", "block", "reroute", "redact", "exception"})


def canned_answer(name: str, value: str) -> str:
    """An ``on_unsafe`` text: ``"raise"`` itself, or an answer that does not read like another option's keyword
    (``"error"``, ``"end"``, ``"Raise "``), which would be sent to the user as the answer, the flagged content
    passing on as if handled."""
    word = value.strip().casefold()
    if value != "raise" and word in _BEHAVIOURS:
        raise GuardConfigurationError(
            f"{name}={value!r} reads like a behaviour, but a text here is the canned answer the user gets; to raise "
            "UnsafeContentError pass exactly 'raise'; for an answer, write the sentence (e.g. \"Sorry, I can't help "
            'with that.")'
        )
    return value


__all__ = [
    "batch_window_ms",
    "canned_answer",
    "finite_number",
    "flag",
    "template",
    "threshold",
    "timeout",
    "whole_number",
]
