"""Choosing the threshold on a calibration split: ``f1`` (best F1) or ``fpr=X`` (best recall at FPR <= X).

Flagged means ``score >= threshold``. The calibration rows are left out of the reported metrics.

Example:
    >>> rule = parse_rule("fpr=0.01")
    >>> rule.kind, rule.target
    ('fpr', 0.01)
    >>> choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.9], parse_rule("f1"))
    0.2
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._deps import need
from .data import EvaluationInputError

RULES_HINT = "accepted: 'f1' or 'fpr=X' with 0 < X < 1 (e.g. fpr=0.01)"


@dataclass(frozen=True)
class CalibrationRule:
    """``kind="f1"``: the threshold with the highest F1; ``kind="fpr"``: the highest recall with FPR <= target."""

    kind: Literal["f1", "fpr"]
    target: float | None = None

    def __str__(self) -> str:
        return "f1" if self.kind == "f1" else f"fpr={self.target:g}"


def parse_rule(spec: str) -> CalibrationRule:
    """``"f1"`` or ``"fpr=0.01"``; anything else raises :class:`EvaluationInputError`."""
    text = str(spec).strip().lower()
    if text == "f1":
        return CalibrationRule("f1")
    key, sep, value = text.partition("=")
    if key == "fpr" and sep:
        try:
            target = float(value)
        except ValueError:
            target = -1.0
        if 0 < target < 1:
            return CalibrationRule("fpr", target)
    raise EvaluationInputError(f"--calibrate {spec!r}: {RULES_HINT}")


def choose_threshold(labels: Sequence[int], scores: Sequence[float], rule: CalibrationRule) -> float:
    """The threshold ``rule`` defines on these rows (ties: the higher threshold, i.e. fewer flags)."""
    skm = need("sklearn.metrics")
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    if y.sum() == 0 or y.sum() == len(y):
        raise EvaluationInputError(
            f"the calibration split has {int(y.sum())} unsafe of {len(y)} rows; it needs both safe and unsafe rows"
        )
    if rule.kind == "f1":
        precision, recall, thresholds = skm.precision_recall_curve(y, s)
        with np.errstate(all="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        return float(thresholds[best].max())
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    ok = np.flatnonzero(fpr <= rule.target + 1e-12)
    best = ok[tpr[ok] >= tpr[ok].max() - 1e-12]
    threshold = float(thresholds[best].max() if tpr[ok].max() > 0 else np.inf)
    return min(threshold, 1.0)


def split_calibration(labels: Sequence[int], *, fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random split of row indices into (calibration, report).

    Example:
        >>> cal, rest = split_calibration([0, 1] * 10)
        >>> len(cal), len(rest)
        (10, 10)
    """
    if not 0 < fraction < 1:
        raise EvaluationInputError(f"calibration fraction {fraction!r}: accepted: a number between 0 and 1")
    y = np.asarray(labels, dtype=int)
    idx = np.arange(len(y))
    stratify = y if min(int(y.sum()), len(y) - int(y.sum())) >= 2 else None
    try:
        cal, rest = need("sklearn.model_selection").train_test_split(
            idx, train_size=fraction, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise EvaluationInputError(f"cannot split {len(y)} rows for calibration: {exc}") from None
    return np.sort(cal), np.sort(rest)
