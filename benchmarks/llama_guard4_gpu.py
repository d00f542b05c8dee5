"""Llama Guard 4 at its real size on a CUDA GPU (random weights): generate() one by one vs LlamaGuard.

The model is a ``Llama4ForConditionalGeneration`` with Llama Guard 4's real text shape (hidden 5120, 48
layers, 40 heads, 8 KV heads, head_dim 128, dense FFN 8192, no experts, vocab 202048, untied embeddings,
bf16) and the Scout vision encoder, built directly on the GPU with random weights (no download, nothing
saved), the real Llama 4 tokenizer and a ``Llama4Processor`` with Llama Guard 4's chat template.

Plain way (the model card snippet, one conversation at a time): ``processor.apply_chat_template(...)`` then
``model.generate(**inputs, max_new_tokens=10, do_sample=False)``. A random model never emits ``<|eot|>``, so
that call always runs 10 decode steps, while the real model stops after 3 tokens (``\\n\\n``, ``safe``,
``<|eot|>``) on a safe conversation. The table shows both; the ``speedup:`` line uses the fair one,
``max_new_tokens=3`` (what the real model generates for a safe verdict).

Package way: ``LlamaGuard.from_model(model, processor)`` on the same model object: ``check`` one by
one (batch-1 p50 latency) and ``batch_check`` of 64 conversations (throughput). A random model does not
answer in the Llama Guard format, so the guard runs with ``on_error="unsafe"``: every check is one forward
pass (the cost of a safe verdict with the real model; an unsafe verdict adds a few decode steps for its
categories).

The last line is ``speedup: X.XX`` = plain batch-1 p50 latency (``max_new_tokens=3``) / package batch-1 p50
latency, or ``speedup: n/a`` without a CUDA GPU.

Run:  LLAMAGUARD_CACHE=.cache .venv/bin/python benchmarks/llama_guard4_gpu.py [--quick] [--layers N]
Smoke test of the code path on a CPU (shrunken shape):  ... --cpu --layers 1 --hidden 256 --quick
"""

from __future__ import annotations

import contextlib
from typing import Any

from _common import (
    Stopwatch,
    Timing,
    latencies,
    log,
    measure,
    parser,
    percentile,
    print_table,
    ratio,
    set_threads,
    speedup_line,
)

REAL_HIDDEN = 5120
PAD_ID = 200018  # <|finetune_right_pad|>
EOS_IDS = [200001, 200007, 200008]


def text_config_kwargs(hidden: int, layers: int) -> dict[str, Any]:
    """Llama Guard 4's text config; another ``hidden`` than 5120 shrinks heads and FFN (smoke test)."""
    if hidden == REAL_HIDDEN:
        heads, kv_heads, head_dim, ffn = 40, 8, 128, 8192
    else:
        head_dim = 128 if hidden >= 256 else max(8, hidden // 4)
        heads = max(2, hidden // head_dim)
        kv_heads = max(1, heads // 5)
        while heads % kv_heads:
            kv_heads -= 1
        ffn = max(64, (hidden * 8 // 5) // 64 * 64)
    return {
        "vocab_size": 202048,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": ffn,
        "intermediate_size_mlp": ffn,
        "num_local_experts": 0,
        "interleave_moe_layer_step": 0,
        "moe_layers": [],
        "max_position_embeddings": 8192,
        "attention_chunk_size": None,  # the real checkpoint's value; set to 8192 below, as the loader does
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
        "bos_token_id": 200000,
        "eos_token_id": EOS_IDS,
        "pad_token_id": PAD_ID,
        "tie_word_embeddings": False,
    }


def vision_config_kwargs(hidden: int) -> dict[str, Any]:
    """The Scout vision encoder at the real size, a tiny one for the shrunken CPU shape."""
    if hidden == REAL_HIDDEN:
        return {
            "hidden_size": 1408,
            "num_hidden_layers": 34,
            "num_attention_heads": 16,
            "intermediate_size": 5632,
            "image_size": 336,
            "patch_size": 14,
            "pixel_shuffle_ratio": 0.5,
            "projector_input_dim": 4096,
            "projector_output_dim": 4096,
            "vision_output_dim": 4096,
        }
    return {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "image_size": 336,
        "patch_size": 14,
        "pixel_shuffle_ratio": 0.5,
        "projector_input_dim": 64,
        "projector_output_dim": 64,
        "vision_output_dim": 64,
    }


@contextlib.contextmanager
def default_dtype(dtype: Any):
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build(device: str, dtype: Any, hidden: int, layers: int) -> tuple[Any, Any, Any]:
    """(model, tokenizer, processor): random weights built in place on ``device``."""
    import torch
    import transformers
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4Processor,
        Llama4TextConfig,
        Llama4VisionConfig,
    )

    from langchain_llamaguard.tiny.models import chat_template
    from langchain_llamaguard.tiny.tokenizers import load_tokenizer

    tokenizer = load_tokenizer("llama4")
    config = Llama4Config(
        text_config=Llama4TextConfig(**text_config_kwargs(hidden, layers)),
        vision_config=Llama4VisionConfig(**vision_config_kwargs(hidden)),
        image_token_index=200092,
        tie_word_embeddings=False,
    )
    config.text_config.attention_chunk_size = 8192  # null in the real config: transformers needs a value
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        model = Llama4ForConditionalGeneration(config)
    model.eval()
    model.generation_config.eos_token_id = EOS_IDS
    model.generation_config.pad_token_id = PAD_ID
    image_processor_cls = getattr(transformers, "Llama4ImageProcessor", None) or transformers.Llama4ImageProcessorFast
    processor = Llama4Processor(
        image_processor=image_processor_cls(),
        tokenizer=tokenizer,
        chat_template=chat_template("llama-guard-4"),
    )
    return model, tokenizer, processor


def conversations(count: int) -> list[list[dict[str, Any]]]:
    """``count`` text conversations from the tiny moderation set (cycled if more are asked for)."""
    from langchain_llamaguard.tiny.data import llama_guard_examples

    convs = [
        [
            {"role": "user" if i % 2 == 0 else "assistant", "content": [{"type": "text", "text": t}]}
            for i, t in enumerate(ex.turns)
        ]
        for ex in llama_guard_examples(0)
        if not ex.excluded
    ]
    return [convs[i % len(convs)] for i in range(count)]


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=48, help="decoder layers (48 = real; fewer: smoke test)")
    p.add_argument("--hidden", type=int, default=REAL_HIDDEN, help="hidden size (5120 = real; less with --cpu)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU in float32 (smoke test of the code path)")
    p.add_argument("--batch", type=int, default=64, help="batch size of the throughput measurement")
    p.add_argument("--samples", type=int, default=None, help="batch-1 latency samples (8 quick, else 32)")
    args = p.parse_args()
    clock = Stopwatch()

    import torch

    if args.cpu:
        device, dtype = "cpu", torch.float32
        set_threads(args.threads)
        sync = None
    elif not torch.cuda.is_available():
        print("no CUDA GPU available: Llama Guard 4 GPU benchmark skipped (--cpu runs a CPU smoke test)")
        print(speedup_line(None))
        return
    else:
        device, dtype = "cuda", torch.bfloat16
        sync = torch.cuda.synchronize

    from langchain_llamaguard import LlamaGuard

    samples = args.samples or (8 if args.quick else 32)
    repeats = args.repeats or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else 2

    log(f"building Llama4ForConditionalGeneration (hidden {args.hidden}, {args.layers} layers) on {device}")
    model, tokenizer, processor = build(device, dtype, args.hidden, args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    cuda = device == "cuda"
    if cuda:
        sync()
        weights_mem = torch.cuda.memory_allocated()
    log(f"built in {clock.elapsed():.1f} s: {n_params / 1e9:.2f} B parameters")

    guard = LlamaGuard.from_model(model, processor, model_format="llama-guard-4", on_error="unsafe")

    singles = conversations(samples)
    batch = conversations(args.batch)
    prompt_lens = [len(guard.encode(c)[0].input_ids) for c in batch]

    def plain(max_new_tokens: int):
        def one(msgs: list[dict[str, Any]]) -> str:
            inputs = processor.apply_chat_template(
                msgs, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            ).to(device)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            return processor.batch_decode(out[:, inputs["input_ids"].shape[-1] :], skip_special_tokens=True)[0]

        return one

    peaks: dict[str, int] = {}

    def phase(name: str, fn: Any) -> Timing:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = fn()
        if cuda:
            sync()
            peaks[name] = torch.cuda.max_memory_allocated()
        return t

    log("measuring ...")
    plain10 = phase(
        "plain generate(max_new_tokens=10), batch 1",
        lambda: latencies("plain generate(max_new_tokens=10)", plain(10), singles, warmup=warmup, sync=sync),
    )
    plain3 = phase(
        "plain generate(max_new_tokens=3), batch 1",
        lambda: latencies("plain generate(max_new_tokens=3)", plain(3), singles, warmup=warmup, sync=sync),
    )
    single = phase(
        "package check, batch 1",
        lambda: latencies("package check", guard.check, singles, warmup=warmup, sync=sync),
    )
    batched = phase(
        f"package batch_check, batch {args.batch}",
        lambda: measure(
            f"package batch_check (batch {args.batch})",
            lambda: guard.batch_check(batch),
            items=len(batch),
            repeats=repeats,
            warmup=1,
            sync=sync,
        ),
    )

    where = torch.cuda.get_device_name() if cuda else "CPU (smoke test, float32)"
    print(
        f"Llama Guard 4 shape, random weights, on {where}: hidden {args.hidden}, {args.layers} layers, "
        f"{n_params / 1e9:.2f} B parameters, {str(dtype).replace('torch.', '')}; prompts of "
        f"{min(prompt_lens)}-{max(prompt_lens)} tokens"
    )
    print()
    rows = []
    for name, t in (
        ("plain generate(max_new_tokens=10), batch 1", plain10),
        ("plain generate(max_new_tokens=3), batch 1", plain3),
        ("package check, batch 1", single),
    ):
        p50 = percentile(t.seconds, 0.5) * 1000
        p90 = percentile(t.seconds, 0.9) * 1000
        vs = plain3.median_s * 1000 / p50
        rows.append([name, len(t.seconds), f"{p50:.1f}", f"{p90:.1f}", f"{1000 / p50:.1f}", f"{vs:.2f}x"])
    rows.append(
        [
            f"package batch_check, batch {args.batch}",
            f"{len(batched.seconds)}x{batched.items}",
            f"{batched.ms_per_item:.2f}/check",
            "",
            f"{batched.items_per_s:.1f}",
            f"{plain3.median_s * 1000 / batched.ms_per_item:.2f}x",
        ]
    )
    print_table(("way", "samples", "p50 ms", "p90 ms", "checks/s", "vs plain (3 tok)"), rows)
    summary = [
        ["batch-1 p50: plain (10 tokens) / package", f"{ratio(plain10, single):.2f}"],
        ["batch-1 p50: plain (3 tokens) / package", f"{ratio(plain3, single):.2f}"],
        [f"throughput: package batch {args.batch} / plain (3 tokens)", f"{ratio(plain3, batched):.2f}"],
    ]
    if cuda:
        summary.append(["GPU memory: weights", gib(weights_mem)])
        summary += [[f"peak GPU memory: {k}", gib(v)] for k, v in peaks.items()]
    summary.append(["wall time of this run (s)", f"{clock.elapsed():.1f}"])
    print_table(("summary", "value"), summary)
    print(speedup_line(ratio(plain3, single)))


if __name__ == "__main__":
    main()
