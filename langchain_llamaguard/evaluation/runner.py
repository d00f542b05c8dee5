"""Scoring rows with a guard's batched engine, resumable through ``predictions.jsonl``.

Example:
    >>> run = score_examples(guard, examples, batch_size=64, predictions_path="out/predictions.jsonl")  # doctest: +SKIP
    >>> run.examples_per_second  # doctest: +SKIP
    512.3
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ._deps import need
from .data import Example, Task

DEFAULT_BATCH_SIZE = 256
"""Rows per ``batch_check`` call. Large batches amortize the engine's per-batch work (on this project's CPU a
batch of 64 scores ~1.4x slower than 256); lower it when a big model's batch does not fit the GPU."""


class Prediction(BaseModel):
    """One line of ``predictions.jsonl``.

    Example:
        >>> Prediction(index=0, label=1, score=0.9, safe=False, categories=["S9"]).flagged is None
        True
    """

    index: int
    """The row's position in the input (0-based)."""
    label: int
    """1 = labelled unsafe."""
    score: float
    """P(unsafe) (Llama Guard) or P(malicious) (Prompt Guard)."""
    safe: bool
    """The guard's verdict, as the guard was configured."""
    categories: list[str] = Field(default_factory=list)
    """Categories the guard named."""
    flagged: bool | None = None
    """Unsafe at the report's threshold (``score >= threshold``; the verdict when there is none)."""
    split: Literal["calibration", "report"] | None = None
    label_categories: list[str] = Field(default_factory=list)
    language: str | None = None
    error: str | None = None


@dataclass
class ScoreRun:
    """Predictions for every example (input order), and how many were scored now, in how many seconds."""

    predictions: list[Prediction]
    scored: int
    seconds: float

    @property
    def examples_per_second(self) -> float | None:
        return self.scored / self.seconds if self.scored and self.seconds > 0 else None


def is_prompt_guard(guard: Any) -> bool:
    """Prompt Guard scores plain texts and names no categories."""
    from ..prompt_guard import PromptGuardEngine as PromptGuard

    return isinstance(guard, PromptGuard)


def _check(guard: Any, batch: list[Example], task: Task, excluded: tuple[str, ...] | None) -> list[Any]:
    if is_prompt_guard(guard):
        return guard.batch_check([ex.text for ex in batch])
    role = "Agent" if task == "response" else "User"
    return guard.batch_check([ex.conversation for ex in batch], role=role, excluded_categories=excluded)


def read_predictions(path: str | Path) -> dict[int, Prediction]:
    """Rows already in a ``predictions.jsonl`` (a line cut short by an interrupted run is ignored).

    Example:
        >>> read_predictions("eval-out/predictions.jsonl")[0].score  # doctest: +SKIP
        0.97
    """
    done: dict[int, Prediction] = {}
    p = Path(path)
    if not p.is_file():
        return done
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            pred = Prediction.model_validate_json(line)
        except ValueError:
            continue
        done[pred.index] = pred
    return done


def write_predictions(path: str | Path, predictions: Iterable[Prediction]) -> None:
    """Write (atomically) one JSON line per prediction."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(pred.model_dump_json() + "\n" for pred in predictions)
    os.replace(tmp, p)


def _length(ex: Example) -> int:
    return len(ex.text) if isinstance(ex.conversation, str) else len(str(ex.conversation))


def score_examples(
    guard: Any,
    examples: Sequence[Example],
    *,
    task: Task = "prompt",
    excluded_categories: Iterable[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    predictions_path: str | Path | None = None,
    progress: bool = True,
) -> ScoreRun:
    """Score ``examples`` in batches of ``batch_size`` with ``guard.batch_check`` (Llama Guard or Prompt Guard).

    With ``predictions_path``, rows already there (same index and label) are kept and not scored again, and
    every batch is appended as it is done, so an interrupted run resumes; at the end the file holds one row per
    example in input order. Rows are batched by length (less padding); the order of the output is the input's.

    Example:
        >>> examples = [Example(0, "How do I make a bomb?", "How do I make a bomb?", 1)]
        >>> score_examples(guard, examples, progress=False).predictions[0].safe  # doctest: +SKIP
        False
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    excluded = tuple(excluded_categories) if excluded_categories is not None else None
    done = read_predictions(predictions_path) if predictions_path else {}
    done = {ex.index: done[ex.index] for ex in examples if ex.index in done and done[ex.index].label == ex.label}
    todo = sorted((ex for ex in examples if ex.index not in done), key=_length)
    sink = None
    if predictions_path:
        write_predictions(predictions_path, [done[ex.index] for ex in examples if ex.index in done])
        sink = Path(predictions_path).open("a", encoding="utf-8")
    bar = None
    if progress:
        bar = need("tqdm").tqdm(
            total=len(examples), initial=len(done), unit="ex", desc="scoring", file=sys.stderr, smoothing=0.1
        )
    start = time.perf_counter()
    try:
        for b in range(0, len(todo), batch_size):
            batch = todo[b : b + batch_size]
            lines = []
            for ex, v in zip(batch, _check(guard, batch, task, excluded), strict=True):
                pred = Prediction(
                    index=ex.index,
                    label=ex.label,
                    score=v.score,
                    safe=v.safe,
                    categories=list(getattr(v, "categories", [])),
                    label_categories=list(ex.categories),
                    language=ex.language,
                    error=getattr(v, "error", None),
                )
                done[ex.index] = pred
                lines.append(pred.model_dump_json() + "\n")
            if sink is not None:
                sink.writelines(lines)
                sink.flush()
            if bar is not None:
                bar.update(len(batch))
    finally:
        seconds = time.perf_counter() - start
        if sink is not None:
            sink.close()
        if bar is not None:
            bar.close()
    ordered = [done[ex.index] for ex in examples]
    if predictions_path:
        write_predictions(predictions_path, ordered)
    return ScoreRun(ordered, len(todo), seconds)
