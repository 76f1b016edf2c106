"""Tests for core.images: type sniffing, validation, orientation, shrinking, encoding."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import zlib

import pytest
from PIL import Image as PILImage

from core import images
from core.errors import ImageError
from core.images import MAX_DATA_URL_BYTES, data_url, prepare_image, sniff_mime

RED, BLUE = (255, 0, 0), (0, 0, 255)


def encode(img: PILImage.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(
    size: tuple[int, int], color: int | tuple[int, ...] = RED, mode: str = "RGB"
) -> PILImage.Image:
    return PILImage.new(mode, size, color)


def noise(size: tuple[int, int]) -> PILImage.Image:
    return PILImage.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def decode(data: bytes) -> PILImage.Image:
    img = PILImage.open(io.BytesIO(data))
    img.load()
    return img


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)  # far too little pixel data
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def near(pixel: object, color: tuple[int, int, int], tol: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tol for a, b in zip(pixel[:3], color, strict=True))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_each_format_round_trips(fmt: str) -> None:
    raw = encode(solid((64, 48)), fmt)
    mime = sniff_mime(raw)  # from the bytes alone; no name anywhere
    assert mime == f"image/{fmt.lower()}"
    result = prepare_image(raw)
    assert (result.width, result.height) == (64, 48)
    assert result.mime in ("image/png", "image/jpeg")
    out = decode(result.data)
    assert out.size == (64, 48)
    assert out.format is not None and f"image/{out.format.lower()}" == result.mime
    assert near(out.convert("RGB").getpixel((30, 20)), RED)
    if fmt in ("PNG", "JPEG"):
        assert (result.data, result.mime) == (raw, mime)  # already fine: passed through


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_keeps_first_frame(fmt: str) -> None:
    frames = [solid((32, 32), RED), solid((32, 32), BLUE)]
    raw = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    assert decode(raw).n_frames == 2  # type: ignore[attr-defined]
    result = prepare_image(raw)
    assert result.mime == "image/jpeg"
    out = decode(result.data)
    assert getattr(out, "n_frames", 1) == 1
    assert near(out.convert("RGB").getpixel((16, 16)), RED)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        os.urandom(4096),
        b"just some text, not an image\n" * 10,
        encode(noise((64, 64)), "PNG")[:300],  # truncated PNG
        b"\x89PNG\r\n\x1a\n" + os.urandom(500),  # PNG magic, garbage after it
        b"\xff\xd8\xff" + b"\x00" * 100,  # JPEG magic, garbage after it
    ],
    ids=["empty", "random", "text", "truncated-png", "garbage-png", "garbage-jpeg"],
)
def test_corrupt_or_unknown_data_is_rejected(raw: bytes) -> None:
    with pytest.raises(ImageError) as info:
        prepare_image(raw)
    message = info.value.user_message
    assert message.endswith(".") and "/" not in message and len(message) > 20
    if raw[:3] in (b"\x89PN", b"\xff\xd8\xff"):
        assert "damaged" in message and info.value.__cause__ is not None  # from err


def test_unknown_format_message_lists_accepted_formats() -> None:
    for text in (b"", b"hello\n", b"BMW makes cars, not bitmaps.", b"%PDF-1.7\n"):
        assert sniff_mime(text) is None
    with pytest.raises(ImageError, match="unrecognised") as info:
        prepare_image(b"GIF? no, plain text")
    for name in ("PNG", "JPEG", "WebP", "GIF", "BMP", "TIFF"):
        assert name in info.value.user_message


def test_input_over_max_bytes_is_rejected() -> None:
    raw = encode(solid((64, 64)), "PNG")
    with pytest.raises(ImageError) as info:
        prepare_image(raw, max_input_bytes=len(raw) - 1)
    assert "too large" in info.value.user_message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("size", [(11_000, 10_000), (15_000, 15_000)])  # ours, then Pillow's
def test_decompression_bomb_is_rejected_before_decoding(size: tuple[int, int]) -> None:
    with pytest.raises(ImageError) as info:
        prepare_image(png_header_only(*size))  # header only: decoding would fail as corrupt
    assert "too many pixels" in info.value.user_message


@pytest.mark.parametrize(
    ("size", "why"), [((5, 100), "10 pixels"), ((2000, 5), "10 pixels"), ((4020, 20), "200 times")]
)
def test_too_small_or_too_thin_is_rejected(size: tuple[int, int], why: str) -> None:
    with pytest.raises(ImageError) as info:
        prepare_image(encode(solid(size), "PNG"))
    assert why in info.value.user_message


def test_ratio_three_is_fine() -> None:
    result = prepare_image(encode(solid((3000, 1000)), "PNG"))
    assert (result.width, result.height) == (2048, 683)


def test_large_noisy_image_is_downscaled_and_fits() -> None:
    raw = encode(noise((4000, 3000)), "JPEG", quality=90)
    result = prepare_image(raw)
    assert (result.width, result.height) == (2048, 1536)
    assert result.mime == "image/jpeg"
    assert len(data_url(result)) <= MAX_DATA_URL_BYTES
    assert decode(result.data).size == (2048, 1536)


def test_huge_noisy_image_with_small_max_side() -> None:
    raw = encode(noise((6000, 4500)), "JPEG", quality=75)
    result = prepare_image(raw, max_side=256)
    assert (result.width, result.height) == (256, 192)
    assert decode(result.data).size == (256, 192)


def test_too_big_output_falls_back_to_jpeg_then_halves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_DATA_URL_BYTES", 40_000)
    transparent_noise = noise((400, 400)).convert("RGBA")
    transparent_noise.putalpha(128)
    result = prepare_image(encode(transparent_noise, "PNG"))
    assert result.mime == "image/jpeg"  # alpha flattened, JPEG to fit
    assert len(data_url(result)) <= 40_000
    assert result.width < 400 and result.width == result.height
    assert decode(result.data).size == (result.width, result.height)


def test_transparent_png_stays_png() -> None:
    raw = encode(solid((40, 40), (0, 128, 0, 100), "RGBA"), "PNG")
    assert prepare_image(raw).data == raw
    shrunk = prepare_image(raw, max_side=20)
    assert (shrunk.mime, shrunk.width, shrunk.height) == ("image/png", 20, 20)
    out = decode(shrunk.data)
    assert out.mode == "RGBA" and out.getpixel((10, 10))[3] == 100  # type: ignore[index]


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    raw = encode(solid((40, 40), (0, 255, 255, 0), "CMYK"), "JPEG")
    result = prepare_image(raw)
    out = decode(result.data)
    assert result.mime == "image/jpeg" and out.mode == "RGB"
    assert near(out.getpixel((20, 20)), RED)


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    result = prepare_image(encode(solid((40, 40), 32768, "I;16"), "PNG"))
    assert abs(decode(result.data).convert("L").getpixel((20, 20)) - 128) <= 2  # type: ignore[operator]


def test_exif_rotated_jpeg_comes_out_upright() -> None:
    img = solid((40, 20), BLUE)
    img.paste(RED, (0, 0, 20, 20))  # left half red
    exif = PILImage.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    result = prepare_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert (result.width, result.height) == (20, 40)
    out = decode(result.data)
    assert near(out.getpixel((10, 5)), RED) and near(out.getpixel((10, 35)), BLUE)
    assert out.getexif().get(0x0112, 1) == 1


def test_sha256_and_data_url() -> None:
    result = prepare_image(encode(noise((50, 30)), "BMP"))
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    prefix, _, b64 = data_url(result).partition(",")
    assert prefix == f"data:{result.mime};base64"
    assert base64.b64decode(b64, validate=True) == result.data


def test_exif_metadata_is_never_passed_through() -> None:
    exif = PILImage.Exif()
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0)}  # GPS IFD
    exif[0x010F] = "CameraMaker"
    buf = io.BytesIO()
    PILImage.new("RGB", (40, 30), "green").save(buf, "JPEG", exif=exif)
    out = prepare_image(buf.getvalue())
    assert out.data != buf.getvalue()
    assert not PILImage.open(io.BytesIO(out.data)).getexif()


@pytest.mark.parametrize("fmt", ["TIFF", "PNG", "GIF", "BMP", "WEBP", "JPEG"])
def test_mutated_images_never_raise_anything_but_image_error(fmt: str) -> None:
    import random

    buf = io.BytesIO()
    PILImage.new("RGB", (32, 24), "purple").save(buf, fmt)
    original = buf.getvalue()
    rng = random.Random(fmt)
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
        try:
            prepare_image(bytes(data))
        except ImageError as err:
            assert err.user_message
