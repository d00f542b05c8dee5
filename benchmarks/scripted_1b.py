"""A *scripted* Llama Guard 3 1B of the real shape: real compute, a known answer (``\\n\\n``, ``safe``, end of turn).

A random-weight model generates random tokens and never stops, so two protocols on it would generate different
numbers of tokens. This checkpoint is ``LlamaForCausalLM`` with the 1B's real config (``llama_guard3_1b_cpu.SHAPE``,
embeddings untied so the head can be set) and random weights, except:

* every layer's ``o_proj`` and ``down_proj`` are zero: the same compute, but the residual stream at a position is
  its token's embedding;
* three ``lm_head`` rows make greedy decoding after any prompt (which ends in ``<|end_header_id|>``) yield exactly
  ``\\n\\n`` (271), ``safe`` (19193), ``<|eot_id|>`` (128009): row[271] = s * embed[128007], row[19193] =
  s * embed[271], row[128009] = s * embed[19193], with s such that the scripted token's logit is ``LOGIT`` (30)
  against random logits of std ~0.9: a certain greedy choice, and P(``unsafe``) ~1e-13, a real (not 0) score.

Written once (float32 safetensors, ~6 GB) under ``$LLAMAGUARD_CACHE/scripted-llama-guard-3-1b-v1`` with the real
Llama 3 tokenizer and the 1B's chat template, after a transformers ``generate`` check of the script.

Example:
    >>> path = checkpoint()                                                  # doctest: +SKIP
    >>> LlamaGuard.from_pretrained(str(path)).check("hello").safe            # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from _common import log

BUILD_VERSION = 1
END_HEADER, LEAD, SAFE, EOT = 128007, 271, 19193, 128009
SCRIPT = (LEAD, SAFE, EOT)
"""What greedy decoding yields after any prompt."""
LOGIT = 30.0
"""The scripted token's logit (the other logits: std ~0.9, max ~4 over the vocabulary, with init std 0.02)."""


def script_model(model: Any) -> None:
    """Zero every ``o_proj`` / ``down_proj`` and set the three ``lm_head`` rows (in place)."""
    import torch

    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head, norm = model.model.embed_tokens.weight, model.lm_head.weight, model.model.norm
        for src, dst in ((END_HEADER, LEAD), (LEAD, SAFE), (SAFE, EOT)):
            e = embed[src]
            head[dst] = e * (LOGIT / float(e @ norm(e)))  # the residual stream is e, the head sees norm(e)


def greedy_ids(model: Any, tok: Any, text: str, max_new_tokens: int = 10) -> list[int]:
    """transformers' greedy ``generate`` on the chat template's prompt for ``text``: the new token ids."""
    import torch

    messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    ids = tok.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=EOT)
    return out[0, ids.shape[1] :].tolist()


def checkpoint() -> Path:
    """The scripted real-shape 1B (built once, checked with transformers before it is written)."""
    import torch
    from llama_guard3_1b_cpu import SHAPE
    from transformers import LlamaConfig, LlamaForCausalLM

    from langchain_llamaguard.tiny.models import chat_template
    from langchain_llamaguard.tiny.tokenizers import cache_dir, load_tokenizer

    path = cache_dir() / f"scripted-llama-guard-3-1b-v{BUILD_VERSION}"
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path
    log(f"building the scripted real-shape 1B under {path} (once, ~6 GB) ...")
    tok = load_tokenizer("llama3")
    tok.chat_template = chat_template("llama-guard-3-1b")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**SHAPE, "tie_word_embeddings": False})).eval()
    script_model(model)
    for text in ("hello", "How do I make a pipe bomb at home?"):
        got = greedy_ids(model, tok, text)
        if got != list(SCRIPT):
            raise RuntimeError(f"the scripted model generated {got} for {text!r}, not {list(SCRIPT)}")
    model.generation_config.eos_token_id = SHAPE["eos_token_id"]
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # safetensors, float32
    tok.save_pretrained(tmp)
    del model
    tmp.rename(path)
    return path
