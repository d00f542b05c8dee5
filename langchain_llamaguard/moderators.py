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
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .conversation import ConversationInput, to_turns
from .prompt_guard import PromptGuardVerdict
from .taxonomy import resolve_categories
from .verdict import Verdict

if TYPE_CHECKING:  # pragma: no cover
    from .llama_guard import LlamaGuard
    from .prompt_guard import PromptGuard

AnyVerdict = Verdict | PromptGuardVerdict


@runtime_checkable
class Moderator(Protocol):
    """Checks conversations; the last turn is judged, in the given role (``"User"`` or ``"Agent"``)."""

    name: str

    def check(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]: ...

    async def acheck(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]: ...


class LlamaGuardModerator:
    """A :class:`~langchain_llamaguard.LlamaGuard` with per-step category exclusions."""

    def __init__(self, guard: LlamaGuard, excluded_categories: Iterable[str] | None = None) -> None:
        self.guard = guard
        self.excluded = None if excluded_categories is None else resolve_categories(excluded_categories)
        self.name = "llama_guard"

    def check(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        return list(self.guard.batch_check(list(conversations), role=role, excluded_categories=self.excluded))

    async def acheck(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        return list(await self.guard.abatch_check(list(conversations), role=role, excluded_categories=self.excluded))


def last_turn_text(conversation: ConversationInput, role: str | None = None) -> str:
    """The text of the judged (last) turn, as Prompt Guard reads it."""
    if isinstance(conversation, str):
        return conversation
    turns = to_turns(conversation, role=role)
    return "\n".join(p for p in turns[-1].text_parts)


class PromptGuardModerator:
    """A :class:`~langchain_llamaguard.PromptGuard` scoring the judged turn's text."""

    def __init__(self, guard: PromptGuard) -> None:
        self.guard = guard
        self.name = "prompt_guard"

    def check(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        return list(self.guard.batch_check([last_turn_text(c, role) for c in conversations]))

    async def acheck(self, conversations: Sequence[ConversationInput], *, role: str) -> list[AnyVerdict]:
        return list(await self.guard.abatch_check([last_turn_text(c, role) for c in conversations]))


class CombinedModerator:
    """Several guards on the same input, run concurrently; the first unsafe verdict (in order) wins."""

    def __init__(self, moderators: Sequence[Moderator]) -> None:
        if not moderators:
            raise ValueError("CombinedModerator needs at least one guard")
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
