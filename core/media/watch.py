"""A message's videos as sampled frames for the model: the frame budget shared among
them, decoding under the process's memory budget, a note for each one left out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.image_prep import MemoryBudget
from core.media.video import (
    FRAME_SIDE,
    MAX_VIDEO_BYTES,
    MAX_VIDEO_SECONDS,
    VideoError,
    decode_cost,
    probe_video,
    sample_video,
)
from core.types import Upload, Video

__all__ = ["DEFAULT_VIDEO_FRAMES", "VideoReader", "Watching"]

log = logging.getLogger(__name__)
DEFAULT_VIDEO_FRAMES = 16  # frames of one message's videos together (CHATBRIDGE_MAX_VIDEO_FRAMES)


@dataclass(slots=True)
class Watching:
    """What a message's videos add: their frames, and for the person what was left out."""

    videos: list[Video] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class VideoReader:
    """Samples videos into frames within the frame, length, size and memory limits."""

    def __init__(self, budget: MemoryBudget, *, max_frames: int = DEFAULT_VIDEO_FRAMES,
                 max_seconds: float = MAX_VIDEO_SECONDS, max_side: int = FRAME_SIDE,
                 max_bytes: int = MAX_VIDEO_BYTES) -> None:
        self._budget = budget
        self.max_frames = max_frames
        self._max_seconds = max_seconds
        self._max_side = max_side
        self._max_bytes = max_bytes

    async def read(self, uploads: Sequence[Upload]) -> Watching:
        """Frames of each video, the budget split evenly; videos past the budget (one
        frame each at least) and unreadable ones are named in ``refused``."""
        watching = Watching()
        share = max(self.max_frames // max(len(uploads), 1), 1)
        for number, upload in enumerate(uploads):
            label = upload.name or "the video"
            if number >= self.max_frames:
                watching.refused.append(f"I watch at most {self.max_frames} videos in one "
                                        f"message, so I skipped {label}.")
                continue
            if len(upload.data) > self._max_bytes:
                watching.refused.append(
                    f"{label} is too large ({len(upload.data) / 2**20:.0f} MB); I watch "
                    f"videos up to {self._max_bytes // 2**20} MB.")
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
            watching.videos.append(video)
        return watching


def _named(message: str, label: str) -> str:
    """A refusal that names the file ("That video …" → "clip.mp4: that video …")."""
    if label == "the video":
        return message
    return f"{label}: {message[0].lower()}{message[1:]}"
