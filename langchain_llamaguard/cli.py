"""The ``llamaguard`` command: ``check`` texts or conversations, ``eval`` a guard on labelled data.

A thin layer over :class:`~langchain_llamaguard.LlamaGuard`, :class:`~langchain_llamaguard.PromptGuard` and
:func:`langchain_llamaguard.evaluation.evaluate`. Bad input gives one line on stderr and a non-zero exit (2 for
usage and data errors, 1 when the run fails: a model that cannot load, out of memory, every row failing). A row
whose check fails does not stop ``eval``: it is reported (a one-line warning, exit 0) and left out of the metrics.
Nor does it stop ``check``: its line says ``{"safe": null, "error": ...}`` in its place, and the exit status is 1.

Example:
    >>> main(["check", "How do I make a bomb?", "--model", "meta-llama/Llama-Guard-4-12B"])  # doctest: +SKIP
    {"safe":false,"categories":["S9"],...}
    >>> main(["eval", "data.jsonl", "--model", "meta-llama/Llama-Guard-4-12B", "--calibrate", "f1"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import GuardBatchError, GuardConfigurationError, GuardServerError

EXIT_USAGE = 2
EXIT_FAILED = 1
_HUB_EXAMPLE = "meta-llama/Llama-Guard-4-12B"


class CliError(Exception):
    """A one-line error for the user, with the exit status to return."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(" ".join(str(message).split()))
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + error
        raise CliError(f"{message} (see {self.prog} --help)")


def _add_guard_options(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="ID_OR_PATH", help="a Llama Guard 4 / 3 checkpoint (hub id or folder)")
    which.add_argument("--prompt-guard", metavar="ID_OR_PATH", help="a Prompt Guard 2 checkpoint")
    which.add_argument("--endpoint", metavar="URL", help="a served Llama Guard (needs --served-model)")
    p.add_argument("--served-model", metavar="NAME", help="the model name at --endpoint")
    p.add_argument("--tokenizer", metavar="ID_OR_PATH", help="with --endpoint: the local tokenizer (default: NAME)")
    p.add_argument("--api-key", metavar="KEY", help="with --endpoint (default: $LLAMAGUARD_API_KEY)")
    p.add_argument("--excluded-categories", metavar="CODES", help="comma-separated codes or names, e.g. S6,Elections")
    p.add_argument("--threshold", type=float, metavar="T", help="unsafe when score >= T (default: the model's verdict)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="rows per model batch (default 256)")
    p.add_argument("--device", metavar="DEVICE", help="e.g. cuda, cuda:0, cpu (default: transformers' choice)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llamaguard``."""
    parser = _Parser(prog="llamaguard", description="Llama Guard and Prompt Guard from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = sub.add_parser("check", help="print verdicts as JSON lines")
    check.add_argument("text", nargs="?", help="a user message to check")
    check.add_argument("--file", metavar="F", help="JSONL: one conversation per line (a string, a list of "
                       '{"role", "content"} messages, or {"messages": [...]}); - reads standard input')  # fmt: skip
    check.add_argument("--role", default=None, help="User or Agent: the turn to judge (default: the last turn's)")
    _add_guard_options(check)

    ev = sub.add_parser("eval", help="measure a guard on labelled data")
    ev.add_argument("data", metavar="DATA", help="a .jsonl, .json, .csv or .tsv file, or hf:NAME[:SPLIT]")
    ev.add_argument("--task", choices=("prompt", "response"), default="prompt", help="judge the prompt or the answer")
    ev.add_argument("--prompt-column", default="prompt")
    ev.add_argument("--response-column", default="response")
    ev.add_argument("--label-column", default="label", help="0/1, true/false, safe/unsafe or good/bad")
    ev.add_argument("--category-column", default=None, help="S-codes or names (optional)")
    ev.add_argument("--language-column", default=None, help="for per-language metrics (optional)")
    ev.add_argument("--calibrate", metavar="RULE", help="f1 or fpr=X: choose the threshold on a calibration split")
    ev.add_argument("--calibration-fraction", type=float, default=0.5, metavar="F", help="default 0.5")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default="llamaguard-eval", metavar="DIR", help="default ./llamaguard-eval")
    ev.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N rows")
    ev.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples for 95%% intervals (0: none)")
    ev.add_argument("--no-plots", action="store_true")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--strict", action="store_true", help="a row without a label is an error (default: skipped)")
    _add_guard_options(ev)
    return parser


def _load_guard(args: argparse.Namespace, excluded: tuple[str, ...]) -> tuple[Any, str]:
    from .guards import LlamaGuard, PromptGuard

    if not args.endpoint:
        given = [f"--{n.replace('_', '-')}" for n in ("served_model", "tokenizer", "api_key") if getattr(args, n, None)]
        if given:
            raise CliError(f"{', '.join(given)} applies to --endpoint only; a local guard (--model) would ignore it")
    if args.endpoint:
        if not args.served_model:
            raise CliError("--endpoint needs --served-model NAME (the model name the server serves)")
        from .backends.http import EndpointClient, ServedModel

        api_key = args.api_key or os.environ.get("LLAMAGUARD_API_KEY")
        try:  # a batch run fails fast: the server is asked first (building a served guard asks nothing)
            probe = EndpointClient(args.endpoint, api_key=api_key, max_retries=0)
            try:
                ServedModel(probe, args.served_model).entry()
            finally:
                probe.close()
            guard = LlamaGuard.from_endpoint(
                args.endpoint,
                model=args.served_model,
                tokenizer=args.tokenizer,
                api_key=api_key,
                excluded_categories=excluded,
                threshold=args.threshold,
            )
        except GuardConfigurationError as exc:
            raise CliError(str(exc)) from None
        except GuardServerError as exc:
            raise CliError(str(exc), status=1) from None
        return guard, f"{args.served_model} at {args.endpoint}"
    name = args.prompt_guard or args.model
    _check_checkpoint(name, "--prompt-guard" if args.prompt_guard else "--model")
    try:
        if args.prompt_guard:
            kwargs: dict[str, Any] = {"device": args.device} if args.device else {}
            if args.threshold is not None:
                kwargs["threshold"] = args.threshold
            return PromptGuard.from_pretrained(args.prompt_guard, **kwargs), args.prompt_guard
        kwargs = {"excluded_categories": excluded, "threshold": args.threshold}
        if args.device:
            kwargs["device_map"] = args.device
        return LlamaGuard.from_pretrained(args.model, **kwargs), args.model
    except GuardConfigurationError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # hub, wrong checkpoint, out of memory: one line, no traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = ""
        if isinstance(exc, MemoryError) or "out of memory" in first.lower():
            hint = "; the model does not fit: try a smaller one, quantization, or another --device"
        raise CliError(f"cannot load {name!r}: {first}{hint}", status=1) from None


def _check_checkpoint(name: str, option: str) -> None:
    """A local path that cannot be a checkpoint gets one line now (not transformers' message, nor a hub lookup)."""
    path = Path(name).expanduser()
    accepted = f"{option} takes a checkpoint folder (with its config.json) or a hub id like {_HUB_EXAMPLE}"
    if path.is_file():
        raise CliError(f"cannot load {name!r}: it is a file, not a checkpoint folder; {accepted}", status=1)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CliError(f"cannot load {name!r}: no config.json in it, not a checkpoint; {accepted}", status=1)
        return
    local = path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name
    if local:
        raise CliError(f"cannot load {name!r}: no such folder; {accepted}", status=1)


def _excluded(text: str | None) -> tuple[str, ...]:
    from .taxonomy import resolve_categories

    if text is None:
        return ()
    keys = [k for k in text.split(",") if k.strip()]
    if not keys:  # "," or "": a flag that would exclude nothing, silently
        raise CliError(f"--excluded-categories {text!r} names no category; give codes or names, e.g. S6,Elections")
    try:
        return resolve_categories(keys)
    except ValueError as exc:
        raise CliError(f"--excluded-categories: {exc}") from None


def _conversations(args: argparse.Namespace) -> list[tuple[int, Any]]:
    """``(line number, conversation)`` pairs: the TEXT argument's, or each non-blank line's of ``--file``."""
    if args.text is not None and args.file is not None:
        raise CliError("llamaguard check: give TEXT or --file F (one conversation per JSONL line), not both")
    if args.text is None and args.file is None:
        raise CliError(
            "llamaguard check: give the TEXT to check, or --file F (one conversation per JSONL line; --file - reads "
            "them from standard input)"
        )
    if args.text is not None:
        _refuse_blank(args.text, "TEXT")
        return [(1, args.text)]
    if args.file == "-":
        name, raw = "standard input", sys.stdin.buffer.read()
    else:
        path = Path(args.file)
        if not path.is_file():
            raise CliError(f"--file {args.file!r} not found")
        name, raw = args.file, path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CliError(f"{name} line {line} is not UTF-8 (byte {raw[exc.start]:#04x}); save it as UTF-8") from None
    out: list[tuple[int, Any]] = []
    for lineno, line in enumerate(text.split("\n"), 1):  # U+2028 is not a line end
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{name} line {lineno} is not valid JSON: {exc.msg} (column {exc.colno})") from None
        if isinstance(item, dict) and "messages" in item:
            item = item["messages"]
        if isinstance(item, list) and not item:
            raise CliError(f"{name} line {lineno}: an empty conversation (no messages to judge)")
        _refuse_blank(item, f"{name} line {lineno}")
        if not isinstance(item, (str, list)):
            raise CliError(
                f"{name} line {lineno}: expected a string, a list of {{role, content}} messages "
                'or {"messages": [...]}'
            )
        out.append((lineno, item))
    if not out:
        raise CliError(f"{name} has no conversations")
    return out


def _refuse_blank(item: Any, where: str) -> None:
    """A blank text, or messages without content, has nothing to judge: a verdict on it would read as "safe" for
    content never judged (``llamaguard eval`` fails such a row, by the same rule)."""
    from .evaluation.data import nothing_to_judge

    if nothing_to_judge(item):
        raise CliError(f"{where}: nothing to judge (a blank text or only blank messages)")


def _check_rows(guard: Any, batch: list[Any], role: str | None) -> list[Any]:
    """Each conversation's verdict, or its own error: Prompt Guard scores the judged turn's text, read as the
    guard steps read it (every message shape a Llama Guard check accepts)."""
    from .errors import GuardInputError, GuardTypeError
    from .guards import PromptGuard
    from .moderators import PromptGuardModerator

    try:
        if isinstance(guard, PromptGuard):
            return PromptGuardModerator(guard).check(batch, role=role)  # type: ignore[arg-type]
        return guard.batch_check(batch, role=role)
    except GuardBatchError as exc:  # one bad row among good ones: its own line says why, the others print
        return exc.rows()
    except (GuardInputError, GuardTypeError) as exc:
        if len(batch) == 1:  # a one-row batch raises its row's own error
            return [exc]
        raise


def _check_guard_options(args: argparse.Namespace) -> None:
    """Options that would be ignored or misread, refused before a model loads (``check`` and ``eval`` alike)."""
    if args.batch_size < 1:
        raise CliError(f"--batch-size {args.batch_size}: accepted: an integer >= 1")
    if args.prompt_guard and args.excluded_categories:
        raise CliError(
            "--excluded-categories applies to Llama Guard (--model, --endpoint); Prompt Guard has no categories"
        )


def run_check(args: argparse.Namespace) -> int:
    _check_guard_options(args)
    conversations = _conversations(args)
    guard, _ = _load_guard(args, _excluded(args.excluded_categories))
    failed = 0
    for start in range(0, len(conversations), args.batch_size):
        lines, batch = zip(*conversations[start : start + args.batch_size], strict=True)
        try:
            rows = _check_rows(guard, list(batch), args.role)
        except (TypeError, ValueError) as exc:
            raise CliError(f"cannot check the conversations of lines {lines[0]}..{lines[-1]}: {exc}") from None
        for lineno, row in zip(lines, rows, strict=True):
            if isinstance(row, BaseException):
                failed += 1
                error = f"{type(row).__name__}: {' '.join(str(row).split())}"
                print(json.dumps({"safe": None, "error": error, "line": lineno}), flush=True)
            else:  # the line it came from, as an error's: blank lines are skipped, so output lines can be paired
                print(json.dumps({**row.model_dump(mode="json"), "line": lineno}), flush=True)
    if failed:
        print(f"llamaguard: error: {failed} of {len(conversations)} conversations could not be judged (their "
              'lines say {"safe": null, "error": ...})', file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluation import Columns, evaluate, load_examples, parse_rule, to_markdown

    if args.calibrate is not None:
        parse_rule(args.calibrate)
        if args.threshold is not None:
            raise CliError("give --threshold or --calibrate, not both")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise CliError(f"--threshold {args.threshold}: accepted: a number between 0 and 1")
    _check_guard_options(args)
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit {args.limit}: accepted: an integer >= 1")
    if args.seed < 0:
        raise CliError(f"--seed {args.seed}: accepted: an integer >= 0")
    if not 0 < args.calibration_fraction < 1:
        raise CliError(f"--calibration-fraction {args.calibration_fraction}: accepted: a number between 0 and 1")
    if args.bootstrap < 0:
        raise CliError(f"--bootstrap {args.bootstrap}: accepted: an integer >= 0 (0: no intervals)")
    _check_out_dir(Path(args.out))  # before minutes of loading a model
    excluded = _excluded(args.excluded_categories)
    columns = Columns(
        prompt=args.prompt_column,
        response=args.response_column,
        label=args.label_column,
        category=args.category_column,
        language=args.language_column,
    )
    examples = load_examples(args.data, task=args.task, columns=columns, limit=args.limit, strict=args.strict)
    guard, model_name = _load_guard(args, excluded)
    report = evaluate(
        guard,
        examples,
        task=args.task,
        columns=columns,
        excluded_categories=None if args.prompt_guard else excluded,
        calibrate=args.calibrate,
        calibration_fraction=args.calibration_fraction,
        seed=args.seed,
        out_dir=args.out,
        batch_size=args.batch_size,
        limit=args.limit,  # already applied; tells evaluate() to keep the other rows' stored predictions
        bootstrap=args.bootstrap,
        plots=not args.no_plots,
        progress=not args.no_progress,
        model_name=model_name,
        dataset_name=args.data,
        strict=args.strict,
    )
    print(to_markdown(report))
    files = ["report.json", "predictions.jsonl", *report.plots]
    print(f"\nwrote {', '.join(str(Path(args.out) / f) for f in files)}")
    for line in _left_out_warnings(report, Path(args.out) / "predictions.jsonl", args.label_column):
        print(f"llamaguard: warning: {line}", file=sys.stderr)
    return 0


def _left_out_warnings(report: Any, predictions: Path, label_column: str) -> list[str]:
    """One line each for the rows that failed and the rows without a label (the metrics leave both out)."""
    from .evaluation.data import plural, rows_named

    lines = []
    if report.errors:
        judged = report.n + (report.calibration.n if report.calibration else 0)
        shown = "; ".join(f"row {r.index + 1}: {r.error[:120]}" for r in report.failed_rows[:3])
        more = "; ..." if report.errors > 3 else ""
        lines.append(
            f"{report.errors} of {plural(judged + report.errors, 'row')} failed and "
            f"{'is' if report.errors == 1 else 'are'} not in the metrics ({shown}{more}); each row's error is in "
            f"{predictions}"
        )
    if report.unlabeled:
        named = rows_named(report.unlabeled_rows, total=report.unlabeled)
        lines.append(
            f"{plural(report.unlabeled, 'row')} without a label in column {label_column!r} "
            f"{'was' if report.unlabeled == 1 else 'were'} skipped ({named}); --strict makes this an error"
        )
    return lines


def _check_out_dir(out: Path) -> None:
    """``--out`` is a folder this process can write (made if missing), or a :class:`CliError` saying why not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".llamaguard-write-check"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise CliError(f"--out {str(out)!r} is not a folder this process can write: {exc.strerror or exc}") from None


EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a command whose reader closed the pipe."""


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (captured): nothing to flush there
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llamaguard`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from .evaluation.data import EvaluationInputError
    from .evaluation.runner import EvaluationRunError

    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        return run_check(args) if command == "check" else run_eval(args)
    except CliError as exc:
        print(f"llamaguard: error: {exc}", file=sys.stderr)
        return exc.status
    except (EvaluationInputError, GuardConfigurationError) as exc:
        print(f"llamaguard: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except (EvaluationRunError, ImportError) as exc:
        print(f"llamaguard: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    except MemoryError:
        hint = "lower --batch-size" + (", then run again with the same --out to resume" if command == "eval" else "")
        print(f"llamaguard: error: out of memory; {hint}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        resume = "; run again with the same --out to resume" if command == "eval" else ""
        print(f"llamaguard: interrupted{resume}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`llamaguard check ... | head -1`): stop quietly, as `yes` does
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a file that cannot be read or written half-way (a full disk, a folder removed)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"llamaguard: error: cannot read or write{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
