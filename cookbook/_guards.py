"""Shared by the cookbook scripts: the guard to use (``LLAMAGUARD_MODEL``, else the tiny demonstration guard)."""

from __future__ import annotations

import os
from pathlib import Path

from langchain_llamaguard import LlamaGuard, PromptGuard


def llama_guard(**kwargs) -> LlamaGuard:
    model = os.environ.get("LLAMAGUARD_MODEL")
    if model and Path(model).is_dir():
        return LlamaGuard.from_pretrained(model, **kwargs)
    from langchain_llamaguard.tiny.training import trained_llama_guard

    return LlamaGuard.from_pretrained(str(trained_llama_guard("llama-guard-4")), **kwargs)


def prompt_guard(**kwargs) -> PromptGuard:
    model = os.environ.get("PROMPTGUARD_MODEL")
    if model and Path(model).is_dir():
        return PromptGuard.from_pretrained(model, **kwargs)
    from langchain_llamaguard.tiny.training import trained_prompt_guard

    return PromptGuard.from_pretrained(str(trained_prompt_guard()), **kwargs)
