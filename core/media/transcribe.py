"""Speech to text over the model API: a recording sent as ``input_audio`` (16 kHz WAV,
base64) to a speech-capable model (Qwen-Omni, or an ASR model on the same endpoint)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, NamedTuple

from core.errors import ModelError
from core.image_prep import MemoryBudget
from core.media.audio import AudioError, is_audio, to_wav
from core.media.documents import document_kind
from core.media.video import is_video
from core.model.base import ModelClient
from core.model.openai import OpenAIClient
from core.types import ContextMessage, FinishChunk, ModelCall, TextChunk, Upload, Usage

__all__ = ["PROMPT", "AudioClient", "Transcriber", "Transcript", "is_recording",
           "transcription_failed"]

PROMPT = ("Transcribe this recording word for word, in the language spoken. Reply with the "
          "transcript only.")


class AudioClient(OpenAIClient):
    """Chat completions whose one user message's text is a WAV data URL, sent as an
    ``input_audio`` part with the transcription prompt (Qwen-Omni streams only)."""

    def _body(self, call: ModelCall, stream: bool) -> dict[str, Any]:
        body = super()._body(call, stream)
        for message in body["messages"]:
            if message["role"] == "user" and isinstance(message["content"], str):
                message["content"] = [
                    {"type": "input_audio",
                     "input_audio": {"data": message["content"], "format": "wav"}},
                    {"type": "text", "text": PROMPT},
                ]
        body["modalities"] = ["text"]
        body.pop("enable_thinking", None)
        return body


class Transcript(NamedTuple):
    """What a speech model heard in one recording, and what the call used."""

    text: str
    seconds: float
    usage: Usage


class Transcriber:
    """Turns a recording into text with ``model`` (``CHATBRIDGE_ASR_MODEL``)."""

    def __init__(self, client: ModelClient, model: str, budget: MemoryBudget) -> None:
        self._client = client
        self.model = model
        self._budget = budget

    async def transcribe(self, data: bytes) -> Transcript:
        """The words heard, the recording's length in seconds and the call's usage.
        ``AudioError``: the recording cannot be played; ``ModelError``: the speech model
        failed."""
        async with self._budget.reserve(len(data) * 4 + 10 * 1024 * 1024):
            wav, seconds = await asyncio.to_thread(to_wav, data)
        url = "data:;base64," + base64.b64encode(wav).decode("ascii")
        del wav
        call = ModelCall(self.model, (ContextMessage("user", url),))
        parts: list[str] = []
        usage: Usage | None = None
        async for chunk in self._client.stream(call):
            if isinstance(chunk, TextChunk):
                parts.append(chunk.text)
            elif isinstance(chunk, FinishChunk):
                usage = chunk.usage
        text = "".join(parts).strip()
        if not text:
            raise AudioError("empty transcript", user_message="I couldn't make out any words "
                             "in that recording.")
        # A server that reports no usage: the words written, about four characters a token.
        return Transcript(text, seconds, usage or Usage(0, (len(text) + 3) // 4,
                                                        estimated=True))


def is_recording(upload: Upload) -> bool:
    """An upload that is a recording (by its declared type, else its bytes), not a
    document or a video."""
    if document_kind(upload.data, upload.name, upload.mime) is not None:
        return False
    if is_video(upload.data, upload.name, upload.mime):
        return False
    return upload.mime.lower().startswith("audio/") or is_audio(upload.data)


def transcription_failed(err: ModelError) -> str:
    """What the person is told when the speech model fails."""
    return ("I couldn't transcribe your recording just now (the speech service failed); "
            "please try again, or write it.")
