"""Adapters that give every guard one interface: check many conversations at once, get verdicts back.

The LangChain steps, the agent middleware and the guarded tools all talk to a :class:`Moderator`, so the
same logic serves Llama Guard, Prompt Guard and both together.

Example:
    >>> mod = LlamaGuardModerator(guard, excluded_categories=["S6"])   # doctest: +SKIP
    >>> mod.check([[HumanMessage("hi")]], role="User")[0].safe          # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .conversation import ConversationInput, last_turn_pieces, to_turns
from .errors import GuardBatchError, GuardConfigurationError, GuardInputError, GuardTypeError
from .forking import renew_in_child
from .prompt_format import active_categories
from .prompt_guard import PromptGuardVerdict
from .taxonomy import resolve_categories
from .verdict import Verdict

if TYPE_CHECKING:  # pragma: no cover
    from .llama_guard import LlamaGuardEngine as LlamaGuard
    from .prompt_guard import PromptGuardEngine as PromptGuard

AnyVerdict = Verdict | PromptGuardVerdict


@runtime_checkable
class Moderator(Protocol):
    """Checks conversations; the last turn is judged, in the given role (``"User"`` or ``"Agent"``)."""

    name: str

    def check(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]: ...

    async def acheck(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]: ...


def policy_digest(moderator: Any) -> str:
    """A short hash of what a moderator's verdicts depend on: each guard's kind and model format, its categories,
    excluded categories, threshold and whether it reveals hidden text. The same for every moderator built alike, in
    any process: the records a graph node (``verdict_key``) or the agent middleware leaves in a thread's state are
    named by it, so a verdict under one policy (a lenient one, another model) never stands in for another's.

    Example:
        >>> lenient = LlamaGuardModerator(guard, excluded_categories=["S9"])             # doctest: +SKIP
        >>> policy_digest(LlamaGuardModerator(guard)) == policy_digest(lenient)          # doctest: +SKIP
        False
    """
    described = []
    for part in getattr(moderator, "moderators", None) or [moderator]:  # a CombinedModerator's guards, in order
        guard = getattr(part, "guard", None)
        excluded = getattr(part, "excluded", None)
        if excluded is None:
            excluded = getattr(guard, "excluded_categories", None)
        described.append(
            {
                "guard": getattr(part, "name", type(part).__name__),
                "format": getattr(getattr(guard, "format", None), "name", None),
                "categories": getattr(guard, "categories", None),
                "excluded": sorted(excluded or ()),
                "threshold": getattr(guard, "threshold", None),
                "reveal_hidden_text": getattr(guard, "reveal_hidden_text", None),
            }
        )
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


class VerdictCache:
    """The most recent verdicts by key (a thread-safe LRU); a verdict standing in for an error is never kept.

    Example:
        >>> cache = VerdictCache(2)
        >>> found, todo = cache.split(["a", None], ["text a", "text b"])
        >>> cache.fill(["a", None], found, [f"verdict for {t}" for t in todo])
        ['verdict for text a', 'verdict for text b']
        >>> cache.lookup(["a"])
        ['verdict for text a']
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")  # a lookup under way in another thread at a fork would wedge the child

    def __getstate__(self) -> dict[str, Any]:
        """A copy or a pickle is an empty cache of the same size (the verdicts are this cache's own)."""
        return {"size": self.size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["size"])  # type: ignore[misc]

    def lookup(self, keys: Sequence[Hashable | None]) -> list[Any]:
        """The cached verdict, or ``None``, for each key (``None`` keys are never cached)."""
        with self._lock:
            found = [self._items.get(k) if k is not None else None for k in keys]
            for k, v in zip(keys, found, strict=True):
                if v is not None:
                    self._items.move_to_end(k)
        return found

    def split(self, keys: Sequence[Hashable | None], items: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """The cached verdict (or ``None``) for each item, and the items still to check, in order."""
        found = self.lookup(keys)
        return found, [item for item, verdict in zip(items, found, strict=True) if verdict is None]

    def fill(self, keys: Sequence[Hashable | None], found: list[Any], fresh: Sequence[Any]) -> list[Any]:
        """Put ``fresh`` verdicts (in order) into the gaps of ``found``, keep them, and return the full list."""
        todo = [i for i, v in enumerate(found) if v is None]
        with self._lock:
            for i, verdict in zip(todo, fresh, strict=True):
                found[i] = verdict
                if keys[i] is not None and self.size and getattr(verdict, "error", None) is None:
                    self._items[keys[i]] = verdict
                    while len(self._items) > self.size:
                        self._items.popitem(last=False)
        return found


def check_llama_guard(guard: Any, where: str) -> Any:
    """``guard`` if it is a Llama Guard, else a :class:`GuardConfigurationError` naming what was given: a Prompt
    Guard in a Llama Guard's place would judge injection, not the hazard categories, and let the rest through."""
    from .llama_guard import LlamaGuardEngine

    if not isinstance(guard, LlamaGuardEngine):
        hint = " (a Prompt Guard goes in prompt_guard= or PromptGuardMiddleware)" if _is_prompt_guard(guard) else ""
        raise GuardConfigurationError(
            f"{where} must be a LlamaGuard (LlamaGuard.from_pretrained / from_endpoint / from_model), got "
            f"{type(guard).__name__}{hint}"
        )
    return guard


def check_prompt_guard(guard: Any, where: str) -> Any:
    """``guard`` if it is a Prompt Guard, else a :class:`GuardConfigurationError`: a Llama Guard in its place would
    judge the hazard categories and pass prompt injection (which it does not look for)."""
    if not _is_prompt_guard(guard):
        from .llama_guard import LlamaGuardEngine

        is_llama = isinstance(guard, LlamaGuardEngine)
        hint = " (a Llama Guard goes in llama_guard= or LlamaGuardMiddleware)" if is_llama else ""
        raise GuardConfigurationError(
            f"{where} must be a PromptGuard (PromptGuard.from_pretrained), got {type(guard).__name__}{hint}"
        )
    return guard


def _is_prompt_guard(guard: Any) -> bool:
    from .prompt_guard import PromptGuardEngine

    return isinstance(guard, PromptGuardEngine)


class LlamaGuardModerator:
    """A :class:`~langchain_llamaguard.LlamaGuard` with per-step category exclusions.

    ``cache_size`` keeps that many recent verdicts, keyed by exactly what decides them (role, excluded categories,
    threshold, the turns' texts), so one conversation judged twice (the agent middleware's stream transformer,
    then its ``after_model`` hook) costs one check.
    """

    def __init__(
        self,
        guard: LlamaGuard,
        excluded_categories: Iterable[str] | None = None,
        *,
        cache_size: int = 0,
        categories: Mapping[str, str] | None = None,
    ) -> None:
        check_llama_guard(guard, "the guard")
        self.guard = (
            guard.with_categories(categories, excluded_categories=excluded_categories)
            if categories is not None
            else guard
        )
        policy = getattr(self.guard, "categories", None)
        self.excluded = None if excluded_categories is None else resolve_categories(excluded_categories, policy)
        if self.excluded is not None and hasattr(self.guard, "format"):  # a stage that could flag nothing
            active_categories(self.guard.format, self.excluded, categories=policy)
        self.name = "llama_guard"
        self.cache = VerdictCache(cache_size)

    def _key(self, conversation: ConversationInput, role: str) -> Hashable | None:
        if not self.cache.size:
            return None
        try:
            turns = to_turns(conversation, role=role)
        except (TypeError, ValueError):
            return None  # the guard itself reports what is wrong with it
        if any(t.images for t in turns):
            return None
        excluded = self.excluded if self.excluded is not None else getattr(self.guard, "excluded_categories", None)
        policy = tuple((getattr(self.guard, "categories", None) or {}).items())
        reveal = getattr(self.guard, "reveal_hidden_text", None)
        settings = (tuple(excluded or ()), getattr(self.guard, "threshold", None), policy, reveal)  # what decides it
        return (role, settings, tuple((t.role, tuple(t.text_parts)) for t in turns))

    def check(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        keys = [self._key(c, role) for c in conversations]
        found, todo = self.cache.split(keys, conversations)
        try:
            fresh = self.guard.batch_check(todo, role=role, excluded_categories=self.excluded) if todo else []
        except GuardBatchError as exc:
            raise _one_error(exc) from None
        return self.cache.fill(keys, found, fresh)

    async def acheck(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        keys = [self._key(c, role) for c in conversations]
        found, todo = self.cache.split(keys, conversations)
        try:
            fresh = await self.guard.abatch_check(todo, role=role, excluded_categories=self.excluded) if todo else []
        except GuardBatchError as exc:
            raise _one_error(exc) from None
        return self.cache.fill(keys, found, fresh)


def _one_error(exc: GuardBatchError) -> BaseException:
    """A step judging one item raises that item's own error; a batch raises the batch error (every row named)."""
    return exc.errors[0] if len(exc.verdicts) == 1 else exc


def last_turn_text(conversation: ConversationInput, role: str | None = None) -> str:
    """The text of the judged (last) turn, as Prompt Guard reads it."""
    if isinstance(conversation, str):
        return conversation
    return "\n".join(p for parts in last_turn_pieces(conversation, role=role) for p in parts)


class PromptGuardModerator:
    """A :class:`~langchain_llamaguard.PromptGuard` scoring the judged turn's text."""

    def __init__(self, guard: PromptGuard) -> None:
        self.guard = check_prompt_guard(guard, "the prompt guard")
        self.name = "prompt_guard"

    @staticmethod
    def _texts(conversations: Sequence[ConversationInput], role: str) -> tuple[list[Any], dict[int, BaseException]]:
        """Each conversation's judged text, or (in ``errors``) why it has none: such a row fails alone."""
        texts: list[Any] = []
        errors: dict[int, BaseException] = {}
        for i, c in enumerate(conversations):
            try:
                texts.append(last_turn_text(c, role))
            except (GuardInputError, GuardTypeError) as exc:
                errors[i] = exc
        return texts, errors

    @staticmethod
    def _merged(n: int, errors: dict[int, BaseException], verdicts: list[AnyVerdict]) -> list[AnyVerdict]:
        if not errors:
            return verdicts
        it = iter(verdicts)
        raise _one_error(GuardBatchError([None if i in errors else next(it) for i in range(n)], errors))

    def check(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        texts, errors = self._texts(conversations, role)
        return self._merged(len(conversations), errors, list(self.guard.batch_check(texts)) if texts else [])

    async def acheck(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        texts, errors = self._texts(conversations, role)
        verdicts = list(await self.guard.abatch_check(texts)) if texts else []
        return self._merged(len(conversations), errors, verdicts)


class CombinedModerator:
    """Several guards on the same input, run concurrently; the first unsafe verdict (in order) wins."""

    def __init__(self, moderators: Sequence[Moderator]) -> None:
        if not moderators:
            raise GuardConfigurationError("CombinedModerator needs at least one guard")
        self.moderators = list(moderators)
        self.name = "+".join(m.name for m in self.moderators)

    @staticmethod
    def _pick(results: list[list[AnyVerdict]]) -> list[AnyVerdict]:
        picked: list[AnyVerdict] = []
        for per_item in zip(*results, strict=True):
            unsafe = [v for v in per_item if not v.safe]
            picked.append(unsafe[0] if unsafe else per_item[-1])
        return picked

    def check(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        with concurrent.futures.ThreadPoolExecutor(len(self.moderators)) as pool:
            futures = [pool.submit(m.check, conversations, role=role) for m in self.moderators]
            return self._pick([f.result() for f in futures])

    async def acheck(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        results = await asyncio.gather(*(m.acheck(conversations, role=role) for m in self.moderators))
        return self._pick(list(results))
