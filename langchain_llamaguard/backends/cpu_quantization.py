"""int8 on a CPU: torch's dynamic int8 linear layers (fbgemm / x86 kernels).

``LlamaGuard.from_pretrained(..., quantization="int8")`` on a machine without CUDA takes this path instead of
bitsandbytes: every linear layer of the decoder gets int8 weights (one scale per output channel) and quantizes
its input on the fly (one scale per call, 7-bit so that AVX2's 16-bit pair sums cannot saturate). The matrix
products run on int8 kernels; embeddings, norms, attention and the LM head stay float32.

Why this one: ``benchmarks/llama_guard3_1b_cpu.py`` times every candidate at Llama Guard 3 1B's real layer
shapes. It is about 3x (AVX2) to 6.5x (AVX-512 VNNI) faster than float32 there, while bitsandbytes' CPU int8
is slower than float32, torchao's int8 dynamic config is slow without ``torch.compile`` and loses accuracy on
AVX2 (its int8 matmul saturates), and optimum-quanto's activation quantization needs calibration (uncalibrated
outputs are off by more than 100%).

The one known weakness of a per-call activation scale: a few outlier features (real LLMs have some) widen the
scale for the whole call. Validate a quantized guard on your data with ``llamaguard eval`` before relying on it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

from ..errors import GuardConfigurationError

logger = logging.getLogger("langchain_llamaguard")

CPU_INT8_METHOD = "torch dynamic int8 (fbgemm/x86 kernels): int8 weights per output channel, activations per call"
"""What ``guard.backend.quantization`` says for a guard quantized with :func:`quantize_int8_cpu`."""

DEFAULT_SKIP = ("lm_head", "vision_model", "multi_modal_projector")


def quantize_int8_cpu(model: Any, *, skip: Iterable[str] = DEFAULT_SKIP) -> str:
    """Swap the model's ``nn.Linear`` layers (except those under ``skip``) for dynamic int8 ones, in place.

    Returns the method's description (:data:`CPU_INT8_METHOD`).

    Example:
        >>> from transformers import AutoModelForCausalLM                                   # doctest: +SKIP
        >>> model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-Guard-3-1B")     # doctest: +SKIP
        >>> quantize_int8_cpu(model)                                                        # doctest: +SKIP
        'torch dynamic int8 (fbgemm/x86 kernels): ...'
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    check_int8_cpu(*dtypes)
    prefixes = tuple(skip)
    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(_under(name, p) for p in prefixes)
    }
    if not spec:
        raise GuardConfigurationError("quantization='int8': the model has no linear layers to quantize")
    with warnings.catch_warnings():
        # torch marks its quantized-tensor API deprecated; the kernels are the fastest accurate int8 on a CPU
        # (see the module docstring) and the package pins the torch it is measured with.
        warnings.simplefilter("ignore")
        quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    logger.info("quantization='int8' on the CPU: %s (%d linear layers)", CPU_INT8_METHOD, len(spec))
    return CPU_INT8_METHOD


def check_int8_cpu(*dtypes: Any) -> None:
    """Refuse what this path cannot run, before a model is loaded: kernels other than x86/fbgemm (e.g. ARM's
    qnnpack) and a compute dtype other than float32."""
    import torch

    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        raise GuardConfigurationError(
            f"quantization='int8' on a CPU needs torch's x86/fbgemm int8 kernels; this torch has "
            f"{torch.backends.quantized.supported_engines} (engine {torch.backends.quantized.engine!r}). Use "
            "quantization=None, 'nf4', or quantization_config=BitsAndBytesConfig(load_in_8bit=True)"
        )
    wrong = sorted(str(d) for d in dtypes if d != torch.float32)
    if wrong:
        raise GuardConfigurationError(
            f"quantization='int8' on a CPU computes in float32; got {', '.join(wrong)}. Load it with "
            "dtype=torch.float32 (the default on a CPU)"
        )


def _under(name: str, prefix: str) -> bool:
    """``name`` is the module ``prefix`` or inside it, at any depth (``a.vision_model.b`` is under ``vision_model``)."""
    parts = name.split(".")
    want = prefix.split(".")
    return any(parts[i : i + len(want)] == want for i in range(len(parts) - len(want) + 1))


def weight_bytes(model: Any) -> int:
    """Bytes the model's weights take: parameters, buffers and the packed int8 weights of quantized layers."""
    import torch

    seen: set[int] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if t is None or t.data_ptr() in seen:
            return
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()

    for t in [*model.parameters(), *model.buffers()]:
        add(t)
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            w, b = packed._weight_bias()
            total += w.numel() * w.element_size() + (b.numel() * b.element_size() if b is not None else 0)
            if w.qscheme() == torch.per_channel_affine:
                total += w.q_per_channel_scales().numel() * 8 + w.q_per_channel_zero_points().numel() * 8
    return total
