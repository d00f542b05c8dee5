"""Shared helpers for the benchmark scripts: arguments, timing, tables and the final ``speedup:`` line.

Every script measures "the plain transformers way" and "the package's way" on the same inputs in one process,
prints a table and ends with exactly one line ``speedup: X.XX`` (plain time / package time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Tokenizers' own thread pool fights torch's for the few cores and warns after a fork; keep it quiet.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parser(description: str, *, default_threads: int | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has (``--quick``, ``--repeats``, ``--warmup``,
    ``--threads``; ``default_threads`` None = every core)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="CI-sized run (well under a minute on a small CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up repetitions")
    p.add_argument(
        "--threads",
        type=int,
        default=default_threads,
        help=f"torch threads (default: {default_threads or 'every core'}; on a busy shared machine, threads "
        "that compete with other processes slow torch down badly)",
    )
    return p


def set_threads(threads: int | None = None) -> int:
    """Let torch use every core (or ``threads``); returns the count used."""
    import torch

    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def log(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the table and the final line."""
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Timing:
    """How long one way of doing ``items`` checks took: the median over the timed repeats."""

    name: str
    items: int
    seconds: list[float]  # one wall time per repeat, for all ``items`` checks

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ms_per_item(self) -> float:
        return 1000.0 * self.median_s / self.items

    @property
    def items_per_s(self) -> float:
        return self.items / self.median_s

    @property
    def spread(self) -> float:
        """(max - min) / median over the repeats: how noisy the measurement was."""
        if len(self.seconds) < 2:
            return 0.0
        return (max(self.seconds) - min(self.seconds)) / self.median_s


def measure(
    name: str,
    fn: Callable[[], Any],
    *,
    items: int,
    repeats: int,
    warmup: int = 1,
    warmup_fn: Callable[[], Any] | None = None,
    sync: Callable[[], Any] | None = None,
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed with ``time.perf_counter``.

    ``fn`` does ``items`` checks per call. ``warmup_fn`` (default ``fn``) is what runs untimed, e.g. a few of
    the items when one-by-one calls are slow. ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each
    clock read.
    """
    for _ in range(warmup):
        (warmup_fn or fn)()
    if sync:
        sync()
    seconds: list[float] = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        seconds.append(time.perf_counter() - start)
    log(f"  {name}: median {statistics.median(seconds) * 1000:.1f} ms for {items} item(s)")
    return Timing(name, items, seconds)


def latencies(
    name: str,
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    *,
    warmup: int = 1,
    sync: Callable[[], Any] | None = None,
) -> Timing:
    """Per-call latencies of ``fn(x)`` for every ``x`` (each call timed alone); ``items`` is 1 per sample.

    The median of the samples is the p50 latency of one check.
    """
    for x in inputs[: max(0, warmup)]:
        fn(x)
    if sync:
        sync()
    seconds: list[float] = []
    for x in inputs:
        start = time.perf_counter()
        fn(x)
        if sync:
            sync()
        seconds.append(time.perf_counter() - start)
    log(f"  {name}: p50 {statistics.median(seconds) * 1000:.1f} ms over {len(seconds)} call(s)")
    return Timing(name, 1, seconds)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    """A plain fixed-width table on stdout (floats with two decimals unless already formatted)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(title)
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    print(line)
    print("-" * len(line))
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    print(flush=True)


def timing_rows(timings: Sequence[Timing], baseline: Timing) -> list[list[Any]]:
    """Rows ``name, items, ms/check, checks/s, vs plain`` for :func:`print_table`."""
    return [
        [t.name, t.items, f"{t.ms_per_item:.2f}", f"{t.items_per_s:.1f}", f"{ratio(baseline, t):.2f}x"] for t in timings
    ]


TIMING_HEADERS = ("way", "checks", "ms/check", "checks/s", "vs plain")


def ratio(plain: Timing, package: Timing) -> float:
    """Plain time per check divided by package time per check (> 1: the package is faster)."""
    return plain.ms_per_item / package.ms_per_item


def speedup_line(value: float | None) -> str:
    """The scripts' last line: ``speedup: X.XX`` (two decimals), or ``speedup: n/a``."""
    return "speedup: n/a" if value is None else f"speedup: {value:.2f}"


class Stopwatch:
    """Wall time of the whole run (printed by the scripts before the final line)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
