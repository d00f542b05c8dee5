"""Decode image references from LangChain content blocks into ``PIL.Image`` s, without network access.

Accepted: data URLs (``data:image/png;base64,...``), base64 blocks, local file paths (or ``file://`` URLs) and
``PIL.Image.Image`` objects. An ``http(s)`` URL is an error unless the caller passes an ``image_loader``.

Example:
    >>> from PIL import Image
    >>> load_image(ImageRef("pil", Image.new("RGB", (4, 4)))).size
    (4, 4)
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

from .conversation import ImageLoader, ImageRef


class ImageLoadError(ValueError):
    """An image in the conversation could not be read."""


def _open(data: bytes, what: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot read the image from {what}: {exc}") from exc
    return img.convert("RGB")


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageLoadError(f"invalid base64 image data in {what}: {exc}") from exc


def load_image(ref: ImageRef, loader: ImageLoader | None = None) -> Any:
    """Return an RGB ``PIL.Image`` for ``ref``; raise :class:`ImageLoadError` when it cannot be read."""
    from PIL import Image

    if ref.kind == "pil":
        if not isinstance(ref.value, Image.Image):
            raise ImageLoadError(f"expected a PIL.Image.Image, got {type(ref.value).__name__}")
        return ref.value.convert("RGB")
    if ref.kind == "base64":
        return _open(_b64(str(ref.value), "a base64 block"), "a base64 block")
    value = str(ref.value)
    if ref.kind == "url":
        if value.startswith("data:"):
            header, _, payload = value.partition(",")
            if ";base64" not in header:
                raise ImageLoadError("only base64 data URLs are supported (data:image/...;base64,...)")
            return _open(_b64(payload, "a data URL"), "a data URL")
        if value.startswith(("http://", "https://")):
            if loader is None:
                raise ImageLoadError(
                    f"remote image {value!r}: the guard never fetches URLs itself; pass image_loader=... "
                    "(a function from URL to PIL image or bytes), or send the image as a data URL or file path"
                )
            got = loader(value)
            if isinstance(got, (bytes, bytearray)):
                return _open(bytes(got), value)
            return load_image(ImageRef("pil", got))
        if value.startswith("file://"):
            value = value[len("file://") :]
        elif "://" in value:
            raise ImageLoadError(f"unsupported image URL scheme in {value!r}; use a data URL, a path or a PIL image")
    path = Path(value)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {value!r}")
    return _open(path.read_bytes(), str(path))
