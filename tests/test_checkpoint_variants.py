"""Checkpoints and tokenizers as users really have them: each gives the pristine checkpoint's verdicts, or a clear
error that says what is wrong, never a silently different verdict.

Each case was found in a production-style trial: before its fix, the guard judged with the wrong labels, the
wrong prompt format, dropout on, or failed with a bare transformers error.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import BENIGN, INJECTION
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from langchain_llamaguard import LlamaGuard, PromptGuard
from langchain_llamaguard.errors import GuardConfigurationError, GuardLoadError


def _swapped_classes(pg_path):
    """The same Prompt Guard with its two classes stored the other way round: class 0 is the malicious one."""
    model = AutoModelForSequenceClassification.from_pretrained(str(pg_path))
    head = model.classifier
    with torch.no_grad():
        head.weight.copy_(head.weight.flip(0))
        head.bias.copy_(head.bias.flip(0))
    model.config.id2label = {0: "MALICIOUS", 1: "BENIGN"}
    model.config.label2id = {"MALICIOUS": 0, "BENIGN": 1}
    return model


def test_a_prompt_guard_built_from_a_model_reads_its_labels_from_the_model(prompt_guard, pg_path):
    model, tokenizer = _swapped_classes(pg_path), AutoTokenizer.from_pretrained(str(pg_path))
    guard = PromptGuard(model, tokenizer)
    for text in (INJECTION, BENIGN):
        assert guard.check(text).safe is prompt_guard.check(text).safe
        assert guard.score(text) == pytest.approx(prompt_guard.score(text), abs=1e-5)
    model.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}  # unnamed classes: which one is benign is unknown
    with pytest.raises(GuardConfigurationError, match="BENIGN"):
        PromptGuard(model, tokenizer)


def test_a_prompt_guard_tokenizer_with_short_windows_names_its_model_max_length(pg_path):
    model = AutoModelForSequenceClassification.from_pretrained(str(pg_path))
    tokenizer = AutoTokenizer.from_pretrained(str(pg_path), model_max_length=64)
    with pytest.raises(GuardConfigurationError, match=r"model_max_length \(64"):
        PromptGuard(model, tokenizer)
    assert PromptGuard(model, tokenizer, window_overlap=16).check(INJECTION).unsafe


def test_a_model_left_in_training_mode_is_judged_in_eval_mode(lg3_1b, lg3_1b_path, pg_path):
    model = AutoModelForCausalLM.from_pretrained(str(lg3_1b_path)).train()
    with pytest.warns(RuntimeWarning, match="training mode"):
        guard = LlamaGuard.from_model(model, lg3_1b.tokenizer)
    assert not model.training and guard.check(BENIGN).score == pytest.approx(lg3_1b.check(BENIGN).score, abs=1e-4)
    pg_model = AutoModelForSequenceClassification.from_pretrained(str(pg_path)).train()
    with pytest.warns(RuntimeWarning, match="training mode"):
        PromptGuard(pg_model, AutoTokenizer.from_pretrained(str(pg_path)))
    assert not pg_model.training


def test_a_tokenizer_from_the_other_llama_guard_3_is_refused(lg3_8b, lg3_1b, lg3_8b_path, lg3_1b_path, tmp_path):
    """Llama Guard 3 8B and 1B share a vocabulary and differ in their templates: the 1B template on the 8B weights
    silently rendered the 1B prompt (a benign question came out unsafe in the trial)."""
    for weights, tokenizer in ((lg3_8b, lg3_1b), (lg3_1b, lg3_8b)):
        with pytest.raises(GuardConfigurationError, match="another checkpoint"):
            LlamaGuard.from_model(weights.backend.model, tokenizer.tokenizer)
    mixed = tmp_path / "8b-with-1b-tokenizer"
    shutil.copytree(lg3_8b_path, mixed)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(lg3_1b_path / name, mixed / name)
    with pytest.raises(GuardConfigurationError, match="tie_word_embeddings=False"):
        LlamaGuard.from_pretrained(str(mixed))
    assert LlamaGuard.from_pretrained(str(mixed), model_format="llama-guard-3-8b").format.name == "llama-guard-3-8b"


def test_a_llama_chat_model_is_no_guard(lg3_1b):
    tokenizer = AutoTokenizer.from_pretrained(lg3_1b.tokenizer.name_or_path)
    tokenizer.chat_template = "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>{% endfor %}"
    with pytest.raises(GuardConfigurationError, match="chat model, not a guard"):
        LlamaGuard.from_model(lg3_1b.backend.model, tokenizer)
    assert LlamaGuard.from_model(lg3_1b.backend.model, tokenizer, model_format="llama-guard-3-1b").check(BENIGN).safe


def test_a_model_format_that_is_not_the_checkpoints_kind_is_refused(lg3_1b_path, lg4_path):
    with pytest.raises(GuardConfigurationError, match="'llama4' or 'llama4_text', but this one's is 'llama'"):
        LlamaGuard.from_pretrained(str(lg3_1b_path), model_format="llama-guard-4")
    with pytest.raises(GuardConfigurationError, match="this one's is 'llama4'"):
        LlamaGuard.from_pretrained(str(lg4_path), model_format="llama-guard-3-8b")


def test_a_folder_without_its_tokenizer_files_says_so(lg3_1b_path, tmp_path):
    bare = tmp_path / "weights-only"
    shutil.copytree(lg3_1b_path, bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(GuardLoadError, match="tokenizer files"):
        LlamaGuard.from_pretrained(str(bare))


def test_dtype_auto_is_the_checkpoints_own_as_in_transformers(lg3_1b_path, pg_path, tmp_path):
    half = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(str(lg3_1b_path), dtype=torch.bfloat16).save_pretrained(half)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(lg3_1b_path / name, half / name)
    assert LlamaGuard.from_pretrained(str(half), dtype="auto").backend.model.dtype == torch.bfloat16
    assert LlamaGuard.from_pretrained(str(half)).backend.model.dtype == torch.float32  # the CPU default
    assert PromptGuard.from_pretrained(str(pg_path), dtype="auto").model.dtype == torch.float32  # its own: float32


def test_a_checkpoint_saved_quantized_says_so_and_is_not_quantized_again(lg3_1b, lg3_1b_path, tmp_path):
    """Like Meta's Llama Guard 3 8B INT8: bitsandbytes int8 weights, and a ``quantization_config`` in config.json."""
    from transformers import BitsAndBytesConfig

    saved = tmp_path / "int8"
    int8 = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(str(lg3_1b_path), quantization_config=int8, device_map="cpu")
    model.save_pretrained(saved)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(lg3_1b_path / name, saved / name)
    guard = LlamaGuard.from_pretrained(str(saved))
    assert "bitsandbytes" in guard.backend.quantization and "the checkpoint's own" in guard.backend.quantization
    assert guard.check(BENIGN).safe is lg3_1b.check(BENIGN).safe
    for again in ({"quantization": "int8"}, {"quantization": "nf4"}, {"quantization_config": int8}):
        with pytest.raises(GuardConfigurationError, match="saved quantized"):
            LlamaGuard.from_pretrained(str(saved), **again)
