"""Staying useful when a model endpoint is not: fallback models, a circuit breaker, a deadline.

The clients stack: ``FallbackClient(RetryingClient(OpenAIClient | DashScopeClient))``.
Retries happen per model; when a model still fails with a fault worth retrying (429,
5xx, timeouts), the next model in the list is tried. A model that failed
``failures`` times in a row is skipped for ``cooldown`` seconds (the breaker is open),
then one call is let through to probe it. Faults that another model would not cure
(a wrong key, moderation, a bad request) are raised at once, and so is a shortage of
this process's own resources (``LocalResourcesExhausted``: no descriptor, no pool slot),
which counts against no model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from core.errors import (
    LocalResourcesExhausted,
    ModelRetryable,
    ModelStreamBroken,
    ModelUnavailable,
)
from core.model.base import ModelClient
from core.types import ModelCall, ModelChunk, TextChunk

__all__ = ["CircuitBreaker", "FallbackClient"]


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float | None = None


class CircuitBreaker:
    """Counts consecutive failures per model; an open circuit fails fast until it cools."""

    def __init__(
        self, *, failures: int = 5, cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = failures
        self._cooldown = cooldown
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def allow(self, key: str) -> bool:
        """Whether a call to ``key`` may go out now (closed, or open long enough to probe)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return True
        if self._clock() - circuit.opened_at >= self._cooldown:
            circuit.opened_at = self._clock()  # one probe per cooldown period
            return True
        return False

    def success(self, key: str) -> None:
        """A call to ``key`` worked: close its circuit."""
        self._circuits.pop(key, None)

    def failure(self, key: str) -> None:
        """A call to ``key`` failed."""
        circuit = self._circuits.setdefault(key, _Circuit())
        circuit.failures += 1
        if circuit.failures >= self._limit:
            circuit.opened_at = self._clock()

    def is_open(self, key: str) -> bool:
        """Whether calls to ``key`` are being refused."""
        circuit = self._circuits.get(key)
        return circuit is not None and circuit.opened_at is not None


class FallbackClient:
    """Tries the call's model, then each fallback, under a breaker and a per-turn deadline."""

    def __init__(
        self,
        inner: ModelClient,
        *,
        fallbacks: tuple[str, ...] = (),
        breaker: CircuitBreaker | None = None,
        deadline: float | None = None,
    ) -> None:
        self._inner = inner
        self._fallbacks = fallbacks
        self._breaker = breaker or CircuitBreaker()
        self._deadline = deadline

    async def stream(self, call: ModelCall, *, stream: bool = True) -> AsyncIterator[ModelChunk]:
        """Yield the first model's answer that comes; raise the last fault if none does."""
        models = list(dict.fromkeys((call.model, *self._fallbacks)))
        ends = None if self._deadline is None else time.monotonic() + self._deadline
        last: ModelRetryable | None = None
        for model in models:
            if not self._breaker.allow(model):
                last = ModelUnavailable(f"{model}: circuit open after repeated failures")
                continue
            text: list[str] = []
            try:
                chunks = self._inner.stream(replace(call, model=model), stream=stream)
                async for chunk in _until(chunks, ends, text):
                    if isinstance(chunk, TextChunk):
                        text.append(chunk.text)
                    yield chunk
            except LocalResourcesExhausted:
                raise  # the next model would meet the same local limit
            except ModelRetryable as err:
                self._breaker.failure(model)
                if text:  # never start a second answer after part of one was shown
                    raise ModelStreamBroken(str(err), partial="".join(text)) from err
                last = err
                continue
            self._breaker.success(model)
            return
        raise last or ModelUnavailable("no model to call")


async def _until(
    chunks: AsyncIterator[ModelChunk], ends: float | None, text: list[str]
) -> AsyncIterator[ModelChunk]:
    """``chunks``, cut off at the monotonic time ``ends``."""
    iterator = aiter(chunks)
    try:
        while True:
            remaining = None if ends is None else ends - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            try:
                chunk = await asyncio.wait_for(anext(iterator), remaining)
            except StopAsyncIteration:
                return
            yield chunk
    except TimeoutError as err:
        if text:
            raise ModelStreamBroken("the turn's deadline passed", partial="".join(text)) from err
        raise ModelUnavailable("the model took longer than the turn's deadline") from err
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
