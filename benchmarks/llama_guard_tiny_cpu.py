"""Tiny trained Llama Guard 4 on the CPU: the model card's generate() loop vs LlamaGuard.check / batch_check.

Plain way (the model card snippet, one conversation at a time)::

    inputs = processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    text = processor.batch_decode(out[:, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)[0]

then ``safe`` / ``unsafe`` + categories parsed from ``text``.

Package way: ``LlamaGuard.from_pretrained(path)`` then ``guard.batch_check(convs)`` (one batch of all N) and
``guard.check(conv)`` one by one. Both read the same checkpoint (a tiny Llama4ForConditionalGeneration trained
for a few seconds to answer like the real one) and the same conversations; the verdicts must agree.

The last line is ``speedup: X.XX`` = plain one-by-one time / package batch time, per check.

Run:  LLAMAGUARD_CACHE=.cache .venv/bin/python benchmarks/llama_guard_tiny_cpu.py [--quick]
"""

from __future__ import annotations

from typing import Any

from _common import (
    TIMING_HEADERS,
    Stopwatch,
    log,
    measure,
    parser,
    print_table,
    ratio,
    set_threads,
    speedup_line,
    timing_rows,
)


def conversations(limit: int | None) -> list[tuple[list[dict[str, Any]], str]]:
    """(messages, expected target) for the tiny set's examples without exclusions, in its fixed order."""
    from langchain_llamaguard.tiny.data import llama_guard_examples

    out = []
    for ex in llama_guard_examples(0):
        if ex.excluded:
            continue
        messages = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": [{"type": "text", "text": t}]}
            for i, t in enumerate(ex.turns)
        ]
        out.append((messages, ex.target))
    return out[:limit] if limit else out


def parse_plain(text: str) -> tuple[bool | None, tuple[str, ...]]:
    """What a user of the card snippet writes: first line safe/unsafe, second line the categories."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or lines[0] not in ("safe", "unsafe"):
        return None, ()  # unreadable
    cats = tuple(c.strip() for c in lines[1].split(",") if c.strip()) if len(lines) > 1 else ()
    return lines[0] == "safe", cats


def main() -> None:
    # The tiny model's ops are too small to split across threads: one thread is fastest and steadiest.
    p = parser(__doc__.split("\n\n")[0], default_threads=1)
    p.add_argument("--n", type=int, default=None, help="conversations (16 with --quick, else all 164)")
    args = p.parse_args()
    n = args.n or (16 if args.quick else None)
    repeats = args.repeats or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else 1
    clock = Stopwatch()
    threads = set_threads(args.threads)

    import torch
    import transformers
    from transformers import AutoConfig, AutoProcessor, Llama4ForConditionalGeneration

    from langchain_llamaguard import LlamaGuard
    from langchain_llamaguard.tiny.training import trained_llama_guard

    path = trained_llama_guard("llama-guard-4")
    log(f"checkpoint: {path}")
    convs = conversations(n)
    messages = [m for m, _ in convs]
    log(f"{len(convs)} conversations, {repeats} repeats, {warmup} warm-up, {threads} torch threads")

    # -- the plain transformers way (model card) -----------------------------------------------------------
    config = AutoConfig.from_pretrained(path)
    config.text_config.attention_chunk_size = 8192  # the real checkpoint's null crashes transformers
    model = Llama4ForConditionalGeneration.from_pretrained(path, config=config, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(path)

    def plain_one(msgs: list[dict[str, Any]]) -> tuple[bool | None, tuple[str, ...]]:
        inputs = processor.apply_chat_template(
            msgs, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
        text = processor.batch_decode(out[:, inputs["input_ids"].shape[-1] :], skip_special_tokens=True)[0]
        return parse_plain(text)

    # -- the package's way --------------------------------------------------------------------------------
    guard = LlamaGuard.from_pretrained(str(path))

    results: dict[str, list[tuple[bool | None, tuple[str, ...]]]] = {}

    def run_plain() -> None:
        results["plain"] = [plain_one(m) for m in messages]

    def run_package_single() -> None:
        results["single"] = [(v.safe, tuple(v.categories)) for v in (guard.check(m) for m in messages)]

    def run_package_batch() -> None:
        results["batch"] = [(v.safe, tuple(v.categories)) for v in guard.batch_check(messages)]

    log("measuring ...")
    plain = measure("plain generate, one by one", run_plain, items=len(messages), repeats=repeats, warmup=warmup)
    single = measure(
        "package check, one by one", run_package_single, items=len(messages), repeats=repeats, warmup=warmup
    )
    batch = measure(
        f"package batch_check (batch {len(messages)})",
        run_package_batch,
        items=len(messages),
        repeats=repeats,
        warmup=warmup,
    )

    expected = [(t == "safe", tuple(t.split("\n")[1].split(",")) if "\n" in t else ()) for _, t in convs]
    agree_batch = sum(a == b for a, b in zip(results["plain"], results["batch"], strict=True))
    agree_single = sum(a == b for a, b in zip(results["plain"], results["single"], strict=True))
    correct = sum(a == b for a, b in zip(results["plain"], expected, strict=True))
    unsafe = sum(1 for s, _ in results["plain"] if s is False)

    print(
        f"Tiny trained Llama Guard 4 on CPU ({threads} threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}): {len(messages)} conversations, {unsafe} judged unsafe, "
        f"median of {repeats}"
    )
    print()
    print_table(TIMING_HEADERS, timing_rows([plain, single, batch], plain))
    print_table(
        ("check", "value"),
        [
            ["verdicts plain == package batch_check", f"{agree_batch}/{len(messages)}"],
            ["verdicts plain == package check", f"{agree_single}/{len(messages)}"],
            ["plain verdicts == training targets", f"{correct}/{len(messages)}"],
            ["one-by-one ratio (plain / package check)", f"{ratio(plain, single):.2f}"],
            ["batch ratio (plain / package batch_check)", f"{ratio(plain, batch):.2f}"],
            ["wall time of this run (s)", f"{clock.elapsed():.1f}"],
        ],
    )
    if agree_batch != len(messages) or agree_single != len(messages):
        bad = [
            (i, results["plain"][i], results["batch"][i], results["single"][i])
            for i in range(len(messages))
            if not results["plain"][i] == results["batch"][i] == results["single"][i]
        ]
        print(f"DISAGREEMENT (index, plain, batch, single): {bad[:10]}")
    print(speedup_line(ratio(plain, batch)))
    if agree_batch != len(messages) or agree_single != len(messages):
        raise SystemExit(1)  # the verdicts must agree; the speedup line stays the last line printed


if __name__ == "__main__":
    main()
