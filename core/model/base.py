"""What every model client offers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from core.types import ModelCall, ModelChunk

__all__ = ["ModelClient"]


class ModelClient(Protocol):
    """Streams one model call as chunks: reasoning, text, then a finish chunk."""

    def stream(self, call: ModelCall, *, stream: bool = True) -> AsyncIterator[ModelChunk]:
        """Yield the answer; raise a ``ModelError`` when there is none."""
        ...
