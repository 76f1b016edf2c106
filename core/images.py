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
import math
import struct
import warnings

from PIL import Image as PILImage

from core.errors import ImageError
from core.types import Image

__all__ = [
    "ACCEPTED_MIMES",
    "DEFAULT_MAX_SIDE",
    "MAX_DATA_URL_BYTES",
    "MAX_RATIO",
    "MIN_SIDE",
    "data_url",
    "decode_cost",
    "prepare_image",
    "probe_image",
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
_T = PILImage.Transpose
# EXIF orientation → the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
              6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
_SWAPS_SIDES = {5, 6, 7, 8}
_BAND_BYTES = 8 * 1024 * 1024  # rows reduced at a time (see _reduced)


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
    mime = _mime(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hostile files make Pillow warn; we refuse them
            with PILImage.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]]) as opened:
                # Image.open read only the header: refuse (or plan) before decoding.
                width, height = opened.size
                if width * height > _MAX_PIXELS:
                    raise _too_many_pixels(f"{width}x{height}")
                _check_shape(width, height)
                long = max(width, height)
                resize = long > max_side
                if resize and mime == "image/jpeg":
                    # JPEG decodes at 1/2, 1/4 or 1/8 scale: never the full-size pixels.
                    scale = max_side / long
                    opened.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
                opened.load()  # the first frame only, for GIF and animated WebP
                single_frame = getattr(opened, "n_frames", 1) == 1
                exif = opened.getexif()
                orientation = exif.get(0x0112, 1)
                rotated = orientation in _TRANSPOSE
                # EXIF/XMP may hold a photo's GPS position: never pass it through to the model.
                metadata = bool(exif) or any(k in opened.info for k in ("xmp", "XML:com.adobe.xmp"))
                if (
                    mime in _KEEP_MODES
                    and not resize
                    and not rotated
                    and not metadata
                    and single_frame
                    and opened.mode in _KEEP_MODES[mime]
                    and _fits(mime, len(data))
                ):
                    return _result(data, mime, width, height)
                # Shrink while the decoded pixels are alive, by a whole factor first (cheap,
                # and the full-size image is freed when the file closes), then rotate.
                img = _reduced(opened, max_side) if resize else opened.copy()
                if rotated:
                    img = img.transpose(_TRANSPOSE[orientation])
    except PILImage.DecompressionBombError as err:
        raise _too_many_pixels(str(err)) from err
    except _DECODE_ERRORS as err:
        raise ImageError(
            f"corrupt or unreadable {mime}: {err}",
            user_message="That image seems to be damaged or incomplete, so I couldn't read it.",
        ) from err

    if img.mode.startswith("I"):  # 16-bit greyscale: scale to 8 bits instead of clipping
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    target = "RGBA" if alpha else "L" if img.mode == "L" else "RGB"
    if img.mode != target:
        img = img.convert(target)
    if resize:
        # From the original size: a JPEG draft or a reduce may have rounded the sides.
        scale = max_side / long
        size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
        if orientation in _SWAPS_SIDES:
            size = (size[1], size[0])
        img = img.resize(size, _LANCZOS)
    out, out_mime, img = _encode_to_fit(img, alpha)
    return _result(out, out_mime, img.width, img.height)


def _mime(data: bytes) -> str:
    mime = sniff_mime(data)
    if mime is None:
        raise ImageError(
            "unrecognised image format",
            user_message="I can only read images in PNG, JPEG, WebP, GIF, BMP or TIFF format.",
        )
    return mime


def _check_shape(width: int, height: int) -> None:
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


def _reduced(img: PILImage.Image, max_side: int) -> PILImage.Image:
    """A new, smaller image: ``img`` divided by the largest whole factor that keeps its long
    side at or above ``max_side`` (a box filter), or a copy when no such factor helps.

    The work goes band by band (a few MB each), so besides the decoded image only one band
    is held: converting or premultiplying (Pillow's reduce does both for RGBA) the whole
    image at once would double the memory a huge image takes.
    """
    width, height = img.size
    factor = max(width, height) // max_side
    if factor < 2:
        return img.copy()
    if img.mode in ("P", "PA") or "transparency" in img.info:
        mode = "RGBA"  # average colours, not palette indexes; keep a transparent colour
    elif img.mode == "1":
        mode = "L"
    elif img.mode.startswith("I;16"):
        mode = "I"
    else:
        mode = img.mode
    out = PILImage.new(mode, (-(-width // factor), -(-height // factor)))
    rows = factor * max(1, _BAND_BYTES // (width * 4 * factor))
    for top in range(0, height, rows):
        band = img.crop((0, top, width, min(height, top + rows)))
        if band.mode != mode:
            band = band.convert(mode)
        out.paste(band.reduce(factor), (0, top // factor))
    return out


def probe_image(data: bytes) -> tuple[int, int]:
    """Width and height from the image's header, without decoding it (checks included:
    the type, the pixel limit)."""
    mime = _mime(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with PILImage.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]]) as opened:
                width, height = opened.size
    except PILImage.DecompressionBombError as err:
        raise _too_many_pixels(str(err)) from err
    except _DECODE_ERRORS as err:
        raise ImageError(
            f"corrupt or unreadable {mime}: {err}",
            user_message="That image seems to be damaged or incomplete, so I couldn't read it.",
        ) from err
    if width * height > _MAX_PIXELS:
        raise _too_many_pixels(f"{width}x{height}")
    return width, height


def decode_cost(width: int, height: int) -> int:
    """Bytes preparing an image of this size may hold at once: the decoded pixels (Pillow
    keeps 4 bytes a pixel for most modes) and one band of the reduction."""
    return width * height * 4 + 4 * _BAND_BYTES


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
