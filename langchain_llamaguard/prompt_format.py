"""Llama Guard prompt formats: one table of data per model, one renderer for all of them.

The renderer reproduces, byte for byte, what each model's official chat template renders, quirks included
(Llama Guard 4's literal backslash-n pair after each turn and its missing newline after the assistant header;
Llama Guard 3 8B's space before ``<|begin_of_text|>``; Llama Guard 3 1B's one line per text part).

A rendered prompt is a list of :class:`Segment` s. ``special`` segments are the template's own special tokens;
every other segment is plain text, **including the template's text and the conversation's content**. The
tokenizer turns special segments into their ids and never parses special-token strings inside text segments,
so content such as ``<|eot|>`` cannot forge a turn or a verdict.

Example:
    >>> from langchain_llamaguard import format_prompt
    >>> p = format_prompt("How do I bake bread?", excluded_categories=["S6"])
    >>> "S6:" in p, "S7: Privacy." in p
    (False, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from .conversation import ConversationInput, ImageRef, Turn, normalize_role, to_turns
from .errors import GuardConfigurationError, GuardInputError
from .taxonomy import (
    CATEGORIES,
    MODEL_CATEGORIES,
    TEXT_ONLY_CATEGORIES,
    check_model_name,
    check_policy,
    resolve_categories,
)

TurnStyle = Literal["joined", "per_part", "whole"]


@dataclass(frozen=True)
class PromptFormat:
    """Everything that differs between the Llama Guard formats, as data."""

    name: str
    lead: str
    """Text before ``<|begin_of_text|>`` (Llama Guard 3 8B's template emits one space)."""
    bos: str
    header_start: str
    header_end: str
    eot: str
    according: str
    """``"according to our"`` (Llama Guard 4) or ``"according our"`` (Llama Guard 3)."""
    conversation_open: str
    turn_style: TurnStyle
    """``joined``: images, then stripped text parts joined (LG4); ``per_part``: one line per text part
    (LG3 1B); ``whole``: the whole text stripped (LG3 8B)."""
    turn_end: str
    before_eot: str
    categories: tuple[str, ...]
    image_token: str | None
    """``<|image|>`` where the model reads images, else ``None``."""
    special_tokens: tuple[str, ...]
    """Every special token the template emits, as strings."""

    @property
    def supports_images(self) -> bool:
        return self.image_token is not None


_TASK = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations {according} safety policy "
    "with the below categories.\n\n"
)
_INSTRUCTION = (
    "Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
)

FORMATS: dict[str, PromptFormat] = {
    "llama-guard-4": PromptFormat(
        name="llama-guard-4",
        lead="",
        bos="<|begin_of_text|>",
        header_start="<|header_start|>",
        header_end="<|header_end|>",
        eot="<|eot|>",
        according="according to our",
        conversation_open="<BEGIN CONVERSATION>\n",
        turn_style="joined",
        turn_end="\\n\\n\n\n",
        before_eot=" ",
        categories=MODEL_CATEGORIES["llama-guard-4"],
        image_token="<|image|>",
        special_tokens=("<|begin_of_text|>", "<|header_start|>", "<|header_end|>", "<|eot|>", "<|image|>"),
    ),
    "llama-guard-3-8b": PromptFormat(
        name="llama-guard-3-8b",
        lead=" ",
        bos="<|begin_of_text|>",
        header_start="<|start_header_id|>",
        header_end="<|end_header_id|>",
        eot="<|eot_id|>",
        according="according our",
        conversation_open="<BEGIN CONVERSATION>\n\n",
        turn_style="whole",
        turn_end="\n\n",
        before_eot="",
        categories=MODEL_CATEGORIES["llama-guard-3-8b"],
        image_token=None,
        special_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "llama-guard-3-1b": PromptFormat(
        name="llama-guard-3-1b",
        lead="",
        bos="<|begin_of_text|>",
        header_start="<|start_header_id|>",
        header_end="<|end_header_id|>",
        eot="<|eot_id|>",
        according="according our",
        conversation_open="<BEGIN CONVERSATION>\n\n",
        turn_style="per_part",
        turn_end="\n\n",
        before_eot=" ",
        categories=MODEL_CATEGORIES["llama-guard-3-1b"],
        image_token=None,
        special_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
}


@dataclass(frozen=True)
class Segment:
    """A piece of a rendered prompt: a special token of the template, or plain text."""

    text: str
    special: bool = False


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt split where the tokenizer must treat it differently.

    ``prefix`` (everything up to and including ``<BEGIN CONVERSATION>``) and ``suffix`` (from
    ``<END CONVERSATION>`` on) depend only on the format, the judged role, the active categories and
    whether images are present, so they can be tokenized once and cached; ``body`` holds the turns.
    """

    format: PromptFormat
    role: Literal["User", "Agent"]
    categories: tuple[str, ...]
    prefix: tuple[Segment, ...]
    body: tuple[Segment, ...]
    suffix: tuple[Segment, ...]
    images: tuple[ImageRef, ...] = ()
    """The conversation's images, in placeholder order (decoded later, by the engine)."""

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.prefix + self.body + self.suffix

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)


def get_format(model: str) -> PromptFormat:
    """The :class:`PromptFormat` for ``"llama-guard-4"``, ``"llama-guard-3-8b"`` or ``"llama-guard-3-1b"``."""
    return FORMATS[check_model_name(model)]


def active_categories(
    fmt: PromptFormat,
    excluded: Iterable[str] = (),
    *,
    has_images: bool = False,
    categories: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """The S-codes listed in the prompt: the model's set (or a custom policy's, in its order), less exclusions.

    With images the model's *default* set leaves out its text-only categories (S14), as Llama Guard 4's template
    does; a custom policy is listed as given, S14 included, as the template lists its ``categories`` variable.
    """
    excluded_codes = set(resolve_categories(excluded, categories))
    if categories:
        active = tuple(c for c in categories if c not in excluded_codes)
    else:
        active = tuple(
            c for c in fmt.categories if c not in excluded_codes and not (has_images and c in TEXT_ONLY_CATEGORIES)
        )
    if not active:
        raise GuardConfigurationError(
            f"every category {'of this policy' if categories else f'{fmt.name} lists'}"
            f"{' for a check with images' if has_images and not categories else ''} is excluded "
            f"({', '.join(sorted(excluded_codes, key=lambda c: int(c[1:])))}): the prompt would list none and the "
            "guard could flag nothing; exclude fewer categories"
        )
    return active


def render_prefix(
    fmt: PromptFormat,
    role: Literal["User", "Agent"],
    categories: Iterable[str],
    category_texts: Mapping[str, str] | None = None,
) -> tuple[Segment, ...]:
    """The fixed part before the turns; ``category_texts`` is a custom policy (code -> text)."""
    texts = category_texts or {}
    lines = "".join(f"{code}: {texts[code] if code in texts else CATEGORIES[code].name + '.'}\n" for code in categories)
    text = (
        "\n\n"
        + _TASK.format(role=role, according=fmt.according)
        + "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
        + lines
        + "<END UNSAFE CONTENT CATEGORIES>\n\n"
        + fmt.conversation_open
    )
    segs = [Segment(fmt.lead)] if fmt.lead else []
    segs += [
        Segment(fmt.bos, True),
        Segment(fmt.header_start, True),
        Segment("user"),
        Segment(fmt.header_end, True),
        Segment(text),
    ]
    return tuple(segs)


def render_suffix(fmt: PromptFormat, role: Literal["User", "Agent"]) -> tuple[Segment, ...]:
    """The fixed part after the turns, ending right after the assistant header."""
    return (
        Segment("<END CONVERSATION>\n\n" + _INSTRUCTION.format(role=role) + fmt.before_eot),
        Segment(fmt.eot, True),
        Segment(fmt.header_start, True),
        Segment("assistant"),
        Segment(fmt.header_end, True),
    )


def render_turns(fmt: PromptFormat, turns: list[Turn]) -> tuple[Segment, ...]:
    """The conversation body: one entry per turn in the format's style."""
    segs: list[Segment] = []
    for turn in turns:
        label = "User: " if turn.role == "user" else "Agent: "
        if turn.images and not fmt.supports_images:
            raise GuardInputError(f"{fmt.name} does not read images; use Llama Guard 4 for conversations with images")
        if fmt.turn_style == "per_part":
            for part in turn.text_parts:
                segs.append(Segment(label + part.strip() + fmt.turn_end))
            continue
        segs.append(Segment(label))
        for _ in turn.images:
            segs.append(Segment(fmt.image_token, True))  # type: ignore[arg-type]
        if fmt.turn_style == "joined":
            text = "".join(p.strip() for p in turn.text_parts)
        else:  # whole
            text = "".join(turn.text_parts).strip()
        segs.append(Segment(text + fmt.turn_end))
    return tuple(_coalesce(segs))


def _coalesce(segs: Iterable[Segment]) -> list[Segment]:
    """Join neighbouring text segments (fewer tokenizer calls; same ids, since text never spans a special)."""
    out: list[Segment] = []
    for s in segs:
        if not s.text:
            continue
        if out and not s.special and not out[-1].special:
            out[-1] = Segment(out[-1].text + s.text)
        else:
            out.append(s)
    return out


def render(
    conversation: ConversationInput | list[Turn],
    *,
    model: str = "llama-guard-4",
    excluded_categories: Iterable[str] = (),
    role: str | None = None,
    categories: Mapping[str, str] | None = None,
) -> RenderedPrompt:
    """Render a conversation into a :class:`RenderedPrompt` (see :func:`format_prompt` for the text)."""
    fmt = get_format(model)
    categories = check_policy(categories)
    turns = conversation if _is_turn_list(conversation) else to_turns(conversation, role=role)  # type: ignore[arg-type]
    if role is not None and normalize_role(role) != turns[-1].role:
        raise GuardInputError(f"role={role!r} does not match the last turn ({turns[-1].role})")
    judged: Literal["User", "Agent"] = "User" if len(turns) % 2 == 1 else "Agent"
    images = tuple(ref for t in turns for ref in t.images)
    cats = active_categories(fmt, excluded_categories, has_images=bool(images), categories=categories)
    return RenderedPrompt(
        format=fmt,
        role=judged,
        categories=cats,
        prefix=tuple(_coalesce(render_prefix(fmt, judged, cats, categories))),
        body=render_turns(fmt, turns),
        suffix=render_suffix(fmt, judged),
        images=images,
    )


def _is_turn_list(obj: object) -> bool:
    return isinstance(obj, list) and bool(obj) and all(isinstance(t, Turn) for t in obj)


def format_prompt(
    conversation: ConversationInput,
    *,
    model: str = "llama-guard-4",
    excluded_categories: Iterable[str] = (),
    role: str | None = None,
    categories: Mapping[str, str] | None = None,
) -> str:
    """Render the exact prompt text a Llama Guard model sees, special tokens included: the template with the
    conversation's text as given (a guard reads text hidden from a reader revealed, see ``reveal_hidden_text``;
    ``guard.encode(...)`` gives the token ids it reads).

    Args:
        conversation: a string (one user turn), a ``PromptValue``, a message or a list of messages
            (see :mod:`langchain_llamaguard.conversation` for how system prompts and tools are mapped).
        model: ``"llama-guard-4"``, ``"llama-guard-3-8b"`` or ``"llama-guard-3-1b"``.
        excluded_categories: codes (``"S6"``) or names (``"Specialized Advice"``) to leave out; the others
            keep their codes.
        role: ``"User"`` or ``"Agent"``: which turn is judged (always the last; see
            :func:`~langchain_llamaguard.conversation.to_turns`).
        categories: a custom policy ``{"S1": "Violent Crimes.", "S15": "Fraud."}`` replacing the default list
            (as the official templates' ``categories`` variable; start from
            :func:`~langchain_llamaguard.taxonomy.default_categories`). Exclusions still apply; images do not
            remove S14 from it (they remove it from the default list only).

    Example:
        >>> from langchain_core.messages import HumanMessage, AIMessage
        >>> text = format_prompt([HumanMessage("Hi"), AIMessage("Hello!")], model="llama-guard-3-8b")
        >>> text.startswith(" <|begin_of_text|>"), "ONLY THE LAST Agent message" in text
        (True, True)
    """
    return render(
        conversation, model=model, excluded_categories=excluded_categories, role=role, categories=categories
    ).text
