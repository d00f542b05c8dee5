"""Connecting to a served Llama Guard: the local tokenizer, the format, the server's context, the backend.

The tokenizer is always local (a checkpoint id, a path or a tokenizer object): prompts are rendered and
tokenized here, exactly as in-process, and only token ids (or, for images and hosted providers, chat messages)
go to the server. :meth:`LlamaGuard.from_endpoint <langchain_llamaguard.LlamaGuard.from_endpoint>` calls
:func:`connect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import GuardConfigurationError
from ..prompt_format import get_format
from .base import MAX_NEW_TOKENS, GuardBackend
from .chat import ChatBackend
from .completions import CompletionsBackend, Logprobs
from .http import EndpointClient
from .loading import LLAMA_GUARD_4_CONTEXT, detect_format

Mode = Literal["completions", "chat"]


@dataclass
class Connection:
    backend: GuardBackend
    tokenizer: Any
    model_format: str
    context_length: int


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


def served_context(client: EndpointClient, model: str) -> int | None:
    """The served model's ``max_model_len`` from ``/v1/models`` (``None`` where the server does not say)."""
    listed = client.get("/models").get("data") or []
    names = [m.get("id") for m in listed if isinstance(m, dict)]
    for m in listed:
        if isinstance(m, dict) and m.get("id") == model:
            got = m.get("max_model_len")
            return int(got) if isinstance(got, int) else None
    served = ", ".join(map(str, names)) or "nothing"
    raise GuardConfigurationError(f"{client.base_url} does not serve {model!r}; it serves: {served}")


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
    """Build the client, the local tokenizer and the backend for a served Llama Guard."""
    if not isinstance(model, str) or not model:
        raise GuardConfigurationError(f"model must be the served model's name, got {model!r}")
    if mode not in ("completions", "chat"):
        raise GuardConfigurationError(f"mode must be 'completions' (token ids, vLLM) or 'chat', got {mode!r}")
    if logprobs != "token_ids" and not (isinstance(logprobs, int) and not isinstance(logprobs, bool) and logprobs > 0):
        raise GuardConfigurationError(f"logprobs must be 'token_ids' or a top-k count >= 1, got {logprobs!r}")
    client = EndpointClient(
        base_url, api_key=api_key, timeout=timeout, max_concurrency=max_concurrency, max_retries=max_retries
    )
    if context_length is None:  # the server first: one that is down or lacks the model fails fast
        served = served_context(client, model)
        limit = served if served is not None else LLAMA_GUARD_4_CONTEXT
        context_length = limit - (1 + MAX_NEW_TOKENS)  # room for the lead and the verdict
    tok, config = _load_tokenizer(tokenizer if tokenizer is not None else model)
    fmt = model_format or _detect(config, tok)
    fmt_data = get_format(fmt)
    specials = set(tok.get_vocab()) & (set(tok.get_added_vocab()) | set(tok.all_special_tokens))
    chat = ChatBackend(
        client,
        model=model,
        model_name=fmt,
        special_tokens=specials,
        all_categories=fmt_data.categories,
        encode_text=lambda text: list(tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]),
        content_parts=fmt == "llama-guard-4",
        logprobs=logprobs if mode == "completions" else None,
        template_kwargs=mode == "completions",
    )
    backend: GuardBackend
    if mode == "chat":
        backend = chat
    else:
        backend = CompletionsBackend(
            client, model=model, model_name=fmt, logprobs=logprobs, chat=chat if fmt_data.supports_images else None
        )
    return Connection(backend=backend, tokenizer=tok, model_format=fmt, context_length=context_length)
