"""Tiny models of the real architectures, saved as checkpoints a user would have.

* Llama Guard 4: ``Llama4ForConditionalGeneration`` (text + vision) with the real special-token ids, the real
  Llama 4 tokenizer, a real ``Llama4Processor``, ``num_local_experts`` 0, ``moe_layers`` [], untied
  embeddings and ``attention_chunk_size`` null, as in the real config.
* Llama Guard 3 (8B or 1B prompt format): ``LlamaForCausalLM`` with the real Llama 3 tokenizer (no pad token,
  as shipped).
* Prompt Guard 2: ``DebertaV2ForSequenceClassification`` with 2 labels named as in the real checkpoints.

Everything is written with ``save_pretrained`` and read back with ``from_pretrained`` from the folder.

Example:
    >>> path = build_llama_guard_4("/tmp/lg4-tiny")        # doctest: +SKIP
    >>> LlamaGuard.from_pretrained(path).check("hi").safe    # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from .tokenizers import load_tokenizer

TEMPLATES = Path(__file__).parent / "templates"


def chat_template(name: str) -> str:
    """The reconstructed official chat template of ``llama-guard-4``, ``-3-8b`` or ``-3-1b``."""
    return (TEMPLATES / f"{name}.jinja").read_text()


def _fresh(path: str | Path) -> Path:
    out = Path(path)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def build_llama_guard_4(path: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random Llama Guard 4 checkpoint (model + processor) to ``path``."""
    import torch
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4Processor,
        Llama4TextConfig,
        Llama4VisionConfig,
    )

    out = _fresh(path)
    tok = load_tokenizer("llama4")
    text = Llama4TextConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        intermediate_size_mlp=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=8192,
        num_local_experts=0,
        interleave_moe_layer_step=0,
        moe_layers=[],
        attention_chunk_size=None,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=200000,
        eos_token_id=[200001, 200007, 200008],
        pad_token_id=200018,
        tie_word_embeddings=False,
    )
    vision = Llama4VisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,  # = hidden / pixel_shuffle_ratio**2, as in the real encoder (1408 -> 5632)
        image_size=336,
        patch_size=14,
        pixel_shuffle_ratio=0.5,
        projector_input_dim=64,
        projector_output_dim=64,
        vision_output_dim=64,
    )
    config = Llama4Config(text_config=text, vision_config=vision, image_token_index=200092, tie_word_embeddings=False)
    config.text_config.attention_chunk_size = None  # the real checkpoint's value (a known loading pitfall)
    torch.manual_seed(seed)
    model = Llama4ForConditionalGeneration(config)
    model.generation_config.eos_token_id = [200001, 200007, 200008]
    model.generation_config.pad_token_id = 200018
    model.save_pretrained(out)
    import transformers

    # transformers 5 renamed Llama4ImageProcessorFast to Llama4ImageProcessor (torchvision-backed).
    image_processor_cls = getattr(transformers, "Llama4ImageProcessor", None) or transformers.Llama4ImageProcessorFast
    processor = Llama4Processor(
        image_processor=image_processor_cls(),
        tokenizer=tok,
        chat_template=chat_template("llama-guard-4"),
    )
    processor.save_pretrained(out)
    return out


def build_llama_guard_3(
    path: str | Path, *, variant: Literal["8b", "1b"] = "8b", hidden_size: int = 64, num_layers: int = 2, seed: int = 0
) -> Path:
    """Write a tiny random Llama Guard 3 checkpoint; ``variant`` picks the 8B or 1B chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = _fresh(path)
    tok = load_tokenizer("llama3")
    tok.chat_template = chat_template(f"llama-guard-3-{variant}")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,  # vLLM's CPU attention takes head_dim 64 (as in the real 1B), not 16
        max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=128000,
        eos_token_id=[128001, 128008, 128009],
        tie_word_embeddings=variant == "1b",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = [128001, 128008, 128009]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


PROMPT_GUARD_LABELS = {0: "BENIGN", 1: "MALICIOUS"}


def build_prompt_guard_tokenizer(path: str | Path, corpus: list[str] | None = None):
    """A small DeBERTa-style (Unigram, ``[CLS]``/``[SEP]``) tokenizer trained on a word list."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.Sequence([normalizers.NFKC()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    trainer = trainers.UnigramTrainer(vocab_size=2000, special_tokens=specials, unk_token="[UNK]")
    from .data import tokenizer_corpus

    backend.train_from_iterator(corpus or tokenizer_corpus(), trainer=trainer)
    backend.model = _stable_unigram(backend, specials)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    tok.save_pretrained(path)
    return tok


def _stable_unigram(backend: Any, specials: list[str]) -> Any:
    """The trained Unigram model made the same in every process: the trainer's pieces come out in a per-process
    order (it iterates hash maps with random seeds) with scores that differ by up to ~1e-4, so the ids, and a
    guard trained on them, would differ from run to run. Specials keep the first ids, the other pieces follow in
    sorted order, and scores are rounded to one decimal."""
    from tokenizers import models

    vocab = json.loads(backend.to_str())["model"]["vocab"]
    pieces = sorted((piece, round(score, 1)) for piece, score in vocab if piece not in specials)
    ordered = [(piece, 0.0) for piece in specials] + pieces
    return models.Unigram(ordered, unk_id=specials.index("[UNK]"), byte_fallback=False)


def build_prompt_guard(
    path: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random Prompt Guard 2 checkpoint (``DebertaV2ForSequenceClassification``)."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    out = _fresh(path)
    tok = build_prompt_guard_tokenizer(out)
    config = DebertaV2Config(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pad_token_id=tok.pad_token_id,
        num_labels=2,
        id2label=dict(PROMPT_GUARD_LABELS),
        label2id={v: k for k, v in PROMPT_GUARD_LABELS.items()},
    )
    torch.manual_seed(seed)
    DebertaV2ForSequenceClassification(config).save_pretrained(out)
    return out
