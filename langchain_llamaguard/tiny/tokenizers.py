"""Real Llama 3 / Llama 4 tokenizers, built from Meta's ``tokenizer.model`` files in the ``llama-models`` package.

Meta's tiktoken files are converted with transformers' ``TikTokenConverter`` into Hugging Face fast tokenizers
with the same special tokens, ids and BOS behaviour as the tokenizers shipped with the Llama Guard checkpoints.
The conversion takes a little while, so the result is cached on disk (``tokenizer.json``).

Example:
    >>> tok = llama4_tokenizer()            # doctest: +SKIP
    >>> tok.convert_tokens_to_ids("<|eot|>")  # doctest: +SKIP
    200008
"""

from __future__ import annotations

import importlib
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Literal

Family = Literal["llama3", "llama4"]


def cache_dir() -> Path:
    """Where built tokenizers and tiny models are cached (``LLAMAGUARD_CACHE`` or ``~/.cache/...``)."""
    root = os.environ.get("LLAMAGUARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "langchain-llamaguard")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _llama_models(family: Family):
    try:
        return importlib.import_module(f"llama_models.{family}.tokenizer")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "building the real Llama tokenizers needs the `llama-models` and `tiktoken` packages: "
            "pip install 'langchain-llamaguard[dev]'"
        ) from exc


def meta_special_tokens(family: Family) -> dict[str, int]:
    """The special tokens and ids of Meta's own (tiktoken) tokenizer."""
    return dict(meta_tokenizer(family).special_tokens)


@lru_cache(maxsize=2)
def meta_tokenizer(family: Family):
    """Meta's reference tiktoken tokenizer from ``llama-models`` (for id-for-id comparisons)."""
    mod = _llama_models(family)
    return mod.Tokenizer(Path(mod.__file__).parent / "tokenizer.model")


def _pattern(family: Family) -> str:
    mod = _llama_models(family)
    return mod.Tokenizer.O200K_PATTERN if family == "llama4" else mod.Tokenizer.pat_str


_SPECIALS = {
    "llama4": {"bos": "<|begin_of_text|>", "eos": "<|eot|>", "pad": "<|finetune_right_pad|>"},
    # The Llama Guard 3 tokenizers ship without a pad token (a known pitfall the engine handles).
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None},
}


def _build(family: Family, out: Path) -> None:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    mod = _llama_models(family)
    specials = meta_special_tokens(family)
    ordered = [tok for tok, _ in sorted(specials.items(), key=lambda kv: kv[1])]
    converter = TikTokenConverter(
        vocab_file=str(Path(mod.__file__).parent / "tokenizer.model"),
        pattern=_pattern(family),
        extra_special_tokens=ordered,
    )
    backend = converter.converted()
    bos = _SPECIALS[family]["bos"]
    # Like the checkpoints' tokenizers: one BOS is prepended when add_special_tokens=True.
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, specials[bos])]
            ),
        ]
    )
    kwargs = {k + "_token": v for k, v in _SPECIALS[family].items() if v is not None}
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=131072, **kwargs)
    tmp = out.with_name(out.name + ".tmp")
    tok.save_pretrained(tmp)
    tmp.rename(out)


@lru_cache(maxsize=2)
def _tokenizer_dir(family: Family) -> Path:
    from filelock import FileLock

    out = cache_dir() / f"tokenizer-{family}"
    with FileLock(str(out) + ".lock"):  # one builder at a time across processes
        if not (out / "tokenizer.json").exists():
            if out.exists():
                shutil.rmtree(out)
            _build(family, out)
    return out


def tokenizer_dir(family: Family) -> Path:
    """A folder holding the Hugging Face tokenizer files for ``llama3`` or ``llama4`` (built once)."""
    return _tokenizer_dir(family)


def load_tokenizer(family: Family):
    """The Hugging Face fast tokenizer for ``llama3`` or ``llama4``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir(family))


def llama4_tokenizer():
    """Llama 4's tokenizer (the one Llama Guard 4 uses)."""
    return load_tokenizer("llama4")


def llama3_tokenizer():
    """Llama 3's tokenizer (the one Llama Guard 3 8B and 1B use)."""
    return load_tokenizer("llama3")
