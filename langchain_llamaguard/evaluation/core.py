"""``evaluate()``: load the rows, score them (resumable), choose or apply the threshold, compute the report,
write ``report.json``, ``predictions.jsonl`` and the plots.

Example:
    >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-4-12B")  # doctest: +SKIP
    >>> report = evaluate(guard, "data.jsonl", calibrate="fpr=0.01", out_dir="out")  # doctest: +SKIP
    >>> print(to_markdown(report))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..taxonomy import resolve_categories
from .calibration import choose_threshold, parse_rule, split_calibration
from .data import Columns, EvaluationInputError, Example, Task, check_labels, load_examples, plural
from .metrics import binary_metrics, bootstrap_intervals, category_confusion, per_category, per_language
from .plots import write_plots
from .report import Calibration, FailedRow, Metrics, Report
from .runner import (
    DEFAULT_BATCH_SIZE,
    EvaluationRunError,
    Prediction,
    is_prompt_guard,
    score_examples,
    write_predictions,
)

LISTED_IN_REPORT = 10
"""How many failed / unlabeled rows ``report.json`` lists (all are counted)."""


def _excluded(guard: Any, excluded_categories: Iterable[str] | str | None) -> tuple[str, ...]:
    if excluded_categories is None:
        return tuple(getattr(guard, "excluded_categories", ()))
    try:
        return resolve_categories(excluded_categories)
    except ValueError as exc:
        raise EvaluationInputError(f"--excluded-categories: {exc}") from None


def apply_exclusions(examples: Sequence[Example], excluded: Iterable[str]) -> list[Example]:
    """Drop excluded codes from the labelled categories; a row labelled only with excluded ones counts as safe
    (the policy does not cover it)."""
    ex_set = set(excluded)
    if not ex_set:
        return list(examples)
    out = []
    for ex in examples:
        cats = tuple(c for c in ex.categories if c not in ex_set)
        label = 0 if ex.label and ex.categories and not cats else ex.label
        out.append(dataclasses.replace(ex, categories=cats, label=label))
    return out


def _check_run(out: Path, signature: dict[str, Any]) -> None:
    run_file = out / "run.json"
    if (out / "predictions.jsonl").exists() and run_file.exists():
        try:
            before = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvaluationInputError(
                f"{run_file} cannot be read ({exc}); use another --out or delete its predictions.jsonl"
            ) from None
        changed = [k for k in signature if before.get(k) != signature[k]]
        if changed:
            raise EvaluationInputError(
                f"{out} holds predictions of another run ({', '.join(changed)} differ); "
                "use another --out or delete its predictions.jsonl"
            )
    run_file.write_text(json.dumps(signature, indent=2), encoding="utf-8")


def evaluate(
    guard: Any,
    data: str | Sequence[Example],
    *,
    task: Task = "prompt",
    columns: Columns | None = None,
    excluded_categories: Iterable[str] | str | None = None,
    threshold: float | None = None,
    calibrate: str | None = None,
    calibration_fraction: float = 0.5,
    seed: int = 0,
    out_dir: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    limit: int | None = None,
    bootstrap: int = 1000,
    plots: bool = True,
    progress: bool = True,
    model_name: str | None = None,
    dataset_name: str | None = None,
    strict: bool = False,
) -> Report:
    """Measure ``guard`` (a :class:`~langchain_llamaguard.LlamaGuard` or :class:`~langchain_llamaguard.PromptGuard`)
    on labelled rows.

    ``threshold``: flagged = ``score >= threshold``; ``None`` takes the guard's own (Llama Guard's default is its
    first token's verdict, Prompt Guard's 0.5). ``calibrate="f1"`` or ``"fpr=0.01"`` chooses it instead on a
    stratified ``calibration_fraction`` of the rows and reports on the rest.

    A row whose check fails (an unreadable image, a conversation the guard refuses, a fail-closed verdict) is
    written to ``predictions.jsonl`` with its ``error``, counted in ``Report.errors`` and left out of every
    metric; if every row fails, :class:`EvaluationRunError` is raised. A row without a label is skipped and
    counted (``Report.unlabeled``); ``strict=True`` makes it an :class:`EvaluationInputError`.

    Example:
        >>> pg = PromptGuard.from_pretrained("meta-llama/Llama-Prompt-Guard-2-86M")  # doctest: +SKIP
        >>> evaluate(pg, "hf:org/injections:test").metrics.recall_at_1pct_fpr  # doctest: +SKIP
        0.97
    """
    columns = columns or Columns()
    rule = parse_rule(calibrate) if calibrate is not None else None
    if rule is not None and threshold is not None:
        raise EvaluationInputError("give --threshold or --calibrate, not both")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise EvaluationInputError(f"--threshold {threshold!r}: accepted: a number between 0 and 1")
    if isinstance(data, str):
        examples, dataset = load_examples(data, task=task, columns=columns, limit=limit, strict=strict), data
    else:
        examples, dataset = list(data)[:limit] if limit is not None else list(data), dataset_name or "examples"
        if not examples:
            raise EvaluationInputError(f"{dataset} has no rows")
        check_labels(examples, strict=strict, source=dataset, column=columns.label)
    unlabeled = [ex.index for ex in examples if ex.label is None]
    examples = [ex for ex in examples if ex.label is not None]
    pg = is_prompt_guard(guard)
    excluded = () if pg else _excluded(guard, excluded_categories)
    examples = apply_exclusions(examples, excluded)
    model = model_name or getattr(guard, "model_name", type(guard).__name__)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvaluationInputError(f"cannot write to {str(out)!r}: {exc.strerror or exc}") from None
        signature = {
            "model": model,
            "dataset": dataset_name or dataset,
            "task": task,
            "columns": dataclasses.asdict(columns),
            "excluded_categories": list(excluded),
            "guard_threshold": getattr(guard, "threshold", None),
        }
        _check_run(out, signature)
    run = score_examples(
        guard,
        examples,
        task=task,
        excluded_categories=None if pg else excluded,
        batch_size=batch_size,
        predictions_path=out / "predictions.jsonl" if out else None,
        progress=progress,
    )
    failed = [FailedRow(index=p.index, error=p.error) for p in run.predictions if p.error is not None]
    left_out = {
        "errors": len(failed),
        "failed_rows": failed[:LISTED_IN_REPORT],
        "unlabeled": len(unlabeled),
        "unlabeled_rows": unlabeled[:LISTED_IN_REPORT],
        "model": model,
        "dataset": dataset,
        "task": task,
        "examples_per_second": run.examples_per_second,
        "scored": run.scored,
    }
    preds = [p for p in run.predictions if p.error is None]  # the metrics are on rows the guard judged
    if not preds:
        if out is not None:
            empty = Report(n=0, positives=0, threshold=threshold, metrics=Metrics(), bootstrap=bootstrap, **left_out)
            (out / "report.json").write_text(empty.model_dump_json(indent=2), encoding="utf-8")
        where = f"; every row's error is in {out / 'predictions.jsonl'}" if out is not None else ""
        raise EvaluationRunError(
            f"all {plural(len(failed), 'row')} failed, nothing to measure (row {failed[0].index + 1}: "
            f"{failed[0].error[:300]}){where}"
        )
    labels = np.array([p.label for p in preds], dtype=int)
    scores = np.array([p.score for p in preds], dtype=float)
    report_rows = np.arange(len(preds))
    calibration = None
    guard_threshold = getattr(guard, "threshold", None)
    if rule is not None:
        cal, report_rows = split_calibration(labels, fraction=calibration_fraction, seed=seed)
        threshold = choose_threshold(labels[cal], scores[cal], rule)
        calibration = Calibration(
            rule=str(rule), n=len(cal), positives=int(labels[cal].sum()), threshold=threshold, seed=seed
        )
    elif threshold is None:
        threshold = guard_threshold
    if threshold is None or (rule is None and threshold == guard_threshold):
        flagged = np.array([not p.safe for p in preds])  # the guard's own verdicts at its own threshold
    else:
        flagged = scores >= threshold
    in_report = np.zeros(len(preds), dtype=bool)
    in_report[report_rows] = True
    split = (lambda r: "report" if r else "calibration") if rule is not None else (lambda r: None)
    preds = [
        p.model_copy(update={"flagged": bool(f), "split": split(r)})
        for p, f, r in zip(preds, flagged, in_report, strict=True)
    ]
    if out is not None:
        judged = {p.index: p for p in preds}
        write_predictions(out / "predictions.jsonl", [judged.get(p.index, p) for p in run.predictions])
    report = _report(
        [preds[i] for i in report_rows],
        threshold=threshold,
        pg=pg,
        bootstrap=bootstrap,
        seed=seed,
        language=columns.language is not None or any(p.language for p in preds),
    )
    report = report.model_copy(update={"calibration": calibration, **left_out})
    if out is not None:
        if plots:
            paths = write_plots(
                labels[report_rows],
                scores[report_rows],
                flagged[report_rows],
                threshold,
                out,
                title=f"({model})" if len(model) < 30 else "",
            )
            report = report.model_copy(update={"plots": [Path(p).name for p in paths]})
        (out / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return report


def _report(
    preds: list[Prediction], *, threshold: float | None, pg: bool, bootstrap: int, seed: int, language: bool
) -> Report:
    labels = [p.label for p in preds]
    scores = [p.score for p in preds]
    flagged = [bool(p.flagged) for p in preds]
    true_cats = [p.label_categories for p in preds]
    named = [p.categories for p in preds]
    cats, macro, confusion = None, None, None
    if not pg and any(true_cats):
        cats, macro = per_category(scores, flagged, true_cats, named)
        confusion = category_confusion(labels, flagged, true_cats, named)
    return Report(
        n=len(preds),
        positives=int(sum(labels)),
        threshold=threshold,
        metrics=binary_metrics(labels, scores, flagged),
        intervals=bootstrap_intervals(labels, scores, flagged, n=bootstrap, seed=seed),
        per_category=cats,
        per_category_macro=macro,
        per_language=per_language(labels, scores, flagged, [p.language for p in preds]) if language else None,
        category_confusion=confusion,
        model="",
        dataset="",
        bootstrap=bootstrap,
    )
