"""Measure a guard on your own labelled data: the model cards' metrics, threshold calibration and plots.

``llamaguard eval`` (see :mod:`langchain_llamaguard.cli`) is a thin layer over :func:`evaluate`. Needs the
``eval`` extra (scikit-learn, matplotlib, tqdm); ``hf:`` datasets also need ``datasets``.

Example:
    >>> from langchain_llamaguard import LlamaGuard
    >>> from langchain_llamaguard.evaluation import evaluate, to_markdown
    >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-4-12B")                    # doctest: +SKIP
    >>> report = evaluate(guard, "data.jsonl", calibrate="fpr=0.01", out_dir="eval-out")      # doctest: +SKIP
    >>> print(to_markdown(report))                                                            # doctest: +SKIP
"""

from .calibration import CalibrationRule, choose_threshold, parse_rule, split_calibration
from .core import apply_exclusions, checkpoint_identity, evaluate
from .data import Columns, EvaluationInputError, Example, load_examples, parse_categories, parse_label, read_records
from .metrics import binary_metrics, bootstrap_intervals, category_confusion, per_category, per_language, recall_at_fpr
from .plots import write_plots
from .report import (
    Calibration,
    CategoryConfusion,
    CategoryMetrics,
    FailedRow,
    GroupMetrics,
    Interval,
    Metrics,
    Report,
    to_markdown,
)
from .runner import EvaluationRunError, Prediction, ScoreRun, read_predictions, score_examples

__all__ = [
    "Calibration",
    "CalibrationRule",
    "CategoryConfusion",
    "CategoryMetrics",
    "Columns",
    "EvaluationInputError",
    "EvaluationRunError",
    "Example",
    "FailedRow",
    "GroupMetrics",
    "Interval",
    "Metrics",
    "Prediction",
    "Report",
    "ScoreRun",
    "apply_exclusions",
    "binary_metrics",
    "bootstrap_intervals",
    "category_confusion",
    "checkpoint_identity",
    "choose_threshold",
    "evaluate",
    "load_examples",
    "parse_categories",
    "parse_label",
    "parse_rule",
    "per_category",
    "per_language",
    "read_predictions",
    "read_records",
    "recall_at_fpr",
    "score_examples",
    "split_calibration",
    "to_markdown",
    "write_plots",
]
