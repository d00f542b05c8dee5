"""Mixed-length batches: ``batch_check`` of 40 conversations from ~10 to ~5,000 tokens against one by one.

Each way runs in a subprocess of its own, so its peak memory (the process's high-water mark, reset after the
model is loaded and warm) is its own. Plain: ``guard.check`` one conversation at a time. Package:
``guard.batch_check`` of all 40 (length-sorted sub-batches under the memory budget). The verdicts and scores of
the two ways are compared; ``speedup:`` = one-by-one time / batch time, with the peak-memory ratio beside it.

    .venv/bin/python benchmarks/mixed_batch.py --quick
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import log, parser, set_threads

TEXT = (
    "The committee reviewed the quarterly figures for the regional offices and asked for a short summary of "
    "the main changes, the open questions and the next steps before the planning meeting on Thursday. "
)


def conversations(n: int = 40, longest_words: int = 4400) -> list[str]:
    """``n`` benign texts whose lengths spread geometrically from a few words to ``longest_words`` words."""
    words = TEXT.split()
    out = []
    for i in range(n):
        count = max(3, int(3 * (longest_words / 3) ** (i / (n - 1))))
        out.append(" ".join(words[j % len(words)] for j in range(count)))
    order = sorted(range(n), key=lambda i: (i * 7919) % n)  # interleaved lengths, as real traffic comes
    return [out[i] for i in order]


def _peak_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker(mode: str, model: str, repeats: int, max_batch_tokens: int | None) -> dict:
    """Run one way in this process; returns its time, peak memory over the warm baseline and scores."""
    from langchain_llamaguard import LlamaGuard

    guard = LlamaGuard.from_pretrained(
        model, device_map="cpu", max_batch_tokens=max_batch_tokens, on_error="unsafe"
    )
    convs = conversations()
    guard.check(convs[0])  # warm: prefix cache, kernels
    base = _rss_mb()
    _peak_reset()
    best = float("inf")
    verdicts = []
    for _ in range(repeats):
        start = time.perf_counter()
        verdicts = [guard.check(c) for c in convs] if mode == "one" else guard.batch_check(convs)
        best = min(best, time.perf_counter() - start)
    tokens = [len(p.input_ids) for c in convs for p in guard.prepare(c)[0]]
    return {
        "mode": mode,
        "seconds": best,
        "peak_mb": max(_peak_mb() - base, 1.0),
        "scores": [v.score for v in verdicts],
        "safe": [v.safe for v in verdicts],
        "tokens": [min(tokens), max(tokens)],
    }


def measure(model: str, *, repeats: int, threads: int, max_batch_tokens: int | None = None) -> dict[str, dict]:
    """Both ways, each in a fresh subprocess; one-by-one first."""
    out = {}
    for mode in ("one", "batch"):
        cmd = [sys.executable, __file__, "--worker", mode, "--model", model, "--repeats", str(repeats)]
        cmd += ["--threads", str(threads)]
        if max_batch_tokens is not None:
            cmd += ["--max-batch-tokens", str(max_batch_tokens)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the {mode} worker failed:\n{done.stderr[-3000:]}")
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0], default_threads=2)
    p.add_argument("--model", default=None, help="a Llama Guard checkpoint folder (default: the tiny trained 1B)")
    p.add_argument("--max-batch-tokens", type=int, default=None)
    p.add_argument("--worker", choices=["one", "batch"], help=argparse_hidden())
    args = p.parse_args()
    threads = set_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, repeats, args.max_batch_tokens)))
        return
    model = args.model
    if model is None:
        from langchain_llamaguard.tiny.training import trained_llama_guard

        model = str(trained_llama_guard("llama-guard-3-1b"))
    log(f"model {model}, {threads} threads, best of {repeats}")
    got = measure(model, repeats=repeats, threads=threads, max_batch_tokens=args.max_batch_tokens)
    one, batch = got["one"], got["batch"]
    diff = max(abs(a - b) for a, b in zip(one["scores"], batch["scores"], strict=True))
    same = sum(a == b for a, b in zip(one["safe"], batch["safe"], strict=True))
    lo, hi = one["tokens"]
    print(f"40 conversations of {lo} to {hi} tokens")
    print("| way | seconds | peak memory over warm (MB) |")
    print("| --- | --- | --- |")
    print(f"| one by one (check) | {one['seconds']:.3f} | {one['peak_mb']:.0f} |")
    print(f"| batch_check | {batch['seconds']:.3f} | {batch['peak_mb']:.0f} |")
    print(f"verdicts equal: {same}/{len(one['safe'])}; max score difference {diff:.2e}")
    print(f"peak memory ratio (batch / one by one): {batch['peak_mb'] / one['peak_mb']:.2f}")
    print(f"speedup: {one['seconds'] / batch['seconds']:.2f}")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    os.environ.setdefault("LLAMAGUARD_CACHE", str(Path(__file__).resolve().parent.parent / ".cache"))
    main()
