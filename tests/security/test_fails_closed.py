"""Errors inside a guard are exceptions or (by option) unsafe verdicts; bad configuration fails at construction."""

from __future__ import annotations

import copy
import importlib.util

import pytest
from conftest import BENIGN, BOMB
from langchain_core.messages import AIMessage, HumanMessage

from langchain_llamaguard import GuardConfigurationError, LlamaGuard, PromptGuard, UnsafeContentError
from langchain_llamaguard.errors import GuardOutputError, GuardTimeoutError
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


def _scripted_llama_guard_3(path, chain: list[str], loop_to: int):
    """A tiny random Llama Guard 3 8B whose greedy answer is scripted: every ``o_proj`` / ``down_proj`` zeroed makes
    the residual stream at a position its token's embedding, so the head can name the next token of each token
    (a bigram model): after the prompt's ``<|end_header_id|>`` it answers ``\\n\\n``, then ``chain``'s tokens, then
    ``chain[loop_to:]`` for ever. The real architecture and loading path, with a known answer."""
    import torch
    from transformers import LlamaForCausalLM

    from langchain_llamaguard.tiny.models import build_llama_guard_3
    from langchain_llamaguard.tiny.tokenizers import load_tokenizer

    build_llama_guard_3(path)
    tok = load_tokenizer("llama3")
    ids = [tok.convert_tokens_to_ids(t) for t in chain]
    pairs = [(128007, 271), (271, ids[0]), *zip(ids, [*ids[1:], ids[loop_to]], strict=True)]
    model = LlamaForCausalLM.from_pretrained(str(path))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head, norm = model.model.embed_tokens.weight, model.lm_head.weight, model.model.norm
        for dst in {d for _, d in pairs}:  # a token that follows two others answers both
            head[dst] = sum(embed[s] * (40.0 / float(embed[s] @ norm(embed[s]))) for s, d in pairs if d == dst)
    model.save_pretrained(str(path))
    return path


def test_a_verdict_that_does_not_end_fails_closed(tmp_path):
    """The model's answer ``unsafe\\nS1,S1,S1,...`` never ends. Cut at the token limit, it parsed as a complete
    verdict naming S1 only, and with S1 excluded it came back safe: a cut category list could leave out what the
    model flagged."""
    path = _scripted_llama_guard_3(tmp_path / "looping", ["unsafe", "Ċ", "S", "1", ",S"], loop_to=3)
    guard = LlamaGuard.from_pretrained(str(path), model_format="llama-guard-3-8b")
    with pytest.raises(GuardOutputError, match="did not end within 48 tokens"):
        guard.check(BENIGN, excluded_categories=["S1"])
    closed = LlamaGuard.from_pretrained(str(path), model_format="llama-guard-3-8b", on_error="unsafe")
    verdict = closed.check(BENIGN, excluded_categories=["S1"])
    assert not verdict.safe and "did not end" in verdict.error and verdict.raw.startswith("unsafe\nS1,S1,S1")


@pytest.mark.parametrize("family", ["llama3", "llama4"])
def test_a_verdict_naming_every_category_fits_the_token_limit(family):
    """All 14 codes take 30 tokens (``'S', '1', ',S', '2', ...``): the limit was 24, and the list was cut after S11
    (with S1-S11 excluded, such a verdict came back safe)."""
    from langchain_llamaguard.backends.base import MAX_NEW_TOKENS
    from langchain_llamaguard.tiny.tokenizers import load_tokenizer

    every = "unsafe\n" + ",".join(f"S{i}" for i in range(1, 15))
    assert len(load_tokenizer(family).encode(every, add_special_tokens=False)) + 1 < MAX_NEW_TOKENS  # + end of turn
