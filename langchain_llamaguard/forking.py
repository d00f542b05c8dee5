"""Guards loaded before a fork keep working in the child (gunicorn ``--preload``, multiprocessing's ``"fork"``).

A forked child has only the thread that forked. Two things of the parent would wedge it for ever:

* a lock that another thread held at the fork (a check was running): nobody will release it. Every model lock a
  guard uses is registered here (:func:`renew_in_child`) and replaced by a new one in the child, locks shared
  by several objects staying shared;
* torch's OpenMP thread pool, when the forking thread ran parallel torch operations: the child's first
  operation waits for pool threads that do not exist (GNU OpenMP is not fork-safe). If a guard's forward pass ran
  on the forking thread (:func:`forward_ran`), the child runs torch on one thread, with a warning that says so
  and how to keep every core (load the guard after the fork, or use the ``"spawn"`` start method).

Example:
    >>> import threading
    >>> class Model:
    ...     def __init__(self):
    ...         self.lock = threading.Lock()
    ...         renew_in_child(self, "lock")
    >>> _ = Model()
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
import weakref
from typing import Any

_RENEWED: list[tuple[weakref.ReferenceType[Any], str]] = []
_RENEWED_LOCK = threading.Lock()
_FORWARD_THREADS: set[int] = set()
"""Threads that ran a guard's torch forward pass in this process."""


def renew_in_child(owner: Any, attr: str) -> None:
    """Give ``owner.<attr>`` (a lock) a new lock in a forked child; owners that share a lock share the new one."""
    with _RENEWED_LOCK:
        _RENEWED[:] = [(ref, a) for ref, a in _RENEWED if ref() is not None]
        _RENEWED.append((weakref.ref(owner), attr))


def call_in_child(owner: Any, method: str) -> None:
    """Call ``owner.<method>()`` in a forked child (to start afresh what the parent's threads held)."""
    renew_in_child(owner, "()" + method)


def forward_ran() -> None:
    """Note that the calling thread ran torch operations for a guard (cheap: called on every forward pass)."""
    _FORWARD_THREADS.add(threading.get_ident())


def _new_like(lock: Any) -> Any:
    return threading.RLock() if isinstance(lock, type(threading.RLock())) else threading.Lock()


def _after_fork_in_child() -> None:
    global _RENEWED_LOCK
    _RENEWED_LOCK = threading.Lock()  # it may have been held at the fork too
    fresh: dict[int, Any] = {}
    for ref, attr in _RENEWED:
        owner = ref()
        if owner is not None and attr.startswith("()"):
            getattr(owner, attr[2:])()
            continue
        old = getattr(owner, attr, None) if owner is not None else None
        if old is not None:
            setattr(owner, attr, fresh.setdefault(id(old), _new_like(old)))
    used_here = threading.get_ident() in _FORWARD_THREADS
    _FORWARD_THREADS.clear()
    torch = sys.modules.get("torch")
    if used_here and torch is not None and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
        warnings.warn(
            "this process was forked from one whose forking thread had run a guard on several torch threads; "
            "torch cannot use that thread pool after a fork (the first check would hang), so it runs on 1 thread "
            "here. To use every core, load the guard after the fork (e.g. gunicorn without --preload, or in a "
            "post_fork hook) or start processes with multiprocessing's 'spawn' method",
            RuntimeWarning,
            stacklevel=1,
        )


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = ["call_in_child", "forward_ran", "renew_in_child"]
