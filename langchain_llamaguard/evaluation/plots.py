"""PNG plots with matplotlib's Agg backend: precision-recall and ROC curves (operating point marked) and
score histograms by label.

Example:
    >>> write_plots([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.6], [False, True, False, True], 0.5, "out")  # doctest: +SKIP
    ['out/pr_curve.png', 'out/roc_curve.png', 'out/score_histogram.png']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._deps import need


def _pyplot():
    matplotlib = need("matplotlib")
    matplotlib.use("Agg", force=True)
    return need("matplotlib.pyplot")


def write_plots(
    labels: Sequence[int],
    scores: Sequence[float],
    flagged: Sequence[bool],
    threshold: float | None,
    out_dir: str | Path,
    *,
    title: str = "",
) -> list[str]:
    """Write ``pr_curve.png``, ``roc_curve.png`` and ``score_histogram.png``; return their paths.

    The marked point is the guard's decisions at ``threshold`` (``None``: its own verdicts). Curves need both
    safe and unsafe rows; without them only the histogram is drawn.
    """
    plt = _pyplot()
    skm = need("sklearn.metrics")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    f = np.asarray(flagged, dtype=bool)
    mark = "threshold " + (f"{threshold:.3g}" if threshold is not None else "(model's verdict)")
    tp, fp = int((f & (y == 1)).sum()), int((f & (y == 0)).sum())
    positives, negatives = int(y.sum()), int((y == 0).sum())
    paths: list[str] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(str(out / name))

    if positives and negatives:
        precision, recall, _ = skm.precision_recall_curve(y, s)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(recall, precision, label=f"AUPRC {skm.average_precision_score(y, s):.3f}")
        ax.axhline(positives / len(y), color="grey", ls=":", label=f"positive rate {positives / len(y):.3f}")
        if tp + fp:
            ax.plot([tp / positives], [tp / (tp + fp)], "o", color="crimson", label=mark)
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.05), title=f"Precision-recall {title}")
        ax.legend(loc="lower left")
        save(fig, "pr_curve.png")

        fpr, tpr, _ = skm.roc_curve(y, s)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(fpr, tpr, label=f"ROC-AUC {skm.roc_auc_score(y, s):.3f}")
        ax.plot([0, 1], [0, 1], color="grey", ls=":")
        ax.axvline(0.01, color="grey", ls="--", lw=0.8, label="FPR 1%")
        ax.plot([fp / negatives], [tp / positives], "o", color="crimson", label=mark)
        ax.set(xlabel="false-positive rate", ylabel="recall (TPR)", title=f"ROC {title}")
        ax.legend(loc="lower right")
        save(fig, "roc_curve.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(0, 1, 41)
    for value, name, color in ((0, "safe", "tab:blue"), (1, "unsafe", "tab:red")):
        if (y == value).any():
            ax.hist(
                s[y == value], bins=bins, alpha=0.6, color=color, label=f"labelled {name} ({int((y == value).sum())})"
            )
    if threshold is not None:
        ax.axvline(threshold, color="crimson", ls="--", label=mark)
    ax.set(xlabel="score (P(unsafe))", ylabel="rows", title=f"Scores by label {title}")
    ax.legend(loc="upper center")
    save(fig, "score_histogram.png")
    return paths
