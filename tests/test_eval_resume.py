"""`llamaguard eval` resumes only what it may: every row a user passed is judged and stored under its own index,
a resume under another checkpoint or policy is refused, a `--limit` rerun keeps the other rows, a resumed row takes
its categories and language from the data as it is now; and the inputs around it (CSV quotes, JSON shapes,
exclusions under a policy, option values) are errors rather than silently something else.

Nothing here asserts what the tiny guards learned: counts, indices, stored rows and refusals only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import BENIGN, BOMB, POISON
from test_eval_robustness import cli_guard  # noqa: F401 (a fixture)

from langchain_llamaguard import LlamaGuard
from langchain_llamaguard.cli import main
from langchain_llamaguard.evaluation import (
    EvaluationInputError,
    Example,
    evaluate,
    load_examples,
    read_predictions,
    score_examples,
)

pytest.importorskip("sklearn")

QUIET = {"bootstrap": 0, "plots": False, "progress": False}
CLI_QUIET = ["--bootstrap", "0", "--no-plots", "--no-progress"]
WEATHER = "What is the weather like in Paris today?"
ROWS = [
    {"prompt": BOMB, "label": 1, "category": "S9", "lang": "en"},
    {"prompt": BENIGN, "label": 0, "category": None, "lang": "en"},
    {"prompt": POISON, "label": 1, "category": "S1", "lang": "en"},
    {"prompt": WEATHER, "label": 0, "category": None, "lang": "en"},
]
POLICY = {"S1": "Violent Crimes.", "S9": "Fraud and scams.", "S15": "Medical advice."}


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in items), encoding="utf-8")
    return path


def stored(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


# -- 1. joined lists ----------------------------------------------------------------------------------------------
def test_joined_example_lists_are_each_judged_and_reported(lg4, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": BOMB, "label": 1}, {"prompt": POISON, "label": 1}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": BENIGN, "label": 0}, {"prompt": WEATHER, "label": 0}])
    examples = load_examples(str(a)) + load_examples(str(b))
    assert [ex.index for ex in examples] == [0, 1, 0, 1]
    report = evaluate(lg4, examples, out_dir=tmp_path / "out", **QUIET)
    assert (report.n, report.positives, report.scored) == (4, 2, 4)
    preds = stored(tmp_path / "out")
    assert [p["index"] for p in preds] == [0, 1, 2, 3] and [p["label"] for p in preds] == [1, 1, 0, 0]
    assert evaluate(lg4, examples, out_dir=tmp_path / "out", **QUIET).scored == 0  # the same join resumes
    with pytest.raises(ValueError, match=r"indices repeat among the examples \(0, 1\)"):
        score_examples(lg4, examples, progress=False)


# -- 2. resuming under another checkpoint or policy ----------------------------------------------------------------
def test_a_resume_under_another_policy_is_refused(lg4, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": r["prompt"], "label": r["label"]} for r in ROWS])
    kwargs = {"out_dir": tmp_path / "out", **QUIET}
    assert evaluate(lg4, str(data), **kwargs).scored == 4
    with pytest.raises(EvaluationInputError, match=r"another run \(policy \(its categories' codes and texts\) "):
        evaluate(lg4.with_categories(POLICY), str(data), **kwargs)
    reworded = lg4.with_categories({**POLICY, "S15": "Medical or legal advice."})
    assert evaluate(lg4.with_categories(POLICY), str(data), **{**kwargs, "out_dir": tmp_path / "policy"}).scored == 4
    with pytest.raises(EvaluationInputError, match="policy"):
        evaluate(reworded, str(data), **{**kwargs, "out_dir": tmp_path / "policy"})
    assert evaluate(lg4, str(data), **kwargs).scored == 0  # the first policy again: resumed


def test_a_checkpoint_retrained_in_place_is_not_resumed(lg3_1b_path, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(lg3_1b_path, folder)
    guard = LlamaGuard.from_pretrained(str(folder))
    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": r["prompt"], "label": r["label"]} for r in ROWS[:2]])
    kwargs = {"out_dir": tmp_path / "out", "model_name": str(folder), **QUIET}
    assert evaluate(guard, str(data), **kwargs).scored == 2
    assert evaluate(guard, str(data), **kwargs).scored == 0
    weights = folder / "model.safetensors"
    later = weights.stat().st_mtime_ns + 60 * 10**9
    os.utime(weights, ns=(later, later))  # new weights written into the same folder
    with pytest.raises(EvaluationInputError, match=r"another run \(checkpoint: model\.safetensors differ"):
        evaluate(guard, str(data), **kwargs)


def test_an_onnx_export_of_another_precision_is_not_resumed(pg_path, tmp_path):
    """A Prompt Guard on ONNX Runtime is told apart by its export: int8 does not resume fp32's run."""
    from langchain_llamaguard import PromptGuard

    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": BENIGN, "label": 0}, {"prompt": BOMB, "label": 1}])
    kwargs = {"out_dir": tmp_path / "out", **QUIET}
    fp32 = PromptGuard.from_pretrained(str(pg_path), backend="onnx", onnx_quantize=False, onnx_path=str(tmp_path))
    assert evaluate(fp32, str(data), **kwargs).scored == 2
    int8 = PromptGuard.from_pretrained(str(pg_path), backend="onnx", onnx_quantize=True, onnx_path=str(tmp_path))
    with pytest.raises(EvaluationInputError, match=r"another run \(checkpoint: .*onnx"):
        evaluate(int8, str(data), **kwargs)


# -- 3. a stray quote in a CSV / TSV cell --------------------------------------------------------------------------
@pytest.mark.parametrize("sep,suffix", [(",", "csv"), ("\t", "tsv")])
def test_a_stray_quote_is_an_error_naming_its_line(tmp_path, sep, suffix):
    lines = [f"{BOMB}{sep}1", f'"Quote me: what is the capital of France?{sep}0', f"{WEATHER}{sep}0", f"{BOMB}{sep}1"]
    path = tmp_path / f"quote.{suffix}"
    path.write_text(f"prompt{sep}label\n" + "\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(EvaluationInputError, match=r"line 3: .*remove the stray quote"):
        load_examples(str(path))
    quoted = tmp_path / f"quoted.{suffix}"  # what csv writers (pandas, Excel) write: quoted cells are read as text
    text = f'prompt{sep}label\n"He said ""hi""{sep} then left"{sep}0\n"two\nlines"{sep}1\n'
    quoted.write_text(text, encoding="utf-8")
    assert [(ex.text, ex.label) for ex in load_examples(str(quoted))] == [
        (f'He said "hi"{sep} then left', 0),
        ("two\nlines", 1),
    ]


# -- 4. a --limit rerun into the same --out -------------------------------------------------------------------------
def test_a_limited_rerun_keeps_the_other_rows_predictions(cli_guard, lg4_path, tmp_path, capsys):  # noqa: F811
    data, out = write_jsonl(tmp_path / "data.jsonl", ROWS + ROWS), tmp_path / "out"
    args = ["eval", str(data), "--model", str(lg4_path), "--out", str(out), *CLI_QUIET]
    assert main(args) == 0
    assert main([*args, "--limit", "3"]) == 0
    assert [p["index"] for p in stored(out)] == list(range(8))
    assert json.loads((out / "report.json").read_text())["n"] == 3
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text())["scored"] == 0  # nothing scored again
    capsys.readouterr()


def test_a_limited_run_through_the_api_keeps_the_rest(lg4, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    kwargs = {"out_dir": tmp_path / "out", **QUIET}
    assert evaluate(lg4, str(data), **kwargs).scored == 4
    assert evaluate(lg4, str(data), limit=2, **kwargs).n == 2
    assert sorted(read_predictions(tmp_path / "out" / "predictions.jsonl")) == [0, 1, 2, 3]
    assert evaluate(lg4, str(data), **kwargs).scored == 0


def test_rows_holding_a_lone_surrogate_or_a_line_separator_are_scored_once(lg4, tmp_path):
    """Valid JSON a user's export may hold: a lone surrogate (``\\ud800``) in a prompt is judged like any text (not a
    crash that loses the batch), and a U+2028 in a stored value does not split its stored line, so a rerun
    resumes every row."""
    from langchain_llamaguard.evaluation import Columns

    rows = [*ROWS, {"prompt": "lone surrogate \ud800 here", "label": 0, "category": None, "lang": "en\u2028x"}]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    kwargs = {"out_dir": tmp_path / "out", "columns": Columns(language="lang"), **QUIET}
    first = evaluate(lg4, str(data), **kwargs)
    assert first.scored == 5 and first.errors == 0
    assert sorted(read_predictions(tmp_path / "out" / "predictions.jsonl")) == [0, 1, 2, 3, 4]
    assert evaluate(lg4, str(data), **kwargs).scored == 0


# -- 5. a resumed row takes its category and language from the data -------------------------------------------------
def test_a_resumed_row_takes_its_category_and_language_from_the_data(lg4, tmp_path):
    from langchain_llamaguard.evaluation import Columns

    rows = [{**r, "category": "S1" if i == 0 else r["category"], "lang": "xx"} for i, r in enumerate(ROWS)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    kwargs = {"out_dir": tmp_path / "out", "columns": Columns(category="category", language="lang"), **QUIET}
    assert evaluate(lg4, str(data), **kwargs).scored == 4
    write_jsonl(data, ROWS)  # the category of row 1 and every language fixed
    report = evaluate(lg4, str(data), **kwargs)
    assert report.scored == 0 and sorted(report.per_language) == ["en"]
    assert report.per_category["S9"].n == 1 and report.per_category["S1"].n == 1
    first = stored(tmp_path / "out")[0]
    assert (first["label_categories"], first["language"]) == (["S9"], "en")


# -- 6. categories of a row labelled safe -----------------------------------------------------------------------
def test_a_safe_rows_categories_are_not_positives_of_that_category(lg4, tmp_path):
    from langchain_llamaguard.evaluation import Columns

    rows = [*ROWS[:3], {**ROWS[3], "category": "S9"}]  # a data set that tags the topic of safe rows too
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    report = evaluate(lg4, str(data), columns=Columns(category="category"), **QUIET)
    assert report.positives == 2
    assert {code: c.n for code, c in report.per_category.items()} == {"S1": 1, "S9": 1}


# -- 7. exclusions under the guard's own policy ----------------------------------------------------------------
def test_excluded_categories_resolve_under_the_guards_policy(lg4, tmp_path):
    guard = lg4.with_categories(POLICY)
    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": r["prompt"], "label": r["label"]} for r in ROWS[:2]])
    for key, code in (("S15", "S15"), ("Fraud and scams", "S9"), ("medical advice.", "S15")):
        out = tmp_path / code
        evaluate(guard, str(data), excluded_categories=[key], out_dir=out, **QUIET)
        assert json.loads((out / "run.json").read_text())["excluded_categories"] == [code]
    with pytest.raises(EvaluationInputError, match=r"'Indiscriminate Weapons' is the default name of S9"):
        evaluate(guard, str(data), excluded_categories=["Indiscriminate Weapons"], **QUIET)


# -- lower: JSON shapes and option values ---------------------------------------------------------------------------
def test_json_files_an_array_is_read_an_object_is_named(tmp_path):
    pretty = tmp_path / "rows.json"
    pretty.write_text(json.dumps([{"prompt": BOMB, "label": 1}, {"prompt": BENIGN, "label": 0}], indent=2))
    assert [ex.label for ex in load_examples(str(pretty))] == [1, 0]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"prompt": BOMB, "label": 1}]}, indent=2))
    with pytest.raises(EvaluationInputError, match=r"holds one JSON object \(keys 'data'\), not rows; accepted: one"):
        load_examples(str(wrapped))


def test_a_json_file_holding_one_object_is_named_however_it_is_written(tmp_path):
    """``json.dump`` writes the object on one line: that is one object, as it is spread over lines, not one row of
    JSON lines; decided by the file's content, so JSON lines in a ``.json`` file are still read."""
    payload = {"data": [{"prompt": BOMB, "label": 1}, {"prompt": BENIGN, "label": 0}]}
    for name, text in (("compact.json", json.dumps(payload)), ("spaced.json", "\n\n  " + json.dumps(payload) + "\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(EvaluationInputError, match=r"holds one JSON object \(keys 'data'\), not rows; accepted:"):
            load_examples(str(tmp_path / name))
    one_row = tmp_path / "row.json"
    one_row.write_text(json.dumps({"prompt": BOMB, "label": 1}))
    with pytest.raises(EvaluationInputError, match=r"keys 'prompt', 'label'.*a single row: as \[\{\.\.\.\}\]"):
        load_examples(str(one_row))
    lines = tmp_path / "lines.json"
    lines.write_text("".join(json.dumps(r) + "\n" for r in payload["data"]))
    assert [ex.label for ex in load_examples(str(lines))] == [1, 0]


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--model", "M", "--bootstrap", "-5"], "--bootstrap -5: accepted: an integer >= 0"),
        (["--prompt-guard", "M", "--excluded-categories", "S1"], "--excluded-categories applies to Llama Guard"),
    ],
)
def test_options_that_would_be_ignored_are_errors(tmp_path, capsys, extra, expected):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    extra = [str(tmp_path / "never-loaded") if x == "M" else x for x in extra]
    assert main(["eval", str(data), "--out", str(tmp_path / "out"), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "never-loaded" not in err[0]


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--model", "M", "--batch-size", "0"], "--batch-size 0: accepted: an integer >= 1"),
        (["--model", "M", "--batch-size", "-1"], "--batch-size -1: accepted: an integer >= 1"),
        (["--prompt-guard", "M", "--excluded-categories", "S1"], "--excluded-categories applies to Llama Guard"),
    ],
)
def test_check_refuses_what_it_would_drop_or_ignore(tmp_path, capsys, extra, expected):
    """``llamaguard check --batch-size 0`` printed nothing and ``-1`` dropped the last conversation, both exit 0."""
    extra = [str(tmp_path / "never-loaded") if x == "M" else x for x in extra]
    assert main(["check", BENIGN, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_the_api_refuses_them_too(prompt_guard, lg4):
    example = [Example(0, BOMB, BOMB, 1)]
    with pytest.raises(EvaluationInputError, match="Prompt Guard has no categories"):
        evaluate(prompt_guard, example, excluded_categories=["S1"], **QUIET)
    with pytest.raises(EvaluationInputError, match="--bootstrap -1"):
        evaluate(lg4, example, bootstrap=-1, plots=False, progress=False)
