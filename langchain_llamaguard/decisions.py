"""Llama Guard and Prompt Guard as LangChain decision models (``langchain_core.decisions``, langchain-core >= 1.8).

* :class:`LlamaGuardDecisionModel` answers a ``Noul`` with P(unsafe): the question's ``instructions`` and
  ``criteria`` become a one-category custom policy (``S1: ...``), or the guard's own policy where the question
  asks for it (``Noul(instructions=GUARD_POLICY)``, or ``policy="guard"`` on the model). A ``Choice`` over
  category codes (or names) is answered with the model's distribution over the first category after
  ``unsafe\\nS``.
* :class:`PromptGuardDecisionModel` answers a ``Noul`` with P(malicious) of the judged text.

The state (a string, messages, or the ``{"messages": ..., "tool_call": ...}`` dict that
``AutoModeMiddleware`` sends) becomes the conversation; a tool call becomes the Agent turn, as in
:func:`~langchain_llamaguard.tools.guard_tool`. Every question of a request, and every request of a ``batch``,
runs in one model batch.

Example:
    >>> from langchain.agents.middleware import AutoModeMiddleware
    >>> classifier = LlamaGuardDecisionModel(guard=guard, policy="guard")  # doctest: +SKIP
    >>> auto = AutoModeMiddleware(tools=[repl], classifier=classifier)        # doctest: +SKIP
    >>> agent = create_agent(model, tools, middleware=[auto])                # doctest: +SKIP
"""

from __future__ import annotations

try:
    from langchain_core.decisions import (
        BaseDecisionModel,
        Choice,
        ChoiceAnswer,
        ClassifierRequest,
        ClassifierResponse,
        Noul,
        NoulAnswer,
        Question,
        State,
    )
except ImportError as exc:  # pragma: no cover - exercised with langchain-core < 1.8
    import langchain_core

    raise ImportError(
        "langchain_llamaguard.decisions needs langchain-core >= 1.8 (langchain_core.decisions); this is "
        f"langchain-core {langchain_core.__version__}: pip install -U 'langchain-core>=1.8'. Everything else in "
        "langchain-llamaguard works without it."
    ) from exc

import asyncio
import json
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, Literal

from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import ConfigDict, Field, model_validator

from .cancellation import to_thread
from .errors import GuardConfigurationError, GuardInputError, LlamaGuardError
from .taxonomy import resolve_categories
from .verdict import NOT_IN_POLICY, merge_verdicts

GUARD_POLICY = "llama_guard_policy"
"""A ``Noul`` whose ``instructions`` are this string is answered against the guard's own policy."""

_CODE = "S1"


def state_conversation(state: State) -> Any:
    """The conversation a decision model judges: its last turn (the tool call, where there is one)."""
    if isinstance(state, str):
        return state
    if isinstance(state, BaseMessage):
        return [state]
    if isinstance(state, Mapping):
        messages = _messages(state.get("messages") or [])
        call = state.get("tool_call")
        if isinstance(call, Mapping):
            last = messages[-1] if messages else None
            ids = {tc.get("id") for tc in getattr(last, "tool_calls", None) or []}
            if isinstance(last, AIMessage) and call.get("id") in ids:
                messages = messages[:-1]  # the call is judged alone, as guard_tool judges it: not its siblings
            tool_call = {"name": str(call.get("name", "")), "args": _call_args(call), "id": call.get("id") or "call"}
            messages.append(AIMessage(content="", tool_calls=[tool_call]))
        if messages:
            return messages
    elif isinstance(state, Sequence) and not isinstance(state, (str, bytes)) and state:
        return _messages(state)  # a conversation (messages, chat dicts, (role, text) tuples), never its JSON
    return json.dumps(state, default=str, ensure_ascii=False)  # any other JSON: the user's text


def _messages(given: Any) -> list[BaseMessage]:
    """A state's ``messages`` as messages: chat dicts and ``(role, text)`` tuples too, as ``create_agent`` takes
    them (never silently dropped: what cannot be read as a message is an error)."""
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise GuardInputError(f"the state's messages must be a list of messages, got {type(given).__name__}")
    try:
        return convert_to_messages(list(given))
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise GuardInputError(
            f"the state's messages could not be read as messages ({str(exc)[:200]}); accepted: LangChain messages, "
            "chat dicts ({'role': 'user', 'content': ...}) and (role, text) tuples"
        ) from None


def as_noul(score: float, threshold: float | None, error: str | None = None) -> float:
    """A guard's score as a ``Noul`` answer: P(unsafe), and 1.0 for a check that failed closed (it could not
    decide). With a guard ``threshold`` the score is rescaled so that the threshold maps to 0.5, the cut a
    decision (``AutoModeMiddleware``) blocks at: a call the guard flags is blocked, in the same order of scores.

    Example:
        >>> as_noul(0.3, None), as_noul(0.02, 0.01) > 0.5, as_noul(0.005, 0.01), as_noul(0.02, None, "bad output")
        (0.3, True, 0.25, 1.0)
    """
    if error:
        return 1.0
    if threshold is None or threshold in (0.0, 1.0):
        return score
    if score < threshold:
        return 0.5 * score / threshold
    return 0.5 + 0.5 * (score - threshold) / (1.0 - threshold)


def _call_args(call: Mapping[str, Any]) -> dict[str, Any]:
    """A tool call's arguments as a dict: given as one, or as its JSON text (a provider's raw call)."""
    args = call.get("args")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise GuardInputError(f"tool_call {call.get('name')!r}: its args are not JSON ({exc.msg})") from None
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise GuardInputError(
            f"tool_call {call.get('name')!r}: args must be a dict (or its JSON text), got {type(args).__name__}"
        )
    return dict(args)


def _content_text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, default=str, ensure_ascii=False)


def noul_policy_text(question: Noul) -> str:
    """A ``Noul`` as one category line: its instructions, then what counts as yes (unsafe) and no (safe)."""
    text = _content_text(question.instructions)
    if question.criteria is not None:
        if question.criteria.true is not None:
            text += " Unsafe (yes): " + _content_text(question.criteria.true)
        if question.criteria.false is not None:
            text += " Safe (no): " + _content_text(question.criteria.false)
    return " ".join(text.split())  # one line, as the category list needs


class _GuardDecisionModel(BaseDecisionModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    guard: Any = Field(exclude=True)
    model: str = ""

    _kind: ClassVar[str] = "llama"  # which guard answers: "llama" or "prompt"

    def __init__(self, **data: Any) -> None:
        # Checked before pydantic sees it: an error raised in its validators reaches the caller as a ValidationError
        from .moderators import check_llama_guard, check_prompt_guard

        check = check_prompt_guard if self._kind == "prompt" else check_llama_guard
        check(data.get("guard"), f"{type(self).__name__}'s guard")
        super().__init__(**data)

    @model_validator(mode="after")
    def _name(self) -> _GuardDecisionModel:
        if not self.model:
            self.model = str(getattr(self.guard, "model_name", type(self.guard).__name__))
        return self

    @property
    def _provider(self) -> str:
        return "meta_llama"

    # One model batch for every question of every request: subclasses answer a list of requests at once.
    def _answer_many(self, requests: list[tuple[State, dict[str, Question]]]) -> list[ClassifierResponse]:
        raise NotImplementedError

    def _classify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        return self._answer_many([(state, dict(questions))])[0]

    async def _aclassify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        return (await self._aanswer_many([(state, dict(questions))]))[0]

    async def _aanswer_many(self, requests: list[tuple[State, dict[str, Question]]]) -> list[ClassifierResponse]:
        return await to_thread(self._answer_many, requests)

    def _each(self, requests: list[tuple[State, dict[str, Question]]]) -> list[Any]:
        """Each request on its own, after their shared batch failed: its answer, or its own error."""
        out: list[Any] = []
        for request in requests:
            try:
                out.append(self._answer_many([request])[0])
            except Exception as exc:
                out.append(exc)
        return out

    async def _aeach(self, requests: list[tuple[State, dict[str, Question]]]) -> list[Any]:
        answers = await asyncio.gather(*(self._aanswer_many([r]) for r in requests), return_exceptions=True)
        for a in answers:
            if isinstance(a, BaseException) and not isinstance(a, Exception):  # a cancellation is no row's error
                raise a
        return [a if isinstance(a, BaseException) else a[0] for a in answers]

    @staticmethod
    def _settled(_request: Any, answer: Any) -> Any:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def batch(
        self,
        inputs: list[ClassifierRequest],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Every request in one model batch; each still gets its own traced run. With ``return_exceptions``, a
        request that cannot be answered gets its own error and the others their answers."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        requests = [(r["state"], dict(r["questions"])) for r in inputs]
        try:
            answers = self._answer_many(requests)
        except Exception as exc:
            if not return_exceptions:
                raise
            answers = self._each(requests) if len(requests) > 1 else [exc]
        out: list[Any] = []
        for req, answer, c in zip(inputs, answers, configs, strict=True):
            try:
                out.append(self._call_with_config(partial(self._settled, answer=answer), req, self._traced_config(c),
                                                  run_type="llm"))  # fmt: skip
            except Exception as exc:  # this request's own error (return_exceptions)
                out.append(exc)
        return out

    async def abatch(
        self,
        inputs: list[ClassifierRequest],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        requests = [(r["state"], dict(r["questions"])) for r in inputs]
        try:
            answers = await self._aanswer_many(requests)
        except Exception as exc:
            if not return_exceptions:
                raise
            answers = await self._aeach(requests) if len(requests) > 1 else [exc]
        out: list[Any] = []
        for req, answer, c in zip(inputs, answers, configs, strict=True):

            async def done(_req: Any, answer: Any = answer) -> Any:
                return self._settled(_req, answer)

            try:
                out.append(await self._acall_with_config(done, req, self._traced_config(c), run_type="llm"))
            except Exception as exc:
                out.append(exc)
        return out


class LlamaGuardDecisionModel(_GuardDecisionModel):
    """Llama Guard as a LangChain decision model: ``Noul`` -> P(unsafe), ``Choice`` over categories.

    Args:
        guard: a :class:`~langchain_llamaguard.LlamaGuard` (in-process or :meth:`from_endpoint`).
        policy: ``"question"`` (default): a ``Noul``'s instructions and criteria are the policy (one category);
            ``"guard"``: the guard's own categories, for every ``Noul`` (a ``Noul(instructions=GUARD_POLICY)``
            asks for it one question at a time).

    Example:
        >>> from langchain_core.decisions import Noul
        >>> dm = LlamaGuardDecisionModel(guard=guard, policy="guard")              # doctest: +SKIP
        >>> dm.invoke({"state": "How do I make a bomb?",
        ...            "questions": {"unsafe": Noul(instructions=GUARD_POLICY)}}).nouls["unsafe"].noul  # doctest: +SKIP
        0.97
    """

    policy: Literal["question", "guard"] = "question"

    def _guard_for(self, question: Noul) -> Any:
        if self.policy == "guard" or question.instructions == GUARD_POLICY:
            return self.guard
        # the question is the whole policy: the guard's own exclusions are about its categories, not this one
        return self.guard.with_categories({_CODE: noul_policy_text(question)}, excluded_categories=())

    def _choice_codes(self, question: Choice) -> list[str]:
        policy = getattr(self.guard, "categories", None)
        try:
            return [resolve_categories([label], policy)[0] for label in question.criteria]
        except (ValueError, TypeError) as exc:
            raise GuardConfigurationError(
                f"a Choice for Llama Guard picks among its categories: labels must be S-codes or category names ({exc})"
            ) from None

    def _plan(self, requests: list[tuple[State, dict[str, Question]]]):
        """Encode every Noul of every request (grouped into one batch), and list the Choices."""
        prompts, excluded, owners, choices, failed = [], [], [], [], {}
        for r, (state, questions) in enumerate(requests):
            conversation = state_conversation(state)
            for qid, question in questions.items():
                if isinstance(question, Noul):
                    guard = self._guard_for(question)
                    try:
                        parts, excl = guard.prepare(conversation)
                    except LlamaGuardError as exc:  # too long, an unreadable image: as the guard's settings say
                        verdict = guard.failed_closed(exc)
                        if verdict is None:
                            raise
                        failed[(r, qid)] = verdict
                        continue
                    prompts += parts
                    excluded += [excl] * len(parts)
                    owners += [(r, qid)] * len(parts)
                elif isinstance(question, Choice):
                    choices.append((r, qid, conversation, question))
                else:
                    raise GuardConfigurationError(
                        f"question {qid!r}: Llama Guard answers Noul and Choice questions, "
                        f"not {type(question).__name__}"
                    )
        return prompts, excluded, owners, choices, failed

    def _assemble(self, requests, owners, verdicts, choice_answers, failed) -> list[ClassifierResponse]:
        answers: list[dict[str, Any]] = [{} for _ in requests]
        grouped: dict[tuple[int, str], list[Any]] = {owner: [verdict] for owner, verdict in failed.items()}
        for owner, verdict in zip(owners, verdicts, strict=True):
            grouped.setdefault(owner, []).append(verdict)
        for (r, qid), parts in grouped.items():
            verdict = merge_verdicts(parts)
            # P(unsafe) is the answer; a check that failed closed answers 1.0 (it could not decide).
            score = verdict.score if verdict.score is not None else float(not verdict.safe)
            # a code outside the question's policy is still the model's "unsafe": its probability is the answer
            undecided = verdict.error if NOT_IN_POLICY not in verdict.category_names else None
            noul = as_noul(score, getattr(self.guard, "threshold", None), undecided)
            answers[r][qid] = NoulAnswer(type="noul", noul=noul)
        for (r, qid), answer in choice_answers.items():
            answers[r][qid] = answer
        return [
            ClassifierResponse(model=self.model, answers={q: a[q] for q in questions})
            for a, (_, questions) in zip(answers, requests, strict=True)
        ]

    def _choices(self, choices) -> dict[tuple[int, str], ChoiceAnswer]:
        out = {}
        for r, qid, conversation, question in choices:
            codes = self._choice_codes(question)
            dist = self.guard.category_distribution([conversation], codes)[0]
            probabilities = {label: dist[code] for label, code in zip(question.criteria, codes, strict=True)}
            best = max(probabilities, key=probabilities.__getitem__)
            out[(r, qid)] = ChoiceAnswer(
                type="choice", choice=best, probabilities=probabilities, confidence=probabilities[best]
            )
        return out

    def _answer_many(self, requests: list[tuple[State, dict[str, Question]]]) -> list[ClassifierResponse]:
        prompts, excluded, owners, choices, failed = self._plan(requests)
        verdicts = self.guard.check_encoded(prompts, excluded) if prompts else []
        return self._assemble(requests, owners, verdicts, self._choices(choices), failed)

    async def _aanswer_many(self, requests: list[tuple[State, dict[str, Question]]]) -> list[ClassifierResponse]:
        prompts, excluded, owners, choices, failed = await to_thread(self._plan, requests)
        verdicts = await self.guard.acheck_encoded(prompts, excluded) if prompts else []
        choice_answers = await to_thread(self._choices, choices) if choices else {}
        return self._assemble(requests, owners, verdicts, choice_answers, failed)


class PromptGuardDecisionModel(_GuardDecisionModel):
    """Prompt Guard 2 as a LangChain decision model: a ``Noul`` is answered with P(malicious) of the judged text
    (the last turn of the state: the tool call, where there is one).

    Example:
        >>> pg = PromptGuard.from_pretrained("meta-llama/Llama-Prompt-Guard-2-86M")  # doctest: +SKIP
        >>> dm = PromptGuardDecisionModel(guard=pg)                                  # doctest: +SKIP
    """

    _kind: ClassVar[str] = "prompt"

    def _texts(self, requests: list[tuple[State, dict[str, Question]]]) -> list[str]:
        from .moderators import last_turn_text

        texts = []
        for state, questions in requests:
            for qid, question in questions.items():
                if not isinstance(question, Noul):
                    raise GuardConfigurationError(f"question {qid!r}: Prompt Guard answers Noul questions only")
            conversation = state_conversation(state)
            texts.append(conversation if isinstance(conversation, str) else last_turn_text(conversation))
        return texts

    def _assemble(self, requests, verdicts) -> list[ClassifierResponse]:
        return [
            ClassifierResponse(
                model=self.model,
                answers={q: NoulAnswer(type="noul", noul=as_noul(v.score, v.threshold)) for q in questions},
            )
            for (_, questions), v in zip(requests, verdicts, strict=True)
        ]

    def _answer_many(self, requests: list[tuple[State, dict[str, Question]]]) -> list[ClassifierResponse]:
        return self._assemble(requests, self.guard.batch_check(self._texts(requests)))

    async def _aanswer_many(self, requests: list[tuple[State, dict[str, Question]]]) -> list[ClassifierResponse]:
        return self._assemble(requests, await self.guard.abatch_check(self._texts(requests)))


__all__ = [
    "GUARD_POLICY",
    "as_noul",
    "LlamaGuardDecisionModel",
    "PromptGuardDecisionModel",
    "noul_policy_text",
    "state_conversation",
]
