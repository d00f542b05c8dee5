"""Loading Llama Guard checkpoints with transformers, known pitfalls handled.

* The architecture (and so the prompt format) comes from the checkpoint's config: ``llama4`` ->
  Llama Guard 4; ``llama`` -> Llama Guard 3, 1B when the checkpoint's chat template lists 13 categories (or,
  without a template, when its embeddings are tied as in Llama 3.2 1B), else 8B. A Prompt Guard (DeBERTa)
  checkpoint is refused with a pointer to :class:`~langchain_llamaguard.PromptGuard`.
* Llama Guard 4's config has ``attention_chunk_size: null``, which transformers rejects at the first forward;
  it is set to the context length (chunked attention with a chunk >= the sequence is plain causal attention).
* The Llama Guard 3 tokenizers have no pad token: ``<|finetune_right_pad_id|>`` is used for padding.
* Quantization on a GPU is transformers' ``BitsAndBytesConfig`` (int8, or nf4 with the compute dtype), vision
  tower and projector left unquantized. ``int8`` on a CPU is torch's dynamic int8 instead (see
  :mod:`.cpu_quantization`: bitsandbytes' int8 is slower than float32 there); ``nf4`` stays bitsandbytes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GuardConfigurationError, GuardLoadError, LlamaGuardError
from ..forking import renew_in_child
from .base import DECODE_COLUMNS

LLAMA_GUARD_4_CONTEXT = 8192
LOAD_LOCK = threading.RLock()
renew_in_child(sys.modules[__name__], "LOAD_LOCK")  # a load in another thread at a fork would wedge the child
"""Held by every load of a guard's model: transformers' ``from_pretrained`` is not safe in several threads at
once (two loads of a model with tied embeddings, such as Llama Guard 3 1B, race and leave its LM head untied or
on the meta device: a guard that passes everything). Loads of one process run one at a time."""


def _snapshot(model_id_or_path: str, hub: dict[str, Any]) -> Path | None:
    """The local folder of a checkpoint: the path itself, or a hub id's snapshot in the cache it was loaded into
    (never downloaded here); ``None`` where there is none."""
    if Path(model_id_or_path).is_dir():
        return Path(model_id_or_path)
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                model_id_or_path,
                revision=hub.get("revision"),
                cache_dir=hub.get("cache_dir"),
                local_files_only=True,
            )
        )
    except Exception:  # noqa: BLE001 - not a hub id, or not in the cache: unknown
        return None


def saves_own_head(model_id_or_path: str, hub: dict[str, Any] | None = None) -> bool | None:
    """Whether a checkpoint's safetensors hold an LM head of their own (``None``: no local files to read, unknown).
    Read from the files' headers only: a local folder, or a hub id's snapshot in the cache."""
    hub = hub or {}
    snapshot = _snapshot(model_id_or_path, hub)
    folder = snapshot / (hub.get("subfolder") or "") if snapshot is not None else None
    files = sorted(folder.glob("*.safetensors")) if folder is not None and folder.is_dir() else []
    if not files:
        return None
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), "pt") as weights:
            if any(key.endswith("lm_head.weight") for key in weights.keys()):  # noqa: SIM118 - not a dict
                return True
    return False


def _same_values(a: Any, b: Any) -> bool:
    if "meta" in (a.device.type, b.device.type):  # offloaded: no values here to compare
        return False
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(a.eq(b).all())


def check_loaded(model: Any, *, given: bool = False, saved_head: bool | None = None) -> None:
    """Refuse a model with weights left on the meta device, and tie the LM head where the config ties it (a load
    racing another one outside this package can leave it untied): never a guard that judges with missing weights.
    A head of the checkpoint's own (``saved_head``: its files hold one) is kept, as transformers keeps it; a given
    model's head that differs from its embeddings is refused, never replaced.
    ``given``: the model was passed in (``from_model``), not loaded here.
    """
    # accelerate's offloading (a device_map with "cpu" or "disk" entries) keeps offloaded weights on the meta
    # device on purpose and loads them at each forward; only a model loaded without it has weights missing there
    placed = [str(v) for v in (getattr(model, "hf_device_map", None) or {}).values()]
    if placed and all(v == "disk" for v in placed):
        raise GuardConfigurationError(
            "the device_map puts every weight on 'disk', with no device to compute on; map the model to 'cpu' or a "
            "GPU (device_map='auto' offloads to disk only what does not fit)"
        )
    offloaded = any(v in ("cpu", "disk") for v in placed)
    meta = [] if offloaded else [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if meta:
        why = (
            "load them on a real device (a device_map that offloads nothing to 'meta'), or use from_pretrained"
            if given
            else "another load in this process ran at the same time; load the guard again"
        )
        raise GuardConfigurationError(
            f"{len(meta)} weights of the {'given' if given else 'loaded'} model are on the meta device, with no "
            f"values ({', '.join(meta[:3])}...): {why}"
        )
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None)
    tied = getattr(config, "tie_word_embeddings", False) or getattr(text_config, "tie_word_embeddings", False)
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if tied and head is not None and embed is not None and head.weight is not embed.weight:
        if saved_head:  # the checkpoint's own head, kept: known when the model is handed on (from_model)
            model._llamaguard_saved_head = True
        if getattr(model, "_llamaguard_saved_head", False) or _same_values(head.weight, embed.weight):
            return
        if given:
            raise GuardConfigurationError(
                "the given model's config ties its LM head to its input embeddings (tie_word_embeddings=True), but "
                "its head holds other weights: set tie_word_embeddings=False in its config if the head was trained "
                "apart, or call model.tie_weights() if it should be tied; the guard does not change your model"
            )
        model.tie_weights()
        if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
            raise GuardConfigurationError("the loaded model's LM head is not tied to its embeddings; load it again")


HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "trust_remote_code", "subfolder")


@dataclass
class LoadedGuard:
    model: Any
    tokenizer: Any
    processor: Any
    model_format: str
    context_length: int
    quantization: str | None = None
    """What quantized the weights, e.g. ``"int8: bitsandbytes LLM.int8()"``; ``None`` for none."""


def _described(hf_kwargs: dict[str, Any]) -> str | None:
    """What a ``quantization_config=`` of the user's does, for ``backend.quantization`` (``None``: none given)."""
    qconf = hf_kwargs.get("quantization_config")
    if qconf is None:
        return None
    if getattr(qconf, "load_in_8bit", False):
        return f"{BNB_INT8_METHOD} (quantization_config)"
    if getattr(qconf, "load_in_4bit", False):
        return f"bitsandbytes 4-bit {getattr(qconf, 'bnb_4bit_quant_type', None) or ''} (quantization_config)"
    return f"{type(qconf).__name__} (quantization_config)"


def pre_quantized(config: Any) -> str | None:
    """How a checkpoint saved quantized (its config's ``quantization_config``, e.g. Meta's Llama Guard 3 8B INT8)
    is quantized, for ``backend.quantization`` (``None``: saved unquantized)."""
    qconf = getattr(config, "quantization_config", None)
    if not qconf:
        return None
    get = qconf.get if isinstance(qconf, dict) else (lambda key: getattr(qconf, key, None))
    if get("load_in_8bit"):
        return f"{BNB_INT8_METHOD} (the checkpoint's own)"
    if get("load_in_4bit"):
        return f"bitsandbytes 4-bit {get('bnb_4bit_quant_type') or ''} (the checkpoint's own)"
    return f"{get('quant_method') or 'quantized'} (the checkpoint's own)"


@contextlib.contextmanager
def load_errors(model_id_or_path: str) -> Iterator[None]:
    """Turn transformers' and the hub's ``OSError`` while loading into a :class:`GuardLoadError` (still an
    ``OSError``) that names the checkpoint, and says what to do where it is a hub id."""
    try:
        yield
    except LlamaGuardError:
        raise
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = (
            ""
            if Path(model_id_or_path).expanduser().exists()
            else "; with no network, load a local folder (HF_HUB_OFFLINE=1 fails at once instead of retrying), and "
            "for a gated repository pass token= or log in"
        )
        raise GuardLoadError(f"cannot load {model_id_or_path!r}: {first}{hint}") from exc
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # safetensors' error for a truncated or corrupted file
            raise
        raise GuardLoadError(
            f"cannot load {model_id_or_path!r}: a weight file is unreadable ({exc}); is it complete (a download cut "
            "short, a disk that filled up)?"
        ) from exc


def load_config(model_id_or_path: str, hub: dict[str, Any]) -> Any:
    """The checkpoint's config, or a :class:`GuardLoadError` that says what a checkpoint folder holds (transformers
    says "Unrecognized model" with a ``ValueError`` for a folder without a readable ``config.json``)."""
    from transformers import AutoConfig

    with load_errors(model_id_or_path):
        try:
            return AutoConfig.from_pretrained(model_id_or_path, **hub)
        except ValueError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise GuardLoadError(
                f"cannot load {model_id_or_path!r}: {first}; a checkpoint folder holds config.json, the tokenizer "
                "files (tokenizer.json, tokenizer_config.json) and the weights, as save_pretrained writes them"
            ) from exc


def _as_dtype(value: Any) -> Any:
    """``"bfloat16"`` as ``torch.bfloat16`` (other values as they are), to compare two spellings."""
    import torch

    got = getattr(torch, value, None) if isinstance(value, str) else value
    return got if isinstance(got, torch.dtype) else value


def one_dtype(dtype: Any, torch_dtype: Any) -> Any:
    """``dtype``, or its old name ``torch_dtype`` (transformers 5 renamed it); both, differing, is an error."""
    if dtype is not None and torch_dtype is not None and _as_dtype(dtype) != _as_dtype(torch_dtype):
        raise GuardConfigurationError(
            f"pass dtype= or its old name torch_dtype=, not both (dtype={dtype!r}, torch_dtype={torch_dtype!r})"
        )
    return dtype if dtype is not None else torch_dtype


def resolve_dtype(dtype: Any, *, cuda: bool, quantization: str | None = None, checkpoint: Any = None) -> Any:
    """The dtype to load with: as given; ``"auto"``: the checkpoint's own (``checkpoint``, its config's ``dtype``),
    as in transformers, where nothing is quantized; else bf16 on a GPU / float32 on a CPU (bitsandbytes: fp16 for
    int8, bf16 for nf4; int8 on a CPU computes in float32)."""
    import torch

    if dtype == "auto" and quantization is None and checkpoint is not None:
        dtype = checkpoint
    if dtype is None or dtype == "auto":
        if quantization == "int8" and not cuda:
            return torch.float32
        if quantization == "int8":
            return torch.float16  # bitsandbytes' int8 matmul computes in fp16
        if quantization == "nf4":
            return torch.bfloat16
        return torch.bfloat16 if cuda else torch.float32
    if isinstance(dtype, str):
        got = getattr(torch, dtype, None)
        if not isinstance(got, torch.dtype):
            raise GuardConfigurationError(f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float16' or 'float32'")
        dtype = got
    if not isinstance(dtype, torch.dtype):
        raise GuardConfigurationError(
            f"dtype must be a torch.dtype, its name (e.g. 'bfloat16') or 'auto', got {dtype!r}"
        )
    if not dtype.is_floating_point or dtype.itemsize < 2:  # int8, bool, float8: no dtype a model computes in
        raise GuardConfigurationError(
            f"dtype={dtype} is not one a model computes in; use 'bfloat16', 'float16' or 'float32' (or 'auto'), "
            "and quantization='int8' or 'nf4' for 8- or 4-bit weights"
        )
    return dtype


def quantization_config(quantization: str | None, dtype: Any, *, skip: list[str] | None = None) -> Any:
    """A ``BitsAndBytesConfig`` for ``"int8"`` or ``"nf4"`` (``None`` for no quantization)."""
    if quantization is None:
        return None
    if quantization not in ("int8", "nf4"):
        raise GuardConfigurationError(f"quantization must be None, 'int8' or 'nf4', got {quantization!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise GuardConfigurationError(
            f"quantization={quantization!r} needs bitsandbytes: pip install 'langchain-llamaguard[quant]'"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=False,
        llm_int8_skip_modules=skip,
    )


def names_cuda(device_map: Any) -> bool:
    """Whether ``device_map`` places anything on a GPU: ``"cuda"``, ``"cuda:0"``, a device index, a
    ``torch.device``, or a dict with any of those."""
    places = list(device_map.values()) if isinstance(device_map, dict) else [device_map]
    return any(
        (isinstance(p, int) and not isinstance(p, bool)) or str(p).startswith("cuda") for p in places if p is not None
    )


def on_cpu(device_map: Any, *, cuda: bool) -> bool:
    """Whether the model will sit on the CPU: no CUDA, or a ``device_map`` that names only the CPU."""
    if not cuda:
        return True
    if isinstance(device_map, str):
        return device_map == "cpu"
    if isinstance(device_map, dict):
        return bool(device_map) and all(str(v) == "cpu" for v in device_map.values())
    return str(device_map) == "cpu" if device_map is not None else False


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def looks_local(model_id_or_path: str) -> bool:
    """Whether a ``from_pretrained`` argument is meant as a folder, not a hub id (``org/name`` or ``name``):
    it starts with ``./``, ``../``, ``/`` or ``~``, has a drive or a backslash, or more than one ``/``."""
    text = str(model_id_or_path)
    if text.startswith((".", "/", "~")) or "\\" in text or re.match(r"[A-Za-z]:", text):
        return True
    return not _HUB_ID.fullmatch(text)


def check_local_path(model_id_or_path: Any) -> str:
    """The argument as ``from_pretrained`` should get it: a folder that exists (``~`` expanded), or a hub id.

    A path that looks local (:func:`looks_local`) and is not a folder raises ``GuardConfigurationError`` naming
    it, instead of a hub error about an invalid repository id.

    Example:
        >>> check_local_path("meta-llama/Llama-Guard-4-12B")
        'meta-llama/Llama-Guard-4-12B'
    """
    text = os.fspath(model_id_or_path)
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser()) if text.startswith("~") else text
    if not looks_local(text):
        return text
    where = Path(text).expanduser().absolute()
    if where.exists():
        raise GuardConfigurationError(
            f"{text!r} is a file, not a checkpoint folder; pass the folder that holds config.json (or a hub id "
            "like 'meta-llama/Llama-Guard-4-12B')"
        )
    raise GuardConfigurationError(
        f"no such folder: {text!r} (looked for {where}); pass an existing checkpoint folder or a hub id like "
        "'meta-llama/Llama-Guard-4-12B'"
    )


BNB_INT8_METHOD = "bitsandbytes LLM.int8()"
BNB_NF4_METHOD = "bitsandbytes nf4"


def detect_format(config: Any, chat_template: str | None) -> str:
    """``llama-guard-4``, ``llama-guard-3-8b`` or ``llama-guard-3-1b`` from the config (and chat template)."""
    model_type = getattr(config, "model_type", None)
    if model_type in ("llama4", "llama4_text"):
        return "llama-guard-4"
    if model_type == "llama":
        # Llama Guard 3 1B ties its output head to its embeddings (Llama 3.2 1B); 3 8B does not.
        tied = bool(getattr(config, "tie_word_embeddings", False))
        by_weights = "llama-guard-3-1b" if tied else "llama-guard-3-8b"
        if not chat_template:
            return by_weights
        if "<BEGIN UNSAFE CONTENT CATEGORIES>" not in chat_template:
            raise GuardConfigurationError(
                "this Llama checkpoint's chat template is no Llama Guard template (it has no '<BEGIN UNSAFE CONTENT "
                "CATEGORIES>'): it looks like a chat model, not a guard, and its verdicts would mean nothing. Load "
                "meta-llama/Llama-Guard-3-8B or -3-1B; for a guard of your own with another template, pass "
                "model_format='llama-guard-3-8b' or 'llama-guard-3-1b'"
            )
        by_template = "llama-guard-3-8b" if "Code Interpreter Abuse" in chat_template else "llama-guard-3-1b"
        if by_template != by_weights:
            raise GuardConfigurationError(
                f"the tokenizer's chat template is {by_template}'s but the weights are {by_weights}'s "
                f"(tie_word_embeddings={tied}): the tokenizer comes from another checkpoint, and the prompt would be "
                "one the model was not trained on. Use the checkpoint's own tokenizer, or pass model_format='...' "
                "to say which format the model reads"
            )
        return by_template
    if model_type in ("deberta-v2", "deberta"):
        raise GuardConfigurationError(
            "this is a Prompt Guard (DeBERTa classifier) checkpoint, not a Llama Guard: load it with "
            "PromptGuard.from_pretrained(...)"
        )
    raise GuardConfigurationError(
        f"unsupported checkpoint (model_type={model_type!r}); LlamaGuard loads Llama Guard 4 "
        "(Llama4ForConditionalGeneration) and Llama Guard 3 8B / 1B (LlamaForCausalLM)"
    )


_MODEL_TYPES = {
    "llama-guard-4": ("llama4", "llama4_text"),
    "llama-guard-3-8b": ("llama",),
    "llama-guard-3-1b": ("llama",),
}
"""The ``config.model_type`` of each format's checkpoints."""


def check_format(model_format: str, config: Any) -> None:
    """A :class:`GuardConfigurationError` where an explicit ``model_format`` is not the checkpoint's kind."""
    model_type = getattr(config, "model_type", None)
    if model_format in _MODEL_TYPES and model_type not in _MODEL_TYPES[model_format]:
        kinds = " or ".join(map(repr, _MODEL_TYPES[model_format]))
        raise GuardConfigurationError(
            f"model_format={model_format!r} reads a checkpoint whose model_type is {kinds}, but this one's is "
            f"{model_type!r}: leave model_format out to detect it from the checkpoint"
        )


def in_eval_mode(model: Any) -> Any:
    """``model`` in eval mode, as ``from_pretrained`` leaves it: a model left in training mode would drop out
    activations at random and give each call another score (a :class:`RuntimeWarning` says it was switched)."""
    modules = model.modules() if callable(getattr(model, "modules", None)) else [model]
    if any(getattr(module, "training", False) for module in modules):  # the root, or any part of it
        warnings.warn(
            f"the {type(model).__name__} given to the guard was in training mode, whole or in part (dropout on: "
            "scores would vary "
            "from call to call); the guard switched it to eval mode",
            RuntimeWarning,
            stacklevel=3,
        )
        model.eval()
    return model


def load_tokenizer(model_id_or_path: str, hub: dict[str, Any]) -> Any:
    """The checkpoint's tokenizer, or a :class:`GuardConfigurationError` that says which files it needs."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_id_or_path, **hub)
    except ValueError as exc:  # transformers' own words for missing / unreadable tokenizer files
        raise GuardLoadError(
            f"cannot load the tokenizer from {model_id_or_path!r} ({exc}); the folder needs the checkpoint's "
            "tokenizer files (tokenizer.json and tokenizer_config.json, as save_pretrained writes them)"
        ) from exc


def load_whole(model_class: Any, model_id_or_path: str, config: Any, kwargs: dict[str, Any]) -> Any:
    """``model_class.from_pretrained``, refusing a checkpoint whose weights do not all load. transformers fills a
    weight that the files lack (a shard left out, a tensor renamed by a bad conversion) or that has another shape
    with random values and only logs it: such a guard judges at random (a bomb recipe came out safe)."""
    kwargs = {k: v for k, v in kwargs.items() if k != "output_loading_info"}  # the guard reads it itself
    kwargs.setdefault("ignore_mismatched_sizes", True)  # reported in the loading info (and refused below), not raised
    try:
        model, info = model_class.from_pretrained(model_id_or_path, config=config, output_loading_info=True, **kwargs)
    except RuntimeError as exc:  # transformers' own refusal of weights it could not convert
        if "mismatch" not in str(exc) and "convert" not in str(exc):
            raise
        raise GuardLoadError(f"cannot load {model_id_or_path!r}: {' '.join(str(exc).split())[:500]}") from exc
    missing, mismatched = list(info.get("missing_keys") or ()), list(info.get("mismatched_keys") or ())
    if missing or mismatched:
        named = [*missing, *(str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in mismatched)]
        raise GuardLoadError(
            f"cannot load {model_id_or_path!r}: {len(named)} of the model's weights are not in its files, or have "
            f"another shape ({', '.join(named[:4])}{', ...' if len(named) > 4 else ''}); transformers would fill "
            "them with random values. Is the checkpoint complete, and saved by save_pretrained for this model?"
        )
    unexpected = list(info.get("unexpected_keys") or ())
    if unexpected:
        warnings.warn(
            f"{model_id_or_path!r} holds {len(unexpected)} weights the model does not use ({', '.join(unexpected[:3])}"
            "...): they were left out",
            RuntimeWarning,
            stacklevel=4,
        )
    return model


def llama4_context(text_config: Any, context_length: int) -> int:
    """Llama Guard 4's prompt budget under its chunked attention. The checkpoint's null ``attention_chunk_size``
    (which transformers rejects) is set to cover the longest sequence a check runs: the prompt, the lead and the
    verdict (a chunk at least that long is plain causal attention; one only as long as the prompt would start a new
    chunk inside the verdict, whose category tokens would then not see the conversation). A chunk the config sets
    caps the prompt so that the whole sequence fits in it.

    Example:
        >>> config = SimpleNamespace(attention_chunk_size=None)  # doctest: +SKIP
        >>> llama4_context(config, 8192), config.attention_chunk_size  # doctest: +SKIP
        (8192, 8337)
    """
    answer = 1 + DECODE_COLUMNS  # the lead, then the verdict's columns (drafted tokens included)
    chunk = getattr(text_config, "attention_chunk_size", None)
    if chunk is None:
        text_config.attention_chunk_size = context_length + answer
        return context_length
    if chunk <= answer:
        raise GuardConfigurationError(
            f"attention_chunk_size={chunk} leaves no room for a prompt before the {answer}-token answer"
        )
    return min(context_length, chunk - answer)


def check_hf_kwargs(
    hf_kwargs: dict[str, Any],
    own: Any,
    *,
    own_extra: Iterable[str] = (),
    sibling: tuple[str, Iterable[str]] | None = None,
) -> None:
    """A :class:`GuardConfigurationError` for a keyword that is a misspelt guard option (``treshold=``,
    ``quantisation=``; ``device=`` is Prompt Guard's) or the other guard's option (``sibling``: its class name and
    option names, e.g. Llama Guard's ``timeout=`` given to Prompt Guard), instead of transformers' ``TypeError``
    naming the model class after the config and tokenizer have loaded. Other keywords go to transformers'
    ``from_pretrained``."""
    import difflib

    skip = ("cls", "self", "model_id_or_path", "hf_kwargs", "kwargs")
    names = [*(n for n in own if n not in skip), *own_extra]
    # what transformers takes too (device_map=), or is answered by the guard itself (quantization=), never
    theirs = set(sibling[1]) - set(names) - {*skip, "device_map", "quantization"} if sibling else set()
    for key in hf_kwargs:
        if key in _TRANSFORMERS_KWARGS or key in own_extra:
            continue
        close = {"device": ["device_map"]}.get(key) or difflib.get_close_matches(key, names, n=1, cutoff=0.8)
        if close:
            raise GuardConfigurationError(f"unknown option {key}=; did you mean {close[0]}=?")
        if key in theirs:
            raise GuardConfigurationError(
                f"{key}= is a {sibling[0]} option, not this guard's; its options: {', '.join(sorted(names))}"  # type: ignore[index]
            )


_TRANSFORMERS_KWARGS = frozenset(
    {
        *HUB_KWARGS,
        "quantization_config",
        "attn_implementation",
        "low_cpu_mem_usage",
        "max_memory",
        "offload_folder",
        "offload_state_dict",
        "use_safetensors",
        "weights_only",
        "key_mapping",
        "tp_plan",
        "device_mesh",
    }
)
"""Keywords of transformers' ``from_pretrained`` that look like a guard option's name (never taken for a typo)."""


def load_guard_model(
    model_id_or_path: str,
    *,
    quantization: str | None = None,
    device_map: Any = None,
    dtype: Any = None,
    model_format: str | None = None,
    context_length: int | None = None,
    **hf_kwargs: Any,
) -> LoadedGuard:
    """Load model, tokenizer and (Llama Guard 4) processor; see the module docstring for what is fixed."""
    import torch

    model_id_or_path = check_local_path(model_id_or_path)
    if quantization is not None and not isinstance(quantization, str):
        if not hasattr(quantization, "load_in_8bit"):  # transformers' BitsAndBytesConfig
            raise GuardConfigurationError(
                f"quantization must be None, 'int8', 'nf4' or a transformers BitsAndBytesConfig, got {quantization!r}"
            )
        if hf_kwargs.get("quantization_config") is not None:
            raise GuardConfigurationError("pass the BitsAndBytesConfig as quantization= or quantization_config=")
        hf_kwargs = {**hf_kwargs, "quantization_config": quantization}
        quantization = None
    hub = {k: hf_kwargs[k] for k in HUB_KWARGS if k in hf_kwargs}
    config = load_config(model_id_or_path, hub)
    tokenizer = None  # loaded once: Llama Guard 4's processor loads its own
    fmt = model_format
    model_type = getattr(config, "model_type", None)
    if fmt is None:
        if model_type == "llama":  # only 3 8B vs 3 1B needs the chat template
            tokenizer = load_tokenizer(model_id_or_path, hub)
        fmt = detect_format(config, getattr(tokenizer, "chat_template", None))
    else:
        check_format(fmt, config)
    if quantization is not None and hf_kwargs.get("quantization_config") is not None:
        raise GuardConfigurationError(f"pass either quantization={quantization!r} or quantization_config=..., not both")
    own = pre_quantized(config)
    if own is not None and (quantization is not None or hf_kwargs.get("quantization_config") is not None):
        raise GuardConfigurationError(
            f"{model_id_or_path!r} was saved quantized ({own}): its weights cannot be quantized again; leave "
            "quantization= and quantization_config= out"
        )
    qconf_given = hf_kwargs.get("quantization_config")
    given_kind = (
        "int8"
        if getattr(qconf_given, "load_in_8bit", False)
        else "nf4"
        if getattr(qconf_given, "load_in_4bit", False)
        else None
    )  # a BitsAndBytesConfig of the user's computes in the dtype its string spelling would
    cuda = torch.cuda.is_available()
    if not cuda and names_cuda(device_map):
        raise GuardConfigurationError(
            f"device_map={device_map!r} puts the model on a GPU, but torch sees no CUDA device here; leave device_map "
            "out (or 'cpu') to load on the CPU"
        )
    cpu_int8 = quantization == "int8" and on_cpu(device_map, cuda=cuda)
    torch_dtype = resolve_dtype(
        dtype,
        cuda=not cpu_int8 and cuda,
        quantization=quantization or given_kind,
        checkpoint=getattr(config, "dtype", None),
    )
    if device_map is None and cuda and not cpu_int8:
        device_map = "auto"
    if cpu_int8:
        from .cpu_quantization import check_int8_cpu

        check_int8_cpu(torch_dtype)  # before a long load, not after
    bnb = None if cpu_int8 else quantization
    method = {"int8": BNB_INT8_METHOD, "nf4": BNB_NF4_METHOD}.get(bnb or "") or _described(hf_kwargs) or own
    kwargs = dict(hf_kwargs)
    kwargs["dtype"] = torch_dtype
    if device_map is not None:
        kwargs["device_map"] = device_map

    # a text-only Llama Guard 4 (Llama4ForCausalLM, model_type "llama4_text") loads as a causal LM, as the 3s do
    text_only = fmt == "llama-guard-4" and getattr(config, "model_type", None) == "llama4_text"
    if fmt == "llama-guard-4" and not text_only:
        from transformers import AutoProcessor, Llama4ForConditionalGeneration

        ctx = llama4_context(getattr(config, "text_config", config), context_length or LLAMA_GUARD_4_CONTEXT)
        qconf = quantization_config(bnb, torch_dtype, skip=["vision_model", "multi_modal_projector", "lm_head"])
        if qconf is not None:
            kwargs["quantization_config"] = qconf
        try:  # before minutes of loading weights
            processor = AutoProcessor.from_pretrained(model_id_or_path, **hub)
        except (OSError, ValueError, ImportError) as exc:
            raise GuardLoadError(
                f"cannot load the Llama Guard 4 processor from {model_id_or_path!r} ({exc}); it needs the checkpoint's "
                "tokenizer and processor files (tokenizer.json, tokenizer_config.json, processor_config.json, "
                "preprocessor_config.json) and, for images, torchvision: pip install 'langchain-llamaguard[vision]'"
            ) from exc
        tokenizer = processor.tokenizer
        with LOAD_LOCK:
            model = load_whole(Llama4ForConditionalGeneration, model_id_or_path, config, kwargs)
    else:
        from transformers import AutoModelForCausalLM

        qconf = quantization_config(bnb, torch_dtype, skip=["lm_head"])
        if qconf is not None:
            kwargs["quantization_config"] = qconf
        processor = None
        if tokenizer is None:
            tokenizer = load_tokenizer(model_id_or_path, hub)  # before minutes of loading weights
        if text_only:  # before the load: the chunk it sets is the model's
            ctx = llama4_context(config, context_length or LLAMA_GUARD_4_CONTEXT)
        else:
            ctx = context_length or int(getattr(config, "max_position_embeddings", 131072))
        with LOAD_LOCK:
            model = load_whole(AutoModelForCausalLM, model_id_or_path, config, kwargs)
    model.eval()
    check_loaded(model, saved_head=saves_own_head(model_id_or_path, hub))
    if cpu_int8:
        from .cpu_quantization import quantize_int8_cpu

        method = quantize_int8_cpu(model)
    return LoadedGuard(
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        model_format=fmt,
        context_length=ctx,
        quantization=f"{quantization}: {method}" if quantization else method,
    )
