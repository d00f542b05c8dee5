"""Metrics with scikit-learn: the model cards' binary metrics, per category, per language, bootstrap intervals.

Positive = unsafe. ``flagged`` is what the guard decided at the threshold; ``scores`` rank the rows (P(unsafe),
or Prompt Guard's P(malicious)).

Example:
    >>> m = binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], [False, True, False, True])
    >>> m.precision, m.recall, m.fpr, m.roc_auc
    (0.5, 0.5, 0.5, 0.75)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from ._deps import need
from .report import MAIN_METRICS, CategoryConfusion, CategoryMetrics, GroupMetrics, Interval, Metrics


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def recall_at_fpr(labels: Sequence[int], scores: Sequence[float], max_fpr: float = 0.01) -> float | None:
    """The highest recall (TPR) on the ROC curve at a false-positive rate of at most ``max_fpr``.

    Example:
        >>> recall_at_fpr([0, 0, 1, 1], [0.1, 0.7, 0.8, 0.6])
        0.5
    """
    y = np.asarray(labels)
    if y.min(initial=1) == y.max(initial=0) or len(y) == 0:
        return None
    fpr, tpr, _ = need("sklearn.metrics").roc_curve(y, np.asarray(scores, dtype=float), drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def binary_metrics(labels: Sequence[int], scores: Sequence[float], flagged: Sequence[bool]) -> Metrics:
    """Precision, recall, F1, FPR at the decisions; AUPRC, ROC-AUC and recall at 1% FPR from the scores."""
    skm = need("sklearn.metrics")
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    p = np.asarray(flagged, dtype=int)
    positives, n = int(y.sum()), len(y)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y, p, average="binary", labels=[0, 1], zero_division=np.nan)
    tn, fp, _, _ = skm.confusion_matrix(y, p, labels=[0, 1]).ravel()
    both = 0 < positives < n
    return Metrics(
        precision=_num(prec),
        recall=_num(rec) if positives else None,
        f1=_num(f1) if positives else None,
        fpr=float(fp / (fp + tn)) if fp + tn else None,
        auprc=float(skm.average_precision_score(y, s)) if positives else None,
        positive_rate=positives / n if n else None,
        roc_auc=float(skm.roc_auc_score(y, s)) if both else None,
        recall_at_1pct_fpr=recall_at_fpr(y, s, 0.01) if both else None,
    )


def bootstrap_intervals(
    labels: Sequence[int], scores: Sequence[float], flagged: Sequence[bool], *, n: int = 1000, seed: int = 0
) -> dict[str, Interval]:
    """95% percentile intervals of the main metrics over ``n`` resamples of the rows (with replacement).

    Each resample takes one ``confusion_matrix`` (precision, recall, F1, FPR from its counts), one
    ``roc_curve`` (ROC-AUC via ``auc``, recall at 1% FPR) and one ``average_precision_score``.

    Example:
        >>> iv = bootstrap_intervals([0, 1] * 20, [0.2, 0.8] * 20, [False, True] * 20, n=50)
        >>> iv["recall"].low, iv["recall"].high
        (1.0, 1.0)
    """
    if n <= 0 or len(labels) == 0:
        return {}
    sklearn, skm = need("sklearn"), need("sklearn.metrics")
    y, s, p = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float), np.asarray(flagged, dtype=int)
    rng = np.random.default_rng(seed)
    draws = np.full((n, len(MAIN_METRICS)), np.nan)
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True), np.errstate(all="ignore"):
        for b in range(n):
            idx = rng.integers(0, len(y), len(y))
            yb, sb = y[idx], s[idx]
            tn, fp, fn, tp = skm.confusion_matrix(yb, p[idx], labels=[0, 1]).ravel().astype(float)
            row = [tp / (tp + fp), tp / (tp + fn), 2 * tp / (2 * tp + fp + fn), fp / (fp + tn)]
            if 0 < tp + fn < len(yb):
                fpr, tpr, _ = skm.roc_curve(yb, sb, drop_intermediate=False)
                ap = skm.average_precision_score(yb, sb)
                row += [ap, skm.auc(fpr, tpr), tpr[fpr <= 0.01 + 1e-12].max()]
            else:
                row += [np.nan] * 3
            draws[b] = row
    out: dict[str, Interval] = {}
    for k, column in zip(MAIN_METRICS, draws.T, strict=True):
        column = column[~np.isnan(column)]
        out[k] = (
            Interval(low=float(np.percentile(column, 2.5)), high=float(np.percentile(column, 97.5)))
            if column.size
            else Interval()
        )
    return out


def per_category(
    scores: Sequence[float],
    flagged: Sequence[bool],
    true_categories: Sequence[Sequence[str]],
    named_categories: Sequence[Sequence[str]],
) -> tuple[dict[str, CategoryMetrics], Metrics]:
    """One-vs-all per labelled category (as in the Llama Guard paper), and their unweighted (macro) average.

    Example:
        >>> cats, macro = per_category([0.9, 0.8, 0.1], [True, True, False], [["S9"], ["S1"], []], [["S9"], ["S9"], []])
        >>> cats["S1"].recall, cats["S1"].detection_recall, cats["S9"].precision
        (0.0, 1.0, 0.5)
    """
    skm = need("sklearn.metrics")
    s = np.asarray(scores, dtype=float)
    f = np.asarray(flagged, dtype=bool)
    codes = sorted({c for cats in true_categories for c in cats}, key=lambda c: int(c[1:]))
    out: dict[str, CategoryMetrics] = {}
    for code in codes:
        y = np.array([code in cats for cats in true_categories], dtype=int)
        hit = np.array([bool(fl) and code in named for fl, named in zip(f, named_categories, strict=True)], dtype=int)
        prec, rec, f1, _ = skm.precision_recall_fscore_support(
            y, hit, average="binary", labels=[0, 1], zero_division=np.nan
        )
        tn, fp, _, _ = skm.confusion_matrix(y, hit, labels=[0, 1]).ravel()
        mask = y == 1
        out[code] = CategoryMetrics(
            n=int(mask.sum()),
            precision=_num(prec),
            recall=_num(rec),
            f1=_num(f1),
            fpr=float(fp / (fp + tn)) if fp + tn else None,
            auprc=float(skm.average_precision_score(y, s)),
            detection_recall=float(skm.recall_score(y[mask], f[mask].astype(int), zero_division=np.nan)),
        )
    macro = {}
    for key in ("precision", "recall", "f1", "fpr"):
        vals = [getattr(c, key) for c in out.values() if getattr(c, key) is not None]
        macro[key] = float(np.mean(vals)) if vals else None
    return out, Metrics(**macro)


def per_language(
    labels: Sequence[int], scores: Sequence[float], flagged: Sequence[bool], languages: Sequence[str | None]
) -> dict[str, GroupMetrics]:
    """:func:`binary_metrics` for each language (rows without one are ``unknown``).

    Example:
        >>> sorted(per_language([0, 1, 1], [0.1, 0.9, 0.2], [False, True, False], ["en", "en", None]))
        ['en', 'unknown']
    """
    y, s, f = np.asarray(labels), np.asarray(scores, dtype=float), np.asarray(flagged)
    langs = np.array([lang or "unknown" for lang in languages], dtype=object)
    out: dict[str, GroupMetrics] = {}
    for lang in sorted(set(langs)):
        m = langs == lang
        out[lang] = GroupMetrics(n=int(m.sum()), positives=int(y[m].sum()), metrics=binary_metrics(y[m], s[m], f[m]))
    return out


def category_confusion(
    labels: Sequence[int],
    flagged: Sequence[bool],
    true_categories: Sequence[Sequence[str]],
    named_categories: Sequence[Sequence[str]],
) -> CategoryConfusion | None:
    """For unsafe rows with a labelled category: its (first) category against the one the guard named.

    A row's named category is its labelled one when the guard named it among others; ``safe`` when it was
    not flagged; ``none`` when it was flagged without a category.

    Example:
        >>> category_confusion([1, 1], [True, False], [["S9"], ["S1"]], [["S1"], []]).matrix
        [[0, 0, 1], [1, 0, 0]]
    """
    y_true: list[str] = []
    y_pred: list[str] = []
    for label, fl, cats, named in zip(labels, flagged, true_categories, named_categories, strict=True):
        if not label or not cats:
            continue
        y_true.append(cats[0])
        y_pred.append("safe" if not fl else cats[0] if cats[0] in named else named[0] if named else "none")
    if not y_true:
        return None
    order = sorted({c for c in y_true + y_pred if c.startswith("S")}, key=lambda c: int(c[1:]))
    columns = order + [c for c in ("none", "safe") if c in y_pred]
    rows = [c for c in order if c in y_true]
    with warnings.catch_warnings():  # one category, all found: sklearn warns of a 1x1 matrix, which is right here
        warnings.simplefilter("ignore", UserWarning)
        full = need("sklearn.metrics").confusion_matrix(y_true, y_pred, labels=columns)
    matrix = [full[columns.index(r)].tolist() for r in rows]
    return CategoryConfusion(labels=rows, columns=columns, matrix=matrix)
