"""CPU levers (issue 15): int8 on a CPU is torch's dynamic int8, the LM head can be cut down to the verdict
tokens, and prefixes of different roles and policies share one forward pass. None may change a verdict the model
is sure of; scores move by a bounded amount where the lever is not exact."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import BENIGN, BENIGN_ANSWER, BOMB, UNSAFE_ANSWER
from langchain_core.messages import AIMessage, HumanMessage

from langchain_llamaguard import GuardConfigurationError, LlamaGuard
from langchain_llamaguard.backends.base import DECODE_COLUMNS
from langchain_llamaguard.backends.cpu_quantization import CPU_INT8_METHOD, quantize_int8_cpu, weight_bytes
from langchain_llamaguard.backends.lm_head import VerdictHead
from langchain_llamaguard.taxonomy import default_categories
from langchain_llamaguard.tiny.data import llama_guard_examples

CPU = {"device_map": "cpu"}  # the CPU int8 path, also on a machine with a GPU
LEVERS = {
    "int8": {"quantization": "int8", **CPU},
    "pruned head": {"prune_lm_head": True},
    "int8 + pruned head": {"quantization": "int8", "prune_lm_head": True, **CPU},
}
SURE = 0.2
"""A verdict whose float32 score is this far from the 0.5 boundary must not change under a lever."""
CATEGORY_SURE = 0.8
"""An unsafe verdict's first category is one the model is sure of when the float32 model gives it this much of
its distribution over the policy's codes (how training came out decides which rows these are, not the test)."""
MAX_SCORE_SHIFT = 0.25
"""The most a lever may move a score on the tiny guards (measured: 0.06 over seeds 0-2 on one CPU, 0.153 on another
for seed 1; a broken lever moves sure scores by far more, and flips the verdicts checked above)."""


def _examples(model_format: str) -> list[tuple[object, list[str]]]:
    examples = llama_guard_examples(0, with_s14=model_format != "llama-guard-3-1b")[::3]
    return [(list(e.turns) if len(e.turns) > 1 else e.turns[0], list(e.excluded)) for e in examples]


@pytest.fixture(scope="module", params=["llama-guard-4", "llama-guard-3-8b", "llama-guard-3-1b"])
def tiny(request, lg4_path, lg3_8b_path, lg3_1b_path):
    path = {"llama-guard-4": lg4_path, "llama-guard-3-8b": lg3_8b_path, "llama-guard-3-1b": lg3_1b_path}[request.param]
    return request.param, path


@pytest.mark.parametrize("lever", list(LEVERS))
def test_levers_keep_sure_verdicts_and_bound_the_score_shift(tiny, lever):
    model_format, path = tiny
    examples = _examples(model_format)

    def run(guard: LlamaGuard) -> list:
        by_exclusion: dict[tuple[str, ...], list[int]] = {}
        for i, (_, excluded) in enumerate(examples):
            by_exclusion.setdefault(tuple(excluded), []).append(i)
        out: list = [None] * len(examples)
        for excluded, rows in by_exclusion.items():
            got = guard.batch_check([examples[i][0] for i in rows], excluded_categories=list(excluded))
            for i, v in zip(rows, got, strict=True):
                out[i] = v
        return out

    base = LlamaGuard.from_pretrained(str(path), on_error="unsafe")
    full = run(base)
    levered = run(LlamaGuard.from_pretrained(str(path), on_error="unsafe", **LEVERS[lever]))
    sure = [i for i, v in enumerate(full) if v.error is None and abs(v.score - 0.5) > SURE]
    assert len(sure) > len(full) * 0.8  # the tiny guards are trained to be sure of their answers
    assert [levered[i].safe for i in sure] == [full[i].safe for i in sure]
    # The categories: where the model is sure of the first one (a sure "unsafe" can still hesitate between two).
    sure_first = [i for i in sure if not full[i].safe and _first_category_sure(base, *examples[i])]
    assert sure_first  # the comparison below is never empty
    assert [levered[i].categories[:1] for i in sure_first] == [full[i].categories[:1] for i in sure_first]
    assert max(abs(a.score - b.score) for a, b in zip(full, levered, strict=True)) < MAX_SCORE_SHIFT
    assert any(not full[i].safe for i in sure) and any(full[i].safe for i in sure)


def _first_category_sure(guard: LlamaGuard, conversation: object, excluded: list[str]) -> bool:
    """Whether ``guard``'s model gives one code at least :data:`CATEGORY_SURE` as the first category."""
    judged = LlamaGuard.from_model(
        guard.backend.model, guard.backend.processor or guard.tokenizer, excluded_categories=excluded
    )
    codes = [c for c in default_categories(judged) if c not in judged.excluded_categories]
    return max(judged.category_distribution([conversation], codes)[0].values()) >= CATEGORY_SURE


def test_int8_on_a_cpu_is_torch_dynamic_int8_and_says_so(lg3_1b_path, lg3_1b, caplog):
    with caplog.at_level(logging.INFO, logger="langchain_llamaguard"):
        guard = LlamaGuard.from_pretrained(str(lg3_1b_path), quantization="int8", **CPU)
    assert guard.backend.quantization == f"int8: {CPU_INT8_METHOD}"
    assert CPU_INT8_METHOD in caplog.text
    layer = guard.backend.model.model.layers[0]
    assert type(layer.self_attn.q_proj).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(layer.mlp.down_proj).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert isinstance(guard.backend.model.lm_head, torch.nn.Linear)  # the head stays float32
    assert weight_bytes(guard.backend.model) < weight_bytes(lg3_1b.backend.model)
    assert lg3_1b.backend.quantization is None
    assert not guard.check(BOMB).safe and guard.check(BENIGN).safe


def test_int8_on_a_cpu_needs_float32(lg3_8b_path):
    with pytest.raises(GuardConfigurationError, match="computes in float32"):
        LlamaGuard.from_pretrained(str(lg3_8b_path), quantization="int8", dtype=torch.bfloat16, **CPU)


def test_quantize_int8_cpu_refuses_a_model_without_linear_layers():
    with pytest.raises(GuardConfigurationError, match="no linear layers"):
        quantize_int8_cpu(torch.nn.Sequential(torch.nn.ReLU()))


def test_bitsandbytes_int8_stays_reachable_with_its_own_config(lg3_8b_path, lg3_8b):
    from transformers import BitsAndBytesConfig

    guard = LlamaGuard.from_pretrained(
        str(lg3_8b_path), quantization_config=BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head"])
    )
    assert type(guard.backend.model.model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"
    assert [v.safe for v in guard.batch_check([BOMB, BENIGN])] == [False, True]
    with pytest.raises(GuardConfigurationError, match="not both"):
        LlamaGuard.from_pretrained(
            str(lg3_8b_path), quantization="int8", quantization_config=BitsAndBytesConfig(load_in_8bit=True)
        )


def test_pruned_head_keeps_the_verdict_tokens_only(lg3_1b_path):
    guard = LlamaGuard.from_pretrained(str(lg3_1b_path), prune_lm_head=True)
    head = guard.backend.model.get_output_embeddings()
    assert isinstance(head, VerdictHead)
    kept = set(head.rows.tolist())
    tokens = guard.tokens
    assert {tokens.lead, tokens.safe, tokens.unsafe, *tokens.stop} <= kept
    assert set(guard.encoder.text_ids("\n\nunsafe\nS1,S10,S13")) <= kept
    assert set(guard.encoder.text_ids("S15,S123")) <= kept  # any S<number> of a custom policy
    assert len(kept) < 1100 < head.vocab_size
    # the input embedding is whole, the head is not tied to it, and the model still answers
    assert guard.backend.model.get_input_embeddings().weight.shape[0] == head.vocab_size
    logits = head(torch.randn(1, 1, head.weight.shape[1]))
    assert torch.isinf(logits[0, 0, [i for i in range(50) if i not in kept]]).all()
    verdict = guard.check(BOMB)
    assert not verdict.safe and verdict.categories == ["S9"]
    custom = guard.with_categories(default_categories(guard) | {"S14": "Fraud."})
    assert custom.backend is guard.backend and set(custom.verdict_token_ids()) <= kept
    with pytest.raises(GuardConfigurationError, match="already pruned"):
        guard.prune_lm_head()


def test_mixed_roles_and_exclusions_share_one_forward_with_cached_prefixes(lg4, lg3_8b):
    convs = [
        BOMB,
        BENIGN,
        [HumanMessage(BENIGN), AIMessage(UNSAFE_ANSWER)],
        [HumanMessage(BENIGN), AIMessage(BENIGN_ANSWER)],
    ]
    exclusions = [None, ["S1"], None, ["S9", "S2"]]
    for guard in (lg4, lg3_8b):
        encoded = [guard.encode(c, excluded_categories=x) for c, x in zip(convs, exclusions, strict=True)]
        prompts, excluded = [p for p, _ in encoded], [x for _, x in encoded]
        guard.backend.clear_caches()
        widths: list[tuple[int, int]] = []  # (rows, tokens) of each forward
        handle = guard.backend.model.register_forward_pre_hook(
            lambda _m, _a, kw, seen=widths: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True
        )
        try:
            cached = guard.check_encoded(prompts, excluded)
        finally:
            handle.remove()
        assert len(guard.backend._prefix_kv) == 4  # (User, all), (User, -S1), (Agent, all), (Agent, -S9 -S2)
        assert [v.role for v in cached] == ["User", "User", "Agent", "Agent"]
        # 4 prefix forwards (one row each), then ONE forward of all 4 rows over their rests only (shorter than
        # the shortest prefix), then the category steps of the unsafe rows
        assert sorted(n for rows, n in widths if rows == 1) == sorted(p.prefix_len for p in prompts)
        batched = [n for rows, n in widths if rows == len(prompts)]
        assert len(batched) == 1 and batched[0] < min(p.prefix_len for p in prompts)
        guard.backend.cache_prefix = False
        try:
            whole = guard.check_encoded(prompts, excluded)
        finally:
            guard.backend.cache_prefix = True
        assert [(v.safe, v.categories, v.raw) for v in cached] == [(v.safe, v.categories, v.raw) for v in whole]
        assert [v.score for v in cached] == pytest.approx([v.score for v in whole], abs=1e-5)
        assert [v.safe for v in cached] == [False, True, False, True]  # the check set's sure verdicts


def test_stacked_prefixes_never_cross_a_llama_4_attention_chunk(lg4_path):
    """Llama 4's chunked attention skips only leading padding: a stacked batch row ([pad][prefix][pad][rest]) as
    wide as a chunk would push a row's last tokens past its own prefix. Such a batch runs without the cache."""
    guard = LlamaGuard.from_pretrained(str(lg4_path), context_length=360)
    assert guard.backend._chunk == 360 + 1 + DECODE_COLUMNS  # the prompt, the lead and the verdict in one chunk
    excluded = [f"S{i}" for i in range(1, 12)]  # a much shorter prefix
    words = ["What", "is", "the", "weather", "like", "in", "Paris", "today?"]
    text = ""
    while True:  # the longest question that still fits the context with the short prefix
        longer = f"{text} {words[len(text.split()) % len(words)]}".strip()
        try:
            guard.encode(longer, excluded_categories=excluded)
        except ValueError:  # longer than the context: it would be split into windows
            break
        text = longer
    short, _ = guard.encode(BENIGN)
    long, long_excluded = guard.encode(text, excluded_categories=excluded)
    stacked = short.prefix_len + len(long.input_ids) - long.prefix_len
    assert stacked + 1 + DECODE_COLUMNS > guard.backend._chunk  # stacked, its verdict would cross the chunk
    widths: list[int] = []
    handle = guard.backend.model.register_forward_pre_hook(
        lambda _m, _a, kw, seen=widths: seen.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        cached = guard.check_encoded([short, long], [(), long_excluded])
    finally:
        handle.remove()
    assert widths[0] == len(long.input_ids) + 1  # whole prompts, left-padded: no prefix forwards, no stacking
    guard.backend.cache_prefix = False
    whole = guard.check_encoded([short, long], [(), long_excluded])
    assert [(v.safe, v.raw) for v in cached] == [(v.safe, v.raw) for v in whole]
    assert [v.score for v in cached] == pytest.approx([v.score for v in whole], abs=1e-5)
