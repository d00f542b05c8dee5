"""Copies and pickles of guards: a deep copy shares the loaded model; a pickle carries how it was loaded.

* ``copy.deepcopy(guard)``, and of any step, chain, guarded tool or middleware holding one, gives a guard with its
  own settings, micro-batcher and caches over the **same** loaded model (weights are never duplicated; the copy
  is one more user of the model, so closing it leaves the others working).
* ``pickle.dumps(guard)`` writes how the guard was loaded (``from_pretrained(path, ...)`` or
  ``from_endpoint(url, ...)``, without the settings that are the guard's own) and its settings, never weights;
  ``pickle.loads`` loads the model the same way (:func:`reload_guard`), then applies the settings. In one process,
  guards unpickled from the same loading arguments share one loaded model while any of them is open (a registry
  that holds them weakly): unpickling a chain of five guarded steps, or the same pickle twice, loads it once.
* A guard over a model passed in (``from_model``) cannot be loaded again: pickling it raises
  :class:`~langchain_llamaguard.errors.GuardPickleError`.

An engine opts in with ``_shared_copy`` (a new guard over the same model), ``__getstate__`` / ``__setstate__``
(its settings) and ``_recipe``; the functions here do the rest.

Example:
    >>> import pickle
    >>> guard = LlamaGuard.from_pretrained("meta-llama/Llama-Guard-3-1B")  # doctest: +SKIP
    >>> step = pickle.loads(pickle.dumps(guard.as_input_guard()))        # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import pickle
import sys
import threading
import weakref
from typing import Any

from .errors import GuardPickleError
from .forking import renew_in_child

Recipe = tuple[str, tuple[Any, ...], dict[str, Any]]
"""``(constructor name, positional args, keyword args)``: a class method that loads the guard again."""

_LIVE: dict[bytes, weakref.WeakSet[Any]] = {}
"""Open guards by what loaded them (class and loading recipe, pickled), to share their model with new ones."""
_LIVE_LOCK = threading.Lock()
renew_in_child(sys.modules[__name__], "_LIVE_LOCK")  # held across a load in another thread at a fork


def recipe_of(args: dict[str, Any], *positional: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` that call a constructor again the way it was called, from its ``locals()`` taken first
    thing (``positional`` first; a name ending in ``kwargs`` is a ``**`` catch-all).

    Example:
        >>> recipe_of({"cls": None, "path": "p", "threshold": 0.5, "kwargs": {"dtype": "bf16"}}, "path", "kwargs")
        (('p',), {'threshold': 0.5, 'dtype': 'bf16'})
    """
    pos = tuple(args[name] for name in positional if not name.endswith("kwargs"))
    kw = {k: v for k, v in args.items() if k not in positional and k not in ("cls", "__class__")}
    for name in positional:
        if name.endswith("kwargs"):
            kw.update(args[name])
    return pos, kw


def loading_recipe(recipe: Recipe, settings: frozenset[str]) -> Recipe:
    """The part of ``recipe`` that loads the model: the guard's own ``settings`` left out (the pickle carries
    them as they are now), and a local checkpoint path made absolute (the pickle may be read elsewhere)."""
    method, args, kwargs = recipe
    if method == "from_pretrained" and args and isinstance(args[0], (str, os.PathLike)):
        local = os.path.expanduser(args[0])  # "~/guard" is another folder where HOME differs
        if os.path.exists(local):
            args = (os.path.abspath(local), *args[1:])
    return method, tuple(args), {k: v for k, v in kwargs.items() if k not in settings}


def reduce_guard(guard: Any, recipe: Recipe | None, settings: frozenset[str]) -> tuple[Any, ...]:
    """``guard.__reduce__``: load again with ``recipe`` (:func:`reload_guard`), then ``guard.__getstate__()``."""
    if recipe is None:
        raise GuardPickleError(
            f"this {type(guard).__name__} cannot be pickled: a model passed in with from_model cannot be pickled; "
            "load it with from_pretrained(path) (or from_endpoint(url)) to make a picklable guard"
        )
    loading = loading_recipe(recipe, settings)
    _register(type(guard), loading, guard)  # unpickled in this process, it shares this guard's model
    return reload_guard, (type(guard), loading), guard.__getstate__()


def _key(cls: type, recipe: Recipe) -> bytes | None:
    try:
        return pickle.dumps((cls, recipe))
    except Exception:  # an argument that cannot be compared: no sharing, the model is loaded again
        return None


def _add(key: bytes | None, guard: Any) -> None:
    """Keep ``guard`` (weakly) as one whose model later guards of ``key`` may share; under ``_LIVE_LOCK``."""
    if key is None:
        return
    _LIVE.setdefault(key, weakref.WeakSet()).add(guard)
    for k in [k for k, guards in _LIVE.items() if not guards]:
        del _LIVE[k]


def _register(cls: type, recipe: Recipe, guard: Any) -> None:
    key = _key(cls, recipe)
    with _LIVE_LOCK:
        _add(key, guard)


def reload_guard(cls: type, recipe: Recipe) -> Any:
    """A guard made by ``recipe`` (pickle then calls its ``__setstate__`` with the settings): over the model of an
    open guard made by the same recipe in this process, else over a model loaded now."""
    key = _key(cls, recipe)
    with _LIVE_LOCK:  # one load per recipe, however many threads unpickle at once
        live = [g for g in _LIVE.get(key, ()) if not getattr(g, "_closed", False)] if key is not None else []
        if live:
            guard = live[0]._shared_copy()
        else:
            method, args, kwargs = recipe
            guard = getattr(cls, method)(*args, **kwargs)
            guard._recipe = recipe
        _add(key, guard)
    return guard


def deep_copy(guard: Any, memo: dict[int, Any]) -> Any:
    """``guard.__deepcopy__``: a new guard over the same model, with deep copies of the settings."""
    new = guard._shared_copy()
    memo[id(guard)] = new
    new.__setstate__(copy.deepcopy(guard.__getstate__(), memo))
    return new


__all__ = ["Recipe", "deep_copy", "loading_recipe", "recipe_of", "reduce_guard", "reload_guard"]
