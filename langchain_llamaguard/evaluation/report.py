"""The evaluation report (``report.json``) and its Markdown table.

Example:
    >>> Metrics(precision=1.0, recall=0.5).f1 is None
    True
"""

from __future__ import annotations

from pydantic import BaseModel, Field

MAIN_METRICS = ("precision", "recall", "f1", "fpr", "auprc", "roc_auc", "recall_at_1pct_fpr")


class Metrics(BaseModel):
    """Binary metrics (positive = unsafe). ``None`` where undefined (e.g. ROC-AUC with one class only)."""

    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    fpr: float | None = None
    """False-positive rate at the threshold: safe rows flagged / safe rows."""
    auprc: float | None = None
    """``average_precision_score``; compare it with ``positive_rate``, the AUPRC of a random guess."""
    positive_rate: float | None = None
    roc_auc: float | None = None
    recall_at_1pct_fpr: float | None = None


class Interval(BaseModel):
    """A bootstrap 95% interval (2.5th and 97.5th percentiles)."""

    low: float | None = None
    high: float | None = None


class GroupMetrics(BaseModel):
    """Metrics of one slice of the data (a language)."""

    n: int
    positives: int
    metrics: Metrics


class CategoryMetrics(BaseModel):
    """One-vs-all metrics of a category: positives are rows labelled with it, a hit is a flag naming it."""

    n: int
    """Rows labelled with this category."""
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    fpr: float | None = None
    auprc: float | None = None
    """Average precision of the row's unsafe score against this category's one-vs-all labels."""
    detection_recall: float | None = None
    """Rows of this category flagged unsafe at all (whatever category the guard named)."""


class CategoryConfusion(BaseModel):
    """Labelled category (rows) x named category (columns) for unsafe rows; ``safe`` = missed,
    ``none`` = flagged without a category."""

    labels: list[str]
    columns: list[str]
    matrix: list[list[int]]


class Calibration(BaseModel):
    """How the threshold was chosen: the rule, on how many calibration rows (left out of the metrics)."""

    rule: str
    n: int
    positives: int
    threshold: float
    seed: int


class FailedRow(BaseModel):
    """A row whose check failed: its ``index`` in ``predictions.jsonl`` (0-based) and why."""

    index: int
    error: str


class Report(BaseModel):
    """What ``llamaguard eval`` writes to ``report.json``.

    Example:
        >>> Report(n=2, positives=1, threshold=0.5, metrics=Metrics(), model="m", dataset="d").n
        2
    """

    n: int
    positives: int
    threshold: float | None
    """``None``: the guard's own verdicts decide (Llama Guard's first token); else flagged = ``score >= threshold``."""
    metrics: Metrics
    intervals: dict[str, Interval] = Field(default_factory=dict)
    per_category: dict[str, CategoryMetrics] | None = None
    per_category_macro: Metrics | None = None
    """Precision, recall, F1 and FPR averaged over the labelled categories, each weighted equally."""
    per_language: dict[str, GroupMetrics] | None = None
    category_confusion: CategoryConfusion | None = None
    calibration: Calibration | None = None
    model: str
    dataset: str
    task: str = "prompt"
    examples_per_second: float | None = None
    """Rows scored per second in this run (rows resumed from an earlier run not counted)."""
    scored: int = 0
    """Rows scored in this run (the others came from ``predictions.jsonl`` of an earlier run)."""
    bootstrap: int = 0
    plots: list[str] = Field(default_factory=list)
    errors: int = 0
    """Rows whose check failed: in ``predictions.jsonl`` with their ``error``, left out of every metric."""
    failed_rows: list[FailedRow] = Field(default_factory=list)
    """The first of them (up to 10), with their errors."""
    unlabeled: int = 0
    """Rows without a label: skipped (not scored, not in ``predictions.jsonl``)."""
    unlabeled_rows: list[int] = Field(default_factory=list)
    """The first of them (up to 10), as 0-based indices (row N of the data is index N - 1)."""


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _left_out(report: Report) -> list[str]:
    lines = []
    if report.errors:
        verb = "row failed and is" if report.errors == 1 else "rows failed and are"
        lines.append(f"{report.errors} {verb} not in the metrics (their errors: `error` in predictions.jsonl)")
    if report.unlabeled:
        verb = "row has" if report.unlabeled == 1 else "rows have"
        lines.append(f"{report.unlabeled} {verb} no label and {'was' if report.unlabeled == 1 else 'were'} skipped")
    return ["", *lines] if lines else []


def to_markdown(report: Report) -> str:
    """The main metrics (with 95% intervals), then per-category and per-language tables when present; rows
    that failed or had no label are counted above the table."""
    rule = f", calibrated on {report.calibration.n} rows ({report.calibration.rule})" if report.calibration else ""
    threshold = "the model's own verdict" if report.threshold is None else f"{report.threshold:.4g}"
    speed = f", {report.examples_per_second:.1f} examples/s" if report.examples_per_second else ""
    lines = [
        f"{report.model} on {report.dataset} ({report.task}): {report.n} rows, {report.positives} unsafe, "
        f"threshold {threshold}{rule}{speed}",
        *_left_out(report),
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
    ]
    m = report.metrics.model_dump()
    for key in MAIN_METRICS:
        iv = report.intervals.get(key)
        ci = f"{_fmt(iv.low)} – {_fmt(iv.high)}" if iv and iv.low is not None else ""
        extra = f" (positive rate {_fmt(report.metrics.positive_rate)})" if key == "auprc" else ""
        lines.append(f"| {key} | {_fmt(m[key])}{extra} | {ci} |")
    if report.per_category:
        lines += [
            "",
            "| category | n | precision | recall | f1 | fpr | detection recall |",
            "|---|---|---|---|---|---|---|",
        ]
        for code, c in report.per_category.items():
            lines.append(
                f"| {code} | {c.n} | {_fmt(c.precision)} | {_fmt(c.recall)} | {_fmt(c.f1)} | {_fmt(c.fpr)} "
                f"| {_fmt(c.detection_recall)} |"
            )
    if report.per_language:
        lines += ["", "| language | n | precision | recall | f1 | fpr | auprc |", "|---|---|---|---|---|---|---|"]
        for lang, g in report.per_language.items():
            x = g.metrics
            lines.append(
                f"| {lang} | {g.n} | {_fmt(x.precision)} | {_fmt(x.recall)} | {_fmt(x.f1)} | {_fmt(x.fpr)} "
                f"| {_fmt(x.auprc)} |"
            )
    return "\n".join(lines)
