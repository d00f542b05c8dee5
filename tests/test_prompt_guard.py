"""Prompt Guard 2 on a tiny DebertaV2ForSequenceClassification: windows, batches, ONNX agreement."""

from __future__ import annotations

import pytest
import torch

from langchain_llamaguard import GuardConfigurationError, PromptGuard
from langchain_llamaguard.tiny.data import BENIGN_QUESTION as BENIGN
from langchain_llamaguard.tiny.data import INJECTION
from langchain_llamaguard.tiny.data import PROMPT_GUARD_FILLER as FILLER


def test_scores_and_verdicts(prompt_guard):
    assert prompt_guard.score(INJECTION) > 0.9 > 0.1 > prompt_guard.score(BENIGN)
    v = prompt_guard.check(INJECTION)
    assert not v.safe and v.label == "MALICIOUS" and v.windows == 1
    assert prompt_guard.check(BENIGN).label == "BENIGN"


def test_score_is_p_malicious_from_the_models_logits(prompt_guard):
    enc = prompt_guard.tokenizer(INJECTION, return_tensors="pt")
    with torch.inference_mode():
        logits = prompt_guard.model(**enc).logits
    assert prompt_guard.score(INJECTION) == pytest.approx(logits.softmax(-1)[0, 1].item(), abs=1e-5)


def test_payload_after_token_512_is_caught_not_truncated(prompt_guard):
    text = FILLER + INJECTION
    n_tokens = len(prompt_guard.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    assert n_tokens > 2000
    windows = prompt_guard.windows(text)
    assert len(windows) > 4 and all(len(w) <= 512 for w in windows)
    # what truncation to the first 512 tokens would have scored:
    assert prompt_guard._logits_batch([windows[0]])[0] < 0.5
    v = prompt_guard.check(text)
    assert not v.safe and v.windows == len(windows)
    assert prompt_guard.check(FILLER).safe


def test_windows_overlap_and_cover_every_token(prompt_guard):
    normalized = " ".join(FILLER.split())  # whitespace is normalized before scoring, as in Meta's firewall
    ids = prompt_guard.tokenizer(normalized, add_special_tokens=False, verbose=False)["input_ids"]
    windows = [w[1:-1] for w in prompt_guard.windows(FILLER)]
    stride = prompt_guard.stride
    for i, w in enumerate(windows):
        assert w == ids[i * stride : i * stride + prompt_guard.window]
    assert sum(len(w) for w in windows) >= len(ids)
    assert windows[-1][-1] == ids[-1]


def test_batch_equals_one_by_one(prompt_guard):
    texts = [BENIGN, INJECTION, FILLER + INJECTION, "short", "The weather is nice. " + INJECTION, ""]
    batched = prompt_guard.batch_score(texts)
    single = [prompt_guard.score(t) for t in texts]
    assert batched == pytest.approx(single, abs=1e-5)


async def test_async(prompt_guard):
    assert (await prompt_guard.ascore(INJECTION)) > 0.9
    assert [v.safe for v in await prompt_guard.abatch_check([BENIGN, INJECTION])] == [True, False]


def test_bad_configuration(pg_path, lg3_8b_path):
    with pytest.raises(GuardConfigurationError, match="threshold"):
        PromptGuard.from_pretrained(str(pg_path), threshold=2)
    with pytest.raises(GuardConfigurationError, match="not a Prompt Guard checkpoint"):
        PromptGuard.from_pretrained(str(lg3_8b_path))
    with pytest.raises(GuardConfigurationError, match="backend"):
        PromptGuard.from_pretrained(str(pg_path), backend="tensorrt")
    with pytest.raises(TypeError, match="list of texts"):
        PromptGuard.from_pretrained(str(pg_path)).batch_score("one string")


ONNX_TOLERANCE = {False: 1e-4, True: 1e-2}
"""Measured: fp32 ONNX agrees to ~1e-7, dynamic int8 to ~4e-3 (real shapes, see the README's Performance)."""


@pytest.mark.parametrize("quantize", [False, True])
def test_onnx_backend_agrees_with_torch(pg_path, prompt_guard, tmp_path, quantize):
    onnx = PromptGuard.from_pretrained(str(pg_path), backend="onnx", onnx_quantize=quantize, onnx_path=str(tmp_path))
    texts = [BENIGN, INJECTION, FILLER + INJECTION, "The weather in Paris is 18 degrees. " + INJECTION]
    assert onnx.batch_score(texts) == pytest.approx(prompt_guard.batch_score(texts), abs=ONNX_TOLERANCE[quantize])
    assert [v.safe for v in onnx.batch_check(texts)] == [v.safe for v in prompt_guard.batch_check(texts)]
