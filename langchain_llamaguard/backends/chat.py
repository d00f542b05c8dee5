"""Llama Guard over ``/v1/chat/completions``: the server renders the template.

Two uses:

* **images** (Llama Guard 4 on vLLM): token ids cannot carry images, so a prompt with images is sent as chat
  messages (images as base64 ``data:`` URLs) with ``chat_template_kwargs={"excluded_category_keys": [...]}``
  and the log-probability of ``unsafe`` (``logprob_token_ids``);
* **hosted providers** (``mode="chat"``): chat only, often without logprobs, so the verdict is read from the
  answer's text and ``score`` is ``None``; exclusions are applied to the verdict (a post-filter).

Here the server's template tokenizes the content, so a special-token string inside it (``<|eot|>``...) would
become a real special token and could forge a turn. Such content is refused with
:class:`~langchain_llamaguard.errors.GuardInputError` before anything is sent; token-id checks
(:mod:`.completions`) have no such limit.
"""

from __future__ import annotations

import base64
import io
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..encoding import EncodedPrompt
from ..errors import GuardInputError, GuardServerError
from ..forking import renew_in_child
from .base import MAX_NEW_TOKENS, FirstStep, VerdictTokens
from .completions import (
    Logprobs,
    RemoteState,
    ServedBackend,
    asked_ids,
    check_not_cut,
    first_step_from,
    known_continuation,
    read_logprobs,
)
from .http import EndpointClient, Plan, Request, ServedModel


def data_url(image: Any) -> str:
    """A PIL image as a base64 PNG ``data:`` URL."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class ChatBackend(ServedBackend):
    """Scores Llama Guard conversations on an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        client: the endpoint.
        model: the served model name.
        special_tokens: the tokenizer's special-token strings, or a function giving them (called on the first
            request, so a guard that never sends a chat request never builds the set); content containing one
            is refused.
        all_categories: every category code of the model's policy (to name the excluded ones to the template).
        content_parts: send content as a list of parts (the templates of Llama Guard 4 and Llama Guard 3 1B, which
            render a string as an empty turn) or as a string (Llama Guard 3 8B).
        logprobs: ``"token_ids"`` (vLLM), a top-k count, or ``None`` (hosted providers: read the text).
        template_kwargs: send ``chat_template_kwargs`` (vLLM); hosted providers take none.
        encode_text: text -> token ids, to hand the answer's text to the engine as ids.

    Example:
        >>> ChatBackend(client, model="meta-llama/Llama-Guard-4-12B", special_tokens=["<|eot|>"],
        ...             all_categories=["S1"], encode_text=tok.encode)  # doctest: +SKIP
    """

    def __init__(
        self,
        client: EndpointClient,
        *,
        model: str,
        special_tokens: Iterable[str] | Callable[[], Iterable[str]],
        all_categories: Sequence[str],
        encode_text: Callable[[str], list[int]],
        content_parts: bool = True,
        logprobs: Logprobs | None = "token_ids",
        template_kwargs: bool = True,
        model_name: str = "llama-guard",
        served: ServedModel | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.served = served if served is not None else ServedModel(client, model)
        self.model_name = model_name
        self._special_tokens = special_tokens
        self._special_pattern: re.Pattern[str] | None = None
        self._special_built = False
        self._special_lock = threading.Lock()
        renew_in_child(self, "_special_lock")
        self.all_categories = tuple(all_categories)
        self.encode_text = encode_text
        self.content_parts = content_parts
        self.logprobs = logprobs
        self.template_kwargs = template_kwargs

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_special_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._special_lock = threading.Lock()
        renew_in_child(self, "_special_lock")

    @property
    def _special(self) -> re.Pattern[str] | None:
        """The special-token strings as one pattern (longest first), built on first use, once."""
        if not self._special_built:
            with self._special_lock:
                if not self._special_built:
                    tokens = self._special_tokens() if callable(self._special_tokens) else self._special_tokens
                    specials = sorted({t for t in tokens if t}, key=len, reverse=True)
                    self._special_pattern = re.compile("|".join(map(re.escape, specials))) if specials else None
                    self._special_built = True
        return self._special_pattern

    # -- requests -------------------------------------------------------------------------------------------
    def _messages(self, prompt: EncodedPrompt) -> list[dict[str, Any]]:
        if prompt.turns is None:
            raise GuardServerError("a chat check needs the conversation's turns", url=self.client.base_url)
        images = iter(prompt.images)
        messages = []
        for turn in prompt.turns:
            for text in turn.text_parts:
                self._refuse_special(text, "the content")
            if self.content_parts:  # images are refused for a text-only format when the prompt is rendered
                parts: list[dict[str, Any]] = [
                    {"type": "image_url", "image_url": {"url": data_url(next(images))}} for _ in turn.images
                ]
                parts += [{"type": "text", "text": t} for t in turn.text_parts]
                content: Any = parts
            else:
                if turn.images:
                    raise GuardInputError("this model's template takes no images (Llama Guard 4 does)")
                content = turn.text
            messages.append({"role": turn.role, "content": content})
        return messages

    def _refuse_special(self, text: str, what: str) -> None:
        """Refuse ``text`` if it holds a special-token string, which the server's template would make real."""
        found = self._special.search(text) if self._special else None
        if found:
            raise GuardInputError(
                f"{what} contains the special-token string {found.group()!r}; a chat endpoint's template would read "
                "it as a real special token (a forged turn), so it is not sent. Text-only checks over token ids (the "
                "default mode) keep it as text"
            )

    def request(self, prompt: EncodedPrompt, tokens: VerdictTokens) -> Request:
        """The chat request for one prompt."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(prompt),
            "max_tokens": 1 + MAX_NEW_TOKENS,
            "temperature": 0,
        }
        if self.template_kwargs:
            policy = prompt.policy or dict.fromkeys(self.all_categories)
            kwargs: dict[str, Any] = {"excluded_category_keys": [c for c in policy if c not in prompt.categories]}
            if prompt.policy:
                for code, text in prompt.policy.items():  # the server's template renders these too
                    self._refuse_special(text, f"the policy's text of {code}")
                kwargs["categories"] = prompt.policy  # the official template's variable for a custom list
            body["chat_template_kwargs"] = kwargs
        if self.logprobs is not None:  # vLLM: as over token ids (hosted providers take neither parameter)
            body["stop_token_ids"] = [*tokens.stop, tokens.safe]
            body["logprobs"] = True
            body["return_tokens_as_token_ids"] = True
            if self.logprobs == "token_ids":
                body["top_logprobs"] = 0
                body["logprob_token_ids"] = asked_ids(tokens)
            else:
                body["top_logprobs"] = int(self.logprobs)
        return ("/chat/completions", body)

    # -- answers --------------------------------------------------------------------------------------------
    def read(self, answer: dict[str, Any], tokens: VerdictTokens) -> tuple[FirstStep, list[int]]:
        """The first step and the tokens after the lead, from one chat answer."""
        url = self.client.base_url + "/chat/completions"
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise GuardServerError(f"{url} answered without choices: {str(answer)[:200]}", url=url)
        choice = choices[0]
        if self.logprobs is None:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            if not isinstance(text, str):
                raise GuardServerError(f"{url} answered without a message text: {str(choice)[:200]}", url=url)
            ids = self.encode_text(text.strip())
            if not ids:  # a provider's content filter or refusal: no verdict at all
                raise GuardServerError(
                    f"{url} answered with an empty message, expected the verdict ('safe' or 'unsafe')", url=url
                )
            check_not_cut(choice, len(ids), 1 + MAX_NEW_TOKENS, url)
            step = FirstStep(lead_argmax=tokens.lead, verdict_argmax=ids[0], p_safe=None, p_unsafe=None)
            return step, ids
        content = (choice.get("logprobs") or {}).get("content")
        if not isinstance(content, list):
            raise GuardServerError(f"{url} returned no logprobs.content, expected per-token logprobs", url=url)
        try:  # each position: the chosen token and its logprob, plus the asked ones
            tops = [
                {c["token"]: c["logprob"], **{t["token"]: t["logprob"] for t in c.get("top_logprobs") or []}}
                for c in content
            ]
        except (KeyError, TypeError):
            raise GuardServerError(f"{url} returned malformed logprobs: {str(content)[:200]}", url=url) from None
        gen = read_logprobs({"tokens": [c.get("token") for c in content], "top_logprobs": tops}, url)
        check_not_cut(choice, len(gen.ids), 1 + MAX_NEW_TOKENS, url)
        return first_step_from(gen, tokens, self.logprobs, url, after_lead=False), gen.ids[1:]

    # -- GuardBackend (mode="chat": every prompt through chat) ----------------------------------------------
    def _first_step_plan(self, prompts: Sequence[EncodedPrompt], tokens: VerdictTokens) -> Plan:
        answers = yield [self.request(p, tokens) for p in prompts]
        state = RemoteState(list(prompts), tokens, chat_rows=set(range(len(prompts))))
        steps = []
        for answer in answers:
            step, after = self.read(answer, tokens)
            steps.append(step)
            state.after_lead.append(after)
        return steps, state

    def _decode_plan(
        self, state: RemoteState, rows: Sequence[int], forced: Sequence[Sequence[int]], stop: Sequence[int],
        max_new_tokens: int,
    ) -> Plan:  # fmt: skip
        yield from ()  # a chat answer is complete, and cannot be forced: nothing more to ask
        return [
            known_continuation(state.after_lead[r], list(f), stop, max_new_tokens)
            for r, f in zip(rows, forced, strict=True)
        ]
