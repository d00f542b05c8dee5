"""Llama Guard on a vLLM server: the peers' way (chat + text parsing) vs LlamaGuard.from_endpoint, same server.

Peers' way (NeMo Guardrails, llama-stack): one chat request per check with the server's template,
``max_tokens=10``, the text parsed; no score. Package way: the prompt rendered and tokenized here, token ids to
``/v1/completions``, the verdict and its P(unsafe) from ``logprob_token_ids`` in one request, concurrent
requests. Also measured: two requests per check (verdict first, categories for unsafe rows after) against the
package's one request, to show which protocol is faster.

The server shares its cores with this client, and other load on the machine drifts while a run lasts, so every
round runs each way once (in a rotating order) and the final ratio is the median of the per-round ratios at 16
callers, with their quartiles. The client's own CPU per check is reported too: on a shared machine it is taken
from the server.

Each way runs with 1 caller and with 16 concurrent callers (threads) over the same conversations; the verdicts
must agree with in-process ``LlamaGuard.from_pretrained`` on the same weights.

By default a vLLM server (``.venv-vllm``) is started on the tiny trained Llama Guard 3 8B; ``--url``, ``--model``
and ``--tokenizer`` point it at a server of your own (e.g. ``vllm serve meta-llama/Llama-Guard-4-12B``).

``--real-shape``: the server runs (float32) on a *scripted* Llama Guard 3 1B of the real width and depth
(``scripted_1b.py``: random weights, but every prompt is answered ``\\n\\n``, ``safe``, end of turn, so every way
generates what it would for a real safe verdict; built once, ~6 GB). On the tiny model the server's per-token
log-softmax over the 128k vocabulary is large next to the forward pass; here it is not. A real-shape forward pass
on a small CPU is slow, so this mode defaults to 16 callers only (``--callers``), 32 conversations, 5 rounds, and
verdicts compared with in-process float32 on 4 conversations (``--in-process``), computed before the server
starts so that the two models are not in memory at once. All verdicts are safe by construction: the agreement
checks the protocols, not a classifier.

The last line is ``speedup: X.XX`` = peers' way time / package time, per check, with 16 callers (the median of
the per-round ratios).

Run:  make bench-remote   (or: LLAMAGUARD_CACHE=.cache .venv/bin/python benchmarks/remote_vllm.py [--quick]
      [--real-shape])
"""

from __future__ import annotations

import concurrent.futures
import gc
import statistics
import time
from typing import Any

import httpx
from _common import TIMING_HEADERS, Stopwatch, Timing, log, parser, print_table, ratio, speedup_line, timing_rows


def conversations(n: int) -> list[str]:
    from langchain_llamaguard.tiny import data

    base = [c.conversation for c in data.llama_guard_checks("llama-guard-3-8b") if isinstance(c.conversation, str)]
    base += [data.POEM, data.POISON, data.SOURDOUGH, data.BOMB + " Quickly.", data.BENIGN_QUESTION + " Why?"]
    return [base[i % len(base)] for i in range(n)]


def parse_text(text: str) -> tuple[bool | None, tuple[str, ...]]:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or lines[0] not in ("safe", "unsafe"):
        return None, ()
    return lines[0] == "safe", tuple(c.strip() for c in lines[1].split(",")) if len(lines) > 1 else ()


def callers(fn, items: list[Any], n: int) -> list[Any]:
    """``fn`` over ``items`` from ``n`` concurrent callers (threads), results in order."""
    if n == 1:
        return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running server's base URL (ending in /v1); default: start one here")
    p.add_argument("--model", default="lg3-tiny", help="the served model name")
    p.add_argument("--tokenizer", help="the local tokenizer (id or path); default: the tiny guard's")
    p.add_argument("--n", type=int, default=None, help="conversations (32 with --quick or --real-shape, else 96)")
    p.add_argument("--real-shape", action="store_true", help="serve the scripted real-shape Llama Guard 3 1B")
    p.add_argument("--callers", type=int, nargs="+", help="callers per run (default: 1 16; --real-shape: 16)")
    p.add_argument("--in-process", type=int, help="conversations also checked in-process (default: all; real-shape: 4)")
    args = p.parse_args()
    real = args.real_shape
    if real and (args.url or args.tokenizer):
        p.error("--real-shape starts its own server: no --url / --tokenizer")
    n = args.n or (32 if args.quick or real else 96)
    repeats = args.repeats or (5 if args.quick or real else 9)
    counts = tuple(sorted(set(args.callers or ((16,) if real else (1, 16)))))
    top = counts[-1]  # the ratios and the speedup line are taken at the most callers
    model_name = "lg3-1b-scripted" if real and args.model == "lg3-tiny" else args.model
    timeout = 600.0 if real else 60.0
    clock = Stopwatch()

    from langchain_llamaguard import LlamaGuard
    from langchain_llamaguard.backends.http import EndpointClient
    from langchain_llamaguard.tiny.serving import VllmServer
    from langchain_llamaguard.tiny.training import trained_llama_guard

    server = None
    convs = conversations(n)
    compared = min(n, args.in_process or (4 if real else n))
    local_verdicts: list[tuple[bool | None, tuple[str, ...]]] | None = None
    if args.url:
        url, tokenizer = args.url, args.tokenizer or model_name
    else:
        if real:
            from scripted_1b import checkpoint

            path = checkpoint()
        else:
            path = trained_llama_guard("llama-guard-3-8b")
        # In-process verdicts first: at the real shape, this model and the server's would not both fit well.
        log(f"in-process verdicts on {compared} conversations ({path.name}) ...")
        local = LlamaGuard.from_pretrained(str(path))
        local_verdicts = [(v.safe, tuple(v.categories)) for v in local.batch_check(convs[:compared])]
        del local
        gc.collect()
        log(f"starting vLLM on {path} ...")
        server = VllmServer.start(path, name=model_name)
        server.wait_ready(timeout=600 if real else 240)
        url, tokenizer = server.url, args.tokenizer or str(path)
    try:
        guard = LlamaGuard.from_endpoint(
            url, model=model_name, tokenizer=tokenizer, max_concurrency=16, timeout=timeout
        )
        http = httpx.Client(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=32))
        tokens = guard.tokens
        results: dict[str, list[tuple[bool | None, tuple[str, ...]]]] = {}

        parts = guard.format.name in ("llama-guard-4", "llama-guard-3-1b")  # their templates read content parts

        def peers_one(text: str) -> tuple[bool | None, tuple[str, ...]]:
            content: Any = [{"type": "text", "text": text}] if parts else text
            body = {"model": model_name, "messages": [{"role": "user", "content": content}], "max_tokens": 10}
            answer = http.post("/chat/completions", json={**body, "temperature": 0}).json()
            return parse_text(answer["choices"][0]["message"]["content"])

        def package_one(text: str) -> tuple[bool | None, tuple[str, ...]]:
            v = guard.check(text)
            return v.safe, tuple(v.categories)

        two = EndpointClient(url, max_concurrency=16, timeout=timeout)  # the package's HTTP client, another protocol

        def two_requests_one(text: str) -> tuple[bool | None, tuple[str, ...]]:
            """Verdict first (lead + verdict token, with logprobs), then the categories for an unsafe one."""
            ids = guard.encode(text)[0].input_ids
            common = {"model": model_name, "temperature": 0, "return_tokens_as_token_ids": True}
            body = {**common, "prompt": ids, "max_tokens": 2, "logprobs": 0, "logprob_token_ids": [tokens.unsafe]}
            first = two.post_many([("/completions", body)])[0]
            got = [int(t.split(":")[1]) for t in first["choices"][0]["logprobs"]["tokens"]]
            if got[1:2] != [tokens.unsafe]:
                return True, ()
            body = {**common, "prompt": ids + got[:2], "max_tokens": 23, "stop_token_ids": list(tokens.stop)}
            rest = two.post_many([("/completions", body)])[0]
            return parse_text(guard.tokenizer.decode(got[1:]) + rest["choices"][0]["text"])

        ways = [("peers' way: chat + text", peers_one), ("package: one request", package_one)]
        ways.append(("two requests per check", two_requests_one))
        # Interleaved repeats (every way once per round, in a rotating order), so that drift on a busy machine
        # (the server shares its cores with this client) lands on every way alike; medians are reported.
        runs = [(name, fn, k) for k in counts for name, fn in ways]
        seconds: dict[tuple[str, int], list[float]] = {(name, k): [] for name, _, k in runs}
        cpu: dict[tuple[str, int], list[float]] = {(name, k): [] for name, _, k in runs}
        if real:  # one request first: its policy prefix is cached before 16 requests would each compute it
            peers_one(convs[0])
        for _name, fn, k in runs:  # warm-up (the server's first log-probability requests set things up)
            callers(fn, convs[:16], k)
        for rep in range(repeats):
            for name, fn, k in runs[rep % len(runs) :] + runs[: rep % len(runs)]:
                start, start_cpu = time.perf_counter(), time.process_time()
                results[f"{name}/{k}"] = callers(fn, convs, k)
                seconds[(name, k)].append(time.perf_counter() - start)
                cpu[(name, k)].append(time.process_time() - start_cpu)
            log(f"  round {rep + 1}/{repeats} done")
        timings = {key: Timing(f"{key[0]}, {key[1]} caller(s)", n, v) for key, v in seconds.items()}
        per_round_at = {
            k: [p / q for p, q in zip(seconds[(ways[0][0], k)], seconds[(ways[1][0], k)], strict=True)]
            for k in counts
        }
        per_round = per_round_at[top]

        want = results[f"package: one request/{top}"]
        agree = {key: sum(a == b for a, b in zip(got, want, strict=True)) for key, got in results.items()}
        in_process = None
        if local_verdicts is not None:
            in_process = sum(v == w for v, w in zip(local_verdicts, want, strict=False))
        what = "scripted real-shape Llama Guard 3 1B, float32" if real else model_name
        print(f"Llama Guard over vLLM at {url} ({what}): {n} conversations, median of {repeats}")
        if real:
            for k in counts:
                print(f"per-round ratios (peers / package, {k} caller(s)): "
                      f"{', '.join(f'{r:.3f}' for r in per_round_at[k])}")
        print()
        for k in counts:
            rows = [timings[(name, k)] for name, _ in ways]
            print_table(TIMING_HEADERS, timing_rows(rows, rows[0]), title=f"{k} concurrent caller(s)")
        checks = [[f"verdicts of {key} == package", f"{v}/{n}"] for key, v in agree.items()]
        if in_process is not None:
            checks.append(["package verdicts == in-process", f"{in_process}/{compared}"])
        one, second = timings[("package: one request", top)], timings[("two requests per check", top)]
        checks.append([f"one request vs two ({top} callers, time ratio two / one)", f"{ratio(second, one):.2f}"])
        for name, _ in ways:
            ms = 1000 * statistics.median(cpu[(name, top)]) / n
            checks.append([f"client CPU per check, {name}, {top} callers (ms)", f"{ms:.2f}"])
        for k in counts:
            rounds = per_round_at[k]
            quartiles = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else [rounds[0]] * 3
            checks.append([f"peers / package, {k} caller(s), median of per-round ratios",
                           f"{statistics.median(rounds):.2f}"])
            checks.append(["  quartiles of the per-round ratios", f"{quartiles[0]:.2f} .. {quartiles[2]:.2f}"])
        speed = statistics.median(per_round)
        checks.append(["wall time of this run (s)", f"{clock.elapsed():.1f}"])
        print_table(("check", "value"), checks)
        print(speedup_line(speed))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
