"""Dense vectors from an OpenAI-compatible ``/embeddings`` endpoint (text-embedding-v4…).

Model Studio takes at most 10 texts a request, so texts go in batches of 10.
``encoding_format`` is always ``float`` (base64 support there is unconfirmed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from core.errors import ModelError, ModelUnavailable
from core.model.faults import error_from_status
from core.model.transport import describe, shown_url

__all__ = ["BATCH", "Embedder", "EmbeddingClient", "pack", "unpack"]

BATCH = 10


def pack(vector: Sequence[float]) -> bytes:
    """A vector as stored: float32, little-endian, normalised to unit length."""
    import numpy as np

    arr = np.asarray(vector, dtype="<f4")
    norm = float(np.linalg.norm(arr))
    return (arr / norm if norm > 0 else arr).astype("<f4").tobytes()


def unpack(data: bytes) -> list[float]:
    """A stored vector as floats."""
    import numpy as np

    return [float(x) for x in np.frombuffer(data, dtype="<f4")]


class Embedder(Protocol):
    """What search needs of an embedding model: its name and vectors for texts."""

    model: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


class EmbeddingClient:
    """Embeds texts with one model over a pooled ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None,
                 model: str, dimensions: int | None = None, timeout: float = 60.0) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/embeddings"
        self._key = api_key
        self.model = model
        self._dimensions = dimensions
        self._timeout = httpx.Timeout(timeout, connect=10.0)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            vectors += await self._batch(texts[start:start + BATCH])
        return vectors

    async def _batch(self, texts: Sequence[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.model, "input": list(texts),
                                "encoding_format": "float"}
        if self._dimensions:
            body["dimensions"] = self._dimensions
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        where = shown_url(self._url, self._key)
        try:
            response = await self._http.post(self._url, content=json.dumps(body),
                                             headers=headers, timeout=self._timeout)
        except httpx.HTTPError as err:
            failed = ModelUnavailable("could not reach the embedding endpoint: "
                                      f"{describe(err, timeout=self._timeout.read)}")
            failed.endpoint = where
            raise failed from err
        if response.status_code != 200:
            error = error_from_status(response.status_code, response.headers,
                                      await response.aread(), model=self.model,
                                      secrets=(self._key,))
            error.endpoint = where
            raise error
        try:
            data = sorted(response.json()["data"], key=lambda row: int(row["index"]))
            vectors = [[float(x) for x in row["embedding"]] for row in data]
        except (ValueError, KeyError, TypeError) as err:
            failed = ModelUnavailable(f"unreadable embeddings answer: {type(err).__name__}")
            failed.endpoint = where
            raise failed from err
        if len(vectors) != len(texts) or any(
                not v or not all(math.isfinite(x) for x in v) for v in vectors):
            wrong = ModelError(f"the embedding endpoint returned {len(vectors)} usable "
                               f"vectors for {len(texts)} texts")
            wrong.endpoint = where
            raise wrong
        return vectors
