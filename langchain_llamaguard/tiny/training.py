"""Train tiny guards for a few seconds so they answer like the real ones (tests and the offline demo).

Prompts are rendered by the package's own renderer and tokenized by its own encoder, so a trained tiny guard
answers ``\\n\\nunsafe\\nS9<|eot|>`` to a weapons request, ``\\n\\nunsafe\\nS14`` to interpreter abuse,
``\\n\\nsafe`` to benign text, and ``safe`` when the flagged category is excluded.

Example:
    >>> path = trained_llama_guard("llama-guard-4")   # doctest: +SKIP  (cached on disk after the first call)
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from .data import Example, llama_guard_examples, prompt_guard_examples
from .models import build_llama_guard_3, build_llama_guard_4, build_prompt_guard
from .tokenizers import cache_dir

TRAINING_VERSION = "14"


def _train_llama_guard(path: Path, model_format: str, *, steps: int, seed: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Llama4ForConditionalGeneration

    from ..encoding import PromptEncoder
    from ..prompt_format import get_format, render

    fmt = get_format(model_format)
    tok = AutoTokenizer.from_pretrained(path)
    if model_format == "llama-guard-4":
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        config.text_config.attention_chunk_size = 8192
        model = Llama4ForConditionalGeneration.from_pretrained(path, config=config, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    enc = PromptEncoder(tok, fmt)
    lead = enc.text_ids("\n\n")
    eot = [tok.convert_tokens_to_ids(fmt.eot)]
    pad = tok.convert_tokens_to_ids("<|finetune_right_pad|>" if fmt.image_token else "<|finetune_right_pad_id|>")

    def encode(ex: Example) -> tuple[list[int], int]:
        conv = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(ex.turns)]
        prompt = enc.encode(render(conv, model=model_format, excluded_categories=ex.excluded)).input_ids
        answer = lead + enc.text_ids(ex.target) + eot
        return prompt + answer, len(answer)

    data = [encode(e) for e in llama_guard_examples(seed, with_s14="S14" in fmt.categories)]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=4e-3, weight_decay=0.0, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.1)
    batch_size = 16
    loss_value = float("nan")
    for _ in range(steps):
        batch = rng.sample(data, batch_size)
        width = max(len(s) for s, _ in batch)
        span = max(m for _, m in batch)
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        labels = torch.full((batch_size, span), -100, dtype=torch.long)
        for i, (s, m) in enumerate(batch):
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
            labels[i, span - m :] = torch.tensor(s[-m:])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=span + 1, use_cache=False)
        logits = out.logits[:, :-1, :]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
    model.eval()
    if model_format == "llama-guard-4":
        model.config.text_config.attention_chunk_size = None  # keep the real checkpoint's (pitfall) value
    model.save_pretrained(path)
    return {"final_loss": loss_value, "steps": steps, "examples": len(data)}


def _train_prompt_guard(path: Path, *, steps: int, seed: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
    data = prompt_guard_examples(seed)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        batch = rng.sample(data, 16)
        enc = tok([t for t, _ in batch], padding=True, return_tensors="pt")
        out = model(**enc, labels=torch.tensor([y for _, y in batch]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        loss_value = float(out.loss.detach())
    model.eval()
    model.save_pretrained(path)
    return {"final_loss": loss_value, "steps": steps, "examples": len(data)}


_BUILDERS = {
    "llama-guard-4": lambda p: build_llama_guard_4(p),
    "llama-guard-3-8b": lambda p: build_llama_guard_3(p, variant="8b"),
    "llama-guard-3-1b": lambda p: build_llama_guard_3(p, variant="1b"),
    "prompt-guard-2": lambda p: build_prompt_guard(p),
}
_STEPS = {"llama-guard-4": 280, "llama-guard-3-8b": 160, "llama-guard-3-1b": 200, "prompt-guard-2": 200}


def trained_llama_guard(model_format: str = "llama-guard-4", *, root: str | Path | None = None) -> Path:
    """Path of a tiny trained guard (``llama-guard-4``, ``-3-8b``, ``-3-1b`` or ``prompt-guard-2``).

    Built and trained on first use, then cached under ``root`` (default: ``LLAMAGUARD_CACHE``).
    """
    if model_format not in _BUILDERS:
        raise ValueError(f"unknown tiny guard {model_format!r}; valid: {', '.join(_BUILDERS)}")
    from filelock import FileLock

    base = Path(root) if root else cache_dir()
    path = base / f"tiny-{model_format}-trained-v{TRAINING_VERSION}"
    marker = path / "training.json"
    if marker.exists():
        return path
    with FileLock(str(base / f"{path.name}.lock")):  # one builder at a time across processes
        if marker.exists():
            return path
        tmp = base / f"{path.name}.tmp{os.getpid()}"
        _BUILDERS[model_format](tmp)
        if model_format == "prompt-guard-2":
            stats = _train_prompt_guard(tmp, steps=_STEPS[model_format], seed=0)
        else:
            stats = _train_llama_guard(tmp, model_format, steps=_STEPS[model_format], seed=0)
        (tmp / "training.json").write_text(json.dumps({"model_format": model_format, **stats}, indent=2))
        if path.exists():  # a stale, unmarked folder from an interrupted run
            shutil.rmtree(path)
        tmp.rename(path)
    return path


def trained_prompt_guard(*, root: str | Path | None = None) -> Path:
    """Path of a tiny trained Prompt Guard 2 (``DebertaV2ForSequenceClassification``)."""
    return trained_llama_guard("prompt-guard-2", root=root)
