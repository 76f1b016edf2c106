"""Send images (and videos) only to models that take them: placeholders for the others
(``Vision``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from core.errors import LocalResourcesExhausted, ModelBadRequest, ModelUnavailable
from core.model.base import ModelClient
from core.types import ContextMessage, ModelCall, ModelChunk
from core.vision import Vision, image_placeholder, video_placeholder

__all__ = ["ImageGate", "without_images", "without_videos"]

log = logging.getLogger(__name__)

# A request the endpoint refused as malformed or unsupported; 404 (no such model) is not.
_REFUSED_STATUSES = (400, 415, 422)


def without_videos(call: ModelCall) -> ModelCall:
    """``call`` with every video replaced by a placeholder naming the model."""
    if not any(m.videos for m in call.messages):
        return call
    messages = tuple(
        m._replace(text=f"{m.text}\n{video_placeholder(len(m.videos), call.model)}".strip(),
                   videos=()) if m.videos else m
        for m in call.messages
    )
    return replace(call, messages=messages)


def without_images(call: ModelCall) -> ModelCall:
    """``call`` with every image (and video) replaced by a placeholder naming the model."""
    call = without_videos(call)
    messages = tuple(
        ContextMessage(m.role, f"{m.text}\n{image_placeholder(len(m.images), call.model)}"
                       .strip(), (), m.author_name) if m.images else m
        for m in call.messages
    )
    return replace(call, messages=messages)


class ImageGate:
    """Sits under ``FallbackClient``, so each model tried gets what it can read.

    A model that takes no images gets placeholders. A model whose name says nothing about
    images is sent them; if that call fails (after the retries below this gate) before any
    text, it is made once more with placeholders, and when that one answers, the model is
    treated as text-only from then on: neither this turn nor the next fails on the images.
    """

    def __init__(self, inner: ModelClient, vision: Vision) -> None:
        self._inner = inner
        self._vision = vision

    async def stream(self, call: ModelCall, *, stream: bool = True) -> AsyncIterator[ModelChunk]:
        """The inner client's answer to ``call``, images only where the model takes them."""
        has_images = any(m.images or m.videos for m in call.messages)
        if has_images and not self._vision.takes_images(call.model):
            call, has_images = without_images(call), False
        elif not self._vision.takes_video(call.model):
            call = without_videos(call)
            has_images = any(m.images for m in call.messages)
        yielded = False
        try:
            async for chunk in self._inner.stream(call, stream=stream):
                yielded = True
                yield chunk
            return
        except (ModelBadRequest, ModelUnavailable) as err:
            if (yielded or not has_images or not self._vision.is_unsure(call.model)
                    or isinstance(err, LocalResourcesExhausted)
                    or (isinstance(err, ModelBadRequest)
                        and err.status_code not in _REFUSED_STATUSES)):
                raise
            log.warning("%s failed on a request with images (%s); trying it without them",
                        call.model, err)
        learned = False
        async for chunk in self._inner.stream(without_images(call), stream=stream):
            if not learned:
                learned = True
                self._vision.learn_text_only(call.model)
            yield chunk
