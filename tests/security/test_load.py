"""One shared guard under concurrent threads and coroutines: correct verdicts, no cross-talk, no deadlock."""

from __future__ import annotations

import asyncio
import concurrent.futures
import resource

from conftest import BENIGN, BOMB, CODE_ABUSE

from langchain_llamaguard.tiny.data import llama_guard_examples

CONVS = [BENIGN, BOMB, CODE_ABUSE] + [e.turns[0] for e in llama_guard_examples(3)[:21] if len(e.turns) == 1]


def expected(guard):
    return [(v.safe, tuple(v.categories)) for v in (guard.check(c) for c in CONVS)]


def test_threads_share_one_guard(lg4):
    want = expected(lg4)
    step = lg4.as_input_guard(on_unsafe="blocked")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(lambda c: lg4.check(c), CONVS * 3, timeout=300))
        steps = list(pool.map(step.invoke, CONVS, timeout=300))
    assert [(v.safe, tuple(v.categories)) for v in verdicts] == want * 3
    assert [s == "blocked" for s in steps] == [not safe for safe, _ in want]


async def test_coroutines_share_one_guard(lg4):
    want = expected(lg4)
    step = lg4.as_input_guard(on_unsafe="blocked")
    verdicts = await asyncio.wait_for(asyncio.gather(*(lg4.acheck(c) for c in CONVS * 2)), timeout=300)
    outs = await asyncio.wait_for(asyncio.gather(*(step.ainvoke(c) for c in CONVS)), timeout=300)
    assert [(v.safe, tuple(v.categories)) for v in verdicts] == want * 2
    assert [o == "blocked" for o in outs] == [not safe for safe, _ in want]


def test_memory_stays_bounded(lg4):
    for _ in range(3):
        lg4.batch_check(CONVS)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(15):
        lg4.batch_check(CONVS)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib
