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
from itertools import islice
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
    prefix_lens: Sequence[int],
    seq_lens: Sequence[int],
    hit_lens: Sequence[int],
    key_cost: int,
    max_tokens: int | None = None,
) -> list[bool]:
    """Which rows of one batch forward start from their stored prefix (``hit_lens[i]`` tokens; ``0``: none) rather
    than from their fixed policy prefix (``prefix_lens[i]``).

    A batch computes every row's rest padded to the longest rest ``R``, over keys as wide as the longest start
    plus ``R``. A row whose whole rest fits ``R`` anyway gains nothing from its stored prefix and would only
    widen every row's keys, so for each candidate ``R`` only the rows that need their stored prefix to fit it use
    it. The plan taken costs least, at ``R * (key_cost + width)`` (``key_cost``: what a token's linear layers
    cost in units of one attention key), among those whose attention (``R * width``) is no larger than the
    forward without reuse, which the batch planner sized, and whose stacked rows (``rows * (width + R)`` padded
    tokens of KV cache) fit ``max_tokens`` (the batch budget), or are no wider than without reuse.

    Example:
        >>> plan_reuse([300, 300], [1964, 1950], [1900, 0], key_cost=512)  # reuse would double the width
        [False, False]
    """
    rest_plain = [s - p for s, p in zip(seq_lens, prefix_lens, strict=True)]
    rest_hit = [s - h if h else r for s, h, r in zip(seq_lens, hit_lens, rest_plain, strict=True)]
    plain_rest = max(rest_plain)
    plain_width = max(prefix_lens) + plain_rest
    plain_attention = plain_rest * plain_width
    max_width = max(plain_width, max_tokens // len(seq_lens)) if max_tokens is not None else None
    best: tuple[int, list[bool]] | None = None
    for rest in sorted(set(rest_plain) | set(rest_hit)):
        if any(min(a, b) > rest for a, b in zip(rest_plain, rest_hit, strict=True)):
            continue  # some row cannot fit this rest
        use = [r > rest for r in rest_plain]
        width = max(h if u else p for h, p, u in zip(hit_lens, prefix_lens, use, strict=True)) + rest
        if rest * width > plain_attention or (max_width is not None and width > max_width):
            continue
        cost = rest * (key_cost + width)
        if best is None or cost < best[0]:
            best = (cost, use)
    return best[1] if best is not None else [False] * len(seq_lens)


BLOCK = 16
"""Token ids per block of the store's index: a lookup walks the blocks it shares with the stored keys, so its cost
grows with its own length, not with the number of entries."""
CANDIDATES = 8
"""Entries (the most recently stored) compared token by token at the deepest block a lookup reaches: they all share
its blocks, and differ by fewer than :data:`BLOCK` tokens in what they share beyond."""


class _Node:
    """One block of token ids in the index: the entries whose keys pass through it (their ids, in the order they
    were stored), and the entries that a new key passing through it may supersede."""

    __slots__ = ("children", "entries", "ends")

    def __init__(self) -> None:
        self.children: dict[tuple[int, ...], _Node] = {}
        self.entries: dict[int, None] = {}
        self.ends: dict[int, None] = {}


class PrefixStore:
    """Thread-safe LRU store of single-row KV caches keyed by token ids, bounded by ``max_bytes``.

    The keys are indexed in blocks of :data:`BLOCK` ids (a trie, as vLLM's prefix caching hashes blocks): a lookup
    or a write costs about its own length, whatever the number of entries (a full scan made every row of a batch of
    unrelated conversations compare itself with every entry). Blocks are compared by value, so the index can only
    narrow the candidates; the token ids reused are always compared exactly. A match that ends less than
    ``min_len`` into its deepest shared block is not looked for (it reuses fewer than :data:`BLOCK` tokens more).

    Args:
        max_bytes: the most bytes of key/value tensors held; an entry larger than this is not stored.
        max_entries: the most entries held.

    Example:
        >>> store = PrefixStore(max_bytes=1 << 20)
        >>> store.nbytes
        0
    """

    def __init__(self, max_bytes: int, *, max_entries: int = 256, block: int = BLOCK) -> None:
        from ..forking import call_in_child, renew_in_child

        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.block = block
        # entry id -> (key, the key as an array, cache, its bytes); least recently used first
        self._entries: OrderedDict[int, tuple[tuple[int, ...], Any, Any, int]] = OrderedDict()
        self._ids: dict[tuple[int, ...], int] = {}
        self._root = _Node()
        self._next_id = 0
        self._nbytes = 0
        self.epoch = 0
        """Bumped by :meth:`clear`: a write computed before a clear (older weights) is not stored."""
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")  # a lookup under way in another thread at a fork would wedge the child
        call_in_child(self, "clear")  # a write under way at the fork may have left the index half-updated

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def fits(self, nbytes: int) -> bool:
        """Whether an entry of ``nbytes`` could be stored (checked before the caller copies one)."""
        return nbytes <= self.max_bytes

    def _blocks(self, key: Sequence[int]) -> list[tuple[int, ...]]:
        b = self.block
        return [tuple(key[i : i + b]) for i in range(0, len(key) - b + 1, b)]

    def _path(self, key: Sequence[int]) -> list[_Node]:
        """The index nodes ``key`` passes through, from the root, as far as they exist."""
        node, path = self._root, [self._root]
        for blk in self._blocks(key):
            found = node.children.get(blk)
            if found is None:
                break
            node = found
            path.append(node)
        return path

    def _tail_depth(self, n: int, blocks: int) -> int:
        """The index depth a new key must reach to supersede an entry of ``n`` ids."""
        return min(max(n - SUPERSEDED_TAIL, 0) // self.block, blocks)

    def longest(self, ids: Sequence[int], *, min_len: int = 1) -> tuple[int, Any]:
        """``(n, cache)``: the KV of ``ids[:n]`` for the longest ``n >= min_len`` that a stored entry shares with
        ``ids`` (to within :data:`BLOCK` ids: see the class), or ``(0, None)``."""
        import numpy as np

        with self._lock:
            path = self._path(ids)
            depth = (len(path) - 1) * self.block  # ids every entry of the deepest node shares with ``ids``
            if len(path) == 1 or depth < max(min_len, 1):
                return 0, None
            query = np.asarray(ids[depth:], dtype=np.int64)
            best, best_id = 0, -1
            for entry_id in islice(reversed(path[-1].entries), CANDIDATES):  # most recently stored first
                arr = self._entries[entry_id][1]
                n = depth + _common_prefix(arr[depth:], query)
                if n > best:
                    best, best_id = n, entry_id
            self._entries.move_to_end(best_id)
            key, _, cache, _ = self._entries[best_id]
        return best, cache if best == len(key) else crop_cache(cache, best)

    def put(self, ids: Sequence[int], cache: Any, *, epoch: int | None = None) -> None:
        """Store ``cache`` (the KV of exactly ``ids``; the caller gives it up), drop the entries it continues (all
        but their last :data:`SUPERSEDED_TAIL` ids at most), and evict the least recently used entries until the
        store is within its bounds. ``epoch``: the store's :attr:`epoch` when the KV was computed; if the store was
        cleared since, the entry is not stored."""
        import numpy as np

        key = tuple(ids)
        size = cache_nbytes(cache)
        if not self.fits(size):
            return
        arr = np.asarray(key, dtype=np.int64)
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            known = self._ids.get(key)
            if known is not None:
                self._entries.move_to_end(known)
                return
            for node in self._path(key):  # entries whose keys this one continues
                for old_id in list(node.ends):
                    old = self._entries[old_id][1]
                    if _common_prefix(old, arr) >= len(old) - SUPERSEDED_TAIL:
                        self._drop(old_id)
            while self._entries and (self._nbytes + size > self.max_bytes or len(self._entries) >= self.max_entries):
                self._drop(next(iter(self._entries)))
            entry_id, self._next_id = self._next_id, self._next_id + 1
            blocks = self._blocks(key)
            node, path = self._root, [self._root]
            for blk in blocks:
                node = node.children.setdefault(blk, _Node())
                node.entries[entry_id] = None
                path.append(node)
            path[self._tail_depth(len(key), len(blocks))].ends[entry_id] = None
            self._entries[entry_id] = (key, arr, cache, size)
            self._ids[key] = entry_id
            self._nbytes += size

    def _drop(self, entry_id: int) -> None:
        key, _, _, size = self._entries.pop(entry_id)
        del self._ids[key]
        self._nbytes -= size
        blocks = self._blocks(key)
        path = self._path(key)
        path[self._tail_depth(len(key), len(blocks))].ends.pop(entry_id, None)
        for parent, node, blk in zip(path, path[1:], blocks, strict=False):
            node.entries.pop(entry_id, None)
            if not node.entries:  # no key passes through it: nor through any block below it
                del parent.children[blk]
                break

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._ids.clear()
            self._root = _Node()
            self._nbytes = 0
            self.epoch += 1
