"""ONNX Runtime backend for Prompt Guard (opt-in: ``PromptGuard.from_pretrained(..., backend="onnx")``).

The classifier is exported once with ``torch.onnx`` (optimum-onnx cannot sit beside transformers 5), optionally
quantized with onnxruntime's dynamic int8 quantization, cached next to the other artifacts, and run with
onnxruntime. Scores agree with the torch backend within the tolerance measured in the tests and README.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import GuardConfigurationError


def _require_onnx() -> None:
    missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise GuardConfigurationError(
            f"backend='onnx' needs {', '.join(missing)}: pip install 'langchain-llamaguard[onnx]'"
        )


def export_onnx(model_id_or_path: str, out: Path, hub: dict[str, Any] | None = None) -> Path:
    """Export a sequence classifier to ``out`` (inputs: input_ids, attention_mask; output: logits)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from .loading import load_whole

    model = load_whole(
        AutoModelForSequenceClassification, model_id_or_path, None, {**(hub or {}), "dtype": torch.float32}
    )
    model.eval()

    class _Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter progress and axis-renaming notes
        torch.onnx.export(
            _Logits(model).eval(),
            (ids, mask),
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    tmp.rename(out)
    return out


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization of the weights (onnxruntime)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" note
    try:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
    finally:
        quiet.setLevel(level)
    tmp.rename(dst)
    return dst


class OnnxClassifier:
    """An onnxruntime session that returns classifier logits as a numpy array.

    Example:
        >>> clf = OnnxClassifier.from_pretrained("meta-llama/Llama-Prompt-Guard-2-22M")  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        _require_onnx()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        *,
        quantize: bool = True,
        path: str | Path | None = None,
        threads: int | None = None,
        hub: dict[str, Any] | None = None,
    ) -> OnnxClassifier:
        """The checkpoint exported to ONNX once (``hub``: ``revision=``, ``subfolder=``... where the weights are;
        part of the export's cache key), int8-quantized with ``quantize``."""
        _require_onnx()
        from ..tiny.tokenizers import cache_dir

        src = Path(model_id_or_path)
        stamp = ""
        if src.is_dir():
            weights = sorted(src.glob("*.safetensors")) or sorted(src.glob("*.bin"))
            stamp = "".join(f"{w.name}{w.stat().st_size}{w.stat().st_mtime_ns}" for w in weights)
        if src.is_dir() and (hub or {}).get("subfolder"):
            weights_dir = src / str(hub["subfolder"])  # type: ignore[index]
            weights = sorted(weights_dir.glob("*.safetensors")) or sorted(weights_dir.glob("*.bin"))
            stamp = "".join(f"{w.name}{w.stat().st_size}{w.stat().st_mtime_ns}" for w in weights)
        where = sorted((k, str(v)) for k, v in (hub or {}).items() if k in ("revision", "subfolder"))
        name = src.resolve() if src.is_dir() else model_id_or_path
        key = hashlib.sha256(f"{name}{stamp}{where if where else ''}".encode()).hexdigest()
        base = cache_dir() / "onnx" / key[:16] if path is None else Path(path)
        fp32 = base / "model.onnx"
        source = base / "source.sha256"
        # A folder holds the export of one checkpoint: an export of another one (or of older weights) is never
        # reused (an explicit onnx_path given to two checkpoints would silently run the first one's weights).
        if fp32.exists() and (not source.exists() or source.read_text().strip() != key):
            for stale in (fp32, base / "model.int8.onnx"):
                stale.unlink(missing_ok=True)
        if not fp32.exists():
            export_onnx(model_id_or_path, fp32, hub)
            source.write_text(key)
        target = fp32
        if quantize:
            target = base / "model.int8.onnx"
            if not target.exists():
                quantize_int8(fp32, target)
        return cls(target, threads=threads)

    def run_logits(self, input_ids: Any, attention_mask: Any) -> Any:
        (logits,) = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})
        return logits
