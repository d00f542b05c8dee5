"""Text hidden from a reader, revealed before a guard reads it.

Two ways to write what a reader cannot see but a model may read, or to break up words a classifier would know:

* **Unicode tag characters** U+E0020-U+E007E: invisible, each mirrors a printable ASCII character ("ASCII
  smuggling"); some models read them. :func:`reveal` decodes each to that character (as Meta's
  ``HiddenASCIIScanner`` does);
* **invisible format characters** (``\\p{Cf}``: zero-width space and joiners, soft hyphen, direction controls,
  word joiner, byte-order mark, the remaining tag characters): one inside a word splits it into pieces the guard
  reads as something else (``b\\u200bomb`` is not ``bomb`` to it). :func:`reveal` removes them.

Only the text a guard reads changes: what the app passes on is never rewritten.

Example:
    >>> reveal("Ign\\u200bore " + "".join(chr(0xE0000 + ord(c)) for c in "me"))
    'Ignore me'
"""

from __future__ import annotations

import regex

_TAG_ASCII = {c: c - 0xE0000 for c in range(0xE0020, 0xE007F)}
_INVISIBLE = regex.compile(r"\p{Cf}+")


def reveal(text: str) -> str:
    """``text`` with its tag characters decoded to the ASCII they mirror and its invisible format characters
    removed (see the module docstring)."""
    return _INVISIBLE.sub("", text.translate(_TAG_ASCII))


__all__ = ["reveal"]
