"""Rendered prompt -> token ids, the same for every backend.

Special segments become their ids; text segments are tokenized with ``split_special_tokens=True``, so a
special-token string inside content (``<|eot|>``, ``<|header_start|>``...) is read as plain text and cannot
forge a turn. Text never spans a special token, so for ordinary content the ids equal what the official
``apply_chat_template(tokenize=True)`` path gives. Exactly one ``<|begin_of_text|>``: the template's own.

The fixed prefix and suffix of each (role, categories, images) combination are tokenized once and cached.

Example:
    >>> enc = PromptEncoder(tokenizer, get_format("llama-guard-4"))   # doctest: +SKIP
    >>> enc.encode(render("hello")).input_ids[:2]                    # doctest: +SKIP
    [200000, 200005]
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import GuardConfigurationError, GuardInputError
from .forking import call_in_child, renew_in_child
from .prompt_format import PromptFormat, RenderedPrompt, Segment


@dataclass
class EncodedPrompt:
    """Token ids of one prompt, plus what the backend needs besides them."""

    input_ids: list[int]
    role: str
    categories: tuple[str, ...]
    prefix_len: int
    """How many leading ids are the cached, conversation-independent prefix."""
    image_slots: list[int] = field(default_factory=list)
    """Positions (in ``input_ids``) of the template's ``<|image|>`` placeholders, before expansion."""
    images: list[Any] = field(default_factory=list)
    """Decoded images (``PIL.Image``), one per slot."""
    turns: list[Any] | None = None
    """The conversation's turns this prompt was rendered from, for backends that send the conversation itself
    (a server's chat API renders it there)."""
    policy: dict[str, str] | None = None
    """The custom category texts it was rendered with (``None``: the model's defaults)."""
    omitted_turns: int = 0
    """Earlier turns of the conversation left out of this prompt because the whole did not fit the context."""
    body_end: int = 0
    """Where the conversation ends and the template's suffix begins (in ``input_ids``): the point where the next
    check of a growing conversation diverges (``0``: unknown)."""
    expanded: Any = None
    """A local backend's expansion of the images (the ids with each placeholder expanded, and the pixel values),
    made once: when the context is measured, and reused by the forward pass."""


class _TokenizerLocks:
    """One lock per tokenizer, made on first use; a forked child starts with none (a lock held by one of the
    parent's threads would wedge it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
        renew_in_child(self, "_lock")
        call_in_child(self, "clear")

    def get(self, target: Any) -> threading.RLock:
        with self._lock:
            lock = self._locks.get(target)
            if lock is None:
                lock = self._locks[target] = threading.RLock()
        return lock

    def clear(self) -> None:
        self._locks = weakref.WeakKeyDictionary()


_TOKENIZER_LOCKS = _TokenizerLocks()


def tokenizer_lock(tokenizer: Any) -> threading.RLock:
    """The lock every use of ``tokenizer`` (or of a processor's tokenizer) holds. transformers tokenizes with
    ``split_special_tokens=True`` by switching a setting of the one Rust tokenizer for that call, so two calls at
    once (a text's, which keeps ``<|eot|>`` as text, and an image processor's, which does not) read each other's
    setting: a forged turn in the text became real special tokens, and the image's token count came out wrong.

    Example:
        >>> with tokenizer_lock(tok):  # doctest: +SKIP
        ...     ids = tok("<|eot|>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    """
    return _TOKENIZER_LOCKS.get(getattr(tokenizer, "tokenizer", None) or tokenizer)  # a processor's is the shared one


def clean_text(text: str) -> str:
    """Make any Python string tokenizable: lone surrogates (invalid UTF-16 halves) become U+FFFD.

    Nothing else changes: zero-width characters, direction overrides and homoglyphs reach the model as they are.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class PromptEncoder:
    """Tokenizes :class:`RenderedPrompt` s for one tokenizer and one format."""

    def __init__(self, tokenizer: Any, fmt: PromptFormat) -> None:
        self.tokenizer = tokenizer
        self.format = fmt
        self._special_ids: dict[str, int] = {}
        for tok in fmt.special_tokens:
            tid = tokenizer.convert_tokens_to_ids(tok)
            if tid is None or tid == tokenizer.unk_token_id:
                raise GuardConfigurationError(
                    f"the tokenizer has no special token {tok!r}, which the {fmt.name} format needs; "
                    "is this the checkpoint's own tokenizer?"
                )
            self._special_ids[tok] = tid
        self._fixed: dict[tuple[Segment, ...], list[int]] = {}
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")  # a lock held at a fork would wedge the child

    def special_id(self, token: str) -> int:
        return self._special_ids[token]

    def text_ids(self, text: str) -> list[int]:
        """Ids of plain text: special-token strings inside it stay text."""
        if not text:
            return []
        with tokenizer_lock(self.tokenizer):
            encoded = self.tokenizer(clean_text(text), add_special_tokens=False, split_special_tokens=True)
        return list(encoded["input_ids"])

    def segment_ids(self, segments: Sequence[Segment]) -> list[int]:
        ids: list[int] = []
        for seg in segments:
            if seg.special:
                ids.append(self._special_ids[seg.text])
            else:
                ids.extend(self.text_ids(seg.text))
        return ids

    def _fixed_ids(self, segments: tuple[Segment, ...]) -> list[int]:
        cached = self._fixed.get(segments)
        if cached is None:
            cached = self.segment_ids(segments)
            with self._lock:
                if len(self._fixed) > 256:
                    self._fixed.clear()
                self._fixed[segments] = cached
        return cached

    def encode(self, prompt: RenderedPrompt, images: Sequence[Any] = ()) -> EncodedPrompt:
        prefix = self._fixed_ids(prompt.prefix)
        ids = list(prefix)
        slots: list[int] = []
        for seg in prompt.body:
            if seg.special and seg.text == self.format.image_token:
                slots.append(len(ids))
            if seg.special:
                ids.append(self._special_ids[seg.text])
            else:
                ids.extend(self.text_ids(seg.text))
        body_end = len(ids)
        ids.extend(self._fixed_ids(prompt.suffix))
        if len(slots) != len(images):
            raise GuardInputError(f"{len(slots)} image placeholders but {len(images)} images")
        return EncodedPrompt(
            input_ids=ids,
            role=prompt.role,
            categories=prompt.categories,
            prefix_len=len(prefix),
            image_slots=slots,
            images=list(images),
            body_end=body_end,
        )
