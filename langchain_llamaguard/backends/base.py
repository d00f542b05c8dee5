"""What a Llama Guard backend must do: score token ids. Everything else is backend-independent.

Rendering (:mod:`~langchain_llamaguard.prompt_format`), tokenizing (:mod:`~langchain_llamaguard.encoding`) and
reading verdicts (:mod:`~langchain_llamaguard.verdict`) are shared. A backend answers one question per batch:
*given these prompt ids, what does the model say next?* -- as the first token's probabilities and, for the
unsafe ones, a few greedy tokens. The in-process backend is :mod:`.transformers`; a served model (vLLM or any
OpenAI-compatible server) is :mod:`.completions` (token ids in, logprobs out) and :mod:`.chat` (chat messages
in, for images and for hosted providers). A backend may also be natively async (:class:`AsyncGuardBackend`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..encoding import EncodedPrompt

MAX_NEW_TOKENS = 48
"""The most tokens a backend generates after the lead. A verdict is at most one fewer: ``unsafe``, ``\\n`` and
its codes with their commas (all 14 default codes take 30 tokens in both tokenizers; 22 codes fit); an answer
that fills the limit without its end-of-turn was cut, and fails closed (a cut list could leave out what it
flags, or name only excluded categories)."""

DECODE_COLUMNS = 3 * MAX_NEW_TOKENS
"""The most KV-cache columns decoding a verdict adds: each step feeds its token and up to two drafted ones
(``\\n`` and ``S`` after ``unsafe``), which stay in the cache (masked) when the model does not confirm them."""


@dataclass(frozen=True)
class VerdictTokens:
    """The ids a backend needs to read a verdict."""

    lead: int
    """The token the model emits before the verdict (``\\n\\n``)."""
    safe: int
    unsafe: int
    stop: tuple[int, ...]
    """End-of-turn ids."""


@dataclass
class FirstStep:
    """The model's next-token view of one prompt.

    ``lead_argmax`` is the greedy token right after the prompt. ``verdict_argmax`` and ``p_safe`` /
    ``p_unsafe`` come from the position after the lead token (softmax over the whole vocabulary). They are
    ``None`` where the backend has no probabilities (a chat API without logprobs).
    """

    lead_argmax: int
    verdict_argmax: int
    p_safe: float | None
    p_unsafe: float | None


DraftFn = Callable[[list[int]], list[int]]
"""Given the tokens generated so far, propose the next few (checked against the model's greedy choice)."""


@runtime_checkable
class GuardBackend(Protocol):
    """Scores token ids with a Llama Guard model."""

    model_name: str

    def first_step(self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens) -> tuple[list[FirstStep], object]:
        """One forward pass over each prompt followed by ``tokens.lead``; returns a state for :meth:`decode`."""
        ...

    def decode(
        self,
        state: object,
        rows: Sequence[int],
        forced: Sequence[Sequence[int]],
        *,
        draft: DraftFn,
        stop: Sequence[int],
        max_new_tokens: int,
    ) -> list[list[int]]:
        """Greedy-continue ``rows`` of a :meth:`first_step` batch after appending ``forced`` tokens.

        Returns, per row, the forced tokens followed by the greedy ones (the stop token excluded).
        Draft tokens are accepted only where they equal the greedy choice, so the result is exactly greedy.
        """
        ...


@runtime_checkable
class AsyncGuardBackend(GuardBackend, Protocol):
    """A backend whose I/O is natively async (a server); the engine awaits it instead of using a thread."""

    async def afirst_step(
        self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens
    ) -> tuple[list[FirstStep], object]: ...

    async def adecode(
        self,
        state: object,
        rows: Sequence[int],
        forced: Sequence[Sequence[int]],
        *,
        draft: DraftFn,
        stop: Sequence[int],
        max_new_tokens: int,
    ) -> list[list[int]]: ...
