"""Prepare a turn's images within bounded memory: a pixel budget per turn, a byte budget per
process for decoding, and the memory handed back to the system afterwards.

Decoding is what costs memory: a 400 KB PNG of 10000x10000 pixels holds 400 MB once
decoded. Before decoding, each image's header gives its size (``probe_image``); a turn
whose images add up to more than ``turn_pixels`` is refused, and each image waits until
its decoding cost (``decode_cost``) fits in the process's ``memory_bytes`` alongside the
images other turns are decoding. Images of one turn are prepared one at a time. After a
large decode, glibc is asked to return freed memory (``malloc_trim``): Pillow allocates in
16 MB blocks, which glibc would otherwise keep in its heap once its mmap threshold has
grown past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import AsyncIterator, Callable

from core.errors import ImageError
from core.images import decode_cost, prepare_image, probe_image
from core.types import Image

__all__ = ["DEFAULT_MEMORY_BYTES", "DEFAULT_TURN_PIXELS", "ImagePreparer", "MemoryBudget"]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024
DEFAULT_TURN_PIXELS = 400_000_000  # four images at the per-image limit
_TRIM_AFTER = 32 * 1024 * 1024  # decodes this large are followed by malloc_trim


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryBudget:
    """A byte budget shared by a process's concurrent decodes (first come, first served)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._changed = asyncio.Condition()

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        return self._used

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the budget (at most all of it) while the block runs."""
        size = min(size, self.total)
        async with self._changed:
            await self._changed.wait_for(lambda: self._used + size <= self.total)
            self._used += size
        try:
            yield
        finally:
            async with self._changed:
                self._used -= size
                self._changed.notify_all()


class ImagePreparer:
    """Turns a message's image bytes into model-ready images, within the budgets."""

    def __init__(self, *, max_side: int, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 turn_pixels: int = DEFAULT_TURN_PIXELS) -> None:
        self._max_side = max_side
        self._budget = MemoryBudget(memory_bytes)
        self._turn_pixels = turn_pixels
        self._trim = _malloc_trim()

    @property
    def budget(self) -> MemoryBudget:
        """The process-wide decoding budget."""
        return self._budget

    async def prepare(self, raw: tuple[bytes, ...]) -> tuple[Image, ...]:
        """Check every header, then decode one image at a time under the budget."""
        sizes = [probe_image(data) for data in raw]  # headers only: no pixels decoded
        pixels = sum(w * h for w, h in sizes)
        if pixels > self._turn_pixels:
            raise ImageError(
                f"{len(raw)} images of {pixels:,} pixels together, limit {self._turn_pixels:,}",
                user_message=f"These images have too many pixels together ({pixels / 1e6:.0f} "
                f"megapixels; I read up to {self._turn_pixels / 1e6:.0f} per message). "
                "Please send fewer or smaller ones.",
            )
        out: list[Image] = []
        for data, (width, height) in zip(raw, sizes, strict=True):
            cost = decode_cost(width, height) + len(data)
            async with self._budget.reserve(cost):
                out.append(await asyncio.to_thread(self._prepare_one, data, cost))
        return tuple(out)

    def _prepare_one(self, data: bytes, cost: int) -> Image:
        try:
            return prepare_image(data, max_side=self._max_side)
        finally:
            if cost >= _TRIM_AFTER and self._trim is not None:
                self._trim()
