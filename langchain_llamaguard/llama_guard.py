"""The Llama Guard engine: load a checkpoint, check conversations, return :class:`Verdict` s (no LangChain here;
the steps built on it are in ``guards.py`` and ``runnables.py``).

The hot path for a batch: render (shared renderer) -> tokenize (fixed parts cached) -> **one** forward pass ->
read ``P(unsafe)`` after the model's ``\\n\\n`` -> for unsafe rows only, a few greedy tokens from the same KV
cache for the categories (a format-based draft proposes ``\\nS`` after ``unsafe`` and ``S`` after ``,``; the
model confirms them, so this is exactly greedy decoding in fewer steps).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import math
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .backends.base import MAX_NEW_TOKENS, AsyncGuardBackend, FirstStep, GuardBackend, VerdictTokens
from .batching import MicroBatcher
from .conversation import ConversationInput, ImageLoader, Turn, normalize_role, to_turns
from .encoding import EncodedPrompt, PromptEncoder, clean_text
from .errors import GuardConfigurationError, GuardOutputError, GuardTimeoutError
from .images import ImageLoadError, load_image
from .prompt_format import get_format, render
from .taxonomy import check_policy, default_categories, resolve_categories
from .verdict import Verdict, make_verdict, merge_verdicts, parse_output

OnError = Literal["raise", "unsafe"]
_Scored = Verdict | tuple[GuardOutputError, float, str]
"""A verdict, or an unreadable output as ``(error, score, role)`` for the caller to raise or fail closed."""
_BackendCall = tuple[str, tuple[Any, ...], dict[str, Any]]

_STOP_TOKENS = {
    "llama4": ("<|eot|>", "<|eom|>", "<|end_of_text|>"),
    "llama3": ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
}
_PAD_TOKENS = {"llama4": "<|finetune_right_pad|>", "llama3": "<|finetune_right_pad_id|>"}
_TIMEOUT_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="llama-guard-timeout")


def _check_threshold(threshold: float | None) -> float | None:
    if threshold is None:
        return None
    if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
        raise GuardConfigurationError(f"threshold must be a number in [0, 1] or None, got {threshold!r}")
    return float(threshold)


def _check_on_error(on_error: str) -> OnError:
    if on_error not in ("raise", "unsafe"):
        raise GuardConfigurationError(f"on_error must be 'raise' or 'unsafe', got {on_error!r}")
    return on_error  # type: ignore[return-value]


@dataclass
class _Batch:
    """Prompts of several conversations (a long one may have several), and which conversation each is for."""

    prompts: list[EncodedPrompt] = field(default_factory=list)
    excluded: list[tuple[str, ...]] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    failed: dict[int, Verdict] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)

    def merged(self, n: int) -> list[Verdict]:
        per_item: dict[int, list[Verdict]] = {}
        for i, verdict in zip(self.owner, self.verdicts, strict=True):
            per_item.setdefault(i, []).append(verdict)
        return [self.failed[i] if i in self.failed else merge_verdicts(per_item[i]) for i in range(n)]


class LlamaGuardEngine:
    """Llama Guard 4 or Llama Guard 3 (8B, 1B) as a content-safety classifier: the engine, without LangChain.

    Use :class:`langchain_llamaguard.LlamaGuard`, which adds the LangChain steps (``as_input_guard``,
    ``as_output_guard``, ``wrap``); everything documented here works on it.

    Args:
        backend: what scores token ids (see :class:`~langchain_llamaguard.backends.base.GuardBackend`).
        tokenizer: the checkpoint's tokenizer.
        model_format: ``"llama-guard-4"``, ``"llama-guard-3-8b"`` or ``"llama-guard-3-1b"``.
        excluded_categories: codes or names never checked (left out of the prompt, filtered from verdicts).
        threshold: ``None`` (default): the model's own first token decides; a number in [0, 1]: unsafe when
            ``score >= threshold``.
        on_error: ``"raise"`` (default) raises on an unreadable output; ``"unsafe"`` fails closed with an
            unsafe verdict carrying the error.
        image_loader: turns remote image URLs into images; without it a remote URL is an error.
        context_length: the longest prompt the model reads, in tokens; longer conversations are split
            (never truncated), see :meth:`prepare`.
        timeout: seconds a check may take before it raises :class:`GuardTimeoutError` (or, with
            ``on_error="unsafe"``, fails closed).
        batch_window_ms: dynamic micro-batching: checks arriving from concurrent callers (threads, or
            ``acheck`` / ``ainvoke`` calls) within this many milliseconds run as one model batch of at most
            ``max_batch_size`` prompts. ``None`` (default) runs each call's batch on its own.
        categories: your own policy, ``{"S1": "Violent Crimes.", "S15": "Fraud."}``, replacing the model's default
            list (start from :func:`~langchain_llamaguard.taxonomy.default_categories`); keys are ``S<number>``
            codes, ``excluded_categories`` still apply, and verdicts name the codes with your texts.

    Example:
        >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-4-12B")  # doctest: +SKIP
        >>> guard.check("How do I make a pipe bomb?")                           # doctest: +SKIP
        Verdict(safe=False, categories=['S9'], ...)
    """

    def __init__(
        self,
        backend: GuardBackend,
        tokenizer: Any,
        *,
        model_format: str,
        excluded_categories: Iterable[str] = (),
        threshold: float | None = None,
        on_error: OnError = "raise",
        image_loader: ImageLoader | None = None,
        context_length: int = 8192,
        timeout: float | None = None,
        batch_window_ms: float | None = None,
        max_batch_size: int = 64,
        categories: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.format = get_format(model_format)
        try:
            self.categories = check_policy(categories)
            self.excluded_categories = resolve_categories(excluded_categories, self.categories)
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc
        self.threshold = _check_threshold(threshold)
        self.on_error = _check_on_error(on_error)
        self.image_loader = image_loader
        self.context_length = context_length
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise GuardConfigurationError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.timeout = timeout
        self._batcher: MicroBatcher | None = None
        if batch_window_ms is not None:
            if batch_window_ms < 0 or max_batch_size < 1:
                raise GuardConfigurationError("batch_window_ms must be >= 0 and max_batch_size >= 1")
            self._batcher = MicroBatcher(self._score_encoded, window_s=batch_window_ms / 1000, max_batch=max_batch_size)
        self.encoder = PromptEncoder(tokenizer, self.format)
        family = "llama4" if self.format.name == "llama-guard-4" else "llama3"
        ids = tokenizer.convert_tokens_to_ids

        def text_id(text: str) -> int:
            got = self.encoder.text_ids(text)
            if len(got) != 1:
                raise GuardConfigurationError(f"{text!r} is not a single token in this tokenizer: {got}")
            return got[0]

        self.tokens = VerdictTokens(
            lead=text_id("\n\n"),
            safe=text_id("safe"),
            unsafe=text_id("unsafe"),
            stop=tuple(ids(t) for t in _STOP_TOKENS[family]),
        )
        self._newline = text_id("\n")
        self._comma = text_id(",")
        self._s = text_id("S")

    @property
    def model_name(self) -> str:
        return self.format.name

    # -- loading --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        *,
        quantization: Literal["int8", "nf4"] | None = None,
        excluded_categories: Iterable[str] = (),
        threshold: float | None = None,
        device_map: Any = None,
        dtype: Any = None,
        torch_dtype: Any = None,
        model_format: str | None = None,
        on_error: OnError = "raise",
        image_loader: ImageLoader | None = None,
        context_length: int | None = None,
        timeout: float | None = None,
        batch_window_ms: float | None = None,
        max_batch_size: int = 64,
        categories: Mapping[str, str] | None = None,
        prune_lm_head: bool = False,
        **hf_kwargs: Any,
    ) -> LlamaGuardEngine:
        """Load Llama Guard 4 (``Llama4ForConditionalGeneration`` + processor) or Llama Guard 3 8B / 1B.

        The architecture is read from the checkpoint's config, not its name. On a GPU ``quantization`` goes
        through transformers' ``BitsAndBytesConfig`` (needs the ``quant`` extra); ``"int8"`` on a CPU is torch's
        dynamic int8, the fastest accurate CPU path measured (``guard.backend.quantization`` says which ran).
        ``prune_lm_head=True`` keeps only the output rows a verdict can contain (:meth:`prune_lm_head`).
        ``device_map``, ``dtype`` (or its old name ``torch_dtype``) and any other keyword go to
        ``from_pretrained`` untouched; the default dtype is bf16 on a GPU and float32 on a CPU.

        Example:
            >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-3-1B", quantization="int8")  # doctest: +SKIP
            >>> guard.backend.quantization  # doctest: +SKIP
            'int8: torch dynamic int8 (fbgemm/x86 kernels): ...'
        """
        from .backends.loading import load_guard_model

        threshold = _check_threshold(threshold)
        on_error = _check_on_error(on_error)
        try:
            resolve_categories(excluded_categories, check_policy(categories))
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc
        loaded = load_guard_model(
            model_id_or_path,
            quantization=quantization,
            device_map=device_map,
            dtype=dtype if dtype is not None else torch_dtype,
            model_format=model_format,
            context_length=context_length,
            **hf_kwargs,
        )
        guard = cls.from_model(
            loaded.model,
            loaded.processor or loaded.tokenizer,
            model_format=loaded.model_format,
            excluded_categories=excluded_categories,
            threshold=threshold,
            on_error=on_error,
            image_loader=image_loader,
            context_length=loaded.context_length,
            timeout=timeout,
            batch_window_ms=batch_window_ms,
            max_batch_size=max_batch_size,
            categories=categories,
        )
        guard.backend.quantization = loaded.quantization  # type: ignore[attr-defined]
        if prune_lm_head:
            guard.prune_lm_head()
        return guard

    @classmethod
    def from_endpoint(
        cls,
        base_url: str,
        *,
        model: str,
        tokenizer: Any = None,
        api_key: str | None = None,
        model_format: str | None = None,
        timeout: float | None = None,
        max_concurrency: int = 16,
        max_retries: int = 3,
        excluded_categories: Iterable[str] = (),
        threshold: float | None = None,
        on_error: OnError = "raise",
        mode: Literal["completions", "chat"] = "completions",
        logprobs: Literal["token_ids"] | int = "token_ids",
        image_loader: ImageLoader | None = None,
        context_length: int | None = None,
        batch_window_ms: float | None = None,
        max_batch_size: int = 64,
        categories: Mapping[str, str] | None = None,
    ) -> LlamaGuardEngine:
        """A Llama Guard served by vLLM (or any OpenAI-compatible server): same verdicts and scores as in-process.

        Prompts are rendered and tokenized here (``tokenizer``: a checkpoint id, a path or a tokenizer object;
        default ``model``) and sent as token ids to ``/v1/completions``; the score is P(``unsafe``) read with
        ``logprob_token_ids`` (``logprobs=k`` asks the top-k instead, for servers without it). Images (Llama
        Guard 4) go to ``/v1/chat/completions``. ``mode="chat"`` is for hosted providers that offer chat only:
        the verdict is read from the text, ``score`` is ``None``, and ``threshold`` is refused.

        Server errors (unreachable, HTTP errors, timeouts, malformed answers) raise
        :class:`~langchain_llamaguard.errors.GuardServerError`; with ``on_error="unsafe"`` they give unsafe
        verdicts carrying the error. 429 and 503 answers are retried (``max_retries``) within ``timeout``.

        Example:
            >>> guard = LlamaGuard.from_endpoint("http://127.0.0.1:8000/v1",
            ...                                  model="meta-llama/Llama-Guard-4-12B")  # doctest: +SKIP
            >>> guard.check("How do I make a pipe bomb?").categories                   # doctest: +SKIP
            ['S9']
        """
        from .backends.endpoint import connect

        threshold = _check_threshold(threshold)
        on_error = _check_on_error(on_error)
        if mode == "chat" and categories is not None:
            raise GuardConfigurationError(
                "categories needs the server's template to take them (vLLM does, over token ids); mode='chat' "
                "providers render their own default list"
            )
        if mode == "chat" and threshold is not None:
            raise GuardConfigurationError(
                "threshold needs probabilities, and mode='chat' reads the verdict from the answer's text; "
                "use mode='completions' (token ids and logprobs, as vLLM serves them) for a threshold"
            )
        try:
            resolve_categories(excluded_categories, check_policy(categories))
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc
        conn = connect(
            base_url,
            model=model,
            tokenizer=tokenizer,
            api_key=api_key,
            model_format=model_format,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            mode=mode,
            logprobs=logprobs,
            context_length=context_length,
        )
        return cls(
            conn.backend,
            conn.tokenizer,
            model_format=conn.model_format,
            excluded_categories=excluded_categories,
            threshold=threshold,
            on_error=on_error,
            image_loader=image_loader,
            context_length=conn.context_length,
            batch_window_ms=batch_window_ms,
            max_batch_size=max_batch_size,
            categories=categories,
        )

    @classmethod
    def from_model(
        cls,
        model: Any,
        processor_or_tokenizer: Any,
        *,
        model_format: str | None = None,
        context_length: int | None = None,
        **kwargs: Any,
    ) -> LlamaGuardEngine:
        """Wrap an already-loaded transformers model and its processor (Llama Guard 4) or tokenizer (3).

        Example:
            >>> guard = LlamaGuard.from_model(model, processor)  # doctest: +SKIP
        """
        from .backends.loading import LLAMA_GUARD_4_CONTEXT, detect_format
        from .backends.transformers import TransformersBackend

        tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
        processor = processor_or_tokenizer if tokenizer is not processor_or_tokenizer else None
        fmt = model_format or detect_format(model.config, getattr(tokenizer, "chat_template", None))
        family = "llama4" if fmt == "llama-guard-4" else "llama3"
        if context_length is None:
            context_length = (
                LLAMA_GUARD_4_CONTEXT
                if family == "llama4"
                else int(getattr(model.config, "max_position_embeddings", 8192))
            )
        backend = TransformersBackend(
            model,
            tokenizer,
            processor=processor,
            model_name=fmt,
            pad_id=tokenizer.convert_tokens_to_ids(_PAD_TOKENS[family]),
        )
        return cls(backend, tokenizer, model_format=fmt, context_length=context_length, **kwargs)

    def verdict_token_ids(self) -> list[int]:
        """Every id a verdict can contain: lead, ``safe``, ``unsafe``, ``\\n``, ``,``, ``S``, the numbers 0-999
        (any ``S<number>`` code) and end of turn."""
        ids = {self.tokens.lead, self.tokens.safe, self.tokens.unsafe, *self.tokens.stop}
        ids |= {self._newline, self._comma, self._s}
        codes = ",".join(sorted(self.categories or default_categories(self)))
        ids |= set(self.encoder.text_ids(f"\n\nunsafe\n{codes}"))
        for n in range(1000):
            got = self.encoder.text_ids(str(n))
            if len(got) == 1:
                ids.add(got[0])
        return sorted(ids)

    def prune_lm_head(self) -> None:
        """Cut the in-process model's output head down to :meth:`verdict_token_ids` (in place; about 1,100 of
        128k-202k rows). Scores are then renormalised over those tokens, and the model can only answer with
        them: see :mod:`~langchain_llamaguard.backends.lm_head`.

        Example:
            >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-3-1B", prune_lm_head=True)  # doctest: +SKIP
        """
        prune = getattr(self.backend, "prune_lm_head", None)
        if prune is None:
            raise GuardConfigurationError(
                f"{type(self.backend).__name__} has no LM head to prune: only an in-process model has one"
            )
        try:
            prune(self.verdict_token_ids())
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc

    # -- preparing prompts ----------------------------------------------------------------------------------
    def with_categories(self, categories: Mapping[str, str] | None) -> LlamaGuardEngine:
        """The same guard (same model, settings and batches) with another policy; ``None`` is the default list.

        Example:
            >>> fraud = guard.with_categories(default_categories(guard) | {"S15": "Fraud."})  # doctest: +SKIP
        """
        if categories == self.categories:
            return self
        try:
            policy = check_policy(categories)
            resolve_categories(self.excluded_categories, policy)
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc
        other = copy.copy(self)
        other.categories = policy
        return other

    def _excluded(self, excluded_categories: Iterable[str] | None) -> tuple[str, ...]:
        if excluded_categories is None:
            return self.excluded_categories
        return resolve_categories(excluded_categories, self.categories)

    def _encode_turns(self, turns: list[Turn], excluded: tuple[str, ...]) -> EncodedPrompt:
        rendered = render(turns, model=self.format.name, excluded_categories=excluded, categories=self.categories)
        images = [load_image(ref, self.image_loader) for ref in rendered.images]
        prompt = self.encoder.encode(rendered, images)
        prompt.turns = turns
        prompt.policy = self.categories
        return prompt

    def _fits(self, prompt: EncodedPrompt) -> bool:
        return len(prompt.input_ids) + 1 <= self.context_length  # +1: the lead token the check appends

    def encode(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> tuple[EncodedPrompt, tuple[str, ...]]:
        """Render and tokenize one conversation that fits the model's context (see :meth:`prepare`)."""
        prompts, excluded = self.prepare(conversation, role=role, excluded_categories=excluded_categories)
        if len(prompts) != 1:
            raise ValueError(f"the conversation is longer than the model's context ({self.context_length} tokens)")
        return prompts[0], excluded

    def prepare(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> tuple[list[EncodedPrompt], tuple[str, ...]]:
        """The prompt(s) for one conversation: one, or several when it is longer than the model's context.

        Nothing is truncated. A long conversation is split by turn first (the judged turn keeps the user turn
        it answers, older turns are left out as context), then the judged turn's text is cut into overlapping
        token windows, each checked in its own prompt; the conversation is unsafe if any window is.
        """
        excluded = self._excluded(excluded_categories)
        turns = to_turns(conversation, role=role)
        whole = self._encode_turns(turns, excluded)
        if self._fits(whole):
            return [whole], excluded
        return self._split(turns, excluded), excluded

    def _split(self, turns: list[Turn], excluded: tuple[str, ...], overlap: int = 64) -> list[EncodedPrompt]:
        last = turns[-1]
        context = [turns[-2]] if last.role == "assistant" else []
        by_turn = self._encode_turns(context + [last], excluded) if len(turns) > len(context) + 1 else None
        if by_turn is not None and self._fits(by_turn):
            return [by_turn]
        empty = Turn(last.role, [""], list(last.images))
        overhead = len(self._encode_turns(context + [empty], excluded).input_ids)
        if context and self.context_length - overhead < 256:  # the question alone is too long: judge without it
            context = [Turn("user", [])]
            overhead = len(self._encode_turns(context + [empty], excluded).input_ids)
        budget = self.context_length - overhead - 16  # room for the lead token and re-tokenization drift
        if budget < 64:
            raise ValueError(
                f"the fixed part of the prompt (with its images) takes {overhead} of the model's "
                f"{self.context_length} tokens; nothing is truncated: send fewer images per turn"
            )
        text = "\n".join(last.text_parts)
        enc = self.tokenizer(
            clean_text(text), add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True
        )
        offsets = enc["offset_mapping"]
        step = max(budget - overlap, 1)
        prompts: list[EncodedPrompt] = []
        for start in range(0, max(len(offsets) - overlap, 1), step):
            window = offsets[start : start + budget]
            piece = text[window[0][0] : window[-1][1]]
            prompt = self._encode_turns(context + [Turn(last.role, [piece], list(last.images))], excluded)
            if not self._fits(prompt):  # pragma: no cover - drift larger than the margin
                raise ValueError("a window of the conversation did not fit the model's context")
            prompts.append(prompt)
            if start + budget >= len(offsets):
                break
        return prompts

    # -- checking -------------------------------------------------------------------------------------------
    def check(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> Verdict:
        """Check one conversation; the last turn is judged.

        Example:
            >>> guard.check([HumanMessage("hi"), AIMessage("hello")]).role  # doctest: +SKIP
            'Agent'
        """
        return self.batch_check([conversation], role=role, excluded_categories=excluded_categories)[0]

    def batch_check(
        self,
        conversations: Sequence[ConversationInput],
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> list[Verdict]:
        """Check many conversations in one model batch (same verdicts as one by one).

        With ``on_error="unsafe"``, an unreadable image, a model error (out of memory included), an unreadable
        output or a timeout gives that conversation an unsafe verdict carrying the error; otherwise it raises.
        A conversation that is not a conversation (wrong type or shape) always raises.
        """
        if isinstance(conversations, (str, bytes)) or not isinstance(conversations, Sequence):
            raise TypeError("batch_check takes a list of conversations; use check() for one")
        if not conversations:
            return []
        if self.timeout is None:
            return self._batch_check(list(conversations), role, excluded_categories)
        future = _TIMEOUT_POOL.submit(self._batch_check, list(conversations), role, excluded_categories)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            err = GuardTimeoutError(f"the guard did not answer within {self.timeout} s")
            judged = "Agent" if role is not None and normalize_role(role) == "assistant" else "User"
            return [self._fail(err, score=1.0, role=judged) for _ in conversations]

    def _batch_check(
        self, conversations: list[ConversationInput], role: str | None, excluded_categories: Iterable[str] | None
    ) -> list[Verdict]:
        batch = self._prepare_many(conversations, role, excluded_categories)
        if batch.prompts:
            try:
                batch.verdicts = self._score(batch.prompts, batch.excluded)
            except (RuntimeError, MemoryError) as exc:  # model errors, CUDA out-of-memory included
                batch.verdicts = [self._fail(exc, score=1.0, role=p.role) for p in batch.prompts]
        return batch.merged(len(conversations))

    def _prepare_many(
        self, conversations: list[ConversationInput], role: str | None, excluded_categories: Iterable[str] | None
    ) -> _Batch:
        batch = _Batch()
        for i, conversation in enumerate(conversations):
            try:
                parts, excl = self.prepare(conversation, role=role, excluded_categories=excluded_categories)
            except ImageLoadError as exc:
                batch.failed[i] = self._fail(exc, score=1.0, role="User")
                continue
            batch.prompts += parts
            batch.excluded += [excl] * len(parts)
            batch.owner += [i] * len(parts)
        return batch

    async def acheck(self, conversation: ConversationInput, **kwargs: Any) -> Verdict:
        """Async :meth:`check`; the model runs in a worker thread, so the event loop is never blocked."""
        return (await self.abatch_check([conversation], **kwargs))[0]

    async def abatch_check(self, conversations: Sequence[ConversationInput], **kwargs: Any) -> list[Verdict]:
        """Async :meth:`batch_check`. With micro-batching, concurrent calls share model batches; a served model
        (:meth:`from_endpoint`) is awaited natively, with no thread per request."""
        native = isinstance(self.backend, AsyncGuardBackend)
        if (self._batcher is None and not native) or self.timeout is not None:
            return await asyncio.to_thread(self.batch_check, conversations, **kwargs)
        conversations = list(conversations)
        batch = await asyncio.to_thread(
            self._prepare_many, conversations, kwargs.get("role"), kwargs.get("excluded_categories")
        )
        if batch.prompts:
            try:
                if self._batcher is not None:
                    results = await asyncio.wrap_future(self._batcher.submit(batch.prompts, batch.excluded))
                else:
                    results = await self._ascore_encoded(batch.prompts, batch.excluded)
                batch.verdicts = [self._resolve(r) for r in results]
            except (RuntimeError, MemoryError) as exc:
                batch.verdicts = [self._fail(exc, score=1.0, role=p.role) for p in batch.prompts]
        return batch.merged(len(conversations))

    def category_distribution(
        self, conversations: Sequence[ConversationInput], codes: Sequence[str], *, role: str | None = None
    ) -> list[dict[str, float]]:
        """For each conversation, the model's distribution over ``codes`` as the first category of an unsafe
        answer: P(next token | prompt, ``unsafe\nS``), renormalized over ``codes`` (one forward per batch).

        Example:
            >>> guard.category_distribution(["How do I make a bomb?"], ["S1", "S9"])  # doctest: +SKIP
            [{'S1': 0.02, 'S9': 0.98}]
        """
        if not hasattr(self.backend, "next_logprobs"):
            raise GuardConfigurationError(f"{type(self.backend).__name__} gives no next-token distributions")
        numbers = []
        for code in codes:
            ids = self.encoder.text_ids(code)
            if len(ids) != 2 or ids[0] != self._s:
                raise GuardConfigurationError(f"{code!r} is not 'S' and one number token in this tokenizer: {ids}")
            numbers.append(ids[1])
        prompts = []
        for conversation in conversations:
            prompts.append(self.encode(conversation, role=role)[0])
        forced = [self.tokens.unsafe, self._newline, self._s]
        rows = self.backend.next_logprobs(prompts, self.tokens, forced, numbers)  # type: ignore[attr-defined]
        out = []
        for row in rows:
            top = max(row)
            weights = [math.exp(v - top) for v in row]
            total = sum(weights)
            out.append({code: w / total for code, w in zip(codes, weights, strict=True)})
        return out

    def check_encoded(self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]) -> list[Verdict]:
        """Score already-encoded prompts (one forward pass, then categories for the unsafe rows)."""
        return [self._resolve(r) for r in self._score_encoded(prompts, excluded)]

    async def acheck_encoded(
        self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]
    ) -> list[Verdict]:
        """Async :meth:`check_encoded` (native with a served model, else in a worker thread)."""
        if isinstance(self.backend, AsyncGuardBackend):
            results = await self._ascore_encoded(prompts, excluded)
        else:
            results = await asyncio.to_thread(self._score_encoded, prompts, excluded)
        return [self._resolve(r) for r in results]

    def _score(self, prompts: list[EncodedPrompt], excluded: list[tuple[str, ...]]) -> list[Verdict]:
        """Score through the micro-batcher when one is configured, else directly; per-item errors resolved."""
        if self._batcher is None:
            results = self._score_encoded(prompts, excluded)
        else:
            results = self._batcher.submit(prompts, excluded).result()
        return [self._resolve(r) for r in results]

    def _resolve(self, result: Verdict | tuple[GuardOutputError, float, str]) -> Verdict:
        if isinstance(result, Verdict):
            return result
        err, score, role = result
        return self._fail(err, score=score, role=role)

    def _score_encoded(self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]) -> list[_Scored]:
        """The hot path. Unreadable outputs come back as ``(error, score, role)``, never raised here, so one
        request's bad output cannot fail the others sharing its batch."""
        plan = self._score_plan(prompts, excluded)
        try:
            call = next(plan)
            while True:
                method, args, kw = call
                call = plan.send(getattr(self.backend, method)(*args, **kw))
        except StopIteration as done:
            return done.value

    async def _ascore_encoded(
        self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]
    ) -> list[_Scored]:
        """:meth:`_score_encoded`, awaiting an async backend's ``afirst_step`` / ``adecode``."""
        plan = self._score_plan(prompts, excluded)
        try:
            call = next(plan)
            while True:
                method, args, kw = call
                call = plan.send(await getattr(self.backend, "a" + method)(*args, **kw))
        except StopIteration as done:
            return done.value

    def _score_plan(
        self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]
    ) -> Generator[_BackendCall, Any, list[_Scored]]:
        """The scoring logic, once for the sync and async drivers: it yields the backend calls it needs
        (``first_step``, then ``decode`` for the unsafe rows) and is sent their results."""
        steps, state = yield ("first_step", (prompts, self.tokens), {})
        decided = [self._first_token(s) for s in steps]
        unsafe_rows = [i for i, (tok, _) in enumerate(decided) if tok == self.tokens.unsafe]
        decoded: dict[int, list[int]] = {}
        if unsafe_rows:
            outs = yield (
                "decode",
                (state, unsafe_rows, [[self.tokens.unsafe]] * len(unsafe_rows)),
                {"draft": self._draft, "stop": self.tokens.stop, "max_new_tokens": MAX_NEW_TOKENS},
            )
            decoded = dict(zip(unsafe_rows, outs, strict=True))
        results: list[_Scored] = []
        for i, (prompt, (tok, err)) in enumerate(zip(prompts, decided, strict=True)):
            score = steps[i].p_unsafe
            if err is not None:
                results.append((err, 1.0 if score is None else score, prompt.role))
                continue
            raw = "safe" if tok == self.tokens.safe else self.tokenizer.decode(decoded[i])
            try:
                parsed = parse_output(raw)
            except GuardOutputError as exc:
                results.append((exc, 1.0 if score is None else score, prompt.role))
                continue
            results.append(
                make_verdict(
                    parsed,
                    score=score,
                    role=prompt.role,  # type: ignore[arg-type]
                    model=self.format.name,
                    raw=raw,
                    excluded=excluded[i],
                    threshold=self.threshold,
                    listed=prompt.categories,
                    policy=prompt.policy,
                )
            )
        return results

    # -- helpers --------------------------------------------------------------------------------------------
    def _first_token(self, step: FirstStep) -> tuple[int | None, GuardOutputError | None]:
        """The verdict token to continue from, or the error that makes the output unreadable."""
        if step.lead_argmax != self.tokens.lead:
            text = self.tokenizer.decode([step.lead_argmax])
            if self.threshold is None:
                return None, GuardOutputError(text, "the model did not start its answer with a blank line")
        if self.threshold is not None and step.p_unsafe is not None:
            return (self.tokens.unsafe if step.p_unsafe >= self.threshold else self.tokens.safe), None
        if step.verdict_argmax in (self.tokens.safe, self.tokens.unsafe):
            return step.verdict_argmax, None
        text = "\n\n" + self.tokenizer.decode([step.verdict_argmax])
        return None, GuardOutputError(text, "first line is neither 'safe' nor 'unsafe'")

    def _draft(self, generated: list[int]) -> list[int]:
        last = generated[-1] if generated else None
        if last == self.tokens.unsafe:
            return [self._newline, self._s]
        if last == self._comma:
            return [self._s]
        return []

    def _fail(self, err: Exception, *, score: float, role: str) -> Verdict:
        if self.on_error == "raise":
            raise err
        return Verdict(
            safe=False,
            categories=[],
            category_names=[],
            score=min(max(score, 0.0), 1.0),
            role=role,  # type: ignore[arg-type]
            model=self.format.name,
            raw=getattr(err, "raw", ""),
            error=str(err),
        )
