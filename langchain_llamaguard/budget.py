"""Batches bounded by memory, not by count: length-sorted sub-batches under a token budget.

A forward pass over a left-padded batch holds ``rows x longest`` tokens (activations, KV cache) and, where the
attention mask or scores are materialized, ``rows x longest²`` elements. One long conversation in a batch of short
ones would make every row as long as it: the planner sorts prompts by length and cuts them into sub-batches whose
padded size stays under both budgets and whose padding wastes little, so a mixed-length batch costs no more than
one by one, and a same-length batch stays one forward.

Example:
    >>> plan_sub_batches([10, 5000, 12, 11], BatchBudget(max_tokens=4096, max_attention=2**26))
    [[0, 3, 2], [1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CPU_MAX_TOKENS = 32_768
"""Padded tokens per forward on a CPU (a 1B guard's KV for this is about 1 GiB in float32)."""
CPU_MAX_ATTENTION = 2**23
"""Rows x longest² per forward on a CPU (a 32 MiB float32 mask). Past about a thousand tokens a padded batch on a
CPU runs the materialized-mask attention kernel instead of the flash one a lone row gets, and gains nothing:
measured on 2 cores, 8 rows of 500 tokens batch 1.4x faster than one by one, 4 of 1,200 break even, 4 of 2,200
are 0.9x. So long rows run in small groups or alone."""
MAX_PADDING = 1.25
"""A sub-batch past :data:`PADDING_FLOOR` padded tokens grows only while that is at most this times its real
tokens (padding is compute thrown away)."""
PADDING_FLOOR = 1_024
"""Below this many padded (computed) tokens a forward's fixed cost outweighs padding: short rows batch freely."""
IMAGE_TOKENS = 2_500
"""What one image counts for before it is expanded (Llama Guard 4: up to 16 tiles + 1 global of 144 tokens)."""


@dataclass(frozen=True)
class BatchBudget:
    """How much one forward pass may hold.

    Example:
        >>> BatchBudget(max_tokens=8192, max_attention=2**26).max_tokens
        8192
    """

    max_tokens: int
    """Rows x longest row (padded tokens)."""
    max_attention: int
    """Rows x longest row² (elements of a materialized attention mask)."""

    def fits(self, rows: int, longest: int) -> bool:
        return rows * longest <= self.max_tokens and rows * longest * longest <= self.max_attention


def plan_sub_batches(
    lengths: Sequence[int], budget: BatchBudget | None, computed: Sequence[int] | None = None
) -> list[list[int]]:
    """Indices of ``lengths`` grouped into sub-batches (each sorted by length, shortest first).

    ``computed`` is what a forward computes of each row (its length less a cached prefix; default the length):
    rows are sorted by it and padding is judged on it, while the budget holds the whole rows. A row that alone
    exceeds the budget runs alone; ``budget=None`` keeps one batch (input order).
    """
    if budget is None or len(lengths) <= 1:
        return [list(range(len(lengths)))] if lengths else []
    work = list(computed) if computed is not None else list(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (work[i], lengths[i]))
    groups: list[list[int]] = []
    current: list[int] = []
    longest = real = widest = 0
    for i in order:
        rows = len(current) + 1
        grown_longest, grown_widest = max(longest, lengths[i]), max(widest, work[i])
        padded = rows * grown_widest
        wasteful = padded > PADDING_FLOOR and padded > MAX_PADDING * (real + work[i])
        if current and (not budget.fits(rows, grown_longest) or wasteful):
            groups.append(current)
            current, real, grown_longest, grown_widest = [], 0, lengths[i], work[i]
        current.append(i)
        real += work[i]
        longest, widest = grown_longest, grown_widest
    groups.append(current)
    return groups


def default_budget(model: Any = None) -> BatchBudget:
    """The budget for where ``model`` runs: the CPU constants, or on a GPU a share of its free memory.

    On a GPU, half of the free memory is shared between the KV cache and the activations of a token (from the
    model's config), and the attention budget allows a float32 mask of a quarter of the free memory.
    """
    device = _device_of(model)
    if device is None or device.type != "cuda":
        return BatchBudget(max_tokens=CPU_MAX_TOKENS, max_attention=CPU_MAX_ATTENTION)
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    per_token = _bytes_per_token(model)
    return BatchBudget(
        max_tokens=max(int(free * 0.5 / per_token), 2048), max_attention=max(int(free * 0.25 / 4), 2**24)
    )


def _device_of(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return None


def _bytes_per_token(model: Any) -> int:
    """KV cache plus the widest activation of one token, in the model's dtype (a generous estimate)."""
    config = getattr(model.config, "text_config", model.config)
    layers = int(getattr(config, "num_hidden_layers", 32))
    hidden = int(getattr(config, "hidden_size", 4096))
    heads = int(getattr(config, "num_attention_heads", 32))
    kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    inter = int(getattr(config, "intermediate_size", 4 * hidden))
    dtype_bytes = getattr(getattr(model, "dtype", None), "itemsize", 2)
    return (layers * 2 * kv_heads * head_dim + 4 * max(inter, hidden)) * dtype_bytes
