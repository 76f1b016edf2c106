"""Which models take images: configured per model, else guessed from the name, else learned.

A model that does not take images gets a text placeholder where an image would be; the
images stay stored, so switching to a vision model later sees them again.

Guesses from the name: Qwen vision and omni models (``-vl``, ``qvq``, ``-omni``, and the
natively multimodal ``qwen3.5``/``qwen3.6``), OpenAI's ``gpt-4o``/``gpt-4.1``/``gpt-5``/
``o1``/``o3``/``o4``, and the open vision families (LLaVA, Pixtral, Gemma 3, MiniCPM-V,
Llama 3.2 Vision…) take images; SmolLM2 (the bundled local model) does not. A name we do
not recognise is assumed to take images (``UNKNOWN_TAKES_IMAGES``): a wrong guess costs
one slow turn (the call fails, is made again without the images, and the model is
treated as text-only for the rest of the process), while the other way round would
silently hide every image from a vision model served under a custom name.
``[models.NAME] vision = false`` settles it.

Video (sampled frames, ``core.media.video``) goes only to models that take it: configured
(``[models.NAME] video = true|false``), else the Qwen names that do — VL, omni, QVQ and
the natively multimodal ``qwen3.5``/``qwen3.6`` families. Anything else (OpenAI's models
included: their API has no video part) gets a placeholder and the person a note.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from core.types import FinalEvent, ReplyEvent

__all__ = [
    "UNKNOWN_TAKES_IMAGES", "Vision", "guess_takes_images", "guess_takes_video",
    "image_placeholder", "note_unseen_images", "video_placeholder",
]

UNKNOWN_TAKES_IMAGES = True

_VISION_MARKERS = (
    "-vl", "vl-", "qvq", "omni", "qwen3.5", "qwen3.6", "llava", "pixtral", "vision",
    "gemma3", "gemma-3", "minicpm-v", "moondream", "llama4", "llama-4", "internvl",
    "gemini", "claude",
)
_VISION_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")
_TEXT_MARKERS = ("smollm",)
_VIDEO_MARKERS = ("-vl", "vl-", "qvq", "omni", "qwen3.5", "qwen3.6")


def guess_takes_images(model: str) -> bool | None:
    """What the model's name says about images: ``True``, ``False`` or ``None`` (unknown)."""
    name = model.lower().rsplit("/", 1)[-1]  # "Qwen/Qwen2.5-VL-7B" → "qwen2.5-vl-7b"
    if any(marker in name for marker in _TEXT_MARKERS):
        return False
    if name.startswith(_VISION_PREFIXES) or any(m in name for m in _VISION_MARKERS):
        return True
    return None


def guess_takes_video(model: str) -> bool:
    """What the model's name says about video: the Qwen families that watch it (and open
    Qwen-VL builds served under their Hugging Face names)."""
    name = model.lower().rsplit("/", 1)[-1]
    return any(m in name for m in _VIDEO_MARKERS)


def video_placeholder(count: int, model: str) -> str:
    """What a model that takes no video sees instead of a message's videos."""
    noun = "a video" if count == 1 else f"{count} videos"
    return f"[{noun} attached here, not shown: {model} does not watch videos]"


def image_placeholder(count: int, model: str) -> str:
    """What a text-only model sees instead of a message's images."""
    noun = "an image" if count == 1 else f"{count} images"
    return f"[{noun} attached here, not shown: {model} reads text only]"


class Vision:
    """Answers "does this model take images?" for the service; one per process."""

    def __init__(self, configured: Mapping[str, bool] | None = None,
                 video: Mapping[str, bool] | None = None) -> None:
        self._configured = {k.lower(): v for k, v in (configured or {}).items()}
        self._video = {k.lower(): v for k, v in (video or {}).items()}
        self._learned: set[str] = set()

    def takes_video(self, model: str) -> bool:
        """Configured (``[models.NAME] video``), else guessed from the name; never for a
        model that takes no images."""
        name = model.lower()
        if not self.takes_images(model):
            return False
        if name in self._video:
            return self._video[name]
        return guess_takes_video(model)

    def takes_images(self, model: str) -> bool:
        """Configured, else learned (refused images once), else guessed from the name."""
        name = model.lower()
        if name in self._configured:
            return self._configured[name]
        if name in self._learned:
            return False
        guess = guess_takes_images(model)
        return UNKNOWN_TAKES_IMAGES if guess is None else guess

    def is_unsure(self, model: str) -> bool:
        """Whether images for ``model`` are a guess: not configured, name not recognised,
        not learned yet."""
        name = model.lower()
        return (name not in self._configured and name not in self._learned
                and guess_takes_images(model) is None)

    def learn_text_only(self, model: str) -> None:
        """``model`` failed with images and answered without them: text-only from now on."""
        if self.is_unsure(model):
            self._learned.add(model.lower())

async def note_unseen_images(
    events: AsyncIterator[ReplyEvent], vision: Vision, model: str, fresh_images: bool,
    fresh_videos: bool = False,
) -> AsyncIterator[ReplyEvent]:
    """``events``; when the turn's own messages carried images (or videos) that the
    answering model could not see, its final event says so (once: only the turn that
    brought them)."""
    try:
        async for event in events:
            if isinstance(event, FinalEvent) and (fresh_images or fresh_videos):
                # The model asked for, or the fallback that answered.
                models = [m for m in (model, event.model) if m]
                blind = next((m for m in models if not vision.takes_images(m)), None)
                notes = [event.notice] if event.notice else []
                if blind is not None:
                    what = "image" if fresh_images else "video"
                    notes.append(f"(The model {blind} reads text only, so it did not see "
                                 f"the {what}; I answered from the text.)")
                elif fresh_videos:
                    unwatched = next((m for m in models if not vision.takes_video(m)), None)
                    if unwatched is not None:
                        notes.append(f"(The model {unwatched} does not watch videos, so it "
                                     "did not see the video; I answered from the rest.)")
                if len(notes) > bool(event.notice):
                    event = replace(event, notice=" ".join(notes))
            yield event
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
