"""Scoring rows with a guard's batched engine, resumable through ``predictions.jsonl``.

A row whose check fails is kept with its ``error`` and scored again by the next run; the run itself stops only
for what no row can get past (out of memory, the guard server down), keeping the rows already scored.

Example:
    >>> run = score_examples(guard, examples, batch_size=64, predictions_path="out/predictions.jsonl")  # doctest: +SKIP
    >>> run.examples_per_second  # doctest: +SKIP
    512.3
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..errors import GuardBatchError, GuardInputError, GuardServerError, GuardTimeoutError, LlamaGuardError
from ._deps import need
from .data import LISTED, Example, Task, rows_named

DEFAULT_BATCH_SIZE = 256
"""Rows per ``batch_check`` call. Large batches amortize the engine's per-batch work (on this project's CPU a
batch of 64 scores ~1.4x slower than 256); lower it when a big model's batch does not fit the GPU."""


class EvaluationRunError(LlamaGuardError, RuntimeError):
    """The evaluation stopped: out of memory, the guard server down, or no row could be checked. Rows already
    scored are kept in ``predictions.jsonl``; running again with the same ``out_dir`` resumes. One line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class Prediction(BaseModel):
    """One line of ``predictions.jsonl``. A row whose check failed has ``error`` set and no score or verdict.

    Example:
        >>> Prediction(index=0, label=1, score=0.9, safe=False, categories=["S9"]).flagged is None
        True
    """

    index: int
    """The row's position in the input (0-based)."""
    label: int
    """1 = labelled unsafe."""
    score: float | None = None
    """P(unsafe) (Llama Guard) or P(malicious) (Prompt Guard); ``None`` when the check failed."""
    safe: bool | None = None
    """The guard's verdict, as the guard was configured; ``None`` when the check failed."""
    categories: list[str] = Field(default_factory=list)
    """Categories the guard named."""
    flagged: bool | None = None
    """Unsafe at the report's threshold (``score >= threshold``; the verdict when there is none)."""
    split: Literal["calibration", "report"] | None = None
    label_categories: list[str] = Field(default_factory=list)
    language: str | None = None
    row_sha256: str | None = None
    """A hash of what the row had judged: a run resumed with the same ``--out`` checks a row again when its
    content changed (an edited data file), not only when its label did."""
    error: str | None = None
    """Why the row could not be checked (``"ImageLoadError: image file not found: ..."``); such a row is left
    out of the metrics, and a fail-closed stand-in verdict (``on_error="unsafe"``) is not taken as the model's."""


@dataclass
class ScoreRun:
    """Predictions for every example (input order), and how many were scored now, in how many seconds;
    ``kept``: rows already in ``predictions.jsonl`` of no example here that stay there (those a ``limit`` left
    out of this run), in index order."""

    predictions: list[Prediction]
    scored: int
    seconds: float
    kept: list[Prediction] = field(default_factory=list)

    @property
    def examples_per_second(self) -> float | None:
        return self.scored / self.seconds if self.scored and self.seconds > 0 else None


def is_prompt_guard(guard: Any) -> bool:
    """Prompt Guard scores plain texts and names no categories."""
    from ..prompt_guard import PromptGuardEngine as PromptGuard

    return isinstance(guard, PromptGuard)


def _check(guard: Any, batch: list[Example], task: Task, excluded: tuple[str, ...] | None) -> list[Any]:
    if is_prompt_guard(guard):
        return _prompt_guard_check(guard, batch)
    role = "Agent" if task == "response" else "User"
    return guard.batch_check([ex.conversation for ex in batch], role=role, excluded_categories=excluded)


def _prompt_guard_check(guard: Any, batch: list[Example]) -> list[Any]:
    """Prompt Guard's verdicts on the rows' texts; a row without a text to score fails alone, saying why."""
    errors: dict[int, BaseException] = {
        i: GuardInputError(ex.text_error) for i, ex in enumerate(batch) if ex.text_error is not None
    }
    scored = [i for i in range(len(batch)) if i not in errors]
    verdicts: list[Any] = [None] * len(batch)
    if scored:
        try:
            got, failed = guard.batch_check([batch[i].text for i in scored]), {}
        except GuardBatchError as exc:
            got, failed = exc.verdicts, exc.errors
        for k, i in enumerate(scored):
            verdicts[i] = got[k]
            if k in failed:
                errors[i] = failed[k]
    if errors:
        raise GuardBatchError(verdicts, errors)
    return verdicts


Outcome = tuple[Any, str | None]
"""A row's verdict, or ``(None, why it failed)``."""


def _one_line(error: BaseException | str) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, str) else f"{type(error).__name__}: {text}" if text else type(error).__name__


def _out_of_memory(error: BaseException | str) -> bool:
    low = str(error).lower()
    oom_type = isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
    return oom_type or "out of memory" in low or "can't allocate memory" in low


def _server_down(error: BaseException | str) -> bool:
    return isinstance(error, GuardServerError) and error.status is None and str(error).startswith("cannot reach")


def _timed_out(error: BaseException | str) -> bool:
    """A served guard that took its connection and never answered (its client's timeout), or a guard's own
    ``timeout=``."""
    if isinstance(error, GuardTimeoutError):
        return True
    return isinstance(error, GuardServerError) and error.status is None and str(error).endswith("(timeout)")


def _stop(errors: list[BaseException | str], rows: int, batch_size: int, *, pinned: bool) -> str | None:
    """Why these errors of a batch stop the run instead of failing rows, with what to do: the guard server is
    unreachable, or hangs (every row of the batch timed out), or out of memory (unless the guard pinned it on some
    rows only: those rows alone do not fit)."""
    for error in errors:
        if _server_down(error):
            text = " ".join(str(error).split())[:300]
            return f"the guard server stopped answering: {text}; start it, then run again with the same --out"
    # several rows, each reported as timed out: the guard hangs (one slow row alone is a failed row, not a stop)
    if pinned and rows > 1 and len(errors) == rows and all(_timed_out(e) for e in errors):
        text = " ".join(str(errors[0]).split())[:300]
        return (
            f"every row of a batch of {rows} timed out ({text}): the guard is hung or overloaded; check it, then "
            "run again with the same --out to resume"
        )
    oom = [e for e in errors if _out_of_memory(e)]
    if oom and (not pinned or len(oom) == rows):
        return (
            f"out of memory checking a batch of {rows} rows ({_one_line(oom[0])[:200]}); lower --batch-size "
            f"(now {batch_size}) or the guard's max_batch_size / max_batch_tokens, then run again with the same "
            "--out to resume"
        )
    return None


def _outcomes(
    guard: Any, batch: list[Example], task: Task, excluded: tuple[str, ...] | None, batch_size: int
) -> list[Outcome]:
    """Check ``batch``; a row that fails gets its error, the others their verdicts.

    Rows the guard reports one by one (:class:`~langchain_llamaguard.errors.GuardBatchError`, fail-closed
    verdicts carrying ``error``) are taken as reported. Any other exception is pinned on its row by checking
    the two halves of the batch again, down to single rows. What would stop every row (out of memory, the
    server down) raises :class:`EvaluationRunError` instead.
    """
    errors: dict[int, BaseException] = {}
    try:
        verdicts = list(_check(guard, batch, task, excluded))
    except GuardBatchError as exc:
        verdicts, errors = list(exc.verdicts), dict(exc.errors)
    except Exception as exc:
        stop = _stop([exc], len(batch), batch_size, pinned=False)
        if stop:
            raise EvaluationRunError(stop) from exc
        if len(batch) == 1:
            return [(None, _one_line(exc))]
        half = len(batch) // 2
        return [
            *_outcomes(guard, batch[:half], task, excluded, batch_size),
            *_outcomes(guard, batch[half:], task, excluded, batch_size),
        ]
    if len(verdicts) != len(batch):
        raise EvaluationRunError(f"the guard returned {len(verdicts)} verdicts for a batch of {len(batch)} rows")
    why: dict[int, BaseException | str] = {}
    for i, verdict in enumerate(verdicts):
        if i in errors:
            why[i] = errors[i]
        elif verdict is None:
            why[i] = "the guard returned no verdict for this row"
        elif getattr(verdict, "error", None):
            why[i] = verdict.error  # a fail-closed stand-in (on_error="unsafe"), not the model's prediction
    stop = _stop(list(why.values()), len(batch), batch_size, pinned=True)
    if stop:
        raise EvaluationRunError(stop)
    return [(None, _one_line(why[i])) if i in why else (v, None) for i, v in enumerate(verdicts)]


def row_sha256(ex: Example) -> str:
    """What :attr:`Prediction.row_sha256` holds for ``ex`` (an image by its pixels, not by its object)."""

    def by_content(value: Any) -> str:
        if hasattr(value, "tobytes") and hasattr(value, "size"):  # a PIL image
            pixels = hashlib.sha256(value.tobytes()).hexdigest()
            return f"image:{getattr(value, 'mode', '')}:{value.size}:{pixels}"
        return repr(value)

    judged = json.dumps([ex.conversation, ex.text], ensure_ascii=False, default=by_content)
    return hashlib.sha256(judged.encode("utf-8", "surrogatepass")).hexdigest()  # a lone surrogate is content too


def _prediction(ex: Example, verdict: Any, error: str | None) -> Prediction:
    common = {
        "index": ex.index,
        "label": ex.label,
        "label_categories": list(ex.categories),
        "language": ex.language,
        "row_sha256": row_sha256(ex),
    }
    if verdict is None:
        return Prediction(**common, error=error or "no verdict")
    return Prediction(
        **common, score=verdict.score, safe=verdict.safe, categories=list(getattr(verdict, "categories", []))
    )


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
    for line in p.read_text(encoding="utf-8").split("\n"):  # not splitlines(): U+2028 may sit in a string
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


def _reusable(stored: dict[int, Prediction], examples: Sequence[Example]) -> dict[int, Prediction]:
    """The stored predictions still valid for ``examples``: same label, not failed, same content; the row's
    labelled categories and language are the current row's (an edited category column is not a new judgement)."""
    done = {}
    for ex in examples:
        pred = stored.get(ex.index)
        if pred is None or pred.label != ex.label or pred.error is not None:
            continue
        if pred.row_sha256 not in (None, row_sha256(ex)):  # None: written before rows were hashed
            continue
        done[ex.index] = pred.model_copy(update={"label_categories": list(ex.categories), "language": ex.language})
    return done


def _check_indices(examples: Sequence[Example]) -> None:
    seen: set[int] = set()
    repeated = sorted({ex.index for ex in examples if ex.index in seen or seen.add(ex.index)})
    if repeated:
        raise ValueError(
            f"indices repeat among the examples ({', '.join(map(str, repeated[:LISTED]))}"
            f"{', ...' if len(repeated) > LISTED else ''}): each example needs its own index (predictions are "
            "stored by index); renumber joined lists, e.g. [dataclasses.replace(ex, index=i) for i, ex in "
            "enumerate(examples)] (evaluate() numbers them by position)"
        )


def score_examples(
    guard: Any,
    examples: Sequence[Example],
    *,
    task: Task = "prompt",
    excluded_categories: Iterable[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    predictions_path: str | Path | None = None,
    progress: bool = True,
    keep: Callable[[int], bool] | None = None,
) -> ScoreRun:
    """Score labelled ``examples`` in batches of ``batch_size`` with ``guard.batch_check`` (Llama Guard or Prompt
    Guard). A row whose check fails gets a prediction with ``error`` set and no score; out of memory or a server
    down raises :class:`EvaluationRunError`, keeping the rows already written.

    With ``predictions_path``, rows already there (same index and label, not failed) are kept and not scored
    again, and every batch is appended as it is done, so an interrupted run resumes; at the end the file holds
    one row per example in input order, then the stored rows of no example here for which ``keep(index)`` is
    true (default: none). Rows are batched by length (less padding); the output is in input order. Examples
    must have distinct indices (``ValueError`` otherwise).

    Example:
        >>> examples = [Example(0, "How do I make a bomb?", "How do I make a bomb?", 1)]
        >>> score_examples(guard, examples, progress=False).predictions[0].safe  # doctest: +SKIP
        False
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    unlabeled = [ex.index for ex in examples if ex.label is None]
    if unlabeled:
        raise ValueError(f"{rows_named(unlabeled)} have no label: leave them out (evaluate() skips them)")
    _check_indices(examples)
    excluded = tuple(excluded_categories) if excluded_categories is not None else None
    stored = read_predictions(predictions_path) if predictions_path else {}
    done = _reusable(stored, examples)  # a row that failed, or whose content changed since, is checked again
    wanted = {ex.index for ex in examples}
    kept = [p for i, p in sorted(stored.items()) if i not in wanted and keep is not None and keep(i)]
    for ex in examples:
        if ex.error is not None:  # nothing to check (no prompt): failed before the guard
            done[ex.index] = _prediction(ex, None, ex.error)
    todo = sorted((ex for ex in examples if ex.index not in done), key=_length)
    sink = None
    if predictions_path:
        write_predictions(predictions_path, [*(done[ex.index] for ex in examples if ex.index in done), *kept])
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
            for ex, (verdict, error) in zip(batch, _outcomes(guard, batch, task, excluded, batch_size), strict=True):
                pred = _prediction(ex, verdict, error)
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
        write_predictions(predictions_path, [*ordered, *kept])
    return ScoreRun(ordered, len(todo), seconds, kept)
