"""An LRU store of KV caches keyed by token ids, bounded in bytes: the in-process prefix reuse of a growing
conversation (the previous agent step, stream chunk or chat turn).

Each entry is the KV cache of one prompt's ids up to the end of its conversation (before the template's suffix),
one batch row, never mutated once stored. A lookup finds the entry sharing the longest common prefix with the ids
asked for, and gives that many tokens of its KV (a causal model's KV of a token depends only on the ids up to
it): a whole earlier conversation for the next agent step, the answer so far (less its last, re-tokenized word)
for the next stream chunk. An entry that a newer one continues (a prefix of it, but for a few last ids) is dropped:
the newer one serves every lookup it would, to within those few ids.

Example:
    >>> store = PrefixStore(max_bytes=1 << 30)
    >>> store.longest([1, 2, 3])
    (0, None)
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_CPU_BYTES = 1 << 30
"""The store's default bound on a CPU (lowered to a tenth of the available memory where that is less)."""
GPU_FREE_SHARE = 0.1
"""The store's default bound on a GPU: this share of the device's free memory when the backend is made."""


def check_prefix_cache_bytes(value: Any) -> int | None:
    """``value`` if it is a valid ``prefix_cache_bytes`` (an int >= 0, or ``None``), else a
    :class:`~langchain_llamaguard.errors.GuardConfigurationError` saying what is accepted."""
    from ..errors import GuardConfigurationError

    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise GuardConfigurationError(f"prefix_cache_bytes must be an int >= 0 (0: off) or None, got {value!r}")
    return value


def cache_nbytes(cache: Any) -> int:
    """Bytes of a cache's key and value tensors."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def default_store_bytes(device: Any) -> int:
    """:data:`GPU_FREE_SHARE` of the free memory on a CUDA device; on a CPU :data:`DEFAULT_CPU_BYTES`, or a tenth
    of the available memory (:func:`available_memory`) where that is less."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_FREE_SHARE)
    memory = available_memory()
    return DEFAULT_CPU_BYTES if memory is None else min(DEFAULT_CPU_BYTES, memory // 10)


def available_memory(cgroup_root: str | Path = "/sys/fs/cgroup") -> int | None:
    """Bytes a process can still allocate without swapping: the system's *available* memory (free plus the page
    cache it can reclaim, from psutil; a machine that has read a model's weights from disk holds them in its page
    cache, so its *free* memory alone is a small part of it), or the room left under this process's cgroup memory
    limit (a container's) where that is less. ``None`` where neither is known."""
    try:
        import psutil

        system: int | None = int(psutil.virtual_memory().available)
    except (ImportError, OSError, RuntimeError):
        system = None
    known = [v for v in (system, cgroup_room(Path(cgroup_root))) if v is not None]
    return min(known) if known else None


def cgroup_room(root: Path) -> int | None:
    """Bytes left under the cgroup memory limit at ``root`` (v2 ``memory.max``, or v1 ``memory/memory.limit_in_bytes``),
    counting reclaimable page cache (``inactive_file``) as room; ``None`` where there is no limit or no cgroup."""

    def read(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except OSError:
            return None

    def stat(path: Path, name: str) -> int:
        for line in (read(path) or "").splitlines():
            key, _, value = line.partition(" ")
            if key == name and value.isdigit():
                return int(value)
        return 0

    for limit_file, usage_file, stat_file, cache in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat", "total_inactive_file"),
    ):
        limit, usage = read(root / limit_file), read(root / usage_file)
        if limit is None or usage is None or not limit.isdigit() or not usage.isdigit():
            continue  # "max" (v2: no limit), or not this cgroup version
        if int(limit) >= 1 << 60:  # v1's "no limit" is a page-rounded 2**63 - 1
            return None
        used = max(int(usage) - stat(root / stat_file, cache), 0)
        return max(int(limit) - used, 0)
    return None


def crop_cache(cache: Any, n: int) -> Any:
    """The first ``n`` tokens of a cache: views of its tensors in shallow copies of its layers."""
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        row = copy.copy(layer)
        row.keys, row.values = layer.keys[..., :n, :], layer.values[..., :n, :]
        if hasattr(row, "cumulative_length"):  # sliding-window layers (Llama 4) count the tokens seen
            row.cumulative_length = n
        out.layers.append(row)
    return out


SUPERSEDED_TAIL = 4
"""An entry that a new one continues but for at most this many last tokens is dropped when the new one is stored:
the previous check of a streamed answer (its key ends with the answer so far, whose last word the next check
re-tokenizes, and the turn's closing tokens) serves no lookup more than these few tokens better than the new one."""


def _common_prefix(a: Any, b: Any) -> int:
    """How many leading ids two int arrays share."""
    m = min(len(a), len(b))
    same = a[:m] == b[:m]
    return m if same.all() else int(same.argmin())


def plan_reuse(
    prefix_lens: Sequence[int], seq_lens: Sequence[int], hit_lens: Sequence[int], key_cost: int
) -> list[bool]:
    """Which rows of one batch forward start from their stored prefix (``hit_lens[i]`` tokens; ``0``: none) rather
    than from their fixed policy prefix (``prefix_lens[i]``).

    A batch computes every row's rest padded to the longest rest ``R``, over keys as wide as the longest start
    plus ``R``. A row whose whole rest fits ``R`` anyway gains nothing from its stored prefix and would only
    widen every row's keys, so for each candidate ``R`` only the rows that need their stored prefix to fit it use
    it. The plan taken costs least, at ``R * (key_cost + width)`` (``key_cost``: what a token's linear layers
    cost in units of one attention key), among those whose attention (``R * width``) is no larger than the
    forward without reuse, which the batch planner sized.

    Example:
        >>> plan_reuse([300, 300], [1964, 1950], [1900, 0], key_cost=512)  # reuse would double the width
        [False, False]
    """
    rest_plain = [s - p for s, p in zip(seq_lens, prefix_lens, strict=True)]
    rest_hit = [s - h if h else r for s, h, r in zip(seq_lens, hit_lens, rest_plain, strict=True)]
    plain_rest = max(rest_plain)
    plain_attention = plain_rest * (max(prefix_lens) + plain_rest)
    best: tuple[int, list[bool]] | None = None
    for rest in sorted(set(rest_plain) | set(rest_hit)):
        if any(min(a, b) > rest for a, b in zip(rest_plain, rest_hit, strict=True)):
            continue  # some row cannot fit this rest
        use = [r > rest for r in rest_plain]
        width = max(h if u else p for h, p, u in zip(hit_lens, prefix_lens, use, strict=True)) + rest
        if rest * width > plain_attention:
            continue
        cost = rest * (key_cost + width)
        if best is None or cost < best[0]:
            best = (cost, use)
    return best[1] if best is not None else [False] * len(seq_lens)


class PrefixStore:
    """Thread-safe LRU store of single-row KV caches keyed by token ids, bounded by ``max_bytes``.

    Args:
        max_bytes: the most bytes of key/value tensors held; an entry larger than this is not stored.
        max_entries: the most entries held (bounds the cost of a lookup).

    Example:
        >>> store = PrefixStore(max_bytes=1 << 20)
        >>> store.nbytes
        0
    """

    def __init__(self, max_bytes: int, *, max_entries: int = 256) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        # key -> (cache, its bytes, the key as an array); least recently used first
        self._entries: OrderedDict[tuple[int, ...], tuple[Any, int, Any]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, ids: Sequence[int], *, min_len: int = 1) -> tuple[int, Any]:
        """``(n, cache)``: the KV of ``ids[:n]`` for the longest ``n >= min_len`` that a stored entry shares with
        ``ids``, or ``(0, None)``."""
        import numpy as np

        query = np.asarray(ids, dtype=np.int64)
        best, best_key = 0, None
        with self._lock:
            for key, (_, _, arr) in reversed(self._entries.items()):  # most recent first: it wins ties
                m = min(len(arr), len(query))
                if m <= best or m < min_len:
                    continue
                n = _common_prefix(arr, query)
                if n > best:
                    best, best_key = n, key
            if best < min_len or best_key is None:
                return 0, None
            self._entries.move_to_end(best_key)
            cache = self._entries[best_key][0]
        return best, cache if best == len(best_key) else crop_cache(cache, best)

    def put(self, ids: Sequence[int], cache: Any) -> None:
        """Store ``cache`` (the KV of exactly ``ids``; the caller gives it up), drop the entries it continues (all
        but their last :data:`SUPERSEDED_TAIL` ids at most), and evict the least recently used entries until the
        store is within its bounds."""
        import numpy as np

        key = tuple(ids)
        size = cache_nbytes(cache)
        if size > self.max_bytes:
            return
        arr = np.asarray(key, dtype=np.int64)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            superseded = [
                k for k, (_, _, old) in self._entries.items() if _common_prefix(old, arr) >= len(old) - SUPERSEDED_TAIL
            ]
            for old_key in superseded:
                self._drop(old_key)
            while self._entries and (self._nbytes + size > self.max_bytes or len(self._entries) >= self.max_entries):
                self._drop(next(iter(self._entries)))
            self._entries[key] = (cache, size, arr)
            self._nbytes += size

    def _drop(self, key: tuple[int, ...]) -> None:
        self._nbytes -= self._entries.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0
