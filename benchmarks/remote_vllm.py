"""Llama Guard on a vLLM server: the peers' way (chat + text parsing) vs LlamaGuard.from_endpoint, same server.

Peers' way (NeMo Guardrails, llama-stack): one chat request per check with the server's template,
``max_tokens=10``, the text parsed; no score. Package way: the prompt rendered and tokenized here, token ids to
``/v1/completions``, the verdict and its P(unsafe) from ``logprob_token_ids`` in one request, concurrent
requests. Also measured: two requests per check (verdict first, categories for unsafe rows after) against the
package's one request, to show which protocol is faster.

Each way runs with 1 caller and with 16 concurrent callers (threads) over the same conversations; the verdicts
must agree with in-process ``LlamaGuard.from_pretrained`` on the same weights.

By default a vLLM server (``.venv-vllm``) is started on the tiny trained Llama Guard 3 8B; ``--url``, ``--model``
and ``--tokenizer`` point it at a server of your own (e.g. ``vllm serve meta-llama/Llama-Guard-4-12B``).

The last line is ``speedup: X.XX`` = peers' way time / package time, per check, with 16 callers.

Run:  make bench-remote   (or: LLAMAGUARD_CACHE=.cache .venv/bin/python benchmarks/remote_vllm.py [--quick])
"""

from __future__ import annotations

import concurrent.futures
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
    p.add_argument("--n", type=int, default=None, help="conversations (32 with --quick, else 96)")
    args = p.parse_args()
    n = args.n or (32 if args.quick else 96)
    repeats = args.repeats or (3 if args.quick else 7)
    clock = Stopwatch()

    from langchain_llamaguard import LlamaGuard
    from langchain_llamaguard.tiny.serving import VllmServer
    from langchain_llamaguard.tiny.training import trained_llama_guard

    server = None
    local = None
    if args.url:
        url, tokenizer = args.url, args.tokenizer or args.model
    else:
        path = trained_llama_guard("llama-guard-3-8b")
        log(f"starting vLLM on {path} ...")
        server = VllmServer.start(path, name=args.model)
        server.wait_ready()
        url, tokenizer = server.url, args.tokenizer or str(path)
        local = LlamaGuard.from_pretrained(str(path))
    try:
        guard = LlamaGuard.from_endpoint(url, model=args.model, tokenizer=tokenizer, max_concurrency=16)
        convs = conversations(n)
        http = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=32))
        tokens = guard.tokens
        results: dict[str, list[tuple[bool | None, tuple[str, ...]]]] = {}

        parts = guard.format.name == "llama-guard-4"  # its template reads content parts

        def peers_one(text: str) -> tuple[bool | None, tuple[str, ...]]:
            content: Any = [{"type": "text", "text": text}] if parts else text
            body = {"model": args.model, "messages": [{"role": "user", "content": content}], "max_tokens": 10}
            answer = http.post("/chat/completions", json={**body, "temperature": 0}).json()
            return parse_text(answer["choices"][0]["message"]["content"])

        def package_one(text: str) -> tuple[bool | None, tuple[str, ...]]:
            v = guard.check(text)
            return v.safe, tuple(v.categories)

        def two_requests_one(text: str) -> tuple[bool | None, tuple[str, ...]]:
            """Verdict first (lead + verdict token, with logprobs), then the categories for an unsafe one."""
            ids = guard.encode(text)[0].input_ids
            common = {"model": args.model, "temperature": 0, "return_tokens_as_token_ids": True}
            first = http.post(
                "/completions",
                json={**common, "prompt": ids, "max_tokens": 2, "logprobs": 0,
                      "logprob_token_ids": [tokens.safe, tokens.unsafe]},
            ).json()  # fmt: skip
            got = [int(t.split(":")[1]) for t in first["choices"][0]["logprobs"]["tokens"]]
            if got[1:2] != [tokens.unsafe]:
                return True, ()
            rest = http.post(
                "/completions",
                json={**common, "prompt": ids + got[:2], "max_tokens": 23, "stop_token_ids": list(tokens.stop)},
            ).json()
            return parse_text(guard.tokenizer.decode(got[1:]) + rest["choices"][0]["text"])

        ways = [("peers' way: chat + text", peers_one), ("package: one request", package_one)]
        ways.append(("two requests per check", two_requests_one))
        # Interleaved repeats (every way once per round, in a rotating order), so that drift on a busy machine
        # (the server shares its cores with this client) lands on every way alike; medians are reported.
        runs = [(name, fn, k) for k in (1, 16) for name, fn in ways]
        seconds: dict[tuple[str, int], list[float]] = {(name, k): [] for name, _, k in runs}
        for _name, fn, k in runs:  # warm-up
            callers(fn, convs[:8], k)
        for rep in range(repeats):
            for name, fn, k in runs[rep % len(runs) :] + runs[: rep % len(runs)]:
                start = time.perf_counter()
                results[f"{name}/{k}"] = callers(fn, convs, k)
                seconds[(name, k)].append(time.perf_counter() - start)
            log(f"  round {rep + 1}/{repeats} done")
        timings = {key: Timing(f"{key[0]}, {key[1]} caller(s)", n, v) for key, v in seconds.items()}

        want = results["package: one request/16"]
        agree = {key: sum(a == b for a, b in zip(got, want, strict=True)) for key, got in results.items()}
        in_process = None
        if local is not None:
            lv = local.batch_check(convs)
            in_process = sum((v.safe, tuple(v.categories)) == w for v, w in zip(lv, want, strict=True))
        print(f"Llama Guard over vLLM at {url} ({args.model}): {n} conversations, median of {repeats}")
        print()
        for k in (1, 16):
            rows = [timings[(name, k)] for name, _ in ways]
            print_table(TIMING_HEADERS, timing_rows(rows, rows[0]), title=f"{k} concurrent caller(s)")
        checks = [[f"verdicts of {key} == package", f"{v}/{n}"] for key, v in agree.items()]
        if in_process is not None:
            checks.append(["package verdicts == in-process", f"{in_process}/{n}"])
        one, two = timings[("package: one request", 16)], timings[("two requests per check", 16)]
        checks.append(["one request vs two (16 callers, time ratio two / one)", f"{ratio(two, one):.2f}"])
        checks.append(["wall time of this run (s)", f"{clock.elapsed():.1f}"])
        print_table(("check", "value"), checks)
        print(speedup_line(ratio(timings[("peers' way: chat + text", 16)], one)))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
