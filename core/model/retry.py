"""Retries with exponential backoff and full jitter, honouring Retry-After, in a time budget.

Only a call that has not yet yielded anything is retried: once text reached the
person, a fault ends the turn as partial instead of repeating the answer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from core.errors import ModelRetryable
from core.model.base import ModelClient
from core.types import ModelCall, ModelChunk

__all__ = ["RetryPolicy", "RetryingClient"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: attempts, backoff base and cap, and the total time budget."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    budget: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential delay before attempt ``attempt + 1``."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class RetryingClient:
    """Wraps a model client; retries faults that happened before the first chunk."""

    def __init__(
        self,
        inner: ModelClient,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    async def stream(self, call: ModelCall, *, stream: bool = True) -> AsyncIterator[ModelChunk]:
        """Like the inner client's ``stream``, with retries."""
        started = self._clock()
        attempt = 0
        while True:
            yielded = False
            try:
                async for chunk in self._inner.stream(call, stream=stream):
                    yielded = True
                    yield chunk
                return
            except ModelRetryable as err:
                attempt += 1
                if yielded or attempt >= self._policy.max_attempts:
                    raise
                delay = err.retry_after
                if delay is None:
                    delay = self._policy.backoff(attempt - 1, self._rng)
                if self._clock() - started + delay > self._policy.budget:
                    raise
                await self._sleep(delay)
