"""The Llama Guard engine: load a checkpoint, check conversations, return :class:`Verdict` s.

The hot path for a batch: render (shared renderer) -> tokenize (fixed parts cached) -> **one** forward pass ->
read ``P(unsafe)`` after the model's ``\\n\\n`` -> for unsafe rows only, a few greedy tokens from the same KV
cache for the categories (a format-based draft proposes ``\\nS`` after ``unsafe`` and ``S`` after ``,``; the
model confirms them, so this is exactly greedy decoding in fewer steps).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .backends.base import FirstStep, GuardBackend, VerdictTokens
from .conversation import ConversationInput, ImageLoader
from .encoding import EncodedPrompt, PromptEncoder
from .errors import GuardConfigurationError, GuardOutputError
from .images import load_image
from .prompt_format import get_format, render
from .taxonomy import resolve_categories
from .verdict import Verdict, make_verdict, parse_output

if TYPE_CHECKING:  # pragma: no cover
    from .runnables import GuardedRunnable, GuardStep

OnError = Literal["raise", "unsafe"]

_STOP_TOKENS = {
    "llama4": ("<|eot|>", "<|eom|>", "<|end_of_text|>"),
    "llama3": ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
}
_PAD_TOKENS = {"llama4": "<|finetune_right_pad|>", "llama3": "<|finetune_right_pad_id|>"}
MAX_NEW_TOKENS = 24


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


class LlamaGuard:
    """Llama Guard 4 or Llama Guard 3 (8B, 1B) as a content-safety classifier.

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
        context_length: the longest prompt the model reads, in tokens.

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
    ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.format = get_format(model_format)
        try:
            self.excluded_categories = resolve_categories(excluded_categories)
        except ValueError as exc:
            raise GuardConfigurationError(str(exc)) from exc
        self.threshold = _check_threshold(threshold)
        self.on_error = _check_on_error(on_error)
        self.image_loader = image_loader
        self.context_length = context_length
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
        **hf_kwargs: Any,
    ) -> LlamaGuard:
        """Load Llama Guard 4 (``Llama4ForConditionalGeneration`` + processor) or Llama Guard 3 8B / 1B.

        The architecture is read from the checkpoint's config, not its name. ``quantization`` goes through
        transformers' ``BitsAndBytesConfig`` (needs the ``quant`` extra). ``device_map``, ``dtype`` (or its old
        name ``torch_dtype``) and any other keyword go to ``from_pretrained`` untouched; the default dtype is
        bf16 on a GPU and float32 on a CPU.

        Example:
            >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-3-1B", quantization="nf4")  # doctest: +SKIP
        """
        from .backends.loading import load_guard_model

        threshold = _check_threshold(threshold)
        on_error = _check_on_error(on_error)
        try:
            resolve_categories(excluded_categories)
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
        family = "llama4" if loaded.model_format == "llama-guard-4" else "llama3"
        pad_id = loaded.tokenizer.convert_tokens_to_ids(_PAD_TOKENS[family])
        from .backends.transformers import TransformersBackend

        backend = TransformersBackend(
            loaded.model,
            loaded.tokenizer,
            processor=loaded.processor,
            model_name=loaded.model_format,
            pad_id=pad_id,
        )
        return cls(
            backend,
            loaded.tokenizer,
            model_format=loaded.model_format,
            excluded_categories=excluded_categories,
            threshold=threshold,
            on_error=on_error,
            image_loader=image_loader,
            context_length=loaded.context_length,
        )

    # -- preparing prompts ----------------------------------------------------------------------------------
    def encode(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        excluded_categories: Iterable[str] | None = None,
    ) -> tuple[EncodedPrompt, tuple[str, ...]]:
        """Render and tokenize one conversation; returns the prompt ids and the excluded codes used."""
        excluded = self.excluded_categories if excluded_categories is None else resolve_categories(excluded_categories)
        rendered = render(conversation, model=self.format.name, excluded_categories=excluded, role=role)
        images = [load_image(ref, self.image_loader) for ref in rendered.images]
        encoded = self.encoder.encode(rendered, images)
        if len(encoded.input_ids) + 1 > self.context_length:
            raise ValueError(
                f"the conversation is {len(encoded.input_ids)} tokens, over the model's context of "
                f"{self.context_length}; nothing is truncated: split it, or raise context_length if the "
                "model supports more"
            )
        return encoded, excluded

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
        """Check many conversations in one model batch (same verdicts as one by one)."""
        if isinstance(conversations, (str, bytes)):
            raise TypeError("batch_check takes a list of conversations; use check() for one")
        if not conversations:
            return []
        prepared = [self.encode(c, role=role, excluded_categories=excluded_categories) for c in conversations]
        return self.check_encoded([p for p, _ in prepared], [e for _, e in prepared])

    async def acheck(self, conversation: ConversationInput, **kwargs: Any) -> Verdict:
        """Async :meth:`check`; the model runs in a worker thread, so the event loop is never blocked."""
        return await asyncio.to_thread(self.check, conversation, **kwargs)

    async def abatch_check(self, conversations: Sequence[ConversationInput], **kwargs: Any) -> list[Verdict]:
        """Async :meth:`batch_check` (one model batch, in a worker thread)."""
        return await asyncio.to_thread(self.batch_check, conversations, **kwargs)

    def check_encoded(self, prompts: Sequence[EncodedPrompt], excluded: Sequence[tuple[str, ...]]) -> list[Verdict]:
        """Score already-encoded prompts (one forward pass, then categories for the unsafe rows)."""
        steps, state = self.backend.first_step(prompts, self.tokens)
        decided = [self._first_token(s) for s in steps]
        unsafe_rows = [i for i, (tok, _) in enumerate(decided) if tok == self.tokens.unsafe]
        decoded: dict[int, list[int]] = {}
        if unsafe_rows:
            outs = self.backend.decode(
                state,
                unsafe_rows,
                [[self.tokens.unsafe]] * len(unsafe_rows),
                draft=self._draft,
                stop=self.tokens.stop,
                max_new_tokens=MAX_NEW_TOKENS,
            )
            decoded = dict(zip(unsafe_rows, outs, strict=True))
        verdicts: list[Verdict] = []
        for i, (prompt, (tok, err)) in enumerate(zip(prompts, decided, strict=True)):
            score = steps[i].p_unsafe
            role = prompt.role  # type: ignore[assignment]
            if err is not None:
                verdicts.append(self._fail(err, score=score, role=role))
                continue
            raw = "safe" if tok == self.tokens.safe else self.tokenizer.decode(decoded[i])
            try:
                parsed = parse_output(raw)
            except GuardOutputError as exc:
                verdicts.append(self._fail(exc, score=score, role=role))
                continue
            verdicts.append(
                make_verdict(
                    parsed,
                    score=score,
                    role=role,  # type: ignore[arg-type]
                    model=self.format.name,
                    raw=raw,
                    excluded=excluded[i],
                    threshold=self.threshold,
                )
            )
        return verdicts

    # -- LangChain steps ------------------------------------------------------------------------------------
    def as_input_guard(
        self,
        *,
        on_unsafe: Any = "raise",
        excluded_categories: Iterable[str] | None = None,
        input_key: str | None = None,
        name: str | None = None,
    ) -> GuardStep:
        """A Runnable that checks the user's turn and passes its input through unchanged when safe.

        Example:
            >>> chain = guard.as_input_guard() | prompt | llm  # doctest: +SKIP
        """
        from .moderators import LlamaGuardModerator
        from .runnables import GuardStep

        return GuardStep(
            moderator=LlamaGuardModerator(self, excluded_categories),
            stage="input",
            on_unsafe=on_unsafe,
            input_key=input_key,
            name=name,
        )

    def as_output_guard(
        self,
        *,
        on_unsafe: Any = "raise",
        excluded_categories: Iterable[str] | None = None,
        output_key: str | None = None,
        stream_mode: Literal["buffer", "incremental"] = "buffer",
        check_every: int | Literal["sentence"] = 32,
        name: str | None = None,
    ) -> GuardStep:
        """A Runnable that checks the model's answer (as the Agent turn) and passes it through when safe.

        Example:
            >>> chain = prompt | llm | guard.as_output_guard(on_unsafe="I can't help with that.")  # doctest: +SKIP
        """
        from .moderators import LlamaGuardModerator
        from .runnables import GuardStep

        return GuardStep(
            moderator=LlamaGuardModerator(self, excluded_categories),
            stage="output",
            on_unsafe=on_unsafe,
            output_key=output_key,
            stream_mode=stream_mode,
            check_every=check_every,
            name=name,
        )

    def wrap(
        self,
        runnable: Any,
        *,
        on_unsafe: Any = "raise",
        excluded_categories: Iterable[str] | None = None,
        input_key: str | None = None,
        output_key: str | None = None,
        stream_mode: Literal["buffer", "incremental"] = "buffer",
        check_every: int | Literal["sentence"] = 32,
        prompt_guard: Any = None,
        name: str | None = None,
    ) -> GuardedRunnable:
        """Guard ``runnable`` on both sides; the answer is judged with the user's turn as context.

        With ``prompt_guard=``, the input is also checked by Prompt Guard (both run concurrently).

        Example:
            >>> safe_chain = guard.wrap(prompt | llm, on_unsafe="Sorry, I can't help with that.")  # doctest: +SKIP
        """
        from langchain_core.runnables.base import coerce_to_runnable

        from .moderators import CombinedModerator, LlamaGuardModerator, PromptGuardModerator
        from .runnables import GuardedRunnable

        llama = LlamaGuardModerator(self, excluded_categories)
        moderator: Any = llama
        if prompt_guard is not None:
            moderator = CombinedModerator([PromptGuardModerator(prompt_guard), llama])
        return GuardedRunnable(
            bound=coerce_to_runnable(runnable),
            moderator=moderator,
            output_moderator=llama,
            on_unsafe=on_unsafe,
            input_key=input_key,
            output_key=output_key,
            stream_mode=stream_mode,
            check_every=check_every,
            name=name,
        )

    # -- helpers --------------------------------------------------------------------------------------------
    def _first_token(self, step: FirstStep) -> tuple[int | None, GuardOutputError | None]:
        """The verdict token to continue from, or the error that makes the output unreadable."""
        if step.lead_argmax != self.tokens.lead:
            text = self.tokenizer.decode([step.lead_argmax])
            if self.threshold is None:
                return None, GuardOutputError(text, "the model did not start its answer with a blank line")
        if self.threshold is not None:
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
