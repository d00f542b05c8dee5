"""``evaluate()``: load the rows, score them (resumable), choose or apply the threshold, compute the report,
write ``report.json``, ``predictions.jsonl`` and the plots.

Example:
    >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-4-12B")  # doctest: +SKIP
    >>> report = evaluate(guard, "data.jsonl", calibrate="fpr=0.01", out_dir="out")  # doctest: +SKIP
    >>> print(to_markdown(report))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..taxonomy import resolve_categories
from .calibration import choose_threshold, parse_rule, split_calibration
from .data import Columns, EvaluationInputError, Example, Task, check_examples, check_labels, load_examples, plural
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


WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")
"""What :func:`checkpoint_identity` takes for a weight file of a checkpoint folder."""

SIGNATURE_PARTS = {
    "checkpoint": "checkpoint",
    "policy": "policy (its categories' codes and texts)",
    "excluded_categories": "excluded categories",
    "guard_threshold": "guard's threshold",
}
"""How a refused resume names what changed (other keys of ``run.json`` by their own name)."""


def _excluded(guard: Any, excluded_categories: Iterable[str] | str | None) -> tuple[str, ...]:
    """Codes or names resolved as the guard resolves them: under its policy (its codes and texts) if it has one."""
    if excluded_categories is None:
        return tuple(getattr(guard, "excluded_categories", ()))
    try:
        return resolve_categories(excluded_categories, getattr(guard, "categories", None))
    except ValueError as exc:
        raise EvaluationInputError(f"--excluded-categories: {exc}") from None


def _by_position(examples: list[Example]) -> list[Example]:
    """Rows whose indices repeat (lists joined: ``load_examples(a) + load_examples(b)``), numbered by position."""
    if len({ex.index for ex in examples}) == len(examples):
        return examples
    return [dataclasses.replace(ex, index=i) for i, ex in enumerate(examples)]


def _folder_identity(folder: Path) -> dict[str, str]:
    """A checkpoint folder's ``config.json`` hash and its weight files' sizes and modification times (cheap: no
    weight is read)."""
    out = {}
    config = folder / "config.json"
    if config.is_file():
        out["config.json"] = "sha256:" + hashlib.sha256(config.read_bytes()).hexdigest()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith(WEIGHT_FILES):
            st = path.stat()
            modified = datetime.fromtimestamp(st.st_mtime, UTC).isoformat()
            out[path.name] = f"{st.st_size} bytes, modified {modified}"
    return out


def checkpoint_identity(guard: Any) -> dict[str, Any] | None:
    """What tells the weights behind ``guard`` apart, cheaply: a served model's URL and name; a local checkpoint
    folder's ``config.json`` hash and weight files' names, sizes and modification times (a checkpoint retrained
    in place differs); a hub model's id and revision; with the dtype and quantization. ``None`` if unknown.

    Example:
        >>> checkpoint_identity(guard)["model.safetensors"]  # doctest: +SKIP
        '33426800 bytes, modified 2025-12-06T17:14:02.117000+00:00'
    """
    backend = getattr(guard, "backend", None)
    client = getattr(backend, "client", None)
    if getattr(client, "base_url", None):
        return {"endpoint": client.base_url, "served_model": getattr(backend, "model", None)}
    model = getattr(backend, "model", None) or getattr(guard, "model", None)
    onnx = getattr(model, "path", None)
    if isinstance(onnx, Path) and onnx.is_file():  # an ONNX export (Prompt Guard): the file, and what it exports
        source = onnx.parent / "source.sha256"
        st = onnx.stat()
        return {
            "onnx": onnx.name,
            "size": st.st_size,
            "modified": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
            "export_of": source.read_text().strip() if source.is_file() else None,
        }
    config = getattr(model, "config", None)
    if config is None:
        return None
    source = str(getattr(config, "_name_or_path", "") or "")
    how = {"dtype": str(getattr(model, "dtype", "")), "quantization": getattr(backend, "quantization", None)}
    if source and Path(source).is_dir():
        return {**_folder_identity(Path(source)), **how}
    if source:
        return {"hub": source, "revision": getattr(config, "_commit_hash", None), **how}
    config_json = config.to_json_string() if hasattr(config, "to_json_string") else repr(config)
    return {"config": "sha256:" + hashlib.sha256(config_json.encode()).hexdigest(), **how}


def _policy(guard: Any) -> list[list[str]] | None:
    """The guard's own policy in its order (the order the model reads), ``None`` for the model's default."""
    categories = getattr(guard, "categories", None)
    return [[code, text] for code, text in categories.items()] if categories else None


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
        changed = [_changed(k, before[k], signature[k]) for k in signature if k in before and before[k] != signature[k]]
        if changed:  # a key its run.json lacks was not recorded then (an older version): not compared
            raise EvaluationInputError(
                f"{out} holds predictions of another run ({'; '.join(changed)} "
                f"{'differs' if len(changed) == 1 else 'differ'} from this run's); "
                "use another --out or delete its predictions.jsonl"
            )
    run_file.write_text(json.dumps(signature, indent=2), encoding="utf-8")


def _changed(key: str, before: Any, now: Any) -> str:
    """What changed in one key of the run's signature, for the message refusing a resume."""
    what = SIGNATURE_PARTS.get(key, key)
    if isinstance(before, dict) and isinstance(now, dict):
        parts = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        return f"{what}: {', '.join(parts)}"
    if key == "model":
        return f"model: {before!r} then, {now!r} now"
    return what


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

    Examples passed as such are checked as a file's rows are, before any is scored (:func:`~.data.check_examples`:
    a label that is not one, an unknown category, is an error naming the example; a code of the guard's custom
    policy is a category). Rows whose indices repeat (lists joined: ``load_examples(a) + load_examples(b)``) are
    numbered by their position in ``data``. A row's categories count (per-category metrics, confusion) only when
    it is labelled unsafe. ``out_dir`` resumes a run there; a run of another model, checkpoint (its files
    changed), policy, data, task, columns or exclusions is refused; with ``limit``, the rows it leaves out stay in
    ``predictions.jsonl``.

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
    if bootstrap < 0:
        raise EvaluationInputError(f"--bootstrap {bootstrap}: accepted: an integer >= 0 (0: no intervals)")
    if isinstance(data, str):
        examples, dataset = load_examples(data, task=task, columns=columns, limit=limit, strict=strict), data
    else:
        examples, dataset = list(data)[:limit] if limit is not None else list(data), dataset_name or "examples"
        examples = _by_position(check_examples(examples, source=dataset, policy=getattr(guard, "categories", None)))
        if not examples:
            raise EvaluationInputError(f"{dataset} has no rows")
        check_labels(examples, strict=strict, source=dataset, column=columns.label)
    loaded = {ex.index for ex in examples}
    unlabeled = [ex.index for ex in examples if ex.label is None]
    examples = [ex for ex in examples if ex.label is not None]
    pg = is_prompt_guard(guard)
    if pg and excluded_categories:
        raise EvaluationInputError(
            "--excluded-categories: Prompt Guard has no categories to exclude; it applies to Llama Guard only"
        )
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
            "checkpoint": checkpoint_identity(guard),
            "policy": _policy(guard),
            "dataset": dataset_name or dataset,
            "task": task,
            "columns": dataclasses.asdict(columns),
            "excluded_categories": list(excluded),
            "guard_threshold": getattr(guard, "threshold", None),
        }
        _check_run(out, json.loads(json.dumps(signature, default=str)))  # compared as run.json holds it
    run = score_examples(
        guard,
        examples,
        task=task,
        excluded_categories=None if pg else excluded,
        batch_size=batch_size,
        predictions_path=out / "predictions.jsonl" if out else None,
        progress=progress,
        keep=(lambda i: i not in loaded) if limit is not None else None,  # the rows the limit leaves out
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
        write_predictions(out / "predictions.jsonl", [*(judged.get(p.index, p) for p in run.predictions), *run.kept])
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
    true_cats = [p.label_categories if p.label else [] for p in preds]  # a safe row's categories are its topic
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
