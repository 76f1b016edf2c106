"""A turn's input made usable: text checks, documents, recordings and images."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from core.errors import (
    ImageError,
    InputError,
    ModelError,
)
from core.media.transcribe import is_recording, transcription_failed
from core.media.video import is_video
from core.profiles import Profile
from core.service_base import ServiceBase
from core.types import (
    Author,
    ChatRequest,
    Image,
    Upload,
    Usage,
    Video,
)

log = logging.getLogger(__name__)
TRANSCRIBED = "[voice message, transcribed]"  # marks a transcript in the stored text
HEARD_SHOWN = 300  # a transcript this short is shown back to the person

def storable(text: str) -> str:
    """``text`` as every database can keep it: a lone surrogate (from JSON's ``\\ud800``)
    becomes U+FFFD and NUL characters (which PostgreSQL's text refuses) are dropped."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def storable_request(request: ChatRequest) -> ChatRequest:
    author = request.author
    clean = Author(storable(author.id), storable(author.name))
    text = storable(request.text)
    if clean == author and text == request.text:
        return request
    return replace(request, author=clean, text=text)



@dataclass(slots=True)
class Extras:
    """What reading a message added besides its text and images: the frames of its
    videos, and the speech model's usage for its recordings."""

    videos: tuple[Video, ...] = ()
    asr_model: str | None = None
    asr_usage: Usage | None = None


class Intake(ServiceBase):
    """Checks and reads what people sent before their turn is recorded."""

    async def _prepare_images(self, raw: tuple[bytes, ...]) -> tuple[Image, ...]:
        if len(raw) > self._options.max_images:
            raise InputError(user_message=f"Please send at most {self._options.max_images} "
                             "images at a time.")
        try:
            return await self._images.prepare(raw)
        except InputError:
            raise
        except Exception as err:  # a decoder bug on hostile input is still bad input
            raise ImageError(f"image decoder failed: {type(err).__name__}") from err
    def _check_text(self, requests: tuple[ChatRequest, ...], profile: Profile) -> str | None:
        """Why the messages cannot be answered as written, if they cannot."""
        if not any(r.text.strip() or r.images or r.files for r in requests):
            return "Your message was empty; please write something."
        for r in requests:
            size = len(r.text.strip())
            if size > profile.max_input_chars:
                return (f"Your message is too long ({size} characters); "
                        f"the limit is {profile.max_input_chars}.")
        return None

    async def _with_documents(self, request: ChatRequest, profile: Profile, model: str,
                              notes: list[str], refused: list[str],
                              extras: dict[str, Extras] | None = None) -> ChatRequest:
        """``request`` with its documents read into its text (and a scanned PDF's pages
        into its images), its recordings transcribed and its videos sampled (into
        ``extras``); what was cut or not read goes to ``notes``/``refused``. A message
        with nothing left to answer raises the first refusal."""
        if not request.files:
            return request
        videos = [u for u in request.files if is_video(u.data, u.name, u.mime)]
        rest = [u for u in request.files if u not in videos]
        recordings = [u for u in rest if is_recording(u)]
        documents = [u for u in rest if not is_recording(u)]
        mine: list[str] = []  # this message's refusals
        extra = Extras()
        heard = await self._heard(recordings, notes, mine, extra)
        if videos:
            watching = await self._videos.read(videos)
            mine += watching.refused
            extra.videos = tuple(watching.videos)
        if extras is not None:
            extras[request.event_id] = extra
        counter = self._counter(model)
        room = profile.budget_for(model) - counter.count(profile.system_prompt)
        reading = await self._documents.read(
            documents, counter=counter,
            budget_tokens=max(room // 2 - counter.count(request.text), 1),
            max_images=max(self._options.max_images - len(request.images), 0))
        notes += reading.notes
        text = "\n\n".join(t for t in (*heard, request.text.strip()) if t)
        if reading.text:
            text = f"{text}\n\n{storable(reading.text)}" if text else storable(reading.text)
        mine += reading.refused
        if not text and not request.images and not reading.images and not extra.videos:
            raise InputError(user_message=mine[0] if mine else
                             "Your message was empty; please write something.")
        refused += mine
        return replace(request, text=text, images=request.images + tuple(reading.images),
                       files=())

    async def _heard(self, recordings: Sequence[Upload], notes: list[str],
                     refused: list[str], extra: Extras) -> list[str]:
        """Each recording's transcript, marked as transcribed (what was heard is noted
        for the person when it is short); the speech model's usage goes to ``extra``."""
        heard: list[str] = []
        for upload in recordings:
            transcriber = self._transcriber
            if transcriber is None:
                refused.append("I can't listen to recordings here (no speech model is set "
                               "up); please write your message.")
                continue
            try:
                words, _, used = await transcriber.transcribe(upload.data)
            except InputError as err:
                refused.append(err.user_message)
                continue
            except ModelError as err:
                log.warning("transcription with %s failed: %s", transcriber.model, err.detail)
                refused.append(transcription_failed(err))
                continue
            extra.asr_model = transcriber.model
            extra.asr_usage = used if extra.asr_usage is None else extra.asr_usage + used
            words = storable(words)
            heard.append(f"{TRANSCRIBED} {words}")
            if len(words) <= HEARD_SHOWN:
                notes.append(f"Heard: \u201c{words}\u201d")
        return heard

    async def _usable(
        self, requests: tuple[ChatRequest, ...], profile: Profile, model: str,
        notes: list[str], extras: dict[str, Extras],
    ) -> tuple[tuple[ChatRequest, ...], dict[str, tuple[Image, ...]], list[str]]:
        """The messages of a batch that can be answered, their images, and why the
        others (or their images) were left out."""
        kept: list[ChatRequest] = []
        images: dict[str, tuple[Image, ...]] = {}
        skipped: list[str] = []
        for r in requests:
            if not r.text.strip() and not r.images and not r.files:
                continue
            if (problem := self._check_text((r,), profile)) is not None:
                skipped.append(problem)
                continue
            try:
                r = await self._with_documents(r, profile, model, notes, skipped, extras)
            except InputError as err:
                skipped.append(err.user_message)
                continue
            try:
                images[r.event_id] = await self._prepare_images(r.images)
            except InputError as err:
                skipped.append(err.user_message)
                if not r.text.strip() and not extras.get(r.event_id, Extras()).videos:
                    continue
                images[r.event_id] = ()
            kept.append(r)
        return tuple(kept), images, skipped
