"""Local backend: a Hugging Face transformers model in this process (CPU or GPU, bf16 or bitsandbytes int8/nf4).

The hot path is one forward pass over the left-padded batch with ``logits_to_keep=2``: the logits after the
prompt (the model's ``\\n\\n``) and after ``\\n\\n`` (``safe`` / ``unsafe``). Only unsafe rows are continued,
from the same KV cache, to read their categories.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..cancellation import raise_if_abandoned
from ..encoding import EncodedPrompt, tokenizer_lock
from ..errors import GuardClosedError, GuardInputError
from ..forking import forward_ran, renew_in_child
from .base import DECODE_COLUMNS, DraftFn, FirstStep, VerdictTokens
from .prefix_store import plan_reuse

logger = logging.getLogger("langchain_llamaguard")

_STACKABLE = {"DynamicLayer", "DynamicSlidingWindowLayer"}
"""Cache layers whose state is keys, values (and a token count): prefix caches of these can be stacked."""


def _reusable_end(prompt: EncodedPrompt) -> int:
    """How many leading ids of ``prompt`` may come from (and go to) the prefix store: up to the end of its
    conversation, and never its last id, whose logits (the lead's) the forward must compute."""
    return max(0, min(prompt.body_end, len(prompt.input_ids) - 1))


@dataclass
class _BatchState:
    cache: Any
    attention_mask: Any  # (B, L) long
    next_pos: Any  # (B,) long: position id of the next token


class TransformersBackend:
    """Scores prompts with a loaded transformers model.

    Example:
        >>> backend = TransformersBackend(model, tok, model_name="llama-guard-3-8b", pad_id=128004)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        processor: Any = None,
        model_name: str,
        pad_id: int,
        cache_prefix: bool = True,
        quantization: str | None = None,
        prefix_cache_bytes: int | None = None,
    ) -> None:
        self.model = model
        self.quantization = quantization
        """How the weights are quantized (e.g. ``"int8: torch dynamic int8 ..."``), or ``None``."""
        self.cache_prefix = cache_prefix
        self._prefix_kv: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # least recently used first
        text_config = getattr(model.config, "text_config", model.config)
        self._chunk = getattr(text_config, "attention_chunk_size", None)
        hidden = getattr(text_config, "hidden_size", 0) or 0
        self._key_cost = int(2 * hidden + 1.5 * (getattr(text_config, "intermediate_size", 0) or 4 * hidden)) or 4096
        """What one token's linear layers cost, in units of one attention key (q/k/v/o ~ 4 h^2 and an MLP of
        3 h I multiply-adds against 2 h per key): how the batch plan weighs reuse against width."""
        """Llama 4's chunked attention: no batch row may be wider, padding included (its mask skips only
        leading padding)."""
        self.tokenizer = tokenizer
        self.processor = processor
        self.model_name = model_name
        self.pad_id = pad_id
        # One forward at a time per model: torch modules are not re-entrant across threads with shared caches.
        self.lock = threading.Lock()
        renew_in_child(self, "lock")  # a lock held at a fork would wedge the child
        self.set_prefix_cache_bytes(prefix_cache_bytes)

    # -- token-prefix KV reuse (issue 22) -------------------------------------------------------------------
    def set_prefix_cache_bytes(self, value: int | None) -> None:
        """Bound the token-prefix store (:mod:`.prefix_store`) to ``value`` bytes: ``None`` is the device's
        default, ``0`` turns it off (only the fixed policy prefix is reused then). Empties the store."""
        from .prefix_store import PrefixStore, check_prefix_cache_bytes, default_store_bytes

        check_prefix_cache_bytes(value)
        self.prefix_cache_bytes = default_store_bytes(self.device) if value is None else value
        """The token-prefix store's bound in bytes (``0``: off)."""
        self.prefix_store = PrefixStore(self.prefix_cache_bytes) if self.prefix_cache_bytes else None

    @property
    def device(self) -> Any:
        return next(self._open_model().parameters()).device

    def _open_model(self) -> Any:
        """The model; a check still running when its guard was closed gets GuardClosedError."""
        model = self.model
        if model is None:
            raise GuardClosedError("this guard was closed while a check was running")
        return model

    def _live(self) -> Any:
        """The model, about to run on this thread (noted for :mod:`~langchain_llamaguard.forking`); nothing runs for
        a caller that stopped waiting (:mod:`~langchain_llamaguard.cancellation`)."""
        raise_if_abandoned()
        forward_ran()
        return self._open_model()

    # Copies: a deep copy shares the model (weights are never duplicated) and so its lock; a pickle carries the
    # model. Either starts with empty prefix caches and counts no guard as a user yet.
    def __getstate__(self) -> dict[str, Any]:
        skip = ("lock", "_prefix_kv", "_llamaguard_owners", "prefix_store")
        return {k: v for k, v in vars(self).items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from .prefix_store import PrefixStore

        self.__dict__.update(state)
        self.lock = threading.Lock()
        renew_in_child(self, "lock")
        self._prefix_kv = OrderedDict()
        self.prefix_store = PrefixStore(self.prefix_cache_bytes) if self.prefix_cache_bytes else None

    def __deepcopy__(self, memo: dict[int, Any]) -> TransformersBackend:
        new = object.__new__(type(self))
        new.__setstate__(self.__getstate__())
        new.lock = self.lock  # one forward at a time on the shared model
        memo[id(self)] = new
        return new

    def clear_caches(self) -> None:
        """Drop every cached KV (the policy prefixes and the token-prefix store), e.g. after the weights changed."""
        with self.lock:
            self._prefix_kv.clear()
            if self.prefix_store is not None:
                self.prefix_store.clear()

    def close(self) -> None:
        """Let go of the model and the prefix caches (the last guard using this backend calls it)."""
        self.clear_caches()
        with self.lock:
            self.model = None
            self.processor = None

    def prune_lm_head(self, keep: Sequence[int]) -> None:
        """Keep only the output rows ``keep`` (see :mod:`.lm_head`); the prefix caches are dropped."""
        from .lm_head import prune_lm_head

        with self.lock:
            prune_lm_head(self._open_model(), keep)
        self.clear_caches()

    # -- images -------------------------------------------------------------------------------------------
    def expanded_length(self, prompt: EncodedPrompt) -> int:
        """How many tokens the model reads for ``prompt``: each image expanded to its tiles' tokens."""
        return len(self._expand_images(prompt)[0])

    def _expand_images(self, prompt: EncodedPrompt) -> tuple[list[int], list[Any]]:
        """Replace each ``<|image|>`` placeholder with the processor's expansion; collect pixel values (once per
        prompt: the context check and the forward pass share it)."""
        if not prompt.images:
            return prompt.input_ids, []
        if prompt.expanded is None:
            prompt.expanded = self._expanded(prompt)
        return prompt.expanded

    def _expanded(self, prompt: EncodedPrompt) -> tuple[list[int], list[Any]]:
        if self.processor is None:
            raise GuardInputError(f"{self.model_name} has no image processor; it cannot read images")
        ids: list[int] = []
        pixels: list[Any] = []
        last = 0
        for slot, image in zip(prompt.image_slots, prompt.images, strict=True):
            ids.extend(prompt.input_ids[last:slot])
            with tokenizer_lock(self.processor):  # its tokenizer is the one text checks use at the same time
                enc = self.processor(
                    text=self.processor.fake_image_token, images=[image], add_special_tokens=False, return_tensors="pt"
                )
            ids.extend(enc["input_ids"][0].tolist())
            pixels.append(enc["pixel_values"])
            last = slot + 1
        ids.extend(prompt.input_ids[last:])
        return ids, pixels

    # -- the hot path -------------------------------------------------------------------------------------
    takes_token_budget = True
    """:meth:`first_step` takes the forward's ``max_tokens`` (the batch budget the engine planned it under)."""

    def first_step(
        self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens, *, max_tokens: int | None = None
    ) -> tuple[list[FirstStep], _BatchState]:

        seqs: list[list[int]] = []
        pixels: list[Any] = []
        for p in prompts:
            ids, px = self._expand_images(p)
            seqs.append(ids + [tokens.lead])
            pixels.extend(px)
        prefixes = [tuple(p.input_ids[: p.prefix_len]) for p in prompts]
        if self.cache_prefix and not pixels and all(prefixes) and len(set(prefixes)) <= 16:
            out, mask = self._forward_after_prefix(prefixes, seqs, prompts, max_tokens=max_tokens)
        else:
            out, mask = self._forward(seqs, pixels)
        logits = out.logits[:, -2:, :].float()
        lead_argmax = logits[:, 0].argmax(-1).tolist()
        probs = logits[:, 1].softmax(-1)
        verdict_argmax = probs.argmax(-1).tolist()
        p_safe = probs[:, tokens.safe].tolist()
        p_unsafe = probs[:, tokens.unsafe].tolist()
        steps = [
            FirstStep(lead_argmax=a, verdict_argmax=b, p_safe=s, p_unsafe=u)
            for a, b, s, u in zip(lead_argmax, verdict_argmax, p_safe, p_unsafe, strict=True)
        ]
        state = _BatchState(cache=out.past_key_values, attention_mask=mask, next_pos=mask.sum(-1))
        return steps, state

    def next_logprobs(
        self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens, forced: Sequence[int], candidates: Sequence[int]
    ) -> list[list[float]]:
        """Log-probabilities of ``candidates`` as the next token after each prompt + lead + ``forced``."""
        seqs, pixels = [], []
        for p in prompts:
            ids, px = self._expand_images(p)
            seqs.append(ids + [tokens.lead, *forced])
            pixels.extend(px)
        out, _ = self._forward(seqs, pixels)
        logprobs = out.logits[:, -1].float().log_softmax(-1)
        return logprobs[:, list(candidates)].tolist()

    def _forward(self, seqs: list[list[int]], pixels: list[Any]) -> tuple[Any, Any]:
        """One forward over left-padded whole prompts."""
        import torch

        ids, mask = self._left_pad(seqs)
        kwargs: dict[str, Any] = {}
        if pixels:
            kwargs["pixel_values"] = torch.cat(pixels, dim=0).to(device=self.device, dtype=self._open_model().dtype)
        with self.lock, torch.inference_mode():
            out = self._live()(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(self.device),
                use_cache=True,
                logits_to_keep=2,
                **kwargs,
            )
        return out, mask

    def _forward_after_prefix(
        self,
        prefixes: list[tuple[int, ...]],
        seqs: list[list[int]],
        prompts: Sequence[EncodedPrompt] | None = None,
        *,
        max_tokens: int | None = None,
    ) -> tuple[Any, Any]:
        """Each row's fixed prefix (task and categories: one per role and policy) comes from a cached KV; only
        the rest is computed. With the token-prefix store (``prompts`` given, no images), a row that shares a longer
        prefix with a stored entry (an earlier check's conversation) starts from that many tokens of its KV
        instead, and each row's KV up to the end of its conversation is stored for the next check.

        Rows are ``[padding][prefix][padding][rest]``: prefixes of different lengths are left-padded to the
        longest, each rest to the longest rest; padding is masked out and position ids skip it, so every row
        sees exactly the positions and keys of its whole prompt. Rows of different roles or exclusions share
        one forward pass. Stored prefixes never make the stacked rows (rows x their width) exceed ``max_tokens``
        (the batch budget) where the rows without them would not.
        """
        import torch

        store = self.prefix_store if prompts is not None else None
        hits: list[tuple[int, Any]] = [(0, None)] * len(seqs)
        if store is not None:
            ends = [_reusable_end(p) for p in prompts]  # type: ignore[union-attr]
            hits = [
                store.longest(p.input_ids[:end], min_len=len(pre) + 1) if end > len(pre) else (0, None)
                for p, pre, end in zip(prompts, prefixes, ends, strict=True)  # type: ignore[arg-type]
            ]
            if len(hits) > 1 and any(n for n, _ in hits):
                lens = [len(p) for p in prefixes], [len(s) for s in seqs], [n for n, _ in hits]
                use = plan_reuse(*lens, key_cost=self._key_cost, max_tokens=max_tokens)
                hits = [hit if u else (0, None) for hit, u in zip(hits, use, strict=True)]
        starts = [n or len(p) for (n, _), p in zip(hits, prefixes, strict=True)]
        width = max(starts)
        rests = [s[n:] for n, s in zip(starts, seqs, strict=True)]
        if self._chunk and width + max(map(len, rests)) + 1 + DECODE_COLUMNS > self._chunk:
            # Stacked rows ([pad][prefix][pad][rest], then the verdict) would cross a Llama 4 attention chunk.
            return self._forward(seqs, [])
        caches = {p: self._prefix_cache(p) for p, (n, _) in zip(prefixes, hits, strict=True) if not n}
        rows = [kv if n else caches[p] for (n, kv), p in zip(hits, prefixes, strict=True)]
        if not all(_STACKABLE.issuperset(type(layer).__name__ for layer in c.layers) for c in rows):
            return self._forward(seqs, [])  # a cache layout this backend does not know how to merge
        ids, rest_mask = self._left_pad(rests)
        cache = self._stack_caches(rows, width)
        prefix_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        lengths = torch.tensor(starts, dtype=torch.long)
        for i, n in enumerate(lengths.tolist()):
            prefix_mask[i, width - n :] = 1
        mask = torch.cat([prefix_mask, rest_mask], dim=-1)
        with self.lock, torch.inference_mode():
            epoch = store.epoch if store is not None else 0  # a clear_caches() after this forward voids its KV
            out = self._live()(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=(lengths.unsqueeze(1) + (rest_mask.cumsum(-1) - 1).clamp(min=0)).to(self.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=2,
            )
        if store is not None:
            try:  # the store is a cache: a failure to write it (out of memory) leaves the verdicts as they are
                with torch.inference_mode():  # outside the model lock: other callers' forwards need not wait
                    self._store_rows(store, out.past_key_values, prompts, starts, rests, width, epoch)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001
                logger.warning("the prefix store could not keep this batch's KV (%s); checks go on without it", exc)
        return out, mask

    @staticmethod
    def _store_rows(
        store: Any,
        cache: Any,
        prompts: Sequence[EncodedPrompt],
        starts: list[int],
        rests: list[list[int]],
        width: int,
        epoch: int,
    ) -> None:
        """Store each row's KV up to the end of its conversation (new tensors: the batch cache goes on to decode).

        Row ``i`` of ``cache`` is ``[pad][starts[i] reused][pad][rest]``; its entry is the reused part and the
        first ``body_end - starts[i]`` computed tokens, without the padding.
        """
        import torch

        total = width + max(map(len, rests))
        if any(layer.keys.shape[-2] != total for layer in cache.layers):
            return  # a layer dropped tokens (a sliding window): its rows are not whole
        per_token = sum((layer.keys[:1, :, :1].nbytes + layer.values[:1, :, :1].nbytes) for layer in cache.layers)
        for i, (p, n) in enumerate(zip(prompts, starts, strict=True)):
            end = _reusable_end(p)
            if end <= n or not store.fits(end * per_token):
                continue  # nothing new before the suffix, or an entry the store would not keep: no copy made
            lo = total - len(rests[i])
            spans = ((width - n, width), (lo, lo + end - n))
            entry = copy.copy(cache)
            entry.layers = []
            for layer in cache.layers:
                row = copy.copy(layer)
                row.keys = torch.cat([layer.keys[i : i + 1, :, a:b] for a, b in spans], dim=-2)
                row.values = torch.cat([layer.values[i : i + 1, :, a:b] for a, b in spans], dim=-2)
                if hasattr(row, "cumulative_length"):
                    row.cumulative_length = end
                entry.layers.append(row)
            store.put(p.input_ids[:end], entry, epoch=epoch)

    def _prefix_cache(self, prefix: tuple[int, ...]) -> Any:
        """The KV cache of one fixed prefix, computed on first use; the 16 most recently used are kept."""
        import torch

        with self.lock:
            kv = self._prefix_kv.get(prefix)
            if kv is not None:
                self._prefix_kv.move_to_end(prefix)
                return kv
            with torch.inference_mode():
                kv = self._live()(
                    input_ids=torch.tensor([list(prefix)], device=self.device), use_cache=True, logits_to_keep=1
                ).past_key_values
            self._prefix_kv[prefix] = kv
            while len(self._prefix_kv) > 16:
                self._prefix_kv.popitem(last=False)
        return kv

    @staticmethod
    def _stack_caches(caches: list[Any], width: int) -> Any:
        """One batch cache from per-row prefix caches, each left-padded (zeros, masked) to ``width`` tokens.

        The stored caches are left untouched: the result holds new tensors in shallow copies of the layers.
        """
        import torch
        import torch.nn.functional as F

        out = copy.copy(caches[0])
        out.layers = []
        for i, layer in enumerate(caches[0].layers):
            rows = [c.layers[i] for c in caches]
            merged = copy.copy(layer)
            pads = [(0, 0, width - r.keys.shape[-2], 0) for r in rows]
            merged.keys = torch.cat([F.pad(r.keys, p) for r, p in zip(rows, pads, strict=True)])
            merged.values = torch.cat([F.pad(r.values, p) for r, p in zip(rows, pads, strict=True)])
            if hasattr(merged, "cumulative_length"):  # sliding-window layers (Llama 4) count the tokens seen
                merged.cumulative_length = width
            out.layers.append(merged)
        return out

    def _left_pad(self, seqs: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids, mask

    def decode(
        self,
        state: _BatchState,
        rows: Sequence[int],
        forced: Sequence[Sequence[int]],
        *,
        draft: DraftFn,
        stop: Sequence[int],
        max_new_tokens: int,
    ) -> list[list[int]]:
        """Greedy-continue the selected rows together, from the first step's KV cache.

        The cache is narrowed to ``rows`` once (no copies). Each step feeds every active row its known token(s)
        plus the format's draft, right-padded to a common width; draft tokens the model does not confirm, the
        padding, and finished rows are masked out of attention, so each row's result is exactly its greedy output.
        """
        import torch

        device = self.device
        cache = state.cache
        index = torch.tensor(list(rows), dtype=torch.long)
        if len(rows) != state.attention_mask.shape[0] or list(rows) != list(range(len(rows))):
            cache.batch_select_indices(index.to(device))
        mask = state.attention_mask[index].clone()
        pos = state.next_pos[index].clone()
        generated = [list(f) for f in forced]
        feeds = [g + draft(g) for g in generated]
        known = [len(g) for g in generated]
        active = [True] * len(rows)
        stop_set = set(stop)
        while any(active):
            width = max(len(f) for f, a in zip(feeds, active, strict=True) if a)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            feed_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (f, a) in enumerate(zip(feeds, active, strict=True)):
                if a:
                    ids[r, : len(f)] = torch.tensor(f, dtype=torch.long)
                    feed_mask[r, : len(f)] = 1
            positions = pos.unsqueeze(1) + torch.arange(width).unsqueeze(0)
            with self.lock, torch.inference_mode():
                out = self._live()(
                    input_ids=ids.to(device),
                    attention_mask=torch.cat([mask, feed_mask], dim=-1).to(device),
                    position_ids=positions.to(device),
                    past_key_values=cache,
                    use_cache=True,
                )
            preds = out.logits.float().argmax(-1).tolist()
            kept = torch.zeros((len(rows), width), dtype=torch.long)
            for r in range(len(rows)):
                if not active[r]:
                    continue
                f, p = feeds[r], preds[r]
                confirmed = known[r]
                while confirmed < len(f) and p[confirmed - 1] == f[confirmed]:
                    generated[r].append(f[confirmed])
                    confirmed += 1
                kept[r, :confirmed] = 1
                pos[r] += confirmed
                nxt = p[confirmed - 1]
                if nxt in stop_set or len(generated[r]) >= max_new_tokens:
                    active[r] = False
                    continue
                generated[r].append(nxt)
                if len(generated[r]) >= max_new_tokens:
                    active[r] = False
                    continue
                feeds[r] = [nxt] + draft(generated[r])
                known[r] = 1
            mask = torch.cat([mask, kept], dim=-1)
        return generated
