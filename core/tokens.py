"""Token counting: the Qwen tokenizer for Qwen models, a cheap estimate for the rest.

The Qwen BPE file ships inside the ``dashscope`` package (``resources/qwen.tiktoken``)
and is read offline with tiktoken; the package itself is never imported.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from core.types import Image, Video

__all__ = ["EstimateCounter", "QwenCounter", "TokenCounter", "counter_for", "image_tokens",
           "video_tokens"]

# From dashscope/tokenizers/qwen_tokenizer.py.
_PAT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_MESSAGE_OVERHEAD = 4  # role markers per message in the chat template


class TokenCounter(Protocol):
    """Counts tokens of a text."""

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        ...


class EstimateCounter:
    """A cheap estimate: ~4 bytes a token for Latin text, one token a CJK character."""

    def count(self, text: str) -> int:
        """Estimated tokens in ``text``."""
        if not text:
            return 0
        wide = sum(1 for ch in text if ord(ch) > 0x2E7F)
        narrow = len(text) - wide
        return wide + math.ceil(narrow / 4)


class QwenCounter:
    """Exact counts with Qwen's BPE vocabulary through tiktoken."""

    def __init__(self, encoding: Any) -> None:
        self._encoding = encoding

    def count(self, text: str) -> int:
        """Tokens in ``text`` as Qwen counts them."""
        return len(self._encoding.encode(text, disallowed_special=()))


def _qwen_file() -> Path | None:
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "resources" / "qwen.tiktoken"
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=1)
def _qwen_counter() -> QwenCounter | None:
    path = _qwen_file()
    if path is None:
        return None
    import base64

    import tiktoken

    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in path.read_text().splitlines() if line)
    }
    special = {f"<|{name}|>": len(ranks) + i for i, name in enumerate(
        ["endoftext", "im_start", "im_end"]
    )}
    encoding = tiktoken.Encoding("qwen", pat_str=_PAT, mergeable_ranks=ranks,
                                 special_tokens=special)
    return QwenCounter(encoding)


def counter_for(model: str) -> TokenCounter:
    """The best counter available for ``model``."""
    if model.lower().startswith(("qwen", "qwq", "qvq")):
        counter = _qwen_counter()
        if counter is not None:
            return counter
    return EstimateCounter()


def image_tokens(image: Image) -> int:
    """Qwen-VL's cost of an image: one token per 28x28 patch, capped at 1280."""
    return min(math.ceil(image.width / 28) * math.ceil(image.height / 28), 1280) + 2


def video_tokens(video: Video) -> int:
    """Qwen-VL's cost of a video's frames: image patches, two frames merged into one."""
    return (sum(image_tokens(f) for f in video.frames) + 1) // 2 + 2


def message_tokens(counter: TokenCounter, text: str, images: tuple[Image, ...] = (),
                   videos: tuple[Video, ...] = ()) -> int:
    """Tokens a message takes in the context, with its images, videos and role markers."""
    return (counter.count(text) + sum(image_tokens(i) for i in images)
            + sum(video_tokens(v) for v in videos) + _MESSAGE_OVERHEAD)
