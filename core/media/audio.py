"""Voice notes and audio files decoded with PyAV (no ffmpeg binary) into 16 kHz mono WAV.

The container and codec come from the bytes (OGG/Opus, MP3, M4A/AAC, WAV, WebM, FLAC…);
the length is checked from the header before decoding and again while decoding, so a
file that lies about its duration still cannot make us decode more than the limit.
"""

from __future__ import annotations

import io
import wave

from core.errors import InputError

__all__ = ["MAX_AUDIO_SECONDS", "AudioError", "is_audio", "to_wav"]

MAX_AUDIO_SECONDS = 300  # 16 kHz mono 16-bit: ~9.6 MB of WAV, under the 10 MB data-URI cap
RATE = 16_000


class AudioError(InputError):
    """Audio that cannot be transcribed; the message says why, for the person."""

    kind = "bad_audio"
    default_user_message = "I couldn't play that recording."


def is_audio(data: bytes) -> bool:
    """Whether the bytes start like an audio file (OGG, MP3, WAV, M4A, WebM, FLAC, AMR)."""
    return (data.startswith((b"OggS", b"ID3", b"fLaC", b"#!AMR", b"\x1a\x45\xdf\xa3"))
            or (data[:4] == b"RIFF" and data[8:12] == b"WAVE")
            or (data[4:8] == b"ftyp" and data[8:11] in (b"M4A", b"mp4", b"iso", b"3gp"))
            or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0))


def to_wav(data: bytes, *, max_seconds: int = MAX_AUDIO_SECONDS) -> tuple[bytes, float]:
    """The recording as 16 kHz mono 16-bit WAV, and its length in seconds."""
    import av
    from av.error import FFmpegError

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioError("no audio stream", user_message="That recording has no "
                                 "sound in it.")
            stream = container.streams.audio[0]
            declared = float(container.duration or 0) / 1_000_000  # av.time_base
            if declared > max_seconds:
                raise _too_long(declared, max_seconds)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            pcm = bytearray()
            limit = max_seconds * RATE * 2
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pcm += bytes(out.planes[0])[: out.samples * 2]
                if len(pcm) > limit:
                    raise _too_long(len(pcm) / (RATE * 2), max_seconds)
            for out in resampler.resample(None):
                pcm += bytes(out.planes[0])[: out.samples * 2]
    except AudioError:
        raise
    except (FFmpegError, OSError, ValueError, IndexError) as err:
        raise AudioError(f"audio decoder failed: {type(err).__name__}",
                         user_message="That recording seems to be damaged; I couldn't "
                         "play it.") from err
    if not pcm:
        raise AudioError("no samples", user_message="That recording has no sound in it.")
    out_file = io.BytesIO()
    with wave.open(out_file, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(bytes(pcm))
    return out_file.getvalue(), len(pcm) / (RATE * 2)


def _too_long(seconds: float, limit: int) -> AudioError:
    return AudioError(f"audio is {seconds:.0f} s, limit {limit}",
                      user_message=f"That recording is too long ({seconds / 60:.1f} minutes); "
                      f"I transcribe up to {limit // 60} minutes.")
