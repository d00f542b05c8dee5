"""Hostile images (issue 24): every image is bounded before it is decoded (bytes, pixels, images per
conversation), and anything over a bound or unreadable is an ImageLoadError naming it: raised with
``on_error="raise"``, an unsafe verdict carrying it with ``on_error="unsafe"``, at every entry point.

The hostile images are made here, small: the decompression bomb is a 23 KB PNG of 15000x12500 one-bit pixels
(PIL would inflate it to 187,500,000 pixels), crafted from its chunks in a fraction of a second.
"""

from __future__ import annotations

import base64
import functools
import io
import re
import struct
import zlib

import pytest
from conftest import BENIGN, answering_chat_model
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from PIL import Image, ImageFile

import langchain_llamaguard.llama_guard as engine_module
from langchain_llamaguard import LlamaGuard, UnsafeContentError
from langchain_llamaguard.conversation import ImageRef
from langchain_llamaguard.errors import GuardBatchError, ImageLoadError
from langchain_llamaguard.images import ImageLimits, load_image
from langchain_llamaguard.middleware import LlamaGuardMiddleware, PromptGuardMiddleware

DEFAULT_BOUND = "187,500,000 pixels is over max_image_pixels=89,478,485"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def _png(width: int, height: int, *, truncated: bool = False) -> bytes:
    """A one-colour, one-bit greyscale PNG of any size, its rows of zeros deflated (about 1/1000 of the pixels)."""
    row = b"\0" * (1 + (width + 7) // 8)
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    if truncated:
        idat = idat[: len(idat) // 2]
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _bomb() -> bytes:
    return _png(15000, 12500)


def _saved(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _animated_gif() -> bytes:
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    return _saved(red, "GIF", save_all=True, append_images=[blue], duration=100)


def _url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _asking(*images: bytes | str, text: str = "hi") -> list[HumanMessage]:
    blocks = [{"type": "image_url", "image_url": {"url": i if isinstance(i, str) else _url(i)}} for i in images]
    return [HumanMessage(content=[*blocks, {"type": "text", "text": text}])]


def _b64(data: bytes) -> ImageRef:
    return ImageRef("base64", base64.b64encode(data).decode(), "image/png")


# -- the loader, image by image (no model) -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "limits", "match"),
    [
        pytest.param(lambda: _b64(_bomb()), ImageLimits(), DEFAULT_BOUND, id="bomb"),
        pytest.param(
            lambda: _b64(_bomb()),
            ImageLimits(max_pixels=None),
            r"decompression bomb.*"
            r"PIL\.Image\.MAX_IMAGE_PIXELS",
            id="bomb-bound-lifted-PIL-still-refuses",
        ),
        pytest.param(
            lambda: _b64(_png(33, 31)),
            ImageLimits(max_pixels=1022),
            r"1,023 pixels \(33x31\) is over max_image_pixels=1,022",
            id="just-over-pixels",
        ),
        # the pixel bound is read from the header: the truncated body is never decoded
        pytest.param(
            lambda: _b64(_png(300, 200, truncated=True)),
            ImageLimits(max_pixels=1000),
            "60,000 pixels.*max_image_pixels=1,000",
            id="pixels-from-the-header",
        ),
        pytest.param(lambda: _b64(_png(300, 200, truncated=True)), ImageLimits(), "truncated", id="truncated"),
        pytest.param(
            lambda: _b64(_saved(Image.new("RGB", (64, 64)))[:-40]), ImageLimits(), "truncated", id="truncated-end"
        ),
        pytest.param(lambda: _b64(_animated_gif()), ImageLimits(), r"animated image \(GIF, 2 frames\)", id="animated"),
        pytest.param(
            lambda: _b64(_saved(Image.new("RGB", (8, 8)), "TIFF")),
            ImageLimits(),
            "accepted formats.*PNG, JPEG",
            id="format-outside-the-list",
        ),
        # the byte bound is checked on the base64 text: this payload is not even base64, and is never decoded
        pytest.param(
            lambda: ImageRef("url", "data:image/png;base64," + "!" * 4000),
            ImageLimits(max_bytes=2000),
            r"3,000 bytes \(in a data URL\) is over max_image_bytes=2,000",
            id="data-url-over-bytes",
        ),
        pytest.param(
            lambda: ImageRef("pil", Image.new("1", (2000, 2000))),
            ImageLimits(max_pixels=1000),
            "4,000,000 pixels.*max_image_pixels=1,000",
            id="pil-object-over-pixels",
        ),
    ],
)
def test_each_hostile_image_is_an_error_naming_the_bound(ref, limits, match):
    with pytest.raises(ImageLoadError, match=match):
        load_image(ref(), limits=limits)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bounds_before_reading_files_loaders_and_lazy_images(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 5000)  # not an image: refused on its size before it is read
    with pytest.raises(ImageLoadError, match=r"5,000 bytes .*big\.png.* over max_image_bytes=4,000"):
        load_image(ImageRef("url", f"file://{big}"), limits=ImageLimits(max_bytes=4000))
    with pytest.raises(ImageLoadError, match="over max_image_bytes=4,000"):
        load_image(ImageRef("url", "https://example.com/a.png"), lambda url: b"\0" * 5000, ImageLimits(max_bytes=4000))

    def offline(url):
        raise ConnectionError("no route to host")

    with pytest.raises(ImageLoadError, match="image_loader failed.*no route to host"):
        load_image(ImageRef("url", "https://example.com/a.png"), offline)
    lazy = Image.open(io.BytesIO(_png(300, 200)))  # a caller's own PIL image, opened but not decoded
    with pytest.raises(ImageLoadError, match="max_image_pixels=1,000"):
        load_image(ImageRef("pil", lazy), limits=ImageLimits(max_pixels=1000))
    assert lazy.tile, "the image was decoded before its bound was checked"
    at_the_bounds = ImageLimits(max_pixels=300 * 200, max_bytes=len(_png(300, 200)))
    assert load_image(_b64(_png(300, 200)), limits=at_the_bounds).size == (300, 200)


# -- the engine: both on_error modes, check / batch_check / acheck ----------------------------------------------
SMALL = {"max_image_pixels": 100_000, "max_image_bytes": 50_000, "max_images": 3}
RED = _saved(Image.new("RGB", (40, 30), (200, 30, 30)))


@pytest.fixture(scope="module")
def strict(lg4_with):
    return lg4_with(on_error="raise", **SMALL)


@pytest.fixture(scope="module")
def closed(lg4_with):
    return lg4_with(on_error="unsafe", **SMALL)


HOSTILE = [
    pytest.param(lambda: _asking(_bomb()), "187,500,000 pixels is over max_image_pixels=100,000", id="bomb"),
    pytest.param(
        lambda: _asking(_png(317, 316)),
        r"100,172 pixels \(317x316\) is over max_image_pixels=100,000",
        id="just-over-pixels",
    ),
    pytest.param(
        lambda: _asking("data:image/png;base64," + "A" * 80_000),
        "60,000 bytes.*max_image_bytes=50,000",
        id="data-url-over-bytes",
    ),
    pytest.param(lambda: _asking(_png(300, 200, truncated=True)), "truncated", id="truncated"),
    pytest.param(lambda: _asking(_animated_gif()), r"animated image \(GIF, 2 frames\)", id="animated"),
    # counted before any is loaded: these four are bombs, and the count is what is named
    pytest.param(
        lambda: _asking(*[_bomb()] * 4), "4 images in one conversation is over max_images=3", id="too-many-images"
    ),
]


@pytest.mark.parametrize(("conversation", "match"), HOSTILE)
def test_on_error_raise_names_the_bound(strict, conversation, match):
    with pytest.raises(ImageLoadError, match=match):
        strict.check(conversation())


@pytest.mark.parametrize(("conversation", "match"), HOSTILE)
async def test_on_error_unsafe_fails_closed_and_the_batch_goes_on(closed, lg4, conversation, match):
    hostile, fine = conversation(), _asking(RED)
    bad, good = closed.batch_check([hostile, fine])
    assert not bad.safe and bad.score == 1.0 and bad.categories == []
    assert isinstance(bad.error, str) and re.search(match, bad.error)
    direct = lg4.check(fine)  # the other row is judged as it is on its own ("picture, hi": safe)
    assert good.safe and good.error is None and good.score == pytest.approx(direct.score, abs=1e-4)
    again = await closed.acheck(hostile)
    assert not again.safe and again.error == bad.error


def test_the_reported_bomb_with_the_default_bounds(lg4_with):
    """The issue's case: the default guard, with on_error="unsafe", failed open with DecompressionBombError."""
    verdict = lg4_with(on_error="unsafe").check(_asking(_bomb()))
    assert not verdict.safe and DEFAULT_BOUND in verdict.error
    with pytest.raises(GuardBatchError) as err:
        lg4_with().batch_check([_asking(_bomb()), _asking(RED)])
    assert list(err.value.errors) == [0] and isinstance(err.value.errors[0], ImageLoadError)
    assert err.value.verdicts[1].safe


def test_small_images_still_work_and_text_runs_no_image_code(strict, lg4, monkeypatch):
    convo = _asking(RED, RED, RED)  # at max_images=3
    assert strict.check(convo).score == pytest.approx(lg4.check(convo).score, abs=1e-4)
    loads = []
    monkeypatch.setattr(engine_module, "load_image", lambda *a, **kw: loads.append(a))
    verdict = strict.check([HumanMessage(BENIGN)])
    assert verdict.safe and loads == []


# -- LangChain entry points -------------------------------------------------------------------------------------
def test_input_step(strict, closed):
    bomb = _asking(_bomb())
    with pytest.raises(UnsafeContentError) as err:
        closed.as_input_guard().invoke(bomb)
    assert "max_image_pixels=100,000" in err.value.verdict.error
    assert closed.as_input_guard(on_unsafe="blocked").invoke(bomb) == "blocked"
    with pytest.raises(ImageLoadError, match="max_image_pixels=100,000"):
        strict.as_input_guard().invoke(bomb)  # a step judging one input raises that input's own error


def test_agent_middleware_blocks_the_turn(closed, prompt_guard):
    """A real create_agent run: Prompt Guard reads only the text (the image is never decoded), Llama Guard fails
    closed on the bomb, and the model is never called."""
    model = answering_chat_model({})
    agent = create_agent(model, [], middleware=[PromptGuardMiddleware(prompt_guard), LlamaGuardMiddleware(closed)])
    result = agent.invoke({"messages": _asking(_bomb(), text=BENIGN)})
    last = result["messages"][-1]
    assert isinstance(last, AIMessage) and last.text.startswith("I can't help with that: the request was flagged")
    assert [type(m).__name__ for m in result["messages"]] == ["HumanMessage", "AIMessage"]  # no model answer


# -- the served chat path ---------------------------------------------------------------------------------------
def test_served_guard_fails_closed_before_sending_anything(lg4):
    """Images go to a server as data URLs re-encoded from the images the engine loaded, so the same bounded
    loader applies: a bomb fails closed here, before any request (the address below answers nothing)."""
    served = LlamaGuard.from_endpoint(
        "http://127.0.0.1:9/v1", model="lg4", tokenizer=lg4.tokenizer, model_format="llama-guard-4",
        context_length=4096, on_error="unsafe", max_retries=0, **SMALL,
    )  # fmt: skip
    bomb, many = served.batch_check([_asking(_bomb()), _asking(*[RED] * 4)])
    assert "max_image_pixels=100,000" in bomb.error and "max_images=3" in many.error
    prompt = served.encode(_asking(RED))[0]  # a normal image is sent as a data URL of the image loaded here
    url = served.backend.chat.request(prompt, served.tokens)[1]["messages"][0]["content"][0]["image_url"]["url"]
    assert load_image(ImageRef("url", url), limits=served.image_limits).tobytes() == prompt.images[0].tobytes()


# -- images as each provider's users write them (a production-style trial) ----------------------------------------
def _png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _drawn_on_transparent() -> Image.Image:
    """Black marks on a transparent canvas (a sticker, a logo, a screenshot with alpha)."""
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    for x in range(8, 24):
        img.putpixel((x, 16), (0, 0, 0, 255))
    return img


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_transparent_image_is_judged_on_white_as_the_official_processor_sees_it(mode):
    from transformers.image_transforms import convert_to_rgb

    if mode == "P":  # a palette image whose index 0 is its transparent colour (GIF-style)
        img = Image.new("P", (32, 32), 0)
        img.putpalette([0, 0, 0] * 2)
        img.info["transparency"] = 0
        for x in range(8, 24):
            img.putpixel((x, 16), 1)
    else:
        img = _drawn_on_transparent().convert(mode)
    for ref in (ImageRef("pil", img), ImageRef("base64", base64.b64encode(_png_bytes(img)).decode())):
        got = load_image(ref)
        assert got.getpixel((0, 0)) == (255, 255, 255) and got.getpixel((10, 16)) == (0, 0, 0)  # not all black
        assert got.tobytes() == convert_to_rgb(img.convert("RGBA"), return_numpy=False).tobytes()


def test_every_way_of_writing_one_image_gives_the_same_pixels():
    from langchain_llamaguard.conversation import to_turns

    data = _png_bytes(Image.new("RGB", (8, 8), (200, 10, 10)))
    b64 = base64.b64encode(data).decode()
    blocks = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}},  # Anthropic
        {"type": "image", "image": f"data:image/png;base64,{b64}"},  # a data URL in the chat-template key
        {"type": "image", "image": data},  # bytes
        {"type": "image", "base64": base64.encodebytes(data).decode()},  # line-wrapped (MIME) base64
        {"type": "image_url", "image_url": {"url": f"DATA:image/png;BASE64,{b64}"}},  # schemes are case-insensitive
    ]
    pixels = {load_image(to_turns([HumanMessage([b])])[0].images[0]).tobytes() for b in blocks}
    assert pixels == {Image.open(io.BytesIO(data)).convert("RGB").tobytes()}
    with pytest.raises(ImageLoadError, match="image_loader"):  # a remote URL in the chat-template key: never fetched
        load_image(to_turns([HumanMessage([{"type": "image", "image": "https://example.com/a.png"}])])[0].images[0])


def test_base64_without_its_data_prefix_is_an_image_error_of_its_row_alone(lg4):
    b64 = base64.b64encode(_png_bytes(Image.new("RGB", (300, 300), (1, 2, 3)))).decode() * 4
    with pytest.raises(ImageLoadError, match="data URL") as err:
        load_image(ImageRef("url", b64))
    assert len(str(err.value)) < 600  # the payload is not repeated into logs
    bad = [HumanMessage([{"type": "image_url", "image_url": {"url": b64}}, {"type": "text", "text": BENIGN}])]
    with pytest.raises(GuardBatchError) as batch:
        lg4.batch_check([BENIGN, bad, BENIGN])
    assert list(batch.value.errors) == [1] and isinstance(batch.value.errors[1], ImageLoadError)


def test_an_empty_image_is_an_image_error():
    with pytest.raises(ImageLoadError, match="empty image"):
        load_image(ImageRef("pil", Image.new("RGB", (0, 0))))


def _image_block(side: int) -> dict:
    data = _png_bytes(Image.new("RGB", (side, side), (10, 200, 30)))
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}


def test_images_count_as_the_tokens_they_expand_to_against_the_context(lg4):
    """Four 1344x1344 images are within every image bound, but expand to about 10,000 tokens: over Llama Guard 4's
    8,192. Counted as one placeholder each, the prompt was judged as if it fit."""
    four = [HumanMessage([*[_image_block(1344)] * 4, {"type": "text", "text": BENIGN}])]
    with pytest.raises(Exception, match=r"image\(s\) expanded to their tiles takes 10,\d{3} of the model's 8,192"):
        lg4.check(four)
    strict = LlamaGuard(lg4.backend, lg4.tokenizer, model_format="llama-guard-4", on_error="unsafe")
    verdict = strict.check(four)
    assert not verdict.safe and "expanded to their tiles" in verdict.error
    prompts, _ = lg4.prepare([HumanMessage([_image_block(1344), {"type": "text", "text": BENIGN}])])
    assert prompts[0].expanded is not None and lg4.backend.expanded_length(prompts[0]) > 2000  # measured once


def test_a_long_turn_with_an_image_is_judged_in_windows_that_fit(lg4_path):
    """The window budget counted an image as its one placeholder where the model reads ~150 tokens for a small one:
    every window came out too long and the turn was refused (fail closed) instead of judged in windows."""
    guard = LlamaGuard.from_pretrained(str(lg4_path), context_length=1024, on_error="unsafe")
    text = " ".join(f"word{i}" for i in range(600))
    turn = [
        HumanMessage([{"type": "image", "image": Image.new("RGB", (64, 64), "red")}, {"type": "text", "text": text}])
    ]
    prompts, _ = guard.prepare(turn)
    assert len(prompts) >= 2 and all(p.images for p in prompts)
    assert all(guard.backend.expanded_length(p) + 1 <= 1024 for p in prompts)
    verdict = guard.check(turn)  # each window judged (whatever the tiny guard makes of word0 word1 ...)
    assert verdict.segments == len(prompts) and "expanded" not in (verdict.error or "")


def test_a_slow_image_loader_counts_against_the_timeout_with_micro_batching(lg4_path):
    """With ``batch_window_ms`` and ``timeout=``, preparing a conversation (a user's image loader fetching a URL)
    ran outside the timeout: a check could block for as long as the loader took."""
    import time

    def slow(url):
        time.sleep(3)
        return _png_bytes(Image.new("RGB", (32, 32), "red"))

    guard = LlamaGuard.from_pretrained(
        str(lg4_path), batch_window_ms=5, timeout=0.5, on_error="unsafe", image_loader=slow
    )
    assert guard.check(BENIGN).error is None  # warm: a first forward pass's one-time set-up is not what is timed
    picture = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    start = time.monotonic()
    verdict = guard.check([HumanMessage([picture, {"type": "text", "text": BENIGN}])])
    assert time.monotonic() - start < 2.5
    assert not verdict.safe and "did not answer within 0.5 s" in verdict.error
    assert guard.check(BENIGN).error is None  # the guard goes on
    guard.close()
