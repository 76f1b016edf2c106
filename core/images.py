"""Turn attached image bytes into an image a vision model accepts.

``prepare_image`` recognises the type from the bytes themselves (never a file name),
decodes with Pillow, keeps only the first frame, applies EXIF orientation, enforces
DashScope's limits (each side >= 10 px, ratio <= 200:1, data URL <= 10 MiB) and scales
the long side down to ``max_side``. A PNG or JPEG that needs no change is passed through
untouched; anything else is re-encoded as PNG (when transparent) or JPEG.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import warnings

from PIL import Image as PILImage
from PIL import ImageOps

from core.errors import ImageError
from core.types import Image

__all__ = [
    "ACCEPTED_MIMES",
    "DEFAULT_MAX_SIDE",
    "MAX_DATA_URL_BYTES",
    "MAX_RATIO",
    "MIN_SIDE",
    "data_url",
    "prepare_image",
    "sniff_mime",
]

MAX_DATA_URL_BYTES = 10 * 1024 * 1024  # DashScope: max bytes per data-URI item
MIN_SIDE = 10  # DashScope: width and height each >= 10 px
MAX_RATIO = 200  # DashScope: aspect ratio <= 200:1
DEFAULT_MAX_SIDE = 2048

_MAX_PIXELS = 100_000_000
_PIL_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
# The image types prepare_image reads; adapters filter attachments against this list.
ACCEPTED_MIMES: tuple[str, ...] = tuple(_PIL_FORMATS)
_KEEP_MODES = {"image/png": {"1", "L", "LA", "P", "RGB", "RGBA"}, "image/jpeg": {"L", "RGB"}}
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
_FALLBACK_QUALITIES = (85, 75, 60)
# Decoders raise all sorts on hostile input (TypeError from a mangled TIFF, too).
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, TypeError, IndexError,
                  KeyError, ZeroDivisionError, struct.error)
_LANCZOS = PILImage.Resampling.LANCZOS


def sniff_mime(data: bytes) -> str | None:
    """Return the image MIME type recognised from the magic bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


def data_url(image: Image) -> str:
    """Return the image as a ``data:<mime>;base64,...`` URL."""
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def prepare_image(
    data: bytes,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_input_bytes: int = 50 * 1024 * 1024,
) -> Image:
    """Check, orient, shrink and (when needed) re-encode image bytes for a vision model."""
    if max_side < MIN_SIDE:
        raise ValueError(f"max_side must be at least {MIN_SIDE}, got {max_side}")
    if not data:
        raise ImageError(
            "empty image data", user_message="The image was empty; please send it again."
        )
    if len(data) > max_input_bytes:
        raise ImageError(
            f"image is {len(data)} bytes, limit {max_input_bytes}",
            user_message="That image file is too large; please send a smaller one.",
        )
    mime = sniff_mime(data)
    if mime is None:
        raise ImageError(
            "unrecognised image format",
            user_message="I can only read images in PNG, JPEG, WebP, GIF, BMP or TIFF format.",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hostile files make Pillow warn; we refuse them
            with PILImage.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]]) as opened:
                if opened.width * opened.height > _MAX_PIXELS:
                    raise _too_many_pixels(f"{opened.width}x{opened.height}")
                opened.load()  # the first frame only, for GIF and animated WebP
                single_frame = getattr(opened, "n_frames", 1) == 1
                exif = opened.getexif()
                rotated = exif.get(0x0112, 1) in range(2, 9)
                # EXIF/XMP may hold a photo's GPS position: never pass it through to the model.
                metadata = bool(exif) or any(k in opened.info for k in ("xmp", "XML:com.adobe.xmp"))
                img = ImageOps.exif_transpose(opened) if rotated else opened.copy()
    except PILImage.DecompressionBombError as err:
        raise _too_many_pixels(str(err)) from err
    except _DECODE_ERRORS as err:
        raise ImageError(
            f"corrupt or unreadable {mime}: {err}",
            user_message="That image seems to be damaged or incomplete, so I couldn't read it.",
        ) from err

    width, height = img.size
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE:
        raise ImageError(
            f"image is {width}x{height}, below {MIN_SIDE} px",
            user_message=f"That image is too small: each side must be at least {MIN_SIDE} pixels.",
        )
    if long > MAX_RATIO * short:
        raise ImageError(
            f"image is {width}x{height}, ratio above {MAX_RATIO}:1",
            user_message=(
                "That image is too long and thin: its longer side may be at most "
                f"{MAX_RATIO} times its shorter side."
            ),
        )
    resize = long > max_side
    if (
        mime in _KEEP_MODES
        and not resize
        and not rotated
        and not metadata
        and single_frame
        and img.mode in _KEEP_MODES[mime]
        and _fits(mime, len(data))
    ):
        return _result(data, mime, width, height)

    if img.mode.startswith("I"):  # 16-bit greyscale: scale to 8 bits instead of clipping
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    img = img.convert("RGBA" if alpha else "L" if img.mode == "L" else "RGB")
    if resize:
        scale = max_side / long
        size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
        img = img.resize(size, _LANCZOS)
    out, out_mime, img = _encode_to_fit(img, alpha)
    return _result(out, out_mime, img.width, img.height)


def _too_many_pixels(detail: str) -> ImageError:
    return ImageError(
        f"image too large ({detail}), limit {_MAX_PIXELS} pixels",
        user_message="That image has too many pixels for me to handle; please send a smaller one.",
    )


def _fits(mime: str, size: int) -> bool:
    url_len = len(f"data:{mime};base64,") + 4 * ((size + 2) // 3)
    return url_len <= MAX_DATA_URL_BYTES


def _encode(img: PILImage.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def _flatten(img: PILImage.Image) -> PILImage.Image:
    if img.mode != "RGBA":
        return img
    background = PILImage.new("RGB", img.size, (255, 255, 255))
    background.paste(img, mask=img.getchannel("A"))
    return background


def _encode_to_fit(img: PILImage.Image, alpha: bool) -> tuple[bytes, str, PILImage.Image]:
    """Encode as PNG/JPEG; fall back to lower JPEG quality, then to halved sizes."""
    if alpha:
        out = _encode(img, "PNG")
        if _fits("image/png", len(out)):
            return out, "image/png", img
        img = _flatten(img)
    else:
        out = _encode(img, "JPEG", 90)
        if _fits("image/jpeg", len(out)):
            return out, "image/jpeg", img
    for quality in _FALLBACK_QUALITIES:
        out = _encode(img, "JPEG", quality)
        if _fits("image/jpeg", len(out)):
            return out, "image/jpeg", img
    while min(img.size) // 2 >= MIN_SIDE:
        img = img.resize((img.width // 2, img.height // 2), _LANCZOS)
        out = _encode(img, "JPEG", _FALLBACK_QUALITIES[-1])
        if _fits("image/jpeg", len(out)):
            return out, "image/jpeg", img
    raise ImageError(
        f"cannot encode {img.width}x{img.height} under {MAX_DATA_URL_BYTES} bytes",
        user_message="That image is too large to send to the model, even after shrinking it.",
    )


def _result(data: bytes, mime: str, width: int, height: int) -> Image:
    return Image(data, mime, width, height, hashlib.sha256(data).hexdigest())
