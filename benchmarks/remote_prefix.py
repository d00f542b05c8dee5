"""A growing conversation on a vLLM server: time per check and the server's prefix-cache hit rate, caching on vs off.

The package sends each check of a growing conversation with the previous check's token ids first (same role and
policy), so vLLM's automatic prefix caching computes only what is new. Two workloads, as a guarded agent sends
them (``LlamaGuard.from_endpoint(...).check`` per step, several conversations at once):

* an agent's trajectory: a question, then tool calls, tool results and answers, checked at every new turn with
  the conversation so far;
* a streamed answer: the answer so far checked every few words (``stream_mode="incremental"``).

Hits and queries come from the server's ``/metrics`` (``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``,
in prompt tokens; the server caches whole blocks, 128 tokens on vLLM CPU). The same workloads also run on a
server started with ``--no-enable-prefix-caching`` (``--only-on`` skips it).

Both servers run at once, and every round runs each workload on each (the one not measured sits idle), so drift on
a busy machine lands on both alike. The last line is ``speedup: X.XX`` = time with prefix caching off / on, both
workloads together, the median of the per-round ratios.

Run:  make bench-prefix   (or: LLAMAGUARD_CACHE=.cache .venv/bin/python benchmarks/remote_prefix.py [--quick])
"""

from __future__ import annotations

import concurrent.futures
import random
import re
import statistics
import time
from typing import Any

import httpx
from _common import Stopwatch, log, parser, print_table, speedup_line


def words(rng: random.Random, n: int) -> str:
    from langchain_llamaguard.tiny import data

    pool = data.FILLER + " ".join(data.BENIGN + data.BENIGN_ANSWERS + data.BENIGN_TOOL_OUTPUTS).split()
    return " ".join(rng.choice(pool) for _ in range(n)).capitalize() + "."


def trajectory(seed: int, turns: int, tool_words: int = 120) -> list[Any]:
    """A question, then (tool call, tool result, answer) rounds, each text its own."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    rng = random.Random(seed)
    out: list[Any] = [HumanMessage(words(rng, 40) + " Please look it up.")]
    while len(out) < turns:
        call = {"name": "web_search", "args": {"query": words(rng, 6)}, "id": f"c{len(out)}"}
        out.append(AIMessage(words(rng, 30), tool_calls=[call]))
        out.append(ToolMessage(words(rng, tool_words), tool_call_id=f"c{len(out) - 1}", name="web_search"))
        out.append(AIMessage(words(rng, 80)))
    return out[:turns]


def stream_checks(seed: int, answer_words: int, every: int) -> list[Any]:
    """The conversations a streamed answer is checked as: the question plus the answer so far, every few words."""
    from langchain_core.messages import AIMessage, HumanMessage

    rng = random.Random(seed)
    question = HumanMessage(words(rng, 40))
    answer = words(rng, answer_words).split(" ")
    cuts = list(range(every, len(answer), every)) + [len(answer)]
    return [[question, AIMessage(" ".join(answer[:k]))] for k in cuts]


class Metrics:
    def __init__(self, url: str) -> None:
        self.url = url.removesuffix("/v1") + "/metrics"

    def read(self) -> tuple[float, float]:
        text = httpx.get(self.url, timeout=10).text

        def total(name: str) -> float:
            return sum(float(v) for v in re.findall(rf"^vllm:{name}_total\{{[^}}]*\}} (\S+)$", text, re.M))

        return total("prefix_cache_queries"), total("prefix_cache_hits")


def run(guard: Any, sequences: list[list[Any]], concurrency: int) -> tuple[float, int]:
    """Each sequence's checks in order, ``concurrency`` sequences at once; (seconds, checks)."""

    def one(seq: list[Any]) -> None:
        for conversation in seq:
            guard.check(conversation)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, sequences))
    return time.perf_counter() - start, sum(len(s) for s in sequences)


def workloads(args: Any, seed: int) -> dict[str, list[list[Any]]]:
    trajectories = [trajectory(seed + i, args.turns, args.tool_words) for i in range(args.conversations)]
    return {
        "agent trajectory": [[t[:n] for n in range(1, len(t) + 1)] for t in trajectories],
        "streamed answer": [stream_checks(seed + 100 + i, args.answer_words, 12) for i in range(args.conversations)],
    }


class Target:
    """One server as the package uses it: a guard, its ``/metrics``, and what each workload measured there."""

    def __init__(self, url: str, model: str, tokenizer: str) -> None:
        from langchain_llamaguard import LlamaGuard

        self.guard = LlamaGuard.from_endpoint(url, model=model, tokenizer=tokenizer, on_error="unsafe")
        self.metrics = Metrics(url)
        self.reps: dict[str, list[tuple[float, int, float, float, int]]] = {}

    def warm_up(self, args: Any) -> None:
        for seq in workloads(args, 10_000)["agent trajectory"][:2]:  # conversations of its own
            self.guard.check(seq[-1])

    def round(self, args: Any, seed: int) -> None:
        for name, sequences in workloads(args, seed).items():
            q0, h0 = self.metrics.read()
            seconds, checks = run(self.guard, sequences, args.conversations)
            q1, h1 = self.metrics.read()
            tokens = sum(len(self.guard.encode(c)[0].input_ids) for seq in sequences for c in seq)
            self.reps.setdefault(name, []).append((seconds, checks, q1 - q0, h1 - h0, tokens))

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, reps in self.reps.items():
            checks = reps[0][1]
            out[name] = {
                "checks": checks,
                "ms_per_check": 1000 * statistics.median(r[0] for r in reps) / checks,
                "hit_rate": sum(r[3] for r in reps) / max(sum(r[2] for r in reps), 1),
                "tokens_per_check": statistics.median(r[4] for r in reps) / checks,
            }
        return out


def measure(targets: dict[str, Target], args: Any, repeats: int) -> None:
    """Every round runs each workload on every server (in a rotating order), on texts new to all of them, so
    drift on a busy machine lands on both alike; the servers not measured sit idle."""
    for target in targets.values():
        target.warm_up(args)
    order = list(targets)
    for rep in range(repeats):
        for mode in order[rep % len(order) :] + order[: rep % len(order)]:
            targets[mode].round(args, 1000 * (rep + 1))  # the same texts on each server, new every round
        log(f"  round {rep + 1}/{repeats} done")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running server's base URL (ending in /v1): measure it as it is configured")
    p.add_argument("--model", default="lg3-tiny", help="the served model name")
    p.add_argument("--tokenizer", help="the local tokenizer (id or path); default: the tiny guard's")
    p.add_argument("--only-on", action="store_true", help="do not start a second server without prefix caching")
    p.add_argument("--server-arg", action="append", default=[], help="one more vllm flag for the servers, e.g. "
                   "--server-arg=--block-size=32 (repeatable)")  # fmt: skip
    p.add_argument("--conversations", type=int, default=None, help="conversations at once (4, 2 with --quick)")
    p.add_argument("--turns", type=int, default=None, help="turns per trajectory (16, 10 with --quick)")
    p.add_argument("--tool-words", type=int, default=120, help="words of each tool result (120)")
    p.add_argument("--answer-words", type=int, default=None, help="words of the streamed answer (240, 120 quick)")
    args = p.parse_args()
    args.conversations = args.conversations or (2 if args.quick else 4)
    args.turns = args.turns or (10 if args.quick else 16)
    args.answer_words = args.answer_words or (120 if args.quick else 240)
    repeats = args.repeats or (2 if args.quick else 3)
    clock = Stopwatch()

    from langchain_llamaguard.tiny.serving import VllmServer
    from langchain_llamaguard.tiny.training import trained_llama_guard

    targets: dict[str, Target] = {}
    servers = []
    try:
        if args.url:
            targets["as configured"] = Target(args.url, args.model, args.tokenizer or args.model)
        else:
            path = trained_llama_guard("llama-guard-3-8b")
            modes = [("on", [])] + ([] if args.only_on else [("off", ["--no-enable-prefix-caching"])])
            for mode, extra in modes:  # both up at once (one waits idle while the other is measured)
                log(f"starting vLLM on {path} (prefix caching {mode}) ...")
                servers.append(VllmServer.start(path, name=args.model, extra_args=[*args.server_arg, *extra]))
            for (mode, _), server in zip(modes, servers, strict=True):
                server.wait_ready()
                targets[mode] = Target(server.url, args.model, args.tokenizer or str(path))
        measure(targets, args, repeats)
    finally:
        for server in servers:
            server.stop()
    results = {mode: target.summary() for mode, target in targets.items()}
    per_round = []
    if "on" in targets and "off" in targets:  # time off / on per round, both workloads together
        on, off = targets["on"].reps, targets["off"].reps
        per_round = [sum(off[n][i][0] for n in off) / sum(on[n][i][0] for n in on) for i in range(repeats)]

    print(
        f"Growing conversations on vLLM ({args.model}): {args.conversations} at once, trajectories of {args.turns} "
        f"turns, answers of {args.answer_words} words checked every 12; median of {repeats}"
        + (f"; server flags {' '.join(args.server_arg)}" if args.server_arg else "")
    )
    print()
    rows = []
    for mode, by_workload in results.items():
        for name, r in by_workload.items():
            rows.append(
                [f"{name}, prefix caching {mode}", int(r["checks"]), f"{r['tokens_per_check']:.0f}",
                 f"{r['ms_per_check']:.1f}", f"{100 * r['hit_rate']:.0f}%"]
            )  # fmt: skip
    print_table(("workload", "checks", "prompt tokens/check", "ms/check", "prefix-cache hits"), rows)
    speed = None
    if per_round:
        checks = []
        for name in results["on"]:
            gain = results["off"][name]["ms_per_check"] / results["on"][name]["ms_per_check"]
            checks.append([f"time per check, caching off / on, {name}", f"{gain:.2f}"])
        speed = statistics.median(per_round)
        checks.append(["time off / on, both workloads, per-round ratios", " ".join(f"{r:.2f}" for r in per_round)])
        checks.append(["wall time of this run (s)", f"{clock.elapsed():.1f}"])
        print_table(("check", "value"), checks)
    print(speedup_line(speed))


if __name__ == "__main__":
    main()
