"""A message's videos as sampled frames for the model: the frame budget shared among
them, decoding under the process's memory budget, a note for each one left out."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from core.image_prep import MemoryBudget
from core.media.video import (
    FRAME_SIDE,
    MAX_VIDEO_BYTES,
    MAX_VIDEO_SECONDS,
    MIN_FRAMES,
    VideoError,
    decode_cost,
    probe_video,
    sample_video,
    video_mime,
)
from core.types import Image, Upload, Video

__all__ = ["DEFAULT_VIDEO_FRAMES", "VideoReader", "Watching"]

log = logging.getLogger(__name__)
MAX_FILE_BYTES = 7 * 1024 * 1024  # base64 of it stays under the 10 MB data-URI cap
# Frames of one message's videos together (CHATBRIDGE_MAX_VIDEO_FRAMES, at least MIN_FRAMES).
DEFAULT_VIDEO_FRAMES = 16


@dataclass(slots=True)
class Watching:
    """What a message's videos add: their frames, and for the person what was left out."""

    videos: list[Video] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class VideoReader:
    """Samples videos into frames within the frame, length, size and memory limits."""

    def __init__(self, budget: MemoryBudget, *, max_frames: int = DEFAULT_VIDEO_FRAMES,
                 max_seconds: float = MAX_VIDEO_SECONDS, max_side: int = FRAME_SIDE,
                 max_bytes: int = MAX_VIDEO_BYTES, file_bytes: int = 0) -> None:
        self._budget = budget
        # A video this small also goes whole, as a base64 ``video_url`` (0: never).
        self._file_bytes = min(file_bytes, MAX_FILE_BYTES)
        self.max_frames = max_frames
        self._max_seconds = max_seconds
        self._max_side = max_side
        self._max_bytes = max_bytes

    @property
    def max_videos(self) -> int:
        """Videos one message may carry: each gets ``MIN_FRAMES`` frames at least."""
        return max(self.max_frames // MIN_FRAMES, 1)

    async def read(self, uploads: Sequence[Upload]) -> Watching:
        """Frames of each video, the budget split evenly; videos past ``max_videos`` and
        unreadable ones are named in ``refused``."""
        watching = Watching()
        most = self.max_videos
        share = max(self.max_frames // min(max(len(uploads), 1), most), MIN_FRAMES)
        for number, upload in enumerate(uploads):
            label = upload.name or "the video"
            if number >= most:
                watching.refused.append(f"I watch at most {_count(most)} in one message, so "
                                        f"I skipped {label}.")
                continue
            if len(upload.data) > self._max_bytes:
                watching.refused.append(
                    f"{label} is too large ({_mb(len(upload.data))}); I watch videos up to "
                    f"{_mb(self._max_bytes)}.")
                continue
            try:
                probe = await asyncio.to_thread(probe_video, upload.data,
                                                max_seconds=self._max_seconds)
                async with self._budget.reserve(decode_cost(probe, upload.data)):
                    video = await asyncio.to_thread(
                        sample_video, upload.data, max_frames=share,
                        max_seconds=self._max_seconds, max_side=self._max_side)
            except VideoError as err:
                watching.refused.append(_named(err.user_message, label))
                continue
            except Exception as err:  # a decoder bug on hostile input is still bad input
                log.warning("video decoder failed: %s", type(err).__name__)
                watching.refused.append(f"{label} seems to be damaged; I couldn't play it.")
                continue
            if 0 < len(upload.data) <= self._file_bytes:
                video = replace(video, file=_whole(upload, video))
            watching.videos.append(video)
        return watching


def _whole(upload: Upload, video: Video) -> Image:
    """The video file as an attachment (its frames' size stands for the picture's)."""
    frame = video.frames[0]
    return Image(upload.data, video_mime(upload.data, upload.mime), frame.width, frame.height,
                 hashlib.sha256(upload.data).hexdigest())


def _count(videos: int) -> str:
    return "one video" if videos == 1 else f"{videos} videos"


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f}".removesuffix(".0") + " MB"


def _named(message: str, label: str) -> str:
    """A refusal that names the file ("That video …" → "clip.mp4: that video …")."""
    if label == "the video":
        return message
    return f"{label}: {message[0].lower()}{message[1:]}"
