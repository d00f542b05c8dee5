"""Real Meta tokenizers (converted from llama-models) and tiny real-architecture checkpoints."""

from __future__ import annotations

import json

import pytest

from langchain_llamaguard.tiny.tokenizers import meta_tokenizer

SAMPLES = [
    "Hello world! How do I make a bomb?",
    "safe\nunsafe\nS1,S10",
    "ünïcödé — 日本語のテキスト 🙂 and emoji",
    "def f(x):\n    return x ** 2  # code\t\ttabs",
    "   leading and trailing spaces   ",
    "<|eot|> and <|eot_id|> are just text here",
    "numbers 1234567 and 3.14159",
]


@pytest.mark.parametrize("family", ["llama4", "llama3"])
def test_id_for_id_with_metas_tiktoken(family, tok4, tok3):
    tok = tok4 if family == "llama4" else tok3
    meta = meta_tokenizer(family)
    for text in SAMPLES:
        ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert ids == meta.encode(text, bos=False, eos=False), text
    for name, tid in list(meta.special_tokens.items())[:40]:
        assert tok.convert_tokens_to_ids(name) == tid


def test_llama4_special_and_verdict_tokens(tok4):
    ids = tok4.convert_tokens_to_ids
    assert ids("<|begin_of_text|>") == 200000 and ids("<|end_of_text|>") == 200001
    assert ids("<|header_start|>") == 200005 and ids("<|header_end|>") == 200006
    assert ids("<|eom|>") == 200007 and ids("<|eot|>") == 200008 and ids("<|finetune_right_pad|>") == 200018
    assert ids("<|image_start|>") == 200080 and ids("<|image|>") == 200090 and ids("<|patch|>") == 200092
    enc = lambda t: tok4(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert enc("safe") == [60411] and enc("unsafe") == [72110]  # single tokens in Llama 4
    assert enc("\n\n") == [368] and enc("\n") == [198] and enc("S14") == [63, 981]
    assert len(tok4) == 202048
    assert tok4("x")["input_ids"][0] == 200000  # adds one BOS itself, like the checkpoint's tokenizer


def test_llama3_special_and_verdict_tokens(tok3):
    ids = tok3.convert_tokens_to_ids
    assert ids("<|begin_of_text|>") == 128000 and ids("<|eot_id|>") == 128009
    assert ids("<|start_header_id|>") == 128006 and ids("<|end_header_id|>") == 128007
    assert ids("<|finetune_right_pad_id|>") == 128004
    enc = lambda t: tok3(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert enc("safe") == [19193] and enc("unsafe") == [39257] and enc("\n\n") == [271]
    assert tok3.pad_token is None  # as shipped: the engine must choose a pad token


def test_tiny_llama_guard_4_is_shaped_like_the_real_one(lg4_path):
    from transformers import AutoConfig, AutoProcessor

    raw = json.loads((lg4_path / "config.json").read_text())
    assert raw["architectures"] == ["Llama4ForConditionalGeneration"]
    text = raw["text_config"]
    assert text["num_local_experts"] == 0 and text["moe_layers"] == [] and text["interleave_moe_layer_step"] == 0
    assert text["attention_chunk_size"] is None  # the real config's value: a loading pitfall to handle
    assert raw["tie_word_embeddings"] is False and text["tie_word_embeddings"] is False
    assert raw["image_token_index"] == 200092 and text["vocab_size"] == 202048
    assert text["bos_token_id"] == 200000 and text["pad_token_id"] == 200018
    assert AutoConfig.from_pretrained(lg4_path).model_type == "llama4"
    processor = AutoProcessor.from_pretrained(lg4_path)
    assert type(processor).__name__ == "Llama4Processor"


def test_plain_transformers_trips_on_null_attention_chunk_size(lg4_path):
    """The pitfall exists (so the loader's fix is needed), and LlamaGuard.from_pretrained handles it."""
    import torch
    from transformers import Llama4ForConditionalGeneration

    model = Llama4ForConditionalGeneration.from_pretrained(lg4_path)
    with pytest.raises(ValueError, match="attention_chunk_size"):
        model(input_ids=torch.tensor([[200000, 1, 2]]), use_cache=False)
    with pytest.raises(TypeError):  # with a cache, transformers fails earlier, building the chunked cache
        model(input_ids=torch.tensor([[200000, 1, 2]]), use_cache=True)


def test_tiny_llama_guard_3_and_prompt_guard(lg3_8b_path, lg3_1b_path, pg_path):
    from transformers import AutoConfig

    for path in (lg3_8b_path, lg3_1b_path):
        cfg = AutoConfig.from_pretrained(path)
        assert cfg.model_type == "llama" and cfg.vocab_size == 128256
    pg = AutoConfig.from_pretrained(pg_path)
    assert pg.model_type == "deberta-v2" and pg.num_labels == 2
    assert {int(k): v for k, v in pg.id2label.items()} == {0: "BENIGN", 1: "MALICIOUS"}


# -- the tiny guards are checked against every verdict the tests rely on -----------------------------------------
@pytest.mark.parametrize(
    ("fixture", "model_format"),
    [("lg4_path", "llama-guard-4"), ("lg3_8b_path", "llama-guard-3-8b"), ("lg3_1b_path", "llama-guard-3-1b")],
)
def test_every_check_passed_with_its_margin(request, fixture, model_format):
    from langchain_llamaguard.tiny.data import llama_guard_checks
    from langchain_llamaguard.tiny.training import tiny_seed

    stats = json.loads((request.getfixturevalue(fixture) / "training.json").read_text())
    assert stats["seed"] == tiny_seed() and stats["model_format"] == model_format
    assert [r["name"] for r in stats["checks"]] == [c.name for c in llama_guard_checks(model_format)]
    assert stats["min_margin"] >= 0 and all(r["margin"] >= 0 for r in stats["checks"])


def test_prompt_guard_checks_passed_with_their_margin(pg_path):
    from langchain_llamaguard.tiny.data import prompt_guard_checks

    stats = json.loads((pg_path / "training.json").read_text())
    assert len(stats["checks"]) == len(prompt_guard_checks()) and stats["min_margin"] >= 0


def test_the_loaded_guards_meet_their_check_sets(lg4, prompt_guard):
    """What the tests load is what was checked (same verdicts and margins in this process)."""
    from langchain_llamaguard.tiny.data import llama_guard_checks, prompt_guard_checks
    from langchain_llamaguard.tiny.training import check_llama_guard, check_prompt_guard

    assert all(r["margin"] >= 0 for r in check_llama_guard(lg4, llama_guard_checks("llama-guard-4")))
    assert all(r["margin"] >= 0 for r in check_prompt_guard(prompt_guard, prompt_guard_checks()))


def test_a_guard_that_misses_its_checks_fails_the_build(tmp_path):
    from langchain_llamaguard import LlamaGuard
    from langchain_llamaguard.tiny.data import llama_guard_checks
    from langchain_llamaguard.tiny.models import build_llama_guard_3
    from langchain_llamaguard.tiny.training import TinyGuardTrainingError, check_llama_guard, require_margins

    untrained = LlamaGuard.from_pretrained(str(build_llama_guard_3(tmp_path / "lg3", variant="1b")), on_error="unsafe")
    results = check_llama_guard(untrained, llama_guard_checks("llama-guard-3-1b"))
    with pytest.raises(TinyGuardTrainingError, match=r"misses \d+ of 4 checks(.|\n)*- bomb: wanted unsafe S9"):
        require_margins("llama-guard-3-1b", 0, results)


def test_the_tiny_prompt_guard_tokenizer_is_the_same_in_every_process(tmp_path):
    """Its Unigram trainer orders pieces by per-process hash seeds: two processes once built different ids, and
    the same training seed then gave one guard that met its checks and one that did not."""
    import subprocess
    import sys

    code = "import sys; from langchain_llamaguard.tiny.models import build_prompt_guard_tokenizer as b; b(sys.argv[1])"
    built = []
    for k in range(2):
        out = tmp_path / f"tok{k}"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True)
        built.append((out / "tokenizer.json").read_text())
    assert built[0] == built[1]
    vocab = json.loads(built[0])["model"]["vocab"]
    assert [piece for piece, _ in vocab[:5]] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
