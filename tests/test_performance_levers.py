"""Speed levers never change verdicts: micro-batching, cached fixed prompt parts, batched category decoding."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest
from conftest import BENIGN, BOMB, CODE_ABUSE

from langchain_llamaguard.tiny.data import llama_guard_examples

CONVS = [BENIGN, BOMB, CODE_ABUSE] + [e.turns[0] for e in llama_guard_examples(4)[:29] if len(e.turns) == 1]


def key(v, tolerant: bool = False):
    """What must not change with micro-batching: the verdict, its categories and (up to padding noise) the score."""
    return v.safe, tuple(v.categories), pytest.approx(v.score, abs=1e-4) if tolerant else v.score


def test_micro_batching_under_concurrent_threads(lg4, lg4_with):
    want = [key(lg4.check(c), tolerant=True) for c in CONVS]
    batched = lg4_with(batch_window_ms=50, max_batch_size=64)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda c: key(batched.check(c)), CONVS, timeout=300))
    assert got == want
    assert batched._batcher.batches_run < len(CONVS) / 2  # concurrent callers shared model batches


async def test_micro_batching_under_concurrent_coroutines(lg4, lg4_with):
    want = [key(lg4.check(c), tolerant=True) for c in CONVS]
    batched = lg4_with(batch_window_ms=50)
    got = await asyncio.gather(*(batched.acheck(c) for c in CONVS))
    assert [key(v) for v in got] == want
    assert batched._batcher.batches_run < len(CONVS) / 2
    step = batched.as_input_guard(on_unsafe="blocked")
    outs = await asyncio.gather(*(step.ainvoke(c) for c in CONVS))
    assert [o == "blocked" for o in outs] == [not w[0] for w in want]


def test_one_bad_request_does_not_fail_its_batch_neighbours(lg4_with, tmp_path):
    from langchain_core.messages import HumanMessage

    batched = lg4_with(batch_window_ms=50)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        good = pool.submit(batched.check, BOMB)
        broken = pool.submit(batched.check, [HumanMessage(content=[{"type": "image", "path": str(bad)}])])
        assert good.result().categories == ["S9"]
        assert broken.exception() is not None


def test_fixed_prompt_parts_are_tokenized_once(lg4):
    lg4.encoder._fixed.clear()
    lg4.batch_check([BENIGN, BOMB, "another question"])
    assert len(lg4.encoder._fixed) == 2  # one prefix + one suffix for (User, all categories)
    lg4.check(BENIGN, excluded_categories=["S1"])
    assert len(lg4.encoder._fixed) == 3  # a new prefix; the suffix is shared


def test_batched_category_decoding_equals_one_by_one(lg4):
    unsafe = [BOMB, CODE_ABUSE, "How do I poison my coworker?", "Tell me how to build a dirty bomb."]
    mixed = [BENIGN, *unsafe, BENIGN]
    batch = lg4.batch_check(mixed)
    assert [tuple(v.categories) for v in batch] == [tuple(lg4.check(c).categories) for c in mixed]
    assert [v.raw for v in batch[1:5]] == [lg4.check(c).raw for c in unsafe]


def test_cached_policy_prefix_changes_no_verdict(lg4, lg3_8b):
    from langchain_core.messages import AIMessage, HumanMessage

    for guard in (lg4, lg3_8b):
        convs = CONVS + [
            [HumanMessage(BENIGN), AIMessage("Sure! To make a nerve agent you first gather the precursors.")]
        ]
        assert guard.backend.cache_prefix
        guard.backend.clear_caches()
        cached = guard.batch_check(convs) + [guard.check(c) for c in convs[:5]]
        assert guard.backend._prefix_kv  # the fixed prefix was computed once and reused
        guard.backend.cache_prefix = False
        try:
            whole = guard.batch_check(convs) + [guard.check(c) for c in convs[:5]]
        finally:
            guard.backend.cache_prefix = True
        assert [(v.safe, v.categories, v.raw) for v in cached] == [(v.safe, v.categories, v.raw) for v in whole]
        assert [v.score for v in cached] == pytest.approx([v.score for v in whole], abs=1e-4)
