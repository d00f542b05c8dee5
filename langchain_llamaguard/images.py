"""Decode image references from LangChain content blocks into ``PIL.Image`` s, without network access.

Accepted: data URLs (``data:image/png;base64,...``), base64 blocks, local file paths (or ``file://`` URLs) and
``PIL.Image.Image`` objects. An ``http(s)`` URL is an error unless the caller passes an ``image_loader``.

Images are untrusted input, so each is bounded before it is decoded (:class:`ImageLimits`): its encoded bytes
(before base64 decoding or reading a file), its pixels (read from the header, before the pixel data), and the
number of images in one conversation. Anything over a bound, an animated image, a format outside
:data:`IMAGE_FORMATS` and any decoder error (decompression bombs, truncated streams...) is an
:class:`ImageLoadError`, which a guard with ``on_error="unsafe"`` turns into an unsafe verdict.

Example:
    >>> from PIL import Image
    >>> load_image(ImageRef("pil", Image.new("RGB", (4, 4)))).size
    (4, 4)
    >>> try:
    ...     load_image(ImageRef("pil", Image.new("RGB", (40, 40))), limits=ImageLimits(max_pixels=1000))
    ... except ImageLoadError as exc:
    ...     print(str(exc).split(";")[0])
    image of 1,600 pixels (40x40) is over max_image_pixels=1,000
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .content_blocks import data_url
from .conversation import ImageLoader, ImageRef, short
from .errors import GuardConfigurationError, ImageLoadError

__all__ = [
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_FORMATS",
    "ImageLimits",
    "ImageLoadError",
    "check_image_count",
    "load_image",
]

DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""PIL's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``)."""
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGES = 8
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
"""The formats decoded (what chat models take); others (EPS, which runs Ghostscript, TIFF, ICO...) are refused."""


@dataclass(frozen=True)
class ImageLimits:
    """Bounds checked before an image is decoded; ``None`` lifts one.

    Example:
        >>> ImageLimits().max_pixels
        89478485
    """

    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    max_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES
    max_images: int | None = DEFAULT_MAX_IMAGES

    def __post_init__(self) -> None:  # refused when set, not at every check that has an image
        for name in ("max_pixels", "max_bytes", "max_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise GuardConfigurationError(
                    f"{name} must be a whole number >= 0 (0: no images) or None (no bound), got {value!r}"
                )


_DEFAULT_LIMITS = ImageLimits()
_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")


def _over(found: str, bound: str, limit: int) -> ImageLoadError:
    return ImageLoadError(f"{found} is over {bound}={limit:,}; raise the bound ({bound}=...) or send a smaller image")


def check_image_count(count: int, limits: ImageLimits = _DEFAULT_LIMITS) -> None:
    """Raise :class:`ImageLoadError` when one conversation carries more than ``limits.max_images`` images."""
    if limits.max_images is not None and count > limits.max_images:
        raise ImageLoadError(
            f"{count} images in one conversation is over max_images={limits.max_images}; raise "
            "the bound (max_images=...) or send fewer images"
        )


def _check_bytes(size: int, limits: ImageLimits, what: str) -> None:
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise _over(f"image data of {size:,} bytes (in {what})", "max_image_bytes", limits.max_bytes)


def _check_pixels(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        raise _over(f"image of {width * height:,} pixels ({width}x{height})", "max_image_pixels", limits.max_pixels)


def _bomb(exc: Exception, limits: ImageLimits, what: str) -> ImageLoadError:
    """PIL's own decompression-bomb refusal (over ``2 * PIL.Image.MAX_IMAGE_PIXELS``), as an ImageLoadError."""
    found = _PIL_PIXELS.search(str(exc))
    pixels = int(found.group(1)) if found else None
    if pixels is not None and limits.max_pixels is not None and pixels > limits.max_pixels:
        return _over(f"image of {pixels:,} pixels", "max_image_pixels", limits.max_pixels)
    return ImageLoadError(
        f"cannot read the image from {what}: PIL refuses it as a decompression bomb ({exc}); "
        "that limit applies whatever max_image_pixels is: raise PIL.Image.MAX_IMAGE_PIXELS too"
    )


def _on_white(img: Any) -> Any:
    """RGB; a transparent image laid on white first (``convert("RGB")`` alone would keep the colour under each
    transparent pixel: black, for text drawn on a transparent canvas)."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _decode(img: Any, limits: ImageLimits, what: str) -> Any:
    """Bound a header-only (lazy) image, then decode it to RGB (a transparent one on white, as transformers'
    ``convert_to_rgb`` does for the official processor); every failure is an ImageLoadError."""
    from PIL import Image

    if not img.size[0] or not img.size[1]:
        raise ImageLoadError(f"empty image ({img.size[0]}x{img.size[1]} pixels) in {what}")
    _check_pixels(img.size, limits)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            frames = getattr(img, "n_frames", 1)  # GIF counts its frames by reading their headers
            if frames == 1 or img.format == "MPO":  # MPO: a photo with previews or a depth map, read as its first
                img.load()
                return _on_white(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(exc, limits, what) from exc
        except Exception as exc:  # hostile data: decoders raise what they like (OSError, SyntaxError, EOFError...)
            raise ImageLoadError(f"cannot read the image from {what}: {type(exc).__name__}: {exc}") from exc
    raise ImageLoadError(
        f"animated image ({img.format}, {frames} frames) in {what}: the guard would read only its "
        "first frame; send a still image (each frame as its own image block)"
    )


def _open(data: bytes, what: str, limits: ImageLimits) -> Any:
    from PIL import Image, UnidentifiedImageError

    _check_bytes(len(data), limits, what)
    with warnings.catch_warnings():
        # PIL warns past its own pixel limit as it reads the header; _decode then checks the exact size itself.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # the header only: nothing decoded yet
        except UnidentifiedImageError as exc:
            raise ImageLoadError(
                f"cannot read the image from {what}: not an image in one of the accepted formats "
                f"({', '.join(IMAGE_FORMATS)})"
            ) from exc
        except Image.DecompressionBombError as exc:
            raise _bomb(exc, limits, what) from exc
        except Exception as exc:  # a malformed header
            raise ImageLoadError(f"cannot read the image from {what}: {type(exc).__name__}: {exc}") from exc
    return _decode(img, limits, what)


def _b64(data: str, what: str, limits: ImageLimits) -> bytes:
    data = "".join(data.split())  # line-wrapped base64 (MIME, base64.encodebytes) is base64 too
    _check_bytes(len(data) * 3 // 4 - data[-2:].count("="), limits, what)  # the decoded size, before decoding
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageLoadError(f"invalid base64 image data in {what}: {exc}") from exc


def _read(path: Path, limits: ImageLimits) -> bytes:
    try:
        _check_bytes(path.stat().st_size, limits, str(path))
        with path.open("rb") as f:  # a bounded read: the file may have grown since
            data = f.read() if limits.max_bytes is None else f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise ImageLoadError(f"cannot read the image file {str(path)!r}: {exc}") from exc
    return data


def load_image(ref: ImageRef, loader: ImageLoader | None = None, limits: ImageLimits = _DEFAULT_LIMITS) -> Any:
    """Return an RGB ``PIL.Image`` for ``ref``; raise :class:`ImageLoadError` when it cannot be read or is over
    one of ``limits`` (checked before the image is decoded)."""
    from PIL import Image

    if ref.kind == "pil":
        if not isinstance(ref.value, Image.Image):
            raise ImageLoadError(f"expected a PIL.Image.Image, got {type(ref.value).__name__}")
        return _decode(ref.value, limits, "a PIL image")
    if ref.kind == "base64":
        return _open(_b64(str(ref.value), "a base64 block", limits), "a base64 block", limits)
    value = str(ref.value)
    scheme = value[:8].lower()  # URL schemes are case-insensitive
    if ref.kind == "url":
        if scheme.startswith("data:"):
            parsed = data_url(value)
            if parsed is None:
                raise ImageLoadError("only base64 data URLs are supported (data:image/...;base64,...)")
            return _open(_b64(parsed[1], "a data URL", limits), "a data URL", limits)
        if scheme.startswith(("http://", "https://")):
            if loader is None:
                raise ImageLoadError(
                    f"remote image {short(value)}: the guard never fetches URLs itself; pass image_loader=... "
                    "(a function from URL to PIL image or bytes), or send the image as a data URL or file path"
                )
            try:
                got = loader(value)
            except Exception as exc:  # the caller's fetcher: an image it cannot fetch is an unreadable image
                raise ImageLoadError(f"image_loader failed on {short(value)}: {type(exc).__name__}: {exc}") from exc
            if isinstance(got, (bytes, bytearray)):
                return _open(bytes(got), value, limits)
            return load_image(ImageRef("pil", got), limits=limits)
        if scheme.startswith("file://"):
            value = value[len("file://") :]
        elif "://" in value[:32]:
            raise ImageLoadError(
                f"unsupported image URL scheme in {short(value)}; use a data URL, a path or a PIL image"
            )
    path = Path(value)
    try:
        found = path.is_file()
    except (OSError, ValueError):  # e.g. a base64 payload without its data: prefix, too long for a file name
        found = False
    if not found:
        raise ImageLoadError(
            f"image file not found: {short(value)}; an image is a data URL (data:image/png;base64,...), an "
            "http(s) URL with image_loader=..., a file path, base64 in a base64 block, or a PIL image"
        )
    return _open(_read(path, limits), str(path), limits)
