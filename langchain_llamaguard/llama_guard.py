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
import inspect
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from . import options
from .backends.base import MAX_NEW_TOKENS, AsyncGuardBackend, FirstStep, GuardBackend, VerdictTokens
from .batching import WITHDRAWN, MicroBatcher
from .budget import IMAGE_TOKENS, BatchBudget, default_budget, plan_sub_batches
from .cancellation import abandon, in_thread, to_thread
from .conversation import ConversationInput, ImageLoader, Turn, normalize_role, to_turns
from .encoding import EncodedPrompt, PromptEncoder, clean_text, tokenizer_lock
from .errors import (
    GuardBatchError,
    GuardClosedError,
    GuardConfigurationError,
    GuardContextOverflowError,
    GuardInputError,
    GuardOutputError,
    GuardServerError,
    GuardTimeoutError,
    LlamaGuardError,
)
from .forking import renew_in_child
from .hidden_text import reveal
from .images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IMAGES,
    ImageLimits,
    ImageLoadError,
    check_image_count,
    load_image,
)
from .lifecycle import Closeable
from .pickling import recipe_of
from .prompt_format import active_categories, get_format, render
from .taxonomy import check_policy, default_categories, policy_name, resolve_categories
from .verdict import Verdict, make_verdict, merge_verdicts, parse_output

OnError = Literal["raise", "unsafe"]
OnOverflow = Literal["split", "unsafe", "raise"]
_BackendCall = tuple[str, tuple[Any, ...], dict[str, Any]]

_STOP_TOKENS = {
    "llama4": ("<|eot|>", "<|eom|>", "<|end_of_text|>"),
    "llama3": ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
}
_PAD_TOKENS = {"llama4": "<|finetune_right_pad|>", "llama3": "<|finetune_right_pad_id|>"}


T = TypeVar("T")


MICRO_BATCH_TOKENS = 8192
"""The most prompt tokens one micro-batch runs (at least one prompt): a conversation judged in many long windows
runs a few at a time, and the callers that arrive meanwhile are served between them."""


def _prompt_tokens(prompt: EncodedPrompt) -> int:
    return len(prompt.input_ids) + IMAGE_TOKENS * len(prompt.images)


_OWNERS_LOCK = threading.Lock()
renew_in_child(sys.modules[__name__], "_OWNERS_LOCK")  # held by another thread at a fork: renewed


def _owners(backend: Any) -> int:
    return getattr(backend, "_llamaguard_owners", 0)


def _adopt(backend: Any) -> None:
    """Count one more guard that uses ``backend`` (copies and views share their model)."""
    with _OWNERS_LOCK:
        try:
            backend._llamaguard_owners = _owners(backend) + 1
        except AttributeError:  # pragma: no cover - a backend that takes no attributes is never released
            pass


def _release(backend: Any) -> None:
    """One guard less uses ``backend``; the last one closes it (``close()``: weights, caches, connections)."""
    with _OWNERS_LOCK:
        left = _owners(backend) - 1
        try:
            backend._llamaguard_owners = left
        except AttributeError:  # pragma: no cover
            return
    if left <= 0:
        close = getattr(backend, "close", None)
        if close is not None:
            close()


def _check_threshold(threshold: float | None) -> float | None:
    return options.threshold(threshold)


def _checked_settings(
    timeout: Any, batch_window_ms: Any, max_batch_size: Any, max_batch_tokens: Any
) -> tuple[float | None, float | None, int | None, int | None]:
    """The engine's numeric settings, checked (:mod:`.options`): ``from_pretrained`` checks them before it loads
    any weights, the engine when it is built."""
    return (
        options.timeout(timeout),
        options.batch_window_ms(batch_window_ms),
        options.whole_number("max_batch_size", max_batch_size, minimum=1),
        options.whole_number("max_batch_tokens", max_batch_tokens, minimum=1, allow_none=True),
    )


def _check_on_error(on_error: str) -> OnError:
    if on_error not in ("raise", "unsafe"):
        raise GuardConfigurationError(f"on_error must be 'raise' or 'unsafe', got {on_error!r}")
    return on_error  # type: ignore[return-value]


@dataclass(frozen=True)
class _Failure:
    """A row that could not be judged, and whether it fails closed (``mode``): as ``on_error`` says, always
    (``"unsafe"``), or never (``"raise"``: not a conversation, or ``on_overflow="raise"``)."""

    error: BaseException
    score: float
    role: str
    mode: Literal["on_error", "unsafe", "raise"] = "on_error"


_Scored = Verdict | _Failure
"""A verdict, or why a row has none, for :meth:`LlamaGuardEngine._finish` to raise or fail closed."""


def _retry_rows(exc: Exception) -> bool:
    """Whether a sub-batch that failed with ``exc`` is worth retrying row by row: a model error (out of memory
    included) may be one row's; a server that cannot be reached or timed out, is busy or rate-limited (429, 503:
    already retried with backoff), refuses the credentials or does not serve the model fails every row alike."""
    status = getattr(exc, "status", 0)
    return not isinstance(exc, (GuardTimeoutError, GuardClosedError)) and status not in (None, *_SERVER_WIDE)


_SERVER_WIDE = (401, 403, 404, 429, 502, 503, 504)
"""HTTP statuses that say nothing about one row (a gateway's 502 and 504 included): a sub-batch that got one is not
retried row by row."""


def _alike(row_error: BaseException, batch_error: BaseException) -> bool:
    """Whether a row retried alone failed as its whole sub-batch did, from a server (the same HTTP status, a 500 or
    a 200 whose body is no answer): the server fails every row, and the other rows are not sent one by one."""
    status = getattr(row_error, "status", None)
    server_side = isinstance(status, int) and (status >= 500 or status == 200)  # a 4xx may be this row's own
    return server_side and status == getattr(batch_error, "status", None)


@dataclass
class _Batch:
    """Prompts of several conversations (a long one may have several), and which conversation each is for."""

    prompts: list[EncodedPrompt] = field(default_factory=list)
    excluded: list[tuple[str, ...]] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    failed: dict[int, _Failure] = field(default_factory=dict)
    results: list[_Scored] = field(default_factory=list)


class LlamaGuardEngine(Closeable):
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
            (never truncated), see :meth:`prepare`. Or a function that gives it on first use (a served model's
            context, read from the server: :meth:`from_endpoint`).
        timeout: seconds a check may take before it raises :class:`GuardTimeoutError` (or, with
            ``on_error="unsafe"``, fails closed).
        batch_window_ms: dynamic micro-batching: checks arriving from concurrent callers (threads, or
            ``acheck`` / ``ainvoke`` calls) within this many milliseconds run as one model batch of at most
            ``max_batch_size`` prompts. ``None`` (default) runs each call's batch on its own.
        categories: your own policy, ``{"S1": "Violent Crimes.", "S15": "Fraud."}``, replacing the model's default
            list (start from :func:`~langchain_llamaguard.taxonomy.default_categories`); keys are ``S<number>``
            codes, ``excluded_categories`` still apply, and verdicts name the codes with your texts.
        max_batch_tokens: the most padded tokens one forward pass may hold; a batch is split into
            length-sorted sub-batches under it. ``None`` (default) picks one for the device.
        on_overflow: a conversation longer than the context: ``"split"`` (default) judges the last turn (with
            the user turn it answers) in overlapping windows and says in the verdict how many earlier turns were
            left out; ``"unsafe"`` fails closed; ``"raise"`` raises
            :class:`~langchain_llamaguard.errors.GuardContextOverflowError`.
        max_segments: the most prompts one conversation may be split into; a longer one raises
            :class:`~langchain_llamaguard.errors.GuardContextOverflowError` (unsafe with ``on_error="unsafe"``).
        max_image_pixels, max_image_bytes, max_images: bounds checked before an image is decoded (pixels per
            image, encoded bytes per image, images per conversation); ``None`` lifts one. An image over a bound
            is an :class:`~langchain_llamaguard.errors.ImageLoadError` (unsafe with ``on_error="unsafe"``).
        prefix_cache_bytes: in-process models keep recent prompts' KV caches, keyed by token ids, in a store of
            at most this many bytes (shared by every guard over the same backend); a check of a growing
            conversation (agent steps, stream chunks, chat turns) computes only what follows the longest stored
            prefix of an earlier check of the same role and policy. ``None`` (the default of ``from_pretrained`` /
            ``from_model``): 1 GiB on a CPU (a tenth of the free memory if that is less), a tenth of the free
            memory on a GPU; ``0``: off, only the fixed policy prefix is reused. Here, ``None`` leaves the
            backend's store as it was built.
        reveal_hidden_text: ``True`` (default): the guard reads text hidden from a reader as the words it spells:
            Unicode tag characters (invisible ASCII, which some models read) decoded, invisible format characters
            (zero-width spaces and joiners, soft hyphens, direction controls) removed; see
            :mod:`~langchain_llamaguard.hidden_text`. Only the text Llama Guard reads changes. ``False``: the text
            exactly as given.

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
        context_length: int | Callable[[], int] = 8192,
        timeout: float | None = None,
        batch_window_ms: float | None = None,
        max_batch_size: int = 64,
        categories: Mapping[str, str] | None = None,
        max_batch_tokens: int | None = None,
        on_overflow: OnOverflow = "split",
        max_segments: int = 64,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
        max_images: int | None = DEFAULT_MAX_IMAGES,
        prefix_cache_bytes: int | None = None,
        reveal_hidden_text: bool = True,
    ) -> None:
        options.flag("reveal_hidden_text", reveal_hidden_text)
        self.backend = backend
        # -- token-prefix KV reuse (issue 22): the store lives on the (shared) backend, not on the guard ----------
        if prefix_cache_bytes is not None:
            if not hasattr(backend, "set_prefix_cache_bytes"):
                if prefix_cache_bytes:
                    raise GuardConfigurationError(
                        "prefix_cache_bytes applies to in-process (transformers) models only; a served model "
                        "reuses prefixes on its server (vLLM: --enable-prefix-caching)"
                    )
            else:
                backend.set_prefix_cache_bytes(prefix_cache_bytes)
        # -- end token-prefix KV reuse ----------------------------------------------------------------------------
        self._recipe: tuple[str, tuple[Any, ...], dict[str, Any]] | None = None
        """How this guard was made (``from_pretrained`` / ``from_endpoint`` and their arguments), so a pickled
        guard can make itself again; ``None`` for a model passed in (``from_model``)."""
        self.max_batch_tokens = max_batch_tokens
        if on_overflow not in ("split", "unsafe", "raise"):
            raise GuardConfigurationError(f"on_overflow must be 'split', 'unsafe' or 'raise', got {on_overflow!r}")
        self.on_overflow = on_overflow
        if not isinstance(max_segments, int) or max_segments < 1:
            raise GuardConfigurationError(f"max_segments must be a positive int, got {max_segments!r}")
        self.max_segments = max_segments
        self.reveal_hidden_text = reveal_hidden_text
        self.image_limits = ImageLimits(max_pixels=max_image_pixels, max_bytes=max_image_bytes, max_images=max_images)
        self.tokenizer = tokenizer
        self.format = get_format(model_format)
        try:
            self.categories = check_policy(categories)
            self.excluded_categories = resolve_categories(excluded_categories, self.categories)
            active_categories(self.format, self.excluded_categories, categories=self.categories)  # not all of them
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc
        self.threshold = _check_threshold(threshold)
        self.on_error = _check_on_error(on_error)
        self.image_loader = image_loader
        timeout, batch_window_ms, max_batch_size, max_batch_tokens = _checked_settings(
            timeout, batch_window_ms, max_batch_size, max_batch_tokens
        )
        if not callable(context_length):  # a served model's is read from its server on first use
            context_length = options.whole_number("context_length", context_length, minimum=1)  # type: ignore[assignment]
        self.context_length = context_length
        self.timeout = timeout
        self.batch_window_ms = batch_window_ms
        self.max_batch_size = max_batch_size  # type: ignore[assignment]
        self._batcher: MicroBatcher | None = None
        self._start_batcher()
        self._default_budget: BatchBudget | None = None
        self._closed = False
        self._view_of: LlamaGuardEngine | None = None
        _adopt(backend)
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

    # A served model's context is read from the server on first use (issue 21): ``context_length`` is then a
    # function (backends/endpoint.py's ServedContext: cached, thread-safe) that raises GuardServerError while the
    # server is down; ``_prepare_many`` turns that into the rows' failure.
    @property
    def context_length(self) -> int:
        """The longest prompt the model reads, in tokens (a served model's: asked of the server on first use)."""
        got = self._context_length
        return got() if callable(got) else got

    @context_length.setter
    def context_length(self, value: int | Callable[[], int]) -> None:
        self._context_length = value

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
        max_batch_tokens: int | None = None,
        on_overflow: OnOverflow = "split",
        max_segments: int = 64,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
        max_images: int | None = DEFAULT_MAX_IMAGES,
        prefix_cache_bytes: int | None = None,
        reveal_hidden_text: bool = True,
        **hf_kwargs: Any,
    ) -> LlamaGuardEngine:
        """Load Llama Guard 4 (``Llama4ForConditionalGeneration`` + processor) or Llama Guard 3 8B / 1B.

        The architecture is read from the checkpoint's config, not its name. On a GPU ``quantization`` goes
        through transformers' ``BitsAndBytesConfig`` (needs the ``quant`` extra); ``"int8"`` on a CPU is torch's
        dynamic int8, the fastest accurate CPU path measured (``guard.backend.quantization`` says which ran).
        ``prune_lm_head=True`` keeps only the output rows a verdict can contain (:meth:`prune_lm_head`).
        ``device_map``, ``dtype`` (or its old name ``torch_dtype``) and any other keyword go to
        ``from_pretrained`` untouched; the default dtype is bf16 on a GPU and float32 on a CPU.
        ``prefix_cache_bytes`` bounds the store of recent checks' KV caches that lets a growing conversation's next
        check compute only its new tokens (``None``, the default: 1 GiB on a CPU, a tenth of the free memory on a
        GPU; ``0``: off).

        Example:
            >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-3-1B", quantization="int8")  # doctest: +SKIP
            >>> guard.backend.quantization  # doctest: +SKIP
            'int8: torch dynamic int8 (fbgemm/x86 kernels): ...'
        """
        recipe = recipe_of(locals(), "model_id_or_path", "hf_kwargs")
        from .backends.loading import check_hf_kwargs, load_errors, load_guard_model, one_dtype
        from .backends.prefix_store import check_prefix_cache_bytes
        from .prompt_guard import _INIT_KEYS, PromptGuardEngine

        prompt_guard = {*inspect.signature(PromptGuardEngine.from_pretrained).parameters, *_INIT_KEYS}
        own = inspect.signature(cls.from_pretrained).parameters
        check_hf_kwargs(hf_kwargs, own, sibling=("PromptGuard", prompt_guard))  # a misspelt or misplaced option
        threshold = _check_threshold(threshold)
        on_error = _check_on_error(on_error)
        check_prefix_cache_bytes(prefix_cache_bytes)  # before minutes of loading weights
        options.flag("reveal_hidden_text", reveal_hidden_text)
        _checked_settings(timeout, batch_window_ms, max_batch_size, max_batch_tokens)
        options.whole_number("context_length", context_length, minimum=1, allow_none=True)
        ImageLimits(max_pixels=max_image_pixels, max_bytes=max_image_bytes, max_images=max_images)  # checks them
        try:
            resolve_categories(excluded_categories, check_policy(categories))
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc
        with load_errors(str(model_id_or_path)):
            loaded = load_guard_model(
                model_id_or_path,
                quantization=quantization,
                device_map=device_map,
                dtype=one_dtype(dtype, torch_dtype),
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
            max_batch_tokens=max_batch_tokens,
            on_overflow=on_overflow,
            max_segments=max_segments,
            max_image_pixels=max_image_pixels,
            max_image_bytes=max_image_bytes,
            max_images=max_images,
            prefix_cache_bytes=prefix_cache_bytes,
            reveal_hidden_text=reveal_hidden_text,
        )
        guard.backend.quantization = loaded.quantization  # type: ignore[attr-defined]
        if prune_lm_head:
            guard.prune_lm_head()
        guard._recipe = ("from_pretrained", *recipe)
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
        on_overflow: OnOverflow = "split",
        max_segments: int = 64,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
        max_images: int | None = DEFAULT_MAX_IMAGES,
        reveal_hidden_text: bool = True,
    ) -> LlamaGuardEngine:
        """A Llama Guard served by vLLM (or any OpenAI-compatible server): same verdicts and scores as in-process.

        Prompts are rendered and tokenized here (``tokenizer``: a checkpoint id, a path or a tokenizer object;
        default ``model``) and sent as token ids to ``/v1/completions``; the score is P(``unsafe``) read with
        ``logprob_token_ids`` (``logprobs=k`` asks the top-k instead, for servers without it). Images (Llama
        Guard 4) go to ``/v1/chat/completions``. ``mode="chat"`` is for hosted providers that offer chat only:
        the verdict is read from the text, ``score`` is ``None``, and ``threshold`` is refused.

        Nothing is sent to the server here: a guard can be built before its server is up. The served context
        (``max_model_len``) is read on the first check unless ``context_length`` is given; :meth:`ready` /
        :meth:`aready` wait for the server (start-up probes). Server errors (unreachable, a model it does not
        serve, HTTP errors, timeouts, malformed answers) raise :class:`~langchain_llamaguard.errors.GuardServerError`;
        with ``on_error="unsafe"`` they give unsafe verdicts carrying the error. Nothing failed is remembered: once
        the server answers again, the same guard works. 429 and 503 answers are retried (``max_retries``) within
        ``timeout``.

        Example:
            >>> guard = LlamaGuard.from_endpoint("http://127.0.0.1:8000/v1",
            ...                                  model="meta-llama/Llama-Guard-4-12B")  # doctest: +SKIP
            >>> guard.check("How do I make a pipe bomb?").categories                   # doctest: +SKIP
            ['S9']
        """
        recipe = recipe_of(locals(), "base_url")
        from .backends.endpoint import connect

        threshold = _check_threshold(threshold)
        on_error = _check_on_error(on_error)
        options.flag("reveal_hidden_text", reveal_hidden_text)
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
        guard = cls(
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
            on_overflow=on_overflow,
            max_segments=max_segments,
            max_image_pixels=max_image_pixels,
            max_image_bytes=max_image_bytes,
            max_images=max_images,
            reveal_hidden_text=reveal_hidden_text,
        )
        guard._recipe = ("from_endpoint", *recipe)
        return guard

    @classmethod
    def from_model(
        cls,
        model: Any,
        processor_or_tokenizer: Any,
        *,
        model_format: str | None = None,
        context_length: int | None = None,
        prefix_cache_bytes: int | None = None,
        **kwargs: Any,
    ) -> LlamaGuardEngine:
        """Wrap an already-loaded transformers model and its processor (Llama Guard 4) or tokenizer (3).

        ``prefix_cache_bytes`` bounds the store of recent prompts' KV caches keyed by token ids, so a check of a
        growing conversation computes only what follows the longest stored prefix (``None``, the default: 1 GiB
        on a CPU or a tenth of the free memory if less, a tenth of the free memory on a GPU; ``0``: off).

        Example:
            >>> guard = LlamaGuard.from_model(model, processor)  # doctest: +SKIP
        """
        from .backends.loading import LLAMA_GUARD_4_CONTEXT, check_format, check_loaded, detect_format, in_eval_mode
        from .backends.transformers import TransformersBackend

        if not hasattr(model, "config") or not callable(model):
            raise GuardConfigurationError(
                f"from_model takes a loaded transformers model, got {type(model).__name__}; for a checkpoint folder "
                "or hub id use LlamaGuard.from_pretrained(...)"
            )
        if processor_or_tokenizer is None or isinstance(processor_or_tokenizer, (str, os.PathLike)):
            raise GuardConfigurationError(
                f"from_model takes the model's loaded tokenizer (or Llama Guard 4's processor), got "
                f"{processor_or_tokenizer!r}; load it with AutoTokenizer / AutoProcessor.from_pretrained(...)"
            )
        if not callable(getattr(model, "get_output_embeddings", None)) or model.get_output_embeddings() is None:
            raise GuardConfigurationError(
                f"from_model takes a language model with its LM head (Llama4ForConditionalGeneration, "
                f"LlamaForCausalLM), got a {type(model).__name__} without one: its verdict tokens could not be read"
            )
        check_loaded(model, given=True)  # weights on the meta device would fail at the first check
        tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
        processor = processor_or_tokenizer if tokenizer is not processor_or_tokenizer else None
        if model_format is not None:
            check_format(model_format, model.config)
        fmt = model_format or detect_format(model.config, getattr(tokenizer, "chat_template", None))
        model = in_eval_mode(model)
        family = "llama4" if fmt == "llama-guard-4" else "llama3"
        if context_length is None:
            context_length = (
                LLAMA_GUARD_4_CONTEXT
                if family == "llama4"
                else int(getattr(model.config, "max_position_embeddings", 8192))
            )
        if family == "llama4":  # the checkpoint's null chunk set, or a set one respected, as from_pretrained does
            from .backends.loading import llama4_context

            context_length = llama4_context(getattr(model.config, "text_config", model.config), context_length)
        pad_id = tokenizer.convert_tokens_to_ids(_PAD_TOKENS[family])
        if not isinstance(pad_id, int) or pad_id == getattr(tokenizer, "unk_token_id", None):
            raise GuardConfigurationError(
                f"the tokenizer has no {_PAD_TOKENS[family]} token, which the guard pads batches with (every "
                f"{fmt} tokenizer has it): use the checkpoint's own tokenizer"
            )
        backend = TransformersBackend(
            model,
            tokenizer,
            processor=processor,
            model_name=fmt,
            pad_id=pad_id,
            prefix_cache_bytes=prefix_cache_bytes,
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
        self._check_open()
        prune = getattr(self.backend, "prune_lm_head", None)
        if prune is None:
            raise GuardConfigurationError(
                f"{type(self.backend).__name__} has no LM head to prune: only an in-process model has one"
            )
        try:
            prune(self.verdict_token_ids())
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc

    # -- lifecycle ------------------------------------------------------------------------------------------
    def _start_batcher(self) -> None:
        """A micro-batcher of this guard's own, when ``batch_window_ms`` is set (also after a copy or unpickling)."""
        self._batcher = None
        if self.batch_window_ms is not None:
            self._batcher = MicroBatcher(
                self._score_encoded,
                window_s=self.batch_window_ms / 1000,
                max_batch=self.max_batch_size,
                cost=_prompt_tokens,
                max_cost=MICRO_BATCH_TOKENS,
            )

    def _live_backend(self) -> GuardBackend:
        backend = self.backend
        if backend is None:
            raise GuardClosedError(f"this {type(self).__name__} was closed while a check was running")
        return backend

    def close(self) -> None:
        """Stop the micro-batch worker and let go of the model: its weights, prefix caches and (served) connections
        are released once no other guard shares them (a deep copy or :meth:`with_categories` view does). Checks
        after ``close()`` raise :class:`~langchain_llamaguard.errors.GuardClosedError`. Idempotent.

        Example:
            >>> with LlamaGuard.from_pretrained("meta-llama/Llama-Guard-3-1B") as guard:  # doctest: +SKIP
            ...     guard.check("hello").safe
            True
        """
        if self._closed:
            return
        self._closed = True
        if self._batcher is not None and self._view_of is None:  # a view leaves the shared batcher to its guard
            self._batcher.close()
        backend, self.backend = self.backend, None  # type: ignore[assignment]
        if backend is not None:
            _release(backend)

    async def aclose(self) -> None:
        """Async :meth:`close`: a served guard's connections of this event loop are closed on it."""
        if self._closed:
            return
        aclose = getattr(self.backend, "aclose", None)
        if aclose is not None and _owners(self.backend) <= 1:  # the last guard on this backend
            await aclose()
        await asyncio.to_thread(self.close)

    # -- preparing prompts ----------------------------------------------------------------------------------
    def with_categories(
        self, categories: Mapping[str, str] | None, *, excluded_categories: Iterable[str] | None = None
    ) -> LlamaGuardEngine:
        """The same guard (same model, settings and batches) with another policy; ``None`` is the default list.
        ``excluded_categories``: the view's own (codes or texts of the new policy); by default the guard's, where
        the new policy has their codes with the same texts. A code the new policy gives another text (the guard
        excludes ``S6``, Specialized Advice, and the policy's ``S6`` is another category) is refused: excluding it
        would switch off the policy's category, keeping it would drop the guard's exclusion; pass
        ``excluded_categories`` (``()`` for none) to say which.

        Example:
            >>> fraud = guard.with_categories(default_categories(guard) | {"S15": "Fraud."})  # doctest: +SKIP
        """
        if categories == self.categories and excluded_categories is None:
            return self
        try:
            policy = check_policy(categories)
            # The guard's own exclusions carry over where the new policy has their codes; one it lacks excludes
            # nothing there (an exclusion the caller names for this policy is checked where it is named).
            if excluded_categories is not None:
                inherited = resolve_categories(excluded_categories, policy)
            else:
                inherited = self._inherited_exclusions(policy)
            active_categories(self.format, inherited, categories=policy)  # not every category of it
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc
        other = copy.copy(self)  # a view: this guard's model and micro-batcher
        other.categories = policy
        other.excluded_categories = inherited
        return other

    def _inherited_exclusions(self, policy: dict[str, str] | None) -> tuple[str, ...]:
        """This guard's exclusions that mean the same category in ``policy`` (``None``: the default list)."""
        mine = self.categories if self.categories is not None else default_categories(self.format.name)
        theirs = policy if policy is not None else default_categories(self.format.name)

        def same(a: str | None, b: str | None) -> bool:  # "Specialized Advice." and "specialized advice" alike
            return a is not None and b is not None and policy_name(a).casefold() == policy_name(b).casefold()

        moved = [c for c in self.excluded_categories if c in theirs and not same(theirs[c], mine.get(c))]
        if moved:
            said = ", ".join(f"{c} ({mine.get(c, '?')!r} here, {theirs[c]!r} there)" for c in moved)
            raise GuardConfigurationError(
                f"the guard excludes {', '.join(moved)}, and the new policy gives that code another category: {said}; "
                "excluding it would switch off the policy's category, keeping it would drop the guard's exclusion: "
                "pass excluded_categories= with the policy (codes or texts of it; [] for none)"
            )
        return tuple(c for c in self.excluded_categories if c in theirs)

    def _excluded(self, excluded_categories: Iterable[str] | None) -> tuple[str, ...]:
        if excluded_categories is None:
            return self.excluded_categories
        excluded = resolve_categories(excluded_categories, self.categories)
        active_categories(self.format, excluded, categories=self.categories)  # a check that could flag nothing
        return excluded

    def _encode_turns(self, turns: list[Turn], excluded: tuple[str, ...]) -> EncodedPrompt:
        rendered = render(turns, model=self.format.name, excluded_categories=excluded, categories=self.categories)
        check_image_count(len(rendered.images), self.image_limits)  # before any is loaded
        images = [load_image(ref, self.image_loader, self.image_limits) for ref in rendered.images]
        prompt = self.encoder.encode(rendered, images)
        prompt.turns = turns
        prompt.policy = self.categories
        return prompt

    def _length(self, prompt: EncodedPrompt) -> int:
        """The tokens the model reads for ``prompt``: a local processor expands each image to its tiles (about
        150 to 2,500 tokens) where the prompt holds one placeholder."""
        measure = getattr(self.backend, "expanded_length", None)
        return measure(prompt) if prompt.images and measure is not None else len(prompt.input_ids)

    def _fits(self, prompt: EncodedPrompt) -> bool:
        return self._length(prompt) + 1 <= self.context_length  # +1: the lead token the check appends

    def encode(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> tuple[EncodedPrompt, tuple[str, ...]]:
        """Render and tokenize one conversation that fits the model's context whole (see :meth:`prepare`).

        Raises:
            GuardContextOverflowError: when it does not fit (:meth:`prepare` gives the parts it is judged in).
        """
        prompts, excluded = self.prepare(conversation, role=role, excluded_categories=excluded_categories)
        if len(prompts) != 1 or prompts[0].omitted_turns:
            raise GuardContextOverflowError(
                f"the conversation does not fit the model's context of {self.context_length} tokens whole (it is "
                f"judged in {len(prompts)} prompt(s), {prompts[0].omitted_turns} earlier turn(s) left out); encode() "
                "gives the one prompt of a conversation that fits, prepare() the parts a longer one is judged in"
            )
        return prompts[0], excluded

    def prepare(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> tuple[list[EncodedPrompt], tuple[str, ...]]:
        """The prompt(s) for one conversation: one, or several when it is longer than the model's context.

        A conversation that fits is one prompt. One that does not is handled as ``on_overflow`` says:
        ``"split"`` judges the last turn with the user turn it answers (or alone, when that question is too
        long too), leaving earlier turns out (counted in each prompt's ``omitted_turns``, and in the verdict's),
        and cuts the judged turn's text into overlapping token windows, each checked in its own prompt (the
        conversation is unsafe if any window is); ``"unsafe"`` and ``"raise"`` refuse it. Its text is never
        truncated, and a conversation of any size costs bounded work: it is measured from its last turn back,
        only as far as the context reaches.

        Raises:
            GuardContextOverflowError: it does not fit and ``on_overflow`` is ``"unsafe"`` or ``"raise"``; or the
                judged turn needs more than ``max_segments`` windows, or its fixed part (with its images) leaves
                no room for text.
        """
        excluded = self._excluded(excluded_categories)
        turns = to_turns(conversation, role=role)
        if self.reveal_hidden_text:
            turns = [Turn(t.role, [reveal(p) for p in t.text_parts], t.images) for t in turns]
        at_least = self._min_body_tokens(turns, self.context_length - 1)  # -1: the lead token the check appends
        if at_least <= self.context_length - 1:
            whole = self._encode_turns(turns, excluded)
            if self._fits(whole):
                return [whole], excluded  # the hot path: one render, one tokenization
            size = f"{self._length(whole):,} tokens" + (
                " with its images expanded to their tiles" if whole.images else ""
            )
        else:  # found without tokenizing it all
            size = f"at least {at_least:,} tokens, {sum(len(p) for t in turns for p in t.text_parts):,} characters"
        if self.on_overflow != "split":
            raise GuardContextOverflowError(
                f"the conversation ({len(turns):,} turn{'s' if len(turns) > 1 else ''}, {size}) does not fit the "
                f"model's context of {self.context_length:,} tokens, and on_overflow={self.on_overflow!r} judges a "
                "conversation whole or not at all; on_overflow='split' judges its last turn (in windows when "
                "needed), leaving earlier turns out"
            )
        return self._split(turns, excluded), excluded

    def _split(self, turns: list[Turn], excluded: tuple[str, ...], overlap: int = 64) -> list[EncodedPrompt]:
        """The judged turn (with the user turn it answers while that fits) in as few windows as fit the context."""
        last = turns[-1]
        context = [turns[-2]] if last.role == "assistant" else []
        omitted = sum(1 for t in turns[: len(turns) - len(context) - 1] if t.text_parts or t.images)
        limit = self.context_length - 1  # the lead token the check appends
        if len(turns) > len(context) + 1 and self._min_body_tokens(context + [last], limit) <= limit:
            by_turn = self._encode_turns(context + [last], excluded)
            if self._fits(by_turn):
                by_turn.omitted_turns = omitted
                return [by_turn]
        empty = Turn(last.role, [""], list(last.images))
        room = self.context_length - 256  # a question longer than this leaves too little room for the answer
        overhead = 0
        if not context or self._min_body_tokens(context + [empty], room) <= room:
            overhead = self._length(self._encode_turns(context + [empty], excluded))
        if context and (overhead == 0 or overhead > room):  # the question alone is too long: judge without it
            omitted += 1 if context[0].text_parts or context[0].images else 0
            context = [Turn("user", [])]
            overhead = self._length(self._encode_turns(context + [empty], excluded))
        budget = self.context_length - overhead - 16  # room for the lead token and re-tokenization drift
        if budget < 64:
            if images := sum(len(t.images) for t in [*context, last]):
                raise GuardContextOverflowError(
                    f"the prompt with its {images} image(s) expanded to their tiles takes {overhead:,} of "
                    f"the model's {self.context_length:,} tokens (a large image is up to about 2,500), too little room "
                    "left to judge the turn's text; nothing is truncated and images are never split: send fewer or "
                    "smaller images per turn"
                )
            raise GuardContextOverflowError(
                f"the fixed part of the prompt (the template and its categories) takes {overhead} of the model's "
                f"{self.context_length} tokens, too little room to judge this turn in windows; nothing is truncated: "
                "raise context_length= (Llama Guard 4's is also capped by its config's attention_chunk_size), or list "
                "fewer categories"
            )
        text = "\n".join(last.text_parts)
        step = max(budget - overlap, 1)
        most = budget + (self.max_segments - 1) * step  # the tokens max_segments windows hold
        offsets, at_least, complete = self._token_spans(text, most)
        if not complete or len(offsets) > most:
            tokens = f"{len(offsets):,} tokens" if complete else f"at least {at_least:,} tokens"
            raise GuardContextOverflowError(
                f"the judged turn ({len(text):,} characters, {tokens}) needs more than "
                f"max_segments={self.max_segments} windows of {budget:,} tokens; it is not judged in part: raise "
                "max_segments, or send shorter text"
            )
        prompts: list[EncodedPrompt] = []
        for start in range(0, max(len(offsets) - overlap, 1), step):
            window = offsets[start : start + budget]
            piece = text[window[0][0] : window[-1][1]] if window else ""
            prompt = self._encode_turns(context + [Turn(last.role, [piece], list(last.images))], excluded)
            if not self._fits(prompt):  # pragma: no cover - drift larger than the margin
                raise GuardContextOverflowError("a window of the conversation did not fit the model's context")
            prompt.omitted_turns = omitted
            prompts.append(prompt)
            if start + budget >= len(offsets):
                break
        return prompts

    def _min_body_tokens(self, turns: list[Turn], limit: int) -> int:
        """A lower bound on the tokens of ``turns`` as rendered (the prompt's fixed parts not counted), measured
        from the last turn back only until it passes ``limit``: a conversation of any size costs about ``limit``
        tokens of tokenization at most. Exact enough to keep a conversation that fits on the one-encode path:
        every turn's label (``User:``, ``Agent:``) is a token of its own, and a turn starts a new pre-token
        (after the newline that ends the previous one), so per-turn counts add up; one token per turn is
        still allowed for, in case they do not."""
        per_part = self.format.turn_style == "per_part"  # Llama Guard 3 1B labels each text part
        labels = sum(len(t.text_parts) if per_part else 1 for t in turns)
        if labels > limit or sum(len(p) for t in turns for p in t.text_parts) <= 2 * limit:
            return labels  # too many turns to fit; or short enough to encode whole (the usual case)
        from .prompt_format import render_turns

        counted = 0
        for turn in reversed(turns):
            for seg in render_turns(self.format, [turn]):
                counted += 1 if seg.special else self._token_spans(seg.text, limit - counted, offsets=False)[1]
            counted -= 1  # the turn's boundary with the next, allowed for
            if counted > limit:
                return counted
        return max(counted, labels)

    def _token_spans(self, text: str, limit: int, *, offsets: bool = True) -> tuple[list[tuple[int, int]], int, bool]:
        """The character spans of ``text``'s tokens (with ``offsets``), a lower bound on their number, and whether
        the text was read to its end: it is tokenized a chunk at a time (cut before a word, where the
        tokenizer's pre-tokens always break, when there is one), stopping once more than ``limit`` were found."""
        chunk = 1 << 15
        spans: list[tuple[int, int]] = []
        count = loose = start = 0  # loose: cuts inside a word, each of which may add a token or two
        while start < len(text) and count - 2 * loose <= limit:
            end = min(start + chunk, len(text))
            if end < len(text):
                cut = self._word_start(text, start + chunk // 2, end)
                loose += cut is None
                end = end if cut is None else cut
            with tokenizer_lock(self.tokenizer):
                enc = self.tokenizer(
                    clean_text(text[start:end]),
                    add_special_tokens=False,
                    split_special_tokens=True,
                    return_offsets_mapping=offsets,
                )
            count += len(enc["input_ids"])
            if offsets:
                spans += [(a + start, b + start) for a, b in enc["offset_mapping"]]
            start = end
        return spans, count - 2 * loose, start >= len(text)

    @staticmethod
    def _word_start(text: str, lo: int, hi: int) -> int | None:
        """The last position in ``[lo, hi)`` of a space that starts a word after a non-space character: the Llama 3
        and 4 pre-tokenizers always break there, so the tokens on either side are those of the whole text."""
        at = text.rfind(" ", lo, hi)
        while at > lo:
            if not text[at - 1].isspace() and text[at + 1 : at + 2].isalpha():
                return at
            at = text.rfind(" ", lo, at)
        return None

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
        try:
            return self.batch_check([conversation], role=role, excluded_categories=excluded_categories)[0]
        except GuardBatchError as exc:  # one row: its own error
            raise exc.errors[0] from None

    def batch_check(
        self,
        conversations: Sequence[ConversationInput],
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> list[Verdict]:
        """Check many conversations (same verdicts as one by one), in input order.

        The prompts run in length-sorted sub-batches under the guard's memory budget (``max_batch_tokens``). A
        row that cannot be judged (an unreadable image, a model error such as out of memory, an unreadable
        output) never fails its neighbours: a sub-batch that fails is retried row by row. With
        ``on_error="unsafe"`` such a row gets an unsafe verdict carrying the error; otherwise one
        :class:`~langchain_llamaguard.errors.GuardBatchError` names every failing row and carries the other rows'
        verdicts. A row that is not a conversation (wrong type or shape) always fails that way. A timeout fails
        the whole call (:class:`~langchain_llamaguard.errors.GuardTimeoutError`, or unsafe verdicts).

        Example:
            >>> [v.safe for v in guard.batch_check(["hi", "How do I make a bomb?"])]  # doctest: +SKIP
            [True, False]
        """
        conversations = self._conversations(conversations)
        if not conversations:
            return []
        if self._batcher is not None and self.timeout is not None:  # waits on the batch itself, and withdraws it
            return self._batch_check(conversations, role, excluded_categories, time.monotonic() + self.timeout)
        return self._within_timeout(
            lambda: self._batch_check(conversations, role, excluded_categories),
            lambda: self._timed_out(len(conversations), role),
        )

    def _within_timeout(self, work: Callable[[], T], timed_out: Callable[[], T]) -> T:
        """``work()``, or ``timed_out()`` once the guard's ``timeout`` has passed (the work, on a thread of its own,
        is dropped if it has not started)."""
        if self.timeout is None:
            return work()
        future = in_thread(work)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            abandon(future)  # not started yet: it never runs; waiting for the model: it never gets it
            return timed_out()

    def _conversations(self, conversations: Sequence[ConversationInput]) -> list[ConversationInput]:
        self._check_open()
        if isinstance(conversations, (str, bytes)) or not isinstance(conversations, Sequence):
            raise GuardInputError("batch_check takes a list of conversations; use check() for one")
        return list(conversations)

    def _timed_out(self, n: int, role: str | None) -> list[Verdict]:
        err = GuardTimeoutError(f"the guard did not answer within {self.timeout} s")
        judged = "Agent" if role is not None and normalize_role(role) == "assistant" else "User"
        return [self._fail(err, score=1.0, role=judged) for _ in range(n)]

    def _batch_check(
        self,
        conversations: list[ConversationInput],
        role: str | None,
        excluded_categories: Iterable[str] | None,
        deadline: float | None = None,
    ) -> list[Verdict]:
        if deadline is None:
            batch = self._prepare_many(conversations, role, excluded_categories)
        else:  # preparing (images from a user's loader, a served model's context) counts against the timeout too
            prepared = in_thread(self._prepare_many, conversations, role, excluded_categories)
            done, _ = concurrent.futures.wait([prepared], timeout=max(deadline - time.monotonic(), 0.0))
            if not done:
                abandon(prepared)
                return self._timed_out(len(conversations), role)
            batch = prepared.result()
        if batch.prompts:
            if self._batcher is not None:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                try:
                    results = self._batcher.wait(self._batcher.submit(batch.prompts, batch.excluded), left)
                except GuardClosedError as exc:
                    if not self._closed:  # a view whose guard closed its batcher: this one is open, scored alone
                        results = self._score_encoded(batch.prompts, batch.excluded)
                    else:  # closed under the check: each row fails as without a batcher
                        results = [_Failure(exc, 1.0, p.role) for p in batch.prompts]
                if results is WITHDRAWN:  # timed out: its rows are withdrawn, never scored for a caller gone
                    return self._timed_out(len(conversations), role)
                batch.results = results
            else:
                batch.results = self._score_encoded(batch.prompts, batch.excluded)
        return self._finish(batch, len(conversations))

    def _prepare_many(
        self,
        conversations: list[ConversationInput],
        role: str | None,
        excluded_categories: Iterable[str] | None,
        unserved: GuardServerError | None = None,
    ) -> _Batch:
        # The call's own arguments, once: a bad category or role fails the call (not each row), and an iterator of
        # categories is read once, not used up by the first row.
        excluded_categories = self._excluded(excluded_categories)
        normalize_role(role)
        batch = _Batch()
        try:  # a served guard's context, asked of the server on first use (see ``context_length``)
            if unserved is not None:  # already asked, on the event loop (``_aserved_context``)
                raise unserved
            self.context_length  # noqa: B018
        except GuardServerError as exc:  # the server is down: every row fails as it would on the request
            batch.failed = {i: _Failure(exc, 1.0, "User") for i in range(len(conversations))}
            return batch
        for i, conversation in enumerate(conversations):
            try:
                parts, excl = self.prepare(conversation, role=role, excluded_categories=excluded_categories)
            # not a conversation: always raised (RecursionError: a row nested deeper than Python reads, which must
            # not fail its neighbours)
            except (LlamaGuardError, ValueError, TypeError, KeyError, RecursionError) as exc:
                batch.failed[i] = _Failure(exc, 1.0, "User", mode=self._unprepared_mode(exc))
                continue
            batch.prompts += parts
            batch.excluded += [excl] * len(parts)
            batch.owner += [i] * len(parts)
        return batch

    def _unprepared_mode(self, exc: BaseException) -> Literal["on_error", "unsafe", "raise"]:
        """How a conversation :meth:`prepare` failed on fails: unreadable content (an image) as ``on_error`` says,
        one too long as ``on_overflow`` says, anything else (not a conversation) raised."""
        if isinstance(exc, ImageLoadError):
            return "on_error"
        if isinstance(exc, GuardContextOverflowError):
            return {"split": "on_error", "unsafe": "unsafe", "raise": "raise"}[self.on_overflow]  # type: ignore[return-value]
        return "raise"

    def failed_closed(self, exc: BaseException) -> Verdict | None:
        """The unsafe verdict a conversation that :meth:`prepare` failed on gets under this guard's settings
        (``on_error="unsafe"``, ``on_overflow="unsafe"``), as :meth:`check` gives it; ``None`` where it raises."""
        return self._failed_verdict(exc, score=1.0, role="User") if self._closes(self._unprepared_mode(exc)) else None

    def _closes(self, mode: str) -> bool:
        """Whether a failure of ``mode`` gives an unsafe verdict (rather than being raised)."""
        return mode == "unsafe" or (mode == "on_error" and self.on_error == "unsafe")

    def _finish(self, batch: _Batch, n: int) -> list[Verdict]:
        """One verdict per conversation (its parts merged); failing rows fail closed or are raised together."""
        parts: dict[int, list[_Scored]] = {}
        for i, result in zip(batch.owner, batch.results, strict=True):
            parts.setdefault(i, []).append(result)
        verdicts: list[Verdict | None] = []
        errors: dict[int, BaseException] = {}
        for i in range(n):
            got = [batch.failed[i]] if i in batch.failed else parts[i]
            failure = next((r for r in got if isinstance(r, _Failure)), None)
            if failure is None:
                verdicts.append(merge_verdicts(got))  # type: ignore[arg-type]
            elif self._closes(failure.mode):
                verdicts.append(
                    self._failed_verdict(failure.error, score=failure.score, role=failure.role, segments=len(got))
                )
            else:
                verdicts.append(None)
                errors[i] = failure.error
        if errors:
            raise GuardBatchError(verdicts, errors)
        return verdicts  # type: ignore[return-value]

    async def acheck(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> Verdict:
        """Async :meth:`check`; the model runs in a worker thread, so the event loop is never blocked. A cancelled
        call (a client that went away) never affects other callers: its rows are dropped if they have not started.
        """
        try:
            return (await self.abatch_check([conversation], role=role, excluded_categories=excluded_categories))[0]
        except GuardBatchError as exc:
            raise exc.errors[0] from None

    async def abatch_check(
        self,
        conversations: Sequence[ConversationInput],
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> list[Verdict]:
        """Async :meth:`batch_check`. With micro-batching, concurrent calls share model batches; a served model
        (:meth:`from_endpoint`) is awaited natively, with no thread per request. Cancelling the call (or its
        ``timeout``) cancels what has not started and discards what has."""
        conversations = self._conversations(conversations)
        if not conversations:
            return []
        if self.timeout is None:
            return await self._abatch_check(conversations, role, excluded_categories)
        try:
            return await asyncio.wait_for(self._abatch_check(conversations, role, excluded_categories), self.timeout)
        except TimeoutError:
            return self._timed_out(len(conversations), role)

    async def _aserved_context(self) -> GuardServerError | None:
        """A served model's context asked on the event loop, not in the worker thread that prepares the prompts (a
        server that does not answer would hold a thread of the default pool per caller); its error, if any."""
        aload = getattr(self._context_length, "aload", None)
        if aload is None:
            return None
        try:
            await aload()
        except GuardServerError as exc:
            return exc
        return None

    async def _abatch_check(
        self, conversations: list[ConversationInput], role: str | None, excluded_categories: Iterable[str] | None
    ) -> list[Verdict]:
        unserved = await self._aserved_context()
        batch = await to_thread(self._prepare_many, conversations, role, excluded_categories, unserved)
        if batch.prompts:
            batched = self._batcher is not None
            if batched:
                try:
                    batch.results = await self._batcher.await_(self._batcher.submit(batch.prompts, batch.excluded))
                except GuardClosedError as exc:
                    if self._closed:  # closed under the check: each row fails as without a batcher
                        batch.results = [_Failure(exc, 1.0, p.role) for p in batch.prompts]
                    else:  # a view whose guard closed its batcher: this one is open, and scores alone
                        batched = False
            if not batched and isinstance(self.backend, AsyncGuardBackend):
                batch.results = await self._ascore_encoded(batch.prompts, batch.excluded)
            elif not batched:
                batch.results = await to_thread(self._score_encoded, batch.prompts, batch.excluded)
        return self._finish(batch, len(conversations))

    def category_distribution(
        self, conversations: Sequence[ConversationInput], codes: Sequence[str], *, role: str | None = None
    ) -> list[dict[str, float]]:
        """For each conversation, the model's distribution over ``codes`` as the first category of an unsafe
        answer: P(next token | prompt, ``unsafe\nS``), renormalized over ``codes`` (one forward per batch).

        Example:
            >>> guard.category_distribution(["How do I make a bomb?"], ["S1", "S9"])  # doctest: +SKIP
            [{'S1': 0.02, 'S9': 0.98}]
        """
        self._check_open()
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
        backend = self.backend

        def timed_out() -> Any:
            raise GuardTimeoutError(f"the guard did not answer within {self.timeout} s")

        rows = self._within_timeout(
            lambda: backend.next_logprobs(prompts, self.tokens, forced, numbers),  # type: ignore[attr-defined]
            timed_out,
        )
        out = []
        for row in rows:
            top = max(row)
            weights = [math.exp(v - top) for v in row]
            total = sum(weights)
            out.append({code: w / total for code, w in zip(codes, weights, strict=True)})
        return out

    def check_encoded(self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]) -> list[Verdict]:
        """Score already-encoded prompts (one forward pass, then categories for the unsafe rows), within the guard's
        ``timeout`` as :meth:`batch_check`."""
        return self._within_timeout(
            lambda: [self._resolve(r) for r in self._score_encoded(prompts, excluded)],
            lambda: self._timed_out(len(prompts), None),
        )

    async def acheck_encoded(
        self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]
    ) -> list[Verdict]:
        """Async :meth:`check_encoded` (native with a served model, else in a worker thread)."""

        async def scored() -> list[_Scored]:
            if isinstance(self.backend, AsyncGuardBackend):
                return await self._ascore_encoded(prompts, excluded)
            return await to_thread(self._score_encoded, prompts, excluded)

        if self.timeout is None:
            return [self._resolve(r) for r in await scored()]
        try:
            return [self._resolve(r) for r in await asyncio.wait_for(scored(), self.timeout)]
        except TimeoutError:
            return self._timed_out(len(prompts), None)

    def _resolve(self, result: _Scored) -> Verdict:
        if isinstance(result, Verdict):
            return result
        return self._fail(result.error, score=result.score, role=result.role)  # type: ignore[arg-type]

    def _budget(self) -> BatchBudget | None:
        """The memory budget of one forward: ``max_batch_tokens``, else the device's default for an in-process
        model; ``None`` (no split) for a served model, whose server schedules its own batches."""
        model = getattr(self.backend, "model", None)
        if self._default_budget is None and hasattr(model, "parameters"):  # an in-process torch model
            self._default_budget = default_budget(model)
        if self.max_batch_tokens is None:
            return self._default_budget
        attention = self._default_budget.max_attention if self._default_budget else self.max_batch_tokens * 8192
        return BatchBudget(max_tokens=self.max_batch_tokens, max_attention=attention)

    def _groups(self, prompts: Sequence[EncodedPrompt]) -> list[list[int]]:
        lengths = [len(p.input_ids) + IMAGE_TOKENS * len(p.images) for p in prompts]
        computed = [n - (p.prefix_len if not p.images else 0) for n, p in zip(lengths, prompts, strict=True)]
        return plan_sub_batches(lengths, self._budget(), computed)

    def _score_encoded(self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]) -> list[_Scored]:
        """The hot path: length-sorted sub-batches under the memory budget, results in input order. Nothing is
        raised for one row: an unreadable output or a model error comes back as that row's :class:`_Failure`."""
        results: list[_Scored] = [None] * len(prompts)  # type: ignore[list-item]
        for group in self._groups(prompts):
            got = self._score_rows([prompts[i] for i in group], [excluded[i] for i in group])
            for i, result in zip(group, got, strict=True):
                results[i] = result
        return results

    async def _ascore_encoded(
        self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]
    ) -> list[_Scored]:
        """:meth:`_score_encoded`, awaiting an async backend's ``afirst_step`` / ``adecode``."""
        results: list[_Scored] = [None] * len(prompts)  # type: ignore[list-item]
        for group in self._groups(prompts):
            got = await self._ascore_rows([prompts[i] for i in group], [excluded[i] for i in group])
            for i, result in zip(group, got, strict=True):
                results[i] = result
        return results

    def _score_rows(self, prompts: list[EncodedPrompt], excluded: list[tuple[str, ...]]) -> list[_Scored]:
        """One sub-batch; if the model fails on it, row by row, so one row cannot fail its neighbours."""
        try:
            return self._drive(self._score_plan(prompts, excluded))
        except Exception as exc:  # noqa: BLE001 - a model error (out of memory included) is the row's result
            if len(prompts) == 1 or not _retry_rows(exc):
                return [_Failure(exc, 1.0, p.role) for p in prompts]
            batch_error = exc
        out: list[_Scored] = []
        for p, e in zip(prompts, excluded, strict=True):
            out.append(self._score_rows([p], [e])[0])
            if isinstance(out[-1], _Failure) and _alike(out[-1].error, batch_error):
                return out + [_Failure(batch_error, 1.0, q.role) for q in prompts[len(out) :]]
        return out

    async def _ascore_rows(self, prompts: list[EncodedPrompt], excluded: list[tuple[str, ...]]) -> list[_Scored]:
        """:meth:`_score_rows` for an async backend."""
        try:
            return await self._adrive(self._score_plan(prompts, excluded))
        except Exception as exc:  # noqa: BLE001
            if len(prompts) == 1 or not _retry_rows(exc):
                return [_Failure(exc, 1.0, p.role) for p in prompts]
            batch_error = exc
        out: list[_Scored] = []
        for p, e in zip(prompts, excluded, strict=True):
            out.append((await self._ascore_rows([p], [e]))[0])
            if isinstance(out[-1], _Failure) and _alike(out[-1].error, batch_error):
                return out + [_Failure(batch_error, 1.0, q.role) for q in prompts[len(out) :]]
        return out

    def _drive(self, plan: Generator[_BackendCall, Any, list[_Scored]]) -> list[_Scored]:
        """Run a scoring plan with the backend's sync methods."""
        try:
            call = next(plan)
            while True:
                method, args, kw = call
                call = plan.send(getattr(self._live_backend(), method)(*args, **kw))
        except StopIteration as done:
            return done.value

    async def _adrive(self, plan: Generator[_BackendCall, Any, list[_Scored]]) -> list[_Scored]:
        """Run a scoring plan, awaiting the backend's ``afirst_step`` / ``adecode``."""
        try:
            call = next(plan)
            while True:
                method, args, kw = call
                call = plan.send(await getattr(self._live_backend(), "a" + method)(*args, **kw))
        except StopIteration as done:
            return done.value

    def _score_plan(
        self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]
    ) -> Generator[_BackendCall, Any, list[_Scored]]:
        """The scoring logic, once for the sync and async drivers: it yields the backend calls it needs
        (``first_step``, then ``decode`` for the unsafe rows) and is sent their results."""
        budget = self._budget() if getattr(self.backend, "takes_token_budget", False) else None
        steps, state = yield ("first_step", (prompts, self.tokens), {"max_tokens": budget.max_tokens} if budget else {})
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
                results.append(_Failure(err, 1.0 if score is None else score, prompt.role))
                continue
            raw = "safe" if tok == self.tokens.safe else self.tokenizer.decode(decoded[i])
            try:
                if tok != self.tokens.safe and len(decoded[i]) >= MAX_NEW_TOKENS:
                    raise GuardOutputError(
                        raw,
                        f"it did not end within {MAX_NEW_TOKENS} tokens, and a cut category list could leave out what "
                        "it flags, so no verdict is taken",
                    )
                parsed = parse_output(raw)
            except GuardOutputError as exc:
                results.append(_Failure(exc, 1.0 if score is None else score, prompt.role))
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
                    omitted_turns=prompt.omitted_turns,
                )
            )
        return results

    # -- start-up probes ------------------------------------------------------------------------------------
    def ready(self, timeout: float = 10.0) -> bool:
        """Whether the guard can check now: a served guard polls its server until it answers and serves the model
        (``True``), or gives ``False`` after ``timeout`` seconds; an in-process guard is ready at once.

        Example:
            >>> guard = LlamaGuard.from_endpoint(url, model="meta-llama/Llama-Guard-4-12B")  # doctest: +SKIP
            >>> guard.ready(timeout=120)                                                    # doctest: +SKIP
            True
        """
        self._check_open()
        probe = getattr(self.backend, "ready", None)
        return True if probe is None else bool(probe(timeout))

    async def aready(self, timeout: float = 10.0) -> bool:
        """Async :meth:`ready`: the event loop stays free while the server is polled."""
        self._check_open()
        probe = getattr(self.backend, "aready", None)
        return True if probe is None else bool(await probe(timeout))

    # -- helpers --------------------------------------------------------------------------------------------
    def _first_token(self, step: FirstStep) -> tuple[int | None, GuardOutputError | None]:
        """The verdict token to continue from, or the error that makes the output unreadable. A ``threshold``
        reads P(unsafe) only from a model that answers as a guard does: one that does not start with the blank
        line (broken weights, another model) has no verdict to threshold, whatever its P(unsafe)."""
        if any(p is not None and not math.isfinite(p) for p in (step.p_safe, step.p_unsafe)):
            reason = (
                "the model's probabilities are not numbers (NaN or infinite logits: corrupted weights, or a float16 "
                "overflow)"
            )
            return None, GuardOutputError("", reason)
        if step.lead_argmax != self.tokens.lead:
            text = self.tokenizer.decode([step.lead_argmax])
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

    def _fail(self, err: BaseException, *, score: float, role: str) -> Verdict:
        if self.on_error == "raise":
            raise err
        return self._failed_verdict(err, score=score, role=role)

    def _failed_verdict(self, err: BaseException, *, score: float, role: str, segments: int = 1) -> Verdict:
        """The unsafe stand-in verdict of a conversation that could not be judged (in ``segments`` prompts)."""
        return Verdict(
            safe=False,
            categories=[],
            category_names=[],
            score=min(max(score, 0.0), 1.0) if math.isfinite(score) else 1.0,
            role=role,  # type: ignore[arg-type]
            model=self.format.name,
            raw=getattr(err, "raw", ""),
            error=f"{type(err).__name__}: {err}" if not isinstance(err, LlamaGuardError) else str(err),
            segments=segments,
        )

    # -- copies and pickles (see pickling.py) ----------------------------------------------------------------
    _SHARED_ATTRS = frozenset(
        "backend tokenizer format encoder tokens _newline _comma _s _recipe _context_length".split()
    )
    """What copies share: the loaded model and what is derived from it (a served model's context included)."""
    _OWN_ATTRS = frozenset("_batcher _default_budget _closed _view_of".split())
    """What each guard has of its own and starts afresh after a copy or a pickle (its micro-batcher, ...)."""
    _RECIPE_SETTINGS = frozenset(
        "excluded_categories threshold on_error image_loader batch_window_ms max_batch_size categories "
        "max_batch_tokens on_overflow max_segments max_image_pixels max_image_bytes max_images "
        "reveal_hidden_text".split()
    )
    """Loading arguments that only set the guard's own settings: a pickle carries the settings as they are now."""

    def _shared_copy(self) -> LlamaGuardEngine:
        """A new guard over this one's model, without settings yet (:meth:`__setstate__` gives them)."""
        self._check_open()
        new = object.__new__(type(self))
        new.__dict__.update({k: v for k, v in vars(self).items() if k in self._SHARED_ATTRS})
        _adopt(new.backend)  # one more user of the model: closing either leaves the other working
        return new

    def __copy__(self) -> LlamaGuardEngine:
        """A shallow copy: the same attributes, micro-batcher included (what :meth:`with_categories` builds on). It
        is a view of this guard, like :meth:`with_categories`'s: one more user of the model, so closing it leaves
        this guard working, and the micro-batcher stays this guard's to close."""
        self._check_open()
        new = object.__new__(type(self))
        new.__dict__.update(vars(self))
        new._view_of = self  # the batcher's worker holds this guard only weakly: the view keeps it alive
        _adopt(new.backend)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> LlamaGuardEngine:
        """A guard with its own settings, micro-batcher and caches over the **same** loaded model (weights are never
        duplicated); a closed guard cannot be copied."""
        from .pickling import deep_copy

        return deep_copy(self, memo)

    def __getstate__(self) -> dict[str, Any]:
        """This guard's settings: what a copy or a pickle carries (the model is shared, or loaded again)."""
        state = {k: v for k, v in vars(self).items() if k not in self._SHARED_ATTRS | self._OWN_ATTRS}
        if not callable(self._context_length):  # a number set here; a served model's is asked of the server again
            state["_context_length"] = self._context_length
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("reveal_hidden_text", True)  # a guard pickled before this setting existed
        self._closed = False
        self._view_of = None
        self._default_budget = None
        self._start_batcher()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as how it was loaded plus its settings (see :mod:`~langchain_llamaguard.pickling`); a guard
        from :meth:`from_model` raises :class:`~langchain_llamaguard.errors.GuardPickleError`."""
        from .pickling import reduce_guard

        self._check_open()
        recipe = self._recipe
        model = getattr(self.backend, "model", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if recipe is not None and type(head).__name__ == "VerdictHead":  # pruned after loading: prune again
            recipe = (recipe[0], recipe[1], {**recipe[2], "prune_lm_head": True})
        return reduce_guard(self, recipe, self._RECIPE_SETTINGS)
