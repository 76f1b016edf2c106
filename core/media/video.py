"""Videos read with PyAV (no ffmpeg binary): frames sampled at most twice a second, up to
a frame budget, each a JPEG within the image limits (core.images).

The length is checked from the header before decoding and again while decoding, so a
file that lies about its duration still cannot make us decode more than the limit. Each
frame is scaled down by the decoder's scaler before it becomes an image: a 4K frame never
exists as a PIL image.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import InputError
from core.images import MAX_RATIO, MIN_SIDE
from core.types import Image, Video

if TYPE_CHECKING:  # PyAV is imported when a video is read, not with the module
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

__all__ = [
    "FPS",
    "FRAME_SIDE",
    "MAX_VIDEO_BYTES",
    "MAX_VIDEO_SECONDS",
    "MIN_FRAMES",
    "Probe",
    "VideoError",
    "decode_cost",
    "is_video",
    "probe_video",
    "sample_video",
    "video_mime",
]

FPS = 2.0  # frames a second, at most (Qwen-VL's default sampling rate)
# A frame list shorter than this is padded: Qwen-VL documents 4 to 512 images for a video
# given as a list (unconfirmed for the newest models, so never fewer).
MIN_FRAMES = 4
FRAME_SIDE = 768  # a frame's long side, at most: ~600 tokens, halved by Qwen's 2-frame merge
MAX_VIDEO_SECONDS = 300  # CHATBRIDGE_MAX_VIDEO_SECONDS
MAX_VIDEO_BYTES = 50 * 1024 * 1024
MAX_FRAME_PIXELS = 100_000_000  # as an image's pixel limit
SEEK_STEP = 4.0  # seconds between frames from which seeking beats decoding every frame
_VIDEO_EXT = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".3gp", ".mpg", ".mpeg")
_QUALITY = 85


class VideoError(InputError):
    """A video that cannot be watched; the message says why, for the person."""

    kind = "bad_video"
    default_user_message = "I couldn't play that video."


def _container_like(data: bytes) -> bool:
    return (data[4:8] == b"ftyp" or data.startswith(b"\x1a\x45\xdf\xa3")
            or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")
            or data.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")))


def video_mime(data: bytes, declared: str = "") -> str:
    """The video's MIME type from its bytes (MP4/MOV, WebM/MKV, AVI), else as declared."""
    if data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:10] == b"qt" else "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in data[:64] else "video/x-matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/x-msvideo"
    return declared if declared.startswith("video/") else "video/mp4"


def is_video(data: bytes, name: str = "", mime: str = "") -> bool:
    """Whether an upload is a video: its declared type or name, else a container with a
    video stream (an M4A or WebM of audio only is a recording, not a video)."""
    mime = mime.lower()
    if mime.startswith("video/"):
        return True
    if mime.startswith("audio/"):
        return False
    if name.lower().endswith(_VIDEO_EXT):
        return True
    if not _container_like(data):
        return False
    try:
        probe_video(data)
    except VideoError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Probe:
    """What a video's header says: frame size and length (0 when it does not say)."""

    width: int
    height: int
    seconds: float


def _open(data: bytes) -> InputContainer:
    import av

    return av.open(io.BytesIO(data), mode="r")


def _damaged() -> VideoError:
    return VideoError("video decoder failed", user_message="That video seems to be damaged; "
                      "I couldn't play it.")


def _seconds(container: InputContainer, stream: VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return float(container.duration or 0) / 1_000_000  # av.time_base


def _check(width: int, height: int, seconds: float, max_seconds: float) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise VideoError(f"video is {width}x{height}", user_message="That video's frames "
                         "are too large for me to handle; please send a smaller one.")
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE or long > MAX_RATIO * short:
        raise VideoError(f"video is {width}x{height}", user_message="That video's picture "
                         "is too small or too thin for me to watch.")
    if seconds > max_seconds:
        raise _too_long(seconds, max_seconds)


def _picture(container: InputContainer) -> VideoStream:
    """The video stream that moves (an audio file's cover art is a still "video" stream)."""
    from av.stream import Disposition

    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    raise VideoError("no video stream", user_message="That file has no picture in it.")


def probe_video(data: bytes, *, max_seconds: float = MAX_VIDEO_SECONDS) -> Probe:
    """The video's frame size and length from its header, checked against the limits;
    ``VideoError`` when it has no picture, is damaged, too large or too long."""
    from av.error import FFmpegError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _open(data) as container:
                stream = _picture(container)
                probe = Probe(int(stream.codec_context.width or 0),
                              int(stream.codec_context.height or 0),
                              _seconds(container, stream))
    except VideoError:
        raise
    except (FFmpegError, OSError, ValueError, IndexError, TypeError) as err:
        raise _damaged() from err
    if not probe.width or not probe.height:
        raise _damaged()
    _check(probe.width, probe.height, probe.seconds, max_seconds)
    return probe


def decode_cost(probe: Probe, data: bytes) -> int:
    """Bytes sampling this video may hold at once: the file, the decoder's frames in
    flight (a few dozen at most for H.264 with threads) and the frames kept."""
    return len(data) + probe.width * probe.height * 3 // 2 * 32 + 64 * FRAME_SIDE ** 2 * 3


def _size(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return (max(MIN_SIDE, round(width * scale)) // 2 * 2 or 2,
            max(MIN_SIDE, round(height * scale)) // 2 * 2 or 2)


def _jpeg(frame: VideoFrame, size: tuple[int, int]) -> Image:
    from PIL import Image as PILImage

    # Scaled by libswscale (area filter) before it becomes a picture: never full size.
    rgb = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
    picture = PILImage.fromarray(rgb.to_ndarray())
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=_QUALITY)
    data = out.getvalue()
    return Image(data, "image/jpeg", picture.width, picture.height,
                 hashlib.sha256(data).hexdigest())


def sample_video(data: bytes, *, max_frames: int, max_seconds: float = MAX_VIDEO_SECONDS,
                 max_side: int = FRAME_SIDE) -> Video:
    """Frames of the video at most ``FPS`` a second and at most ``max_frames`` in all,
    spread over its length; fewer than ``MIN_FRAMES`` (a short clip) are padded with the
    last one."""
    from av.error import FFmpegError

    probe = probe_video(data, max_seconds=max_seconds)
    width, height = probe.width, probe.height
    size = _size(width, height, max_side)
    seconds = probe.seconds
    count = max(1, min(max_frames, math.ceil(seconds * FPS))) if seconds else max_frames
    step = seconds / count if seconds else 1 / FPS
    frames: list[Image] = []
    last_time = 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _open(data) as container:
                stream = _picture(container)
                stream.thread_type = "AUTO"
                target = step / 2  # the middle of each stretch
                if seconds and step >= SEEK_STEP and stream.time_base:
                    # Far apart: seek to each (a keyframe before it), not decode it all.
                    targets = [target + i * step for i in range(count)]
                    frames = _seeking(container, stream, targets, size)
                    last_time = seconds
                for frame in () if frames else container.decode(stream):
                    at = float(frame.time) if frame.time is not None else last_time
                    last_time = at
                    if at > max_seconds:
                        raise _too_long(at, max_seconds)
                    if at + 1e-6 < target:
                        continue
                    frames.append(_jpeg(frame, size))
                    while target <= at + 1e-6:
                        target += step
                    if len(frames) >= count:
                        break
    except VideoError:
        raise
    except (FFmpegError, OSError, ValueError, IndexError, TypeError, MemoryError) as err:
        if not frames:
            raise _damaged() from err
    if not frames:
        raise _damaged()
    length = seconds or last_time + step
    fps = min(FPS, len(frames) / length) if length else FPS
    while len(frames) < MIN_FRAMES:
        frames.append(frames[-1])
    return Video(tuple(frames), round(fps, 3), round(length, 3))


def _seeking(container: InputContainer, stream: VideoStream, targets: list[float],
             size: tuple[int, int]) -> list[Image]:
    """The first frame at or after each target time, seeking to the keyframe before it."""
    assert stream.time_base is not None
    frames: list[Image] = []
    for target in targets:
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is None or frame.time + 1e-6 >= target:
                frames.append(_jpeg(frame, size))
                break
    return frames


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    return f"{seconds / 60:.1f}".removesuffix(".0") + " minutes"


def _too_long(seconds: float, limit: float) -> VideoError:
    return VideoError(f"video is {seconds:.0f} s, limit {limit:.0f}",
                      user_message=f"That video is too long ({_duration(seconds)}); I watch "
                      f"videos up to {_duration(limit)}.")
