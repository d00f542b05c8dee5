"""Evaluation data: JSONL, JSON, CSV/TSV files or Hugging Face datasets (``hf:NAME[:SPLIT]``) into :class:`Example` s.

Labels: ``0``/``1``, ``true``/``false``, ``safe``/``unsafe``, ``good``/``bad`` (Meta's format) and
``benign``/``malicious`` (Prompt Guard's). The positive class is *unsafe*: ``1`` = ``true`` = ``unsafe`` =
``bad`` = ``malicious``. Categories are S-codes or names (``"S9"``, ``"Hate"``), a list or a comma-separated string.

Example:
    >>> parse_label("bad"), parse_label(0), parse_label("Unsafe")
    (1, 0, 1)
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..taxonomy import resolve_category

Task = Literal["prompt", "response"]

_LABELS: dict[str, int] = {
    "0": 0, "1": 1, "false": 0, "true": 1, "safe": 0, "unsafe": 1, "good": 0, "bad": 1, "benign": 0, "malicious": 1,
}  # fmt: skip
LABELS_HINT = "0/1, true/false, safe/unsafe, good/bad or benign/malicious (unsafe = 1 = true = bad)"


class EvaluationInputError(ValueError):
    """Bad evaluation input (data, column, label, category, option); the message is one line naming it."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Columns:
    """Which columns hold what. ``category`` and ``language`` are optional.

    Example:
        >>> Columns(prompt="question", label="is_harmful").response
        'response'
    """

    prompt: str = "prompt"
    response: str = "response"
    label: str = "label"
    category: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class Example:
    """One row to score: the conversation (or text, for Prompt Guard), its label (1 = unsafe) and metadata."""

    index: int
    conversation: Any
    text: str
    label: int
    categories: tuple[str, ...] = ()
    language: str | None = None


def parse_label(value: Any) -> int:
    """1 for unsafe, 0 for safe; ``ValueError`` for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    key = str(value).strip().casefold() if isinstance(value, str) else None
    if key in _LABELS:
        return _LABELS[key]
    raise ValueError(f"label {value!r} is not a label; accepted: {LABELS_HINT}")


def parse_categories(value: Any) -> tuple[str, ...]:
    """S-codes (taxonomy order) from a list, a comma-separated string or a JSON list; empty for None/''.

    Example:
        >>> parse_categories("Hate, s9")
        ('S9', 'S10')
    """
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text.strip("[]").split(",")
        else:
            value = [part for part in text.replace(";", ",").split(",")]
    if not isinstance(value, (list, tuple)):
        value = [str(value)]
    codes = {resolve_category(str(v).strip().strip("'\"")) for v in value if str(v).strip().strip("'\"")}
    return tuple(sorted(codes, key=lambda c: int(c[1:])))


def read_records(source: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl``/``.json``/``.csv``/``.tsv`` file, or of ``hf:NAME[:SPLIT]`` (needs ``datasets``).

    Example:
        >>> read_records("docs/eval-example.jsonl", limit=1)[0]["label"]  # doctest: +SKIP
        'bad'
    """
    if source.startswith("hf:"):
        rows = _read_hf(source[3:], limit)
    else:
        path = Path(source)
        if not path.is_file():
            raise EvaluationInputError(
                f"data file {source!r} not found; accepted: a .jsonl, .json, .csv or .tsv file, or hf:NAME[:SPLIT]"
            )
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        elif suffix in (".jsonl", ".json", ".ndjson"):
            rows = _read_json(path)
        else:
            raise EvaluationInputError(
                f"unsupported data file {source!r}; accepted: .jsonl, .json, .csv, .tsv or hf:NAME[:SPLIT]"
            )
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise EvaluationInputError(f"{source} has no rows")
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvaluationInputError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EvaluationInputError(
                    f"{path} line {lineno} is not valid JSON: {exc.msg}; expected one object per line"
                ) from None
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise EvaluationInputError(f"{path} row {i} is a {type(row).__name__}, not an object with named columns")
    return rows


def _read_hf(spec: str, limit: int | None) -> list[dict[str, Any]]:
    name, _, split = spec.partition(":")
    if not name:
        raise EvaluationInputError(f"hf:{spec}: expected hf:NAME[:SPLIT], e.g. hf:org/dataset:test")
    try:
        import datasets
    except ImportError:
        raise EvaluationInputError("hf: datasets need the `datasets` package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # hub, network, missing split: one line, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationInputError(f"cannot load hf:{spec}: {first}") from None
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return [dict(row) for row in ds]


def to_examples(
    rows: list[dict[str, Any]], *, task: Task = "prompt", columns: Columns | None = None, source: str = "data"
) -> list[Example]:
    """Check the columns and labels of ``rows`` and build the examples (``task="response"`` judges the answer).

    Example:
        >>> [e.label for e in to_examples([{"prompt": "hi", "label": "good"}])]
        [0]
    """
    columns = columns or Columns()
    if task not in ("prompt", "response"):
        raise EvaluationInputError(f"task {task!r}: accepted: prompt, response")
    needed = [(columns.prompt, "--prompt-column"), (columns.label, "--label-column")]
    if task == "response":
        needed.insert(1, (columns.response, "--response-column"))
    optional = ((columns.category, "--category-column"), (columns.language, "--language-column"))
    needed += [(c, o) for c, o in optional if c]
    out: list[Example] = []
    for i, row in enumerate(rows):
        for column, option in needed:
            if column not in row:
                have = ", ".join(map(str, row)) or "none"
                raise EvaluationInputError(
                    f"column {column!r} not found in {source} (row {i + 1} has: {have}); choose one with {option}"
                )
        try:
            label = parse_label(row[columns.label])
        except ValueError as exc:
            raise EvaluationInputError(f"{source} row {i + 1}, column {columns.label!r}: {exc}") from None
        try:
            cats = parse_categories(row[columns.category]) if columns.category else ()
        except ValueError as exc:
            raise EvaluationInputError(f"{source} row {i + 1}, column {columns.category!r}: {exc}") from None
        prompt = _text(row[columns.prompt])
        if task == "prompt":
            conversation: Any = prompt
            text = prompt
        else:
            text = _text(row[columns.response])
            conversation = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
        language = row[columns.language] if columns.language else None
        out.append(Example(i, conversation, text, label, cats, None if language in (None, "") else str(language)))
    return out


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def load_examples(
    source: str, *, task: Task = "prompt", columns: Columns | None = None, limit: int | None = None
) -> list[Example]:
    """:func:`read_records` then :func:`to_examples`.

    Example:
        >>> load_examples("hf:org/guard-eval:test", columns=Columns(label="is_unsafe"))  # doctest: +SKIP
    """
    return to_examples(read_records(source, limit=limit), task=task, columns=columns, source=source)
