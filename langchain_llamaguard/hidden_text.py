"""Text hidden from a reader, revealed before a guard reads it.

Ways to write what a reader cannot see but a model may read, or to break up words a classifier would know:

* **Unicode tag characters** U+E0020-U+E007E: invisible, each mirrors a printable ASCII character ("ASCII
  smuggling"); some models read them. :func:`reveal` decodes each to that character (as Meta's
  ``HiddenASCIIScanner`` does);
* **variation selectors as bytes** (U+FE00-U+FE0F for 0-15, U+E0100-U+E01EF for 16-255, one per byte, usually
  after an emoji): a run of them that spells UTF-8 text is decoded to that text;
* **invisible characters** (``\\p{Cf}`` and Unicode's default-ignorable code points: zero-width space and joiners,
  soft hyphen, direction controls, word joiner, byte-order mark, combining grapheme joiner, variation selectors,
  Hangul fillers, the remaining tag characters): one inside a word splits it into pieces the guard reads as
  something else (``b\\u200bomb`` is not ``bomb`` to it). :func:`reveal` removes them; the Braille blank (U+2800),
  which shows as a space, becomes one.

Only the text a guard reads changes: what the app passes on is never rewritten. Look-alike letters (fullwidth,
mathematical alphanumerics) are read as they are written.

Example:
    >>> reveal("Ign\\u200bore " + "".join(chr(0xE0000 + ord(c)) for c in "me"))
    'Ignore me'
    >>> reveal("b\\u034fo\\u034fm\\u034fb \\U0001F600" + "".join(chr(0xE0100 + b - 16) for b in b"hi"))
    'bomb \\U0001f600hi'
"""

from __future__ import annotations

import regex

_SHOWN = regex.compile(r"[\U000E0020-\U000E007E\u2800]+")  # tag characters; the Braille blank, a space to a reader
_HIDDEN = {**{c: c - 0xE0000 for c in range(0xE0020, 0xE007F)}, 0x2800: " "}
_SELECTOR_BYTES = {
    **{chr(0xFE00 + b): b for b in range(16)},
    **{chr(0xE0100 + b): b + 16 for b in range(240)},
}
_SELECTOR_RUN = regex.compile(r"[\uFE00-\uFE0F\U000E0100-\U000E01EF]{2,}")
_LINE_BREAKS = "\t\n\r"  # text spelled in selectors may break lines
_INVISIBLE = regex.compile(r"[\p{Cf}\p{Default_Ignorable_Code_Point}]+")
_INVISIBLE_BUT_SELECTORS = regex.compile(
    r"[[\p{Cf}\p{Default_Ignorable_Code_Point}]--[\uFE00-\uFE0F\U000E0100-\U000E01EF]]+", regex.V1
)  # removed first, so that one between two selectors does not break the run they spell


def _selector_text(match: regex.Match[str]) -> str:
    """A run of variation selectors as the text its bytes spell, its control characters left out (emoji
    presentation selectors spell nothing else); a stray byte spoils only its own character."""
    text = bytes(_SELECTOR_BYTES[c] for c in match.group()).decode("utf-8", "replace")
    return "".join(c for c in text if c.isprintable() or c in _LINE_BREAKS)


def reveal(text: str) -> str:
    """``text`` with its tag characters decoded to the ASCII they mirror, its runs of variation selectors that spell
    text decoded, and its invisible characters removed (see the module docstring)."""
    if text.isascii():  # nothing of the above is ASCII
        return text
    text = _SHOWN.sub(lambda m: m.group().translate(_HIDDEN), text)  # str.translate alone is slow on non-ASCII
    text = _SELECTOR_RUN.sub(_selector_text, _INVISIBLE_BUT_SELECTORS.sub("", text))
    return _INVISIBLE.sub("", text)  # single selectors (emoji presentation) and what spelled nothing


__all__ = ["reveal"]
