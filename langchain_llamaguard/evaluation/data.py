"""Evaluation data: JSONL, JSON, CSV/TSV files or Hugging Face datasets (``hf:NAME[:SPLIT]``) into :class:`Example` s.

Labels: ``0``/``1``, ``true``/``false``, ``safe``/``unsafe``, ``good``/``bad`` (Meta's format) and
``benign``/``malicious`` (Prompt Guard's); ``1.0``/``0.0`` too (what pandas writes for a label column with a gap).
The positive class is *unsafe*: ``1`` = ``true`` = ``unsafe`` = ``bad`` = ``malicious``. Categories are S-codes
or names (``"S9"``, ``"Hate"``), a list or a comma-separated string.
The prompt column holds a text or a conversation (a list of ``{"role", "content"}`` messages, images included).

A row without a label is kept with ``label=None`` (:func:`~langchain_llamaguard.evaluation.evaluate` skips and
counts it; ``strict=True`` makes it an error); a row without a value in an optional column (category, language)
has none; a row without a prompt (or answer), or whose conversation has no content (``[]``, one empty message),
is kept with ``error`` set and reported as a failed row. Hand-built :class:`Example` s get the same checks of their
label and categories (:func:`check_examples`).

Example:
    >>> parse_label("bad"), parse_label(0), parse_label("Unsafe")
    (1, 0, 1)
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..conversation import content_text_parts
from ..errors import LlamaGuardError
from ..taxonomy import resolve_category

Task = Literal["prompt", "response"]

_LABELS: dict[str, int] = {
    "0": 0, "1": 1, "false": 0, "true": 1, "safe": 0, "unsafe": 1, "good": 0, "bad": 1, "benign": 0, "malicious": 1,
    "0.0": 0, "1.0": 1,  # pandas writes a label column with a gap as floats; no other float is a label
}  # fmt: skip
LABELS_HINT = "0/1, true/false, safe/unsafe, good/bad or benign/malicious (unsafe = 1 = true = bad)"


LISTED = 5
"""How many rows a message names (the first ones)."""


class EvaluationInputError(LlamaGuardError, ValueError):
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
    """One row to score: the conversation (or text, for Prompt Guard), its label (1 = unsafe, ``None``: the row
    has none and is skipped) and metadata; ``error`` says why the row cannot be checked at all (no prompt)."""

    index: int
    conversation: Any
    text: str
    label: int | None
    categories: tuple[str, ...] = ()
    language: str | None = None
    error: str | None = None
    text_error: str | None = None
    """Why Prompt Guard cannot score this row's text (it has none; the conversation does not end with the turn the
    task judges), where Llama Guard may still check its conversation."""


def parse_label(value: Any) -> int:
    """1 for unsafe, 0 for safe; ``ValueError`` for anything else."""
    if hasattr(value, "item") and not isinstance(value, str):  # a NumPy scalar (a DataFrame's cell) as Python's
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    key = str(value).strip().casefold() if isinstance(value, str) else None
    if key in _LABELS:
        return _LABELS[key]
    raise ValueError(f"label {value!r} is not a label; accepted: {LABELS_HINT}")


def parse_categories(value: Any, policy: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """S-codes (taxonomy order) from a list, a comma-separated string or a JSON list; empty for None/''. A code of
    a custom ``policy`` (``"S15"``) is a category too; any other key must be a default code or name.

    Example:
        >>> parse_categories("Hate, s9")
        ('S9', 'S10')
    """
    if _missing(value):  # None, blank, or NaN (a pandas gap)
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
    keys = [str(v).strip().strip("'\"") for v in value]
    codes = {_category(key, policy) for key in keys if key}
    return tuple(sorted(codes, key=lambda c: int(c[1:])))


def _category(key: str, policy: Mapping[str, str] | None) -> str:
    """``key``'s S-code: a code of ``policy`` as it spells it, else the default taxonomy's code or name."""
    for code in policy or ():
        if key.casefold() == code.casefold():
            return code
    return resolve_category(key)


def _label_of(value: Any) -> int | None:
    """A row's label: ``None`` when it has none (absent, blank or NaN), else :func:`parse_label`'s."""
    return None if _missing(value) else parse_label(value)


def _language_of(value: Any) -> str | None:
    """A row's language: ``None`` when it has none (absent, blank or NaN), else its text."""
    return None if _missing(value) else str(value)


def check_examples(
    examples: Sequence[Any], *, source: str = "examples", policy: Mapping[str, str] | None = None
) -> list[Example]:
    """Hand-built ``examples`` checked as :func:`to_examples` checks a file's rows, before any is scored: each
    label parsed (``"unsafe"`` is 1; ``2`` is an error), each category resolved to its S-code (``"Hate"`` and
    ``"s10"`` are ``"S10"``; a code of the guard's custom ``policy`` is one too), a blank or NaN language none.
    An error names the example by its position in ``examples`` and its index, and says what is accepted.

    Example:
        >>> [ex] = check_examples([Example(0, "hi", "hi", "bad", ("hate", "s9"))])
        >>> ex.label, ex.categories
        (1, ('S9', 'S10'))
    """
    out = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, Example):
            raise EvaluationInputError(
                f"{source}[{i}] is a {type(ex).__name__}, not an Example; build examples from rows with to_examples() "
                "or load_examples()"
            )
        where = f"{source}[{i}] (index {ex.index})"
        try:
            label = _label_of(ex.label)
        except ValueError as exc:
            raise EvaluationInputError(f"{where}: {exc}") from None
        try:
            cats = parse_categories(ex.categories, policy)
        except ValueError as exc:
            also = f"; or a code of the guard's policy ({', '.join(policy)})" if policy else ""
            raise EvaluationInputError(f"{where}, categories {ex.categories!r}: {exc}{also}") from None
        out.append(replace(ex, label=label, categories=cats, language=_language_of(ex.language)))
    return out


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
        if suffix not in (".csv", ".tsv", ".jsonl", ".json", ".ndjson"):
            raise EvaluationInputError(
                f"unsupported data file {source!r}; accepted: .jsonl, .json, .csv, .tsv or hf:NAME[:SPLIT]"
            )
        try:
            text = _utf8(path.read_bytes(), source)
            if suffix in (".csv", ".tsv"):
                rows = _read_csv(path, text, "\t" if suffix == ".tsv" else ",")
            else:
                rows = _read_json(path, text)
        except OSError as exc:
            raise EvaluationInputError(f"cannot read data file {source!r}: {exc.strerror or exc}") from None
        except csv.Error as exc:
            raise EvaluationInputError(f"cannot read data file {source!r}: {exc}") from None
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise EvaluationInputError(f"{source} has no rows")
    return rows


def _utf8(raw: bytes, source: str) -> str:
    """A data file's text, without the BOM Excel's "CSV UTF-8" starts with; bytes that are not UTF-8 are an error
    naming the line and the byte (counted in the whole file)."""
    try:
        text = raw.decode("utf-8")  # not utf-8-sig: its error offsets do not count the BOM
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise EvaluationInputError(
            f"cannot read data file {source!r}: line {line} is not UTF-8 (byte {exc.start} of the file, "
            f"0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _read_csv(path: Path, text: str, delimiter: str) -> list[dict[str, Any]]:
    """A CSV/TSV file's rows; a repeated column name, a row with more or fewer fields than the header, or a quote
    that opens a cell and is not closed where the cell ends are errors naming the line (a comma inside an unquoted
    text, a forgotten cell shifting the next ones into the wrong columns, or one stray ``"`` swallowing every later
    row into one cell, would otherwise go unnoticed)."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long texts are data too, not a format error
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter, strict=True)
        header = reader.fieldnames or []
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise EvaluationInputError(f"{path} names the column(s) {repeated} more than once; each name once")
        rows = []
        while True:
            start = reader.line_num + 1  # the line the next row starts on
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise EvaluationInputError(
                    f'{path} line {start}: {exc}: a cell that starts with a quote (") must end with one, with '
                    'each quote inside it doubled (""); quote the whole cell, or remove the stray quote'
                ) from None
            if None in row:
                raise EvaluationInputError(
                    f"{path} line {reader.line_num} has {len(header) + len(row[None])} fields, the header "
                    f"{len(header)}: quote a text that holds the delimiter {delimiter!r}"
                )
            if None in row.values():  # DictReader fills the columns a short row lacks with None
                _short_row(path, reader.line_num, sum(v is not None for v in row.values()), header, delimiter)
            rows.append({k: _decoded(v) for k, v in row.items()})  # a cell holds text: a conversation as JSON
    return rows


def _short_row(path: Path, line: int, fields: int, header: list[str], delimiter: str) -> None:
    """Raise for a row with fewer fields than the header: which cell is missing cannot be told (a forgotten cell
    in the middle shifts the next ones left), so no short row is read, not even one a writer cut after its last
    non-empty cell."""
    raise EvaluationInputError(
        f"{path} line {line} has {plural(fields, 'field')}, the header {len(header)} ({', '.join(header)}): a cell is "
        f"missing and which one cannot be told; write every cell of each row, an empty cell as nothing between two "
        f"delimiters {delimiter!r} (a writer that leaves out trailing empty cells too)"
    )


def _read_json(path: Path, text: str) -> list[dict[str, Any]]:
    """JSON lines, or (``.json``) one array of objects; a ``.json`` file whose whole text is one JSON object (e.g.
    ``{"data": [...]}``, on one line or several) is an error saying which shapes are accepted, as is such an
    object spread over the lines of a ``.jsonl`` file."""
    if path.suffix.lower() == ".json" and text.lstrip().startswith("{"):
        _check_not_one_object(path, text)  # else JSON lines in a .json file
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvaluationInputError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    else:
        rows = []
        for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit in a string
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                _check_not_one_object(path, text)
                raise EvaluationInputError(
                    f"{path} line {lineno} is not valid JSON: {exc.msg} (column {exc.colno}); expected one object "
                    "per line"
                ) from None
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise EvaluationInputError(f"{path} row {i} is a {type(row).__name__}, not an object with named columns")
    return rows


def _check_not_one_object(path: Path, text: str) -> None:
    """Raise when the whole of ``text`` is one JSON object (not a row per line)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:5])
        raise EvaluationInputError(
            f"{path} holds one JSON object (keys {keys}), not rows; accepted: one object per line (JSONL), or a "
            ".json file holding an array of objects ([{...}, {...}]); save the list of rows it holds as such (a "
            "single row: as [{...}], or in a .jsonl file)"
        )


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
    rows: list[dict[str, Any]],
    *,
    task: Task = "prompt",
    columns: Columns | None = None,
    source: str = "data",
    strict: bool = False,
) -> list[Example]:
    """Check the columns and labels of ``rows`` and build the examples (``task="response"`` judges the answer).

    A column no row has is an error that names the option choosing it. A row without a label gets
    ``label=None`` (``strict=True``: an error naming the rows); a row without a category or language has none;
    a row without a prompt (or answer) gets ``error`` set.

    Example:
        >>> [e.label for e in to_examples([{"prompt": "hi", "label": "good"}, {"prompt": "yo"}])]
        [0, None]
    """
    columns = columns or Columns()
    if task not in ("prompt", "response"):
        raise EvaluationInputError(f"task {task!r}: accepted: prompt, response")
    needed = [(columns.prompt, "--prompt-column"), (columns.label, "--label-column")]
    if task == "response":
        needed.insert(1, (columns.response, "--response-column"))
    optional = ((columns.category, "--category-column"), (columns.language, "--language-column"))
    needed += [(c, o) for c, o in optional if c]
    present = dict.fromkeys(key for row in rows for key in row)
    for column, option in needed:
        if column not in present:
            have = ", ".join(map(str, present)) or "none"
            raise EvaluationInputError(
                f"column {column!r} not found in {source} (its rows have: {have}); choose one with {option}"
            )
    out: list[Example] = []
    for i, row in enumerate(rows):
        try:
            label = _label_of(row.get(columns.label))
        except ValueError as exc:
            raise EvaluationInputError(f"{source} row {i + 1}, column {columns.label!r}: {exc}") from None
        try:
            cats = parse_categories(row.get(columns.category)) if columns.category else ()
        except ValueError as exc:
            raise EvaluationInputError(f"{source} row {i + 1}, column {columns.category!r}: {exc}") from None
        language = _language_of(row.get(columns.language)) if columns.language else None
        conversation, text, error, text_error = _conversation(row, task, columns)
        out.append(Example(i, conversation, text, label, cats, language, error, text_error))
    check_labels(out, strict=strict, source=source, column=columns.label)
    return out


def check_labels(examples: Sequence[Example], *, strict: bool, source: str, column: str = "label") -> None:
    """Raise :class:`EvaluationInputError` when no example has a label, or (``strict``) when one has none."""
    unlabeled = [ex.index for ex in examples if ex.label is None]
    if examples and len(unlabeled) == len(examples):
        raise EvaluationInputError(f"no row of {source} has a label in column {column!r}; accepted: {LABELS_HINT}")
    if strict and unlabeled:
        raise EvaluationInputError(
            f"{plural(len(unlabeled), 'row')} of {source} {'has' if len(unlabeled) == 1 else 'have'} no label in "
            f"column {column!r} ({rows_named(unlabeled)}); label them, or leave out --strict to skip them"
        )


def plural(n: int, word: str) -> str:
    """``"1 row"``, ``"3 rows"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def rows_named(indices: Sequence[int], total: int | None = None) -> str:
    """The first :data:`LISTED` of ``total`` rows (default: all of ``indices``), numbered from 1 as in the data.

    Example:
        >>> rows_named([1, 4, 8]), rows_named(range(10), total=12)
        ('rows 2, 5, 9', 'rows 1, 2, 3, 4, 5 and 7 more')
    """
    total = len(indices) if total is None else total
    shown = ", ".join(str(i + 1) for i in list(indices)[:LISTED])
    more = f" and {total - min(LISTED, len(indices))} more" if total > min(LISTED, len(indices)) else ""
    return f"row{'s' if total > 1 else ''} {shown}{more}"


def _missing(value: Any) -> bool:
    """No value: absent, ``None``, blank or NaN (how pandas and some datasets write a gap)."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _decoded(prompt: Any) -> Any:
    """A CSV cell holding a conversation as JSON text (``[{"role": ..., "content": ...}, ...]``) as the messages
    it holds; any other value as it is. JSON files and datasets have typed values: their strings stay text."""
    if isinstance(prompt, str) and prompt.lstrip().startswith("[{"):
        try:
            value = json.loads(prompt)
        except json.JSONDecodeError:
            return prompt
        if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
            return value
    return prompt


def _conversation(row: dict[str, Any], task: Task, columns: Columns) -> tuple[Any, str, str | None, str | None]:
    """``(conversation, text, error, text_error)``: what Llama Guard checks, what Prompt Guard scores, why neither
    can, why Prompt Guard cannot (see :attr:`Example.text_error`)."""
    prompt = row.get(columns.prompt)
    if isinstance(prompt, dict) and "messages" in prompt:
        prompt = prompt["messages"]
    elif isinstance(prompt, dict) and "role" in prompt:  # one message: a conversation of one turn
        prompt = [prompt]
    if _missing(prompt):
        return None, "", f"no prompt: column {columns.prompt!r} is empty in this row", None
    if not isinstance(prompt, (str, list, dict)):  # JSON's 5 or true would be judged as Python's "5" or "True"
        why = (
            f"the prompt is {_a(type(prompt).__name__)} ({prompt!r}): column {columns.prompt!r} takes a text, a "
            "message or a conversation"
        )
        return None, "", why, None
    if isinstance(prompt, list) and nothing_to_judge(prompt):
        why = f"no prompt: column {columns.prompt!r} holds a conversation with no content in this row"
        return None, "", why, None
    messages = prompt if isinstance(prompt, list) else None
    unreadable: list[str] = []
    prompt_text = _user_turn_text(messages, unreadable) if messages is not None else _text(prompt)
    if task == "prompt":  # a dict that is not {"messages": [...]} goes to the guard as is, which refuses it
        conversation = messages if messages is not None else prompt if isinstance(prompt, dict) else prompt_text
        return conversation, prompt_text, None, _text_error(conversation, prompt_text, task, unreadable)
    answer = row.get(columns.response)
    if _missing(answer) or (isinstance(answer, list) and not any(map(_block_has_content, answer))):
        # a blank cell is a gap in the data (a CSV cannot tell it from an answer of nothing), never scored as one
        return None, "", f"no answer: column {columns.response!r} is empty or blank in this row", None
    if not isinstance(answer, (str, list, dict)):
        why = f"the answer is {_a(type(answer).__name__)} ({answer!r}): column {columns.response!r} takes a text"
        return None, "", f"{why} or content blocks", None
    content = answer if isinstance(answer, list) else _text(answer)
    context = messages if messages is not None else [{"role": "user", "content": prompt_text}]
    conversation = [*context, {"role": "assistant", "content": content}]
    unreadable.clear()  # what Prompt Guard scores here is the answer
    text = _content_text(content, unreadable)
    return conversation, text, None, _text_error(conversation, text, task, unreadable)


def nothing_to_judge(prompt: Any) -> bool:
    """Whether a prompt says nothing: absent, blank or NaN, or a conversation none of whose messages has content
    (``llamaguard check`` refuses such an input as ``eval`` fails such a row).

    Example:
        >>> nothing_to_judge("  "), nothing_to_judge([{"role": "user", "content": ""}]), nothing_to_judge("hi")
        (True, True, False)
    """
    return not any(map(_has_content, prompt)) if isinstance(prompt, list) else _missing(prompt)


def _a(noun: str) -> str:
    """``noun`` with its article: ``an int``, ``a bool``."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _has_content(message: Any) -> bool:
    """Whether a message says something: a non-blank text, or a content block that is not text (an image). A
    message of a shape this module does not read counts (the guard judges or refuses it)."""
    content = _role_and_content(message)[1]
    if isinstance(content, list):
        return any(_block_has_content(block) for block in content)
    return not _missing(content)


def _block_has_content(block: Any) -> bool:
    if isinstance(block, dict) and block.get("type", "text") == "text":
        return not _missing(block.get("text"))
    return not _missing(block)


def _role_and_content(message: Any) -> tuple[str | None, Any]:
    """A message's role and content, read as LangChain's ``convert_to_messages`` reads them (a bare text is the
    user's; a dict names its role as ``role`` or ``type``)."""
    if isinstance(message, str):
        return "user", message
    if isinstance(message, dict):
        return message.get("role", message.get("type")), message.get("content")
    if isinstance(message, (list, tuple)) and len(message) == 2:  # ("user", "text")
        return message[0], message[1]
    return getattr(message, "type", None), getattr(message, "content", message)  # a LangChain message


def _is_user(message: Any) -> bool:
    return str(_role_and_content(message)[0]).lower() in ("user", "human")


def _user_turn_text(messages: list[Any], unreadable: list[str]) -> str:
    """The text of the conversation's last user turn (its last user messages, joined by a newline, as the agent
    middleware reads a turn): what Prompt Guard scores; empty when the conversation does not end with one."""
    turn: list[str] = []
    for message in reversed(messages):
        if not _is_user(message):
            break
        turn.append(_content_text(_role_and_content(message)[1], unreadable))
    return "\n".join(reversed(turn))


def _text_error(conversation: Any, text: str, task: Task, unreadable: list[str]) -> str | None:
    """Why Prompt Guard cannot score this row, where Llama Guard may judge it: see :attr:`Example.text_error`."""
    if unreadable:  # a block neither guard reads (a PDF, a provider's file id): never scored without it
        return unreadable[0]
    if task == "prompt" and isinstance(conversation, list) and conversation and not _is_user(conversation[-1]):
        role = _role_and_content(conversation[-1])[0]
        return (
            f"the conversation's last turn is {role!r}, not the user's: --task prompt scores the user's last turn "
            "(use --task response to judge an answer)"
        )
    if task == "prompt" and not text.strip():
        return "no text to score: Prompt Guard reads text, and this row's turn holds none (an image only?)"
    return None


def _content_text(content: Any, unreadable: list[str]) -> str:
    """A message's text as the guards read it: text blocks, and documents, files and JSON by their text (see
    :mod:`~langchain_llamaguard.content_blocks`); images have none. Why a block cannot be read goes to
    ``unreadable``."""
    if not isinstance(content, list):
        return _text(content)
    try:
        return "\n".join(content_text_parts(content, where="Prompt Guard cannot score this row's text"))
    except LlamaGuardError as exc:
        unreadable.append(str(exc))
        return ""


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def load_examples(
    source: str,
    *,
    task: Task = "prompt",
    columns: Columns | None = None,
    limit: int | None = None,
    strict: bool = False,
) -> list[Example]:
    """:func:`read_records` then :func:`to_examples`.

    Example:
        >>> load_examples("hf:org/guard-eval:test", columns=Columns(label="is_unsafe"))  # doctest: +SKIP
    """
    return to_examples(read_records(source, limit=limit), task=task, columns=columns, source=source, strict=strict)
