"""What the guard adds to a request's latency, one section per lever (see issue 22).

Sections (``--section NAME``, several allowed; all by default):

* ``parallel``: a chain whose model takes a fixed time (a fake chat model that sleeps 1.5 s, 0.5 s with
  ``--quick``, and streams its answer), unguarded, guarded with ``input_check="before"`` and with
  ``input_check="parallel"`` (the tiny trained Llama Guard 4 on the CPU). End-to-end time of ``stream`` to the
  last chunk (median of a few runs) and the latency each guarded way adds over the unguarded chain, as % of the
  unguarded time; also with the input check alone (no output check), which isolates what the overlap hides.
  Target: parallel adds <= 10% when the check is shorter than the model.

The last line is ``speedup: X`` = added latency of ``"before"`` / added latency of ``"parallel"`` over the
unguarded chain, both with the full guard (input and output; the parallel section's; later sections may take
the final line over).

Run:  LLAMAGUARD_CACHE=.cache .venv/bin/python benchmarks/latency.py [--quick] [--section parallel]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import Stopwatch, log, parser, print_table, set_threads, speedup_line

QUESTION = "How do I bake bread at home?"
ANSWER = (
    "Mix flour, water, salt and yeast, knead the dough for ten minutes, let it rise for an hour, shape it, "
    "let it rise again and bake it at 230 degrees for about thirty minutes."
)


def sleepy_model(delay: float) -> Any:
    """A chat model that takes ``delay`` seconds to answer ``ANSWER``, streamed word by word over that time."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    words = [w + " " for w in ANSWER.split(" ")]

    class SleepyModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "sleepy-benchmark-model"

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
            time.sleep(delay)
            return ChatResult(generations=[ChatGeneration(message=AIMessage(ANSWER))])

        def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            for word in words:
                time.sleep(delay / len(words))
                yield ChatGenerationChunk(message=AIMessageChunk(word))

    return SleepyModel()


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def parallel_input(args: Any) -> float | None:
    """The ``parallel`` section: unguarded vs ``input_check="before"`` vs ``"parallel"``; returns before/parallel
    added latency (full guard)."""
    from langchain_llamaguard import LlamaGuard
    from langchain_llamaguard.tiny.training import trained_llama_guard

    delay = 0.5 if args.quick else 1.5
    repeats = args.repeats or (3 if args.quick else 5)
    guard = LlamaGuard.from_pretrained(str(trained_llama_guard("llama-guard-4")))
    model = sleepy_model(delay)

    def drain(chain: Any) -> Callable[[], Any]:
        return lambda: list(chain.stream(QUESTION))

    check_s = median_time(lambda: guard.check(QUESTION), repeats)
    log(f"parallel: one input check takes {check_s * 1000:.0f} ms; the model {delay * 1000:.0f} ms")
    base = median_time(drain(model), repeats)
    rows = []
    added: dict[tuple[str, str], float] = {}
    for guarded in ("input and output", "input only"):
        for mode in ("before", "parallel"):
            chain = guard.wrap(model, input_check=mode)  # type: ignore[arg-type]
            if guarded == "input only":
                chain = chain.model_copy(update={"check_output": False})
            t = median_time(drain(chain), repeats)
            added[guarded, mode] = t - base
            rows.append([guarded, mode, f"{base * 1000:.0f}", f"{t * 1000:.0f}", f"{(t - base) / base * 100:+.1f}%"])
            log(f"  {guarded}, {mode}: {t * 1000:.0f} ms (unguarded {base * 1000:.0f} ms)")
    print_table(
        ["guarded", "input_check", "unguarded ms", "guarded ms", "added"],
        rows,
        title=f"parallel input: stream to the last chunk, model {delay:.1f} s, input check {check_s * 1000:.0f} ms, "
        f"median of {repeats}",
    )
    target = added["input only", "parallel"] / base * 100
    print(f"parallel input check adds {target:+.1f}% (target <= 10%: {'met' if target <= 10 else 'NOT met'})")
    clamp = 1e-3  # noise can make a parallel run's added time ~0 or negative
    alone = added["input only", "before"] / max(added["input only", "parallel"], clamp)
    print(f"input check alone: before adds {added['input only', 'before'] * 1000:.0f} ms, parallel "
          f"{added['input only', 'parallel'] * 1000:.0f} ms ({alone:.2f}x)")
    return added["input and output", "before"] / max(added["input and output", "parallel"], clamp)


SECTIONS: dict[str, Callable[[Any], float | None]] = {"parallel": parallel_input}
FINAL = "parallel"
"""The section whose ratio is the ``speedup:`` line."""


def main() -> None:
    p = parser(__doc__.splitlines()[0], default_threads=None)
    p.add_argument("--section", action="append", choices=sorted(SECTIONS), help="run only these sections")
    args = p.parse_args()
    set_threads(args.threads)
    watch = Stopwatch()
    results = {name: SECTIONS[name](args) for name in (args.section or list(SECTIONS))}
    print(f"wall time: {watch.elapsed():.1f} s")
    print(speedup_line(results.get(FINAL)))


if __name__ == "__main__":
    main()
