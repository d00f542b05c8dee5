"""What the guard adds to a request's latency, one section per lever (see issue 22).

Sections (``--section NAME``, several allowed; all by default):

* ``parallel``: a chain whose model takes a fixed time (a fake chat model that sleeps 1.5 s and streams its
  answer), unguarded, guarded with ``input_check="before"`` and with ``input_check="parallel"`` (Llama Guard 3 1B
  at its real shape, int8 with the pruned head: the README's fastest CPU set-up, a check shorter than the
  model). End-to-end time of ``stream`` to the
  last chunk (median of a few runs) and the latency each guarded way adds over the unguarded chain, as % of the
  unguarded time; also with the input check alone (no output check), which isolates what the overlap hides.
  Target: parallel adds <= 10% when the check is shorter than the model.

* ``agent``: a tool-calling ``create_agent`` run of 16 model steps (the user's turn; 15 steps that call a search
  tool whose result joins the conversation; a final answer) guarded by ``LlamaGuardMiddleware`` with its defaults
  (the user's turn, every response, every tool call), on Llama Guard 3 1B at its real shape (random weights, see
  ``llama_guard3_1b_cpu.py``; float32, or with ``--quick`` int8 with the pruned head so it fits in minutes).
  Guard time (the guarded run less the unguarded run) with the token-prefix store (``prefix_cache_bytes``
  default) against without it (``prefix_cache_bytes=0``, same guard and model), and the tokens each way
  computes. Tool results of 120 tokens (24 with ``--quick``). Target: >= 4x.
* ``stream``: an answer of 400 tokens streamed token by token through ``guard.wrap(..., stream_mode=
  "incremental", check_every=40)`` (10 checks), same model: total check time with the store against without,
  the delay from the model's last token to the last released chunk, and one full check of the final answer for
  scale. Target: >= 3x.

A random model's answers mean nothing: the real-shape guard is the *scripted* 1B (``scripted_1b.py``: random
weights with the real compute, whose every answer is ``\n\n`` then ``safe``), so every verdict is safe, which
costs what a real safe verdict costs (one forward pass) and lets the agent run to its end.

The last line is ``speedup: X`` = the agent trajectory's ratio (guard time without the store / with it), or the
parallel section's (added latency ``"before"`` / ``"parallel"``) when the agent section is not run.

Run:  LLAMAGUARD_CACHE=.cache .venv/bin/python benchmarks/latency.py [--quick] [--section agent ...]
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
    delay = 1.5
    repeats = args.repeats or (3 if args.quick else 5)
    guard, _, how = real_shape_guard(args, fastest=True)
    store(guard, False)  # every run judges the same question: each check must be a whole one, as for a new user
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
        title=f"parallel input: stream to the last chunk, model {delay:.1f} s, input check {check_s * 1000:.0f} ms "
        f"(Llama Guard 3 1B real shape, {how}), median of {repeats}",
    )
    store(guard, True)
    target = added["input only", "parallel"] / base * 100
    print(f"parallel input check adds {target:+.1f}% (target <= 10%: {'met' if target <= 10 else 'NOT met'})")
    clamp = 1e-3  # noise can make a parallel run's added time ~0 or negative
    alone = added["input only", "before"] / max(added["input only", "parallel"], clamp)
    print(f"input check alone: before adds {added['input only', 'before'] * 1000:.0f} ms, parallel "
          f"{added['input only', 'parallel'] * 1000:.0f} ms ({alone:.2f}x)")
    return added["input and output", "before"] / max(added["input and output", "parallel"], clamp)


# -- Llama Guard 3 1B at its real shape: the token-prefix store --------------------------------------------------
_REAL_SHAPE: dict[bool, tuple[Any, Any, str]] = {}


def real_shape_guard(args: Any, *, fastest: bool = False) -> tuple[Any, Any, str]:
    """(guard, tokenizer, how it runs): the real-shape 1B, loaded once per set-up. Float32 (the issue's baseline);
    with ``--quick`` or ``fastest``, torch dynamic int8 with the pruned head (the README's fastest CPU set-up), so
    the run fits in minutes. The ways compared toggle the same guard's store (:func:`store`), so they share one
    model."""
    fast = fastest or args.quick
    if fast not in _REAL_SHAPE:
        from scripted_1b import checkpoint
        from transformers import AutoTokenizer

        from langchain_llamaguard import LlamaGuard

        path = checkpoint()
        how = "int8, pruned head" if fast else "float32"
        log(f"loading the real-shape Llama Guard 3 1B (scripted random weights, {how}) ...")
        kwargs: dict[str, Any] = {"quantization": "int8", "prune_lm_head": True} if fast else {}
        # its head is untied (to script it), unlike the 1B's: the format is said, not detected
        guard = LlamaGuard.from_pretrained(str(path), model_format="llama-guard-3-1b", **kwargs)
        guard.check("Hello")  # the policy prefixes (cached either way) are computed before timing
        guard.check([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}])
        _REAL_SHAPE[fast] = (guard, AutoTokenizer.from_pretrained(path), how)
    return _REAL_SHAPE[fast]


def store(guard: Any, on: bool) -> None:
    """The token-prefix store on (the default bound, empty) or off (``prefix_cache_bytes=0``)."""
    guard.backend.set_prefix_cache_bytes(None if on else 0)


WAYS = (("prefix_cache_bytes=0", False), ("store on (default)", True))


class TokenCounter:
    """Counts the tokens the guard's model computes for verdicts (its first-step forwards) while active."""

    def __init__(self, model: Any) -> None:
        self.model, self.tokens, self.forwards = model, 0, 0

    def __enter__(self) -> TokenCounter:
        def hook(module: Any, args: Any, kwargs: Any) -> None:
            ids = kwargs.get("input_ids")
            if ids is not None and kwargs.get("logits_to_keep") == 2:
                self.tokens += int(kwargs["attention_mask"][:, -ids.shape[1] :].sum())
                self.forwards += 1

        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


FILLER = (
    "The city council met on Tuesday to discuss the new bus routes, the library budget and repairs to the old "
    "bridge over the river. Residents asked for more benches in the park, longer opening hours at the pool and "
    "a crossing near the primary school. The weather service expects light rain in the morning and sunshine in "
    "the afternoon, with temperatures between twelve and eighteen degrees. "
)


def text_of(tok: Any, n_tokens: int, offset: int = 0) -> str:
    """About ``n_tokens`` tokens of plain prose (a different slice for each ``offset``)."""
    ids = tok.encode(FILLER * (2 + (n_tokens + offset * 7) // 40), add_special_tokens=False)
    return tok.decode(ids[offset * 7 % 40 : offset * 7 % 40 + n_tokens]).strip()


def scripted_agent(tok: Any, steps: int, result_tokens: int, middleware: list[Any]) -> Any:
    """A ``create_agent`` whose chat model calls a search tool ``steps - 1`` times, then answers."""
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    class ScriptedModel(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    turns = [
        AIMessage("", tool_calls=[{"name": "search", "args": {"query": f"city news, page {i + 1}"}, "id": f"c{i}"}])
        for i in range(steps - 1)
    ]
    turns.append(AIMessage(text_of(tok, 60, steps)))
    results = iter([text_of(tok, result_tokens, i) for i in range(steps)])

    @tool
    def search(query: str) -> str:
        """Search the local news."""
        return next(results)

    return create_agent(ScriptedModel(messages=iter(turns)), tools=[search], middleware=middleware)


def agent_trajectory(args: Any) -> float | None:
    """The ``agent`` section: guard time of a 16-step middleware-guarded agent run, store on vs off."""
    from langchain_llamaguard.middleware import LlamaGuardMiddleware

    guard, tok, how = real_shape_guard(args)
    steps = 16
    result_tokens = 24 if args.quick else 120
    question = "What happened in the city this week? Search the news page by page and summarise."

    def run(guarded: bool) -> tuple[float, int, int, int]:
        agent = scripted_agent(tok, steps, result_tokens, [LlamaGuardMiddleware(guard)] if guarded else [])
        with TokenCounter(guard.backend.model) as counter:
            start = time.perf_counter()
            state = agent.invoke({"messages": [{"role": "user", "content": question}]})
            seconds = time.perf_counter() - start
        final = state["messages"]
        return seconds, counter.tokens, counter.forwards, len(final)

    base, _, _, n_messages = run(False)
    enc, _ = guard.encode(
        [{"role": "user", "content": question}] + [{"role": "assistant", "content": text_of(tok, result_tokens)}] * 16
    )
    log(f"agent: {steps} model steps, tool results of {result_tokens} tokens, {n_messages} messages; unguarded "
        f"run {base * 1000:.0f} ms")
    results = {}
    for name, on in WAYS:
        store(guard, on)
        seconds, tokens, forwards, _ = run(True)
        results[on] = (seconds - base, tokens, forwards)
        log(f"  {name}: guard time {seconds - base:.1f} s, {forwards} checks, {tokens} tokens computed")
    (t_off, tok_off, n_off), (t_on, tok_on, n_on) = results[False], results[True]
    ratio_ = t_off / t_on
    print_table(
        ["way", "checks", "tokens computed", "guard s", "per check ms"],
        [
            ["prefix_cache_bytes=0", n_off, tok_off, f"{t_off:.1f}", f"{t_off / n_off * 1000:.0f}"],
            ["store on (default)", n_on, tok_on, f"{t_on:.1f}", f"{t_on / n_on * 1000:.0f}"],
        ],
        title=f"agent trajectory: Llama Guard 3 1B real shape, {how}, {steps} model steps, tool results of "
        f"{result_tokens} tokens (final conversation ~{len(enc.input_ids)} prompt tokens)",
    )
    print(f"agent trajectory: {ratio_:.2f}x less guard time with the store, {tok_off / tok_on:.2f}x fewer tokens "
          f"(target >= 4x: {'met' if ratio_ >= 4 else 'NOT met'})")
    return ratio_


def streamed_answer(tok: Any, n_tokens: int) -> Any:
    """A chat model that streams an answer of ``n_tokens`` tokens, one token per chunk, with no delay; it records
    when it yields its last token (the list it returns second)."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    ids = tok.encode(FILLER * (1 + n_tokens // 60), add_special_tokens=False)[:n_tokens]
    pieces = [tok.decode(ids[:i + 1])[len(tok.decode(ids[:i])):] for i in range(len(ids))]
    times: list[float] = []

    class TokenStreamer(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "token-streamer-benchmark-model"

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=AIMessage("".join(pieces)))])

        def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            for i, piece in enumerate(pieces):
                if i == len(pieces) - 1:
                    times.append(time.perf_counter())  # the last token leaves the model (checks follow it)
                yield ChatGenerationChunk(message=AIMessageChunk(piece))

    model = TokenStreamer()
    return model, times, "".join(pieces)


def streaming(args: Any) -> float | None:
    """The ``stream`` section: a 400-token answer checked every 40 tokens, store on vs off."""
    guard, tok, how = real_shape_guard(args)
    n_tokens, every = 400, 40
    question = "Tell me what the city council discussed this week."
    model, last_chunk_at, answer = streamed_answer(tok, n_tokens)
    rows, results = [], {}
    chain = guard.wrap(model, stream_mode="incremental", check_every=every).model_copy(update={"check_input": False})
    for name, on in WAYS:
        store(guard, on)
        last_chunk_at.clear()
        with TokenCounter(guard.backend.model) as counter:
            start = time.perf_counter()
            chunks = 0
            for _ in chain.stream(question):
                chunks += 1
            end = time.perf_counter()
        delay = end - last_chunk_at[-1]
        results[name] = (end - start, delay, counter.tokens, counter.forwards)
        log(f"  stream, {name}: {end - start:.1f} s of checks, {counter.forwards} checks, {counter.tokens} tokens, "
            f"{delay * 1000:.0f} ms after the last token")
    store(guard, False)
    full_start = time.perf_counter()
    guard.check([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
    full = time.perf_counter() - full_start
    for name, (seconds, delay, tokens, forwards) in results.items():
        rows.append([name, forwards, tokens, f"{seconds:.1f}", f"{delay * 1000:.0f}"])
    print_table(
        ["way", "checks", "tokens computed", "check s", "after last token ms"],
        rows,
        title=f"incremental streaming: {n_tokens}-token answer, a check every {every} tokens, Llama Guard 3 1B real "
        f"shape, {how} (one full check of the final answer: {full * 1000:.0f} ms)",
    )
    store(guard, True)
    (t_off, d_off, n_off, _), (t_on, d_on, n_on, _) = results["prefix_cache_bytes=0"], results["store on (default)"]
    ratio_ = t_off / t_on
    print(f"streaming: {ratio_:.2f}x less check time with the store (target >= 3x: "
          f"{'met' if ratio_ >= 3 else 'NOT met'}); after the last token {d_on * 1000:.0f} ms with the store, "
          f"{d_off * 1000:.0f} ms without, {full * 1000:.0f} ms for one full check; all checks with the store "
          f"{t_on / full:.2f}x one full check")
    # Every check must read its new answer tokens and the template's closing instruction (~55 tokens) after
    # them, so the token ratio is the most any reuse can save here; a forward pass over fewer tokens costs more
    # per token on a CPU (matrix products of few rows use the cores less well), so time saves less than tokens.
    print(f"streaming: {n_off / n_on:.2f}x fewer tokens computed (the bound on the time ratio when time is "
          f"proportional to tokens); {1000 * t_off / n_off:.1f} ms per token without the store, "
          f"{1000 * t_on / n_on:.1f} ms with it")
    return ratio_


SECTIONS: dict[str, Callable[[Any], float | None]] = {
    "parallel": parallel_input,
    "agent": agent_trajectory,
    "stream": streaming,
}
FINALS = ("agent", "parallel")
"""The sections whose ratio is the ``speedup:`` line, first one run wins."""


def main() -> None:
    p = parser(__doc__.splitlines()[0], default_threads=None)
    p.add_argument("--section", action="append", choices=sorted(SECTIONS), help="run only these sections")
    args = p.parse_args()
    set_threads(args.threads)
    watch = Stopwatch()
    results = {name: SECTIONS[name](args) for name in (args.section or list(SECTIONS))}
    print(f"wall time: {watch.elapsed():.1f} s")
    final = next((results[name] for name in FINALS if name in results), None)
    print(speedup_line(final))


if __name__ == "__main__":
    main()
