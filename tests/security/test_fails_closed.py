"""Errors inside a guard are exceptions or (by option) unsafe verdicts; bad configuration fails at construction."""

from __future__ import annotations

import copy
import importlib.util

import pytest
from conftest import BENIGN, BOMB
from langchain_core.messages import AIMessage, HumanMessage

from langchain_llamaguard import GuardConfigurationError, LlamaGuard, PromptGuard, UnsafeContentError
from langchain_llamaguard.errors import GuardTimeoutError
from langchain_llamaguard.images import ImageLoadError


@pytest.fixture(scope="module")
def closed(lg4_with):
    return lg4_with(on_error="unsafe")


def test_unreadable_image(lg4, closed, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"GIF89a broken")
    convo = [HumanMessage(content=[{"type": "image", "path": str(bad)}, {"type": "text", "text": BENIGN}])]
    with pytest.raises(ImageLoadError):
        lg4.check(convo)
    v = closed.check(convo)
    assert not v.safe and "cannot read the image" in v.error
    both = closed.batch_check([convo, BENIGN])  # the other conversation is unaffected
    assert not both[0].safe and both[1].safe


def test_model_error_out_of_memory(closed, lg4):
    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = closed.backend.model.register_forward_pre_hook(boom)  # a fault in the real module, not a stub
    try:
        v = closed.check(BENIGN)
        assert not v.safe and "out of memory" in v.error
        step = closed.as_input_guard()
        with pytest.raises(UnsafeContentError):
            step.invoke(BENIGN)  # a guard that cannot decide blocks
    finally:
        handle.remove()
    handle = lg4.backend.model.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            lg4.check(BENIGN)
    finally:
        handle.remove()


def test_timeout(lg4_with):
    slow = lg4_with(timeout=1e-4)
    with pytest.raises(GuardTimeoutError):
        slow.check(BENIGN)
    closed = lg4_with(timeout=1e-4, on_error="unsafe")
    v = closed.check(BENIGN)
    assert not v.safe and "did not answer" in v.error
    assert lg4_with(timeout=30).check(BENIGN).safe


def test_inputs_are_never_mutated(lg4):
    convo = [HumanMessage(BENIGN, id="h1"), AIMessage("Paris.", id="a1"), HumanMessage(BOMB, id="h2")]
    snapshot = copy.deepcopy(convo)
    lg4.check(convo)
    lg4.as_input_guard(on_unsafe="blocked").invoke(convo)
    lg4.batch_check([convo, convo])
    assert convo == snapshot and [m.id for m in convo] == ["h1", "a1", "h2"]
    data = {"question": BOMB}
    lg4.wrap(lambda x: AIMessage("x"), on_unsafe="no").invoke(data)
    assert data == {"question": BOMB}


def test_bad_configuration_fails_at_construction(lg4_path, pg_path, monkeypatch):
    with pytest.raises(GuardConfigurationError, match="unknown category 'S99'"):
        LlamaGuard.from_pretrained(str(lg4_path), excluded_categories=["S99"])
    with pytest.raises(GuardConfigurationError, match="threshold"):
        LlamaGuard.from_pretrained(str(lg4_path), threshold=-0.1)
    with pytest.raises(GuardConfigurationError, match="timeout"):
        LlamaGuard.from_pretrained(str(lg4_path), timeout=0)
    with pytest.raises(GuardConfigurationError, match="on_error"):
        LlamaGuard.from_pretrained(str(lg4_path), on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(GuardConfigurationError, match="PromptGuard.from_pretrained"):
        LlamaGuard.from_pretrained(str(pg_path))
    with pytest.raises(GuardConfigurationError, match="not a Prompt Guard"):
        PromptGuard.from_pretrained(str(lg4_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    with pytest.raises(GuardConfigurationError, match=r"pip install 'langchain-llamaguard\[quant\]'"):
        LlamaGuard.from_pretrained(str(lg4_path), quantization="nf4")
