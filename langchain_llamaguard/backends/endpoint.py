"""Connecting to a served Llama Guard: the local tokenizer, the format, the server's context, the backend.

The tokenizer is always local (a checkpoint id, a path or a tokenizer object): prompts are rendered and
tokenized here, exactly as in-process, and only token ids (or, for images and hosted providers, chat messages)
go to the server. :meth:`LlamaGuard.from_endpoint <langchain_llamaguard.LlamaGuard.from_endpoint>` calls
:func:`connect`.

Connecting sends nothing: a guard can be built before its server is up. The served context (``max_model_len``)
is read from ``/v1/models`` on first use (:class:`ServedContext`), and ``guard.ready()`` is the start-up probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..encoding import tokenizer_lock
from ..errors import GuardConfigurationError
from ..prompt_format import get_format
from .base import MAX_NEW_TOKENS, GuardBackend
from .chat import ChatBackend
from .completions import CompletionsBackend, Logprobs
from .http import EndpointClient, ServedModel
from .loading import LLAMA_GUARD_4_CONTEXT, detect_format

Mode = Literal["completions", "chat"]


@dataclass
class Connection:
    backend: GuardBackend
    tokenizer: Any
    model_format: str
    context_length: int | Callable[[], int]
    """The ``context_length=`` given, or a :class:`ServedContext` that asks the server on first use."""


def _load_tokenizer(tokenizer: Any) -> tuple[Any, Any]:
    """(tokenizer, config or None) from an id, a path, a tokenizer or a processor."""
    if not isinstance(tokenizer, str):
        return getattr(tokenizer, "tokenizer", tokenizer), None
    from transformers import AutoConfig, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as exc:
        raise GuardConfigurationError(
            f"cannot load the tokenizer {tokenizer!r} ({exc}); pass tokenizer= a local path, a checkpoint id "
            "or a tokenizer object: prompts are tokenized here, never by the server"
        ) from exc
    try:
        config = AutoConfig.from_pretrained(tokenizer)
    except (OSError, ValueError):
        config = None
    return tok, config


def _detect(config: Any, tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if config is not None:
        return detect_format(config, template)
    vocab = tokenizer.get_vocab()
    if "<|header_start|>" in vocab:
        return "llama-guard-4"
    if template and "<BEGIN UNSAFE CONTENT CATEGORIES>" in template:
        return "llama-guard-3-8b" if "Code Interpreter Abuse" in template else "llama-guard-3-1b"
    raise GuardConfigurationError(
        "cannot tell the Llama Guard version from this tokenizer; pass model_format='llama-guard-4', "
        "'llama-guard-3-8b' or 'llama-guard-3-1b'"
    )


class ServedContext:
    """The prompt budget on a served model, read on first use: its ``max_model_len`` from ``/v1/models`` (Llama
    Guard 4's context where the server does not say), less room for the lead and the verdict.

    Calling it asks the server once (:meth:`ServedModel.entry`: thread-safe, a failure is not kept) and raises
    :class:`~langchain_llamaguard.errors.GuardServerError` while the server is down or does not serve the model.
    """

    def __init__(self, served: ServedModel) -> None:
        self.served = served

    def __call__(self) -> int:
        limit = self.served.max_model_len()
        return (limit if limit is not None else LLAMA_GUARD_4_CONTEXT) - (1 + MAX_NEW_TOKENS)

    async def aload(self) -> None:
        """Ask the server on the event loop (an async check), so the call above finds the answer kept."""
        await self.served.aentry()


def _text_ids(tok: Any, text: str) -> list[int]:
    with tokenizer_lock(tok):  # see encoding.tokenizer_lock
        return list(tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def _special_tokens(tok: Any) -> Callable[[], set[str]]:
    """The tokenizer's special-token strings, computed when first asked (a pass over the whole vocabulary)."""
    return lambda: set(tok.get_vocab()) & (set(tok.get_added_vocab()) | set(tok.all_special_tokens))


def connect(
    base_url: str,
    *,
    model: str,
    tokenizer: Any = None,
    api_key: str | None = None,
    model_format: str | None = None,
    timeout: float | None = None,
    max_concurrency: int = 16,
    max_retries: int = 3,
    mode: Mode = "completions",
    logprobs: Logprobs = "token_ids",
    context_length: int | None = None,
) -> Connection:
    """Build the client, the local tokenizer and the backend for a served Llama Guard; nothing is sent to the
    server here (the context is read on first use, see :class:`ServedContext`)."""
    if not isinstance(model, str) or not model:
        raise GuardConfigurationError(f"model must be the served model's name, got {model!r}")
    if mode not in ("completions", "chat"):
        raise GuardConfigurationError(f"mode must be 'completions' (token ids, vLLM) or 'chat', got {mode!r}")
    if logprobs != "token_ids" and not (isinstance(logprobs, int) and not isinstance(logprobs, bool) and logprobs > 0):
        raise GuardConfigurationError(f"logprobs must be 'token_ids' or a top-k count >= 1, got {logprobs!r}")
    if context_length is not None and (
        isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1
    ):
        raise GuardConfigurationError(
            f"context_length must be a positive number of tokens, or None to read it from the server, got "
            f"{context_length!r}"
        )
    client = EndpointClient(
        base_url, api_key=api_key, timeout=timeout, max_concurrency=max_concurrency, max_retries=max_retries
    )
    served = ServedModel(client, model)
    tok, config = _load_tokenizer(tokenizer if tokenizer is not None else model)
    fmt = model_format or _detect(config, tok)
    fmt_data = get_format(fmt)
    chat = None
    if mode == "chat" or fmt_data.supports_images:  # Llama Guard 3 over token ids never sends a chat request
        chat = ChatBackend(
            client,
            model=model,
            model_name=fmt,
            special_tokens=_special_tokens(tok),
            all_categories=fmt_data.categories,
            encode_text=lambda text: _text_ids(tok, text),
            content_parts=fmt_data.turn_style != "whole",  # the 1B's and Llama Guard 4's templates read parts only
            logprobs=logprobs if mode == "completions" else None,
            template_kwargs=mode == "completions",
            served=served,
        )
    backend: GuardBackend
    if mode == "chat":
        assert chat is not None
        backend = chat
    else:
        backend = CompletionsBackend(client, model=model, model_name=fmt, logprobs=logprobs, chat=chat, served=served)
    context = context_length if context_length is not None else ServedContext(served)
    return Connection(backend=backend, tokenizer=tok, model_format=fmt, context_length=context)
