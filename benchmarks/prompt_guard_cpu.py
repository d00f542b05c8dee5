"""Prompt Guard 2 (22M, 86M; real shapes, random weights) on the CPU: pipeline() vs PromptGuard.batch_score.

The checkpoints are ``DebertaV2ForSequenceClassification`` with the real backbones (22M: DeBERTa-v3-xsmall,
hidden 384, 6 heads, vocab 128100; 86M: mDeBERTa-v3-base, hidden 768, 12 heads, vocab 251000; both 12
layers, relative attention with 256 position buckets, p2c+c2p) and random weights. They are built once and
saved under ``$LLAMAGUARD_CACHE/bench-prompt-guard-2-*``, with a small DeBERTa-style tokenizer (its ids are
all below the vocabulary size).

Plain way: ``transformers.pipeline("text-classification", ...)`` called one text at a time.
Package way: ``PromptGuard.from_pretrained(path, backend="onnx")`` (dynamic int8 ONNX, exported once and
cached by the package) and ``batch_score(texts)``; the torch backend and the fp32 ONNX export are timed too.
Inputs are texts of about 64 tokens. Scores of every way are compared with the package's torch backend.
Concurrent callers (16 threads, one ``check`` each, as a web server's requests) are timed with the torch
backend, each call on its own and with ``batch_window_ms=5`` (calls share forward passes).

The last line is ``speedup: X.XX`` = the smaller, over both sizes, of plain one-by-one time / ONNX int8
batch time.

Run:  LLAMAGUARD_CACHE=.cache .venv/bin/python benchmarks/prompt_guard_cpu.py [--quick] [--sizes 22m,86m]
"""

from __future__ import annotations

import gc
import os
import random
import shutil
from pathlib import Path
from typing import Any

from _common import Stopwatch, Timing, log, measure, parser, print_table, ratio, set_threads, speedup_line

BUILD_VERSION = "1"
SIZES: dict[str, dict[str, int]] = {
    # DeBERTa-v3-xsmall backbone (Llama-Prompt-Guard-2-22M)
    "22m": {
        "hidden_size": 384,
        "num_layers": 12,
        "num_heads": 6,
        "intermediate_size": 1536,
        "vocab_size": 128100,
    },
    # mDeBERTa-v3-base backbone (Llama-Prompt-Guard-2-86M)
    "86m": {
        "hidden_size": 768,
        "num_layers": 12,
        "num_heads": 12,
        "intermediate_size": 3072,
        "vocab_size": 251000,
    },
}
TEXT_TOKENS = 64  # per text, [CLS] and [SEP] included
CALLERS = 16  # concurrent callers, one check each (a web server's requests)


def checkpoint(size: str) -> Path:
    """A random-weight Prompt Guard 2 of the real shape, built once under the cache folder."""
    from langchain_llamaguard.tiny.tokenizers import cache_dir

    path = cache_dir() / f"bench-prompt-guard-2-{size}-random-v{BUILD_VERSION}"
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path
    from langchain_llamaguard.tiny.models import build_prompt_guard

    log(f"building {path.name} (once) ...")
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    build_prompt_guard(tmp, **SIZES[size])
    if path.exists():  # another process won the race
        shutil.rmtree(tmp)
    else:
        tmp.rename(path)
    return path


def make_texts(tokenizer: Any, count: int, seed: int = 0) -> list[str]:
    """``count`` sentences of about :data:`TEXT_TOKENS` tokens each (random words of the tiny corpus).

    Words are added while the text (with ``[CLS]``/``[SEP]``) is shorter than ``TEXT_TOKENS - 1``; a word
    can be several tokens, so texts land at the target or a little above it.
    """
    from langchain_llamaguard.tiny.data import tokenizer_corpus

    words = sorted({w.strip(".,?!'\"():;") for line in tokenizer_corpus() for w in line.split()} - {""})
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        chosen: list[str] = []
        while len(tokenizer(" ".join(chosen))["input_ids"]) < TEXT_TOKENS - 1:
            chosen.append(rng.choice(words))
        texts.append(" ".join(chosen).capitalize() + ".")
    return texts


def plain_way(path: Path, texts: list[str], repeats: int, warmup: int) -> tuple[Timing, Any]:
    """``pipeline("text-classification")`` one text at a time; also returns each text's P(MALICIOUS).

    ``top_k=None`` makes the pipeline return every label's score (what a user who wants a score calls).
    """
    import numpy as np
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(path), tokenizer=str(path), device="cpu")
    last: list[Any] = []

    def run(batch: list[str]) -> None:
        last[:] = [pipe(t, top_k=None) for t in batch]

    timing = measure(
        "plain pipeline(), one by one",
        lambda: run(texts),
        warmup_fn=lambda: run(texts[:2]),
        items=len(texts),
        repeats=repeats,
        warmup=warmup,
    )
    return timing, np.array([next(d["score"] for d in out if d["label"] == "MALICIOUS") for out in last])


def bench_size(size: str, n: int, repeats: int, warmup: int, one_by_one: bool) -> tuple[list[list[Any]], float]:
    """Time every way for one model size; returns the table rows and the plain / onnx-int8 ratio."""
    import numpy as np
    from transformers import AutoTokenizer

    from langchain_llamaguard import PromptGuard

    path = checkpoint(size)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = make_texts(tokenizer, n)
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    log(f"[{size}] {n} texts of {min(lengths)}-{max(lengths)} tokens, {repeats} repeats")

    timings: list[Timing] = []
    scores: dict[str, Any] = {}

    # -- the plain transformers way -------------------------------------------------------------------------
    plain, scores["plain"] = plain_way(path, texts, repeats, warmup)
    timings.append(plain)
    gc.collect()

    # -- the package's way ----------------------------------------------------------------------------------
    variants = [
        ("package torch, batch_score", {"backend": "torch"}),
        ("package onnx fp32, batch_score", {"backend": "onnx", "onnx_quantize": False}),
        ("package onnx int8, batch_score", {"backend": "onnx"}),
    ]
    for name, kwargs in variants:
        guard = PromptGuard.from_pretrained(str(path), **kwargs)  # the ONNX export is built once, then cached
        got: list[float] = []

        def run_batch(g: PromptGuard = guard, out: list[float] = got) -> None:
            out[:] = g.batch_score(texts)  # the scores of the last timed call are compared below

        timings.append(
            measure(
                name,
                run_batch,
                warmup_fn=lambda g=guard: g.batch_score(texts[:4]),  # no shape-specialised kernels on a CPU
                items=n,
                repeats=repeats,
                warmup=warmup,
            )
        )
        scores[name] = np.array(got)
        if one_by_one and kwargs.get("backend") == "onnx" and kwargs.get("onnx_quantize", True):
            label = "package onnx int8, score one by one"
            timings.append(
                measure(
                    label,
                    lambda g=guard: [g.score(t) for t in texts],
                    items=n,
                    repeats=repeats,
                    warmup=warmup,
                )
            )
            scores[label] = np.array([guard.score(t) for t in texts])
        del guard
        gc.collect()

    # -- concurrent callers (a web server): one check each, alone or micro-batched -----------------------------
    from concurrent.futures import ThreadPoolExecutor

    for name, window in (
        (f"package torch, {CALLERS} callers, check each", None),
        (f"package torch, {CALLERS} callers, batch_window_ms=5", 5),
    ):
        guard = PromptGuard.from_pretrained(str(path), batch_window_ms=window)
        got = []
        with ThreadPoolExecutor(CALLERS) as pool:

            def run_callers(g: PromptGuard = guard, out: list[float] = got, pool: Any = pool) -> None:
                out[:] = [v.score for v in pool.map(g.check, texts)]

            timings.append(measure(name, run_callers, items=n, repeats=repeats, warmup=warmup))
        scores[name] = np.array(got)
        guard.close()
        gc.collect()

    plain, int8 = timings[0], next(t for t in timings if t.name == "package onnx int8, batch_score")
    reference = scores["package torch, batch_score"]
    rows = [
        [
            size,
            t.name,
            t.items,
            f"{t.ms_per_item:.2f}",
            f"{t.items_per_s:.1f}",
            f"{ratio(plain, t):.2f}x",
            f"{float(np.abs(scores['plain' if t is plain else t.name] - reference).max()):.1e}",
        ]
        for t in timings
    ]
    return rows, ratio(plain, int8)


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="22m,86m", help="comma-separated: 22m, 86m")
    p.add_argument("--n", type=int, default=None, help="texts (default: 16 with --quick, else 64)")
    args = p.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown sizes {unknown}; valid: {', '.join(SIZES)}")
    n = args.n or (16 if args.quick else 64)
    repeats = args.repeats or (2 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else 1
    clock = Stopwatch()
    threads = set_threads(args.threads)

    import onnxruntime
    import torch
    import transformers

    rows: list[list[Any]] = []
    ratios: dict[str, float] = {}
    for size in sizes:
        size_rows, ratios[size] = bench_size(size, n, repeats, warmup, one_by_one=not args.quick)
        rows.extend(size_rows)

    print(
        f"Prompt Guard 2, real shapes, random weights, on CPU ({threads} threads; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__}): {n} texts of "
        f"~{TEXT_TOKENS} tokens, median of {repeats}"
    )
    print()
    print_table(("size", "way", "texts", "ms/text", "texts/s", "vs plain", "max |d score| vs torch"), rows)
    print_table(
        ("summary", "value"),
        [[f"{s}: plain one by one / onnx int8 batch", f"{r:.2f}"] for s, r in ratios.items()]
        + [["wall time of this run (s)", f"{clock.elapsed():.1f}"]],
    )
    print(speedup_line(min(ratios.values())))


if __name__ == "__main__":
    main()
