"""Videos sampled with PyAV: at most 2 frames a second, within the frame budget, scaled
within the image limits; damaged, too long or picture-less files refused with a reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PILImage

from core.image_prep import MemoryBudget
from core.media.video import FPS, MIN_FRAMES, VideoError, is_video, probe_video, sample_video
from core.media.watch import VideoReader
from core.types import Upload
from tests import media_files


def colour(frame_data: bytes) -> tuple[int, int, int]:
    with PILImage.open(io.BytesIO(frame_data)) as picture:
        red, green, blue = picture.convert("RGB").getpixel((5, 5))
        return red, green, blue


def dominant(frame_data: bytes) -> str:
    red, green, blue = colour(frame_data)
    return max((red, "red"), (green, "green"), (blue, "blue"))[1]


def test_frames_at_two_a_second_spread_over_the_clip() -> None:
    video = sample_video(media_files.video_clip(3.0), max_frames=16)
    assert len(video.frames) == 6 and video.fps == FPS and video.seconds == pytest.approx(3.0)
    assert [dominant(f.data) for f in video.frames] == ["red", "red", "green", "green",
                                                        "blue", "blue"]
    assert all(f.mime == "image/jpeg" and (f.width, f.height) == (96, 64)
               for f in video.frames)


def test_a_long_clip_gets_the_budget_spread_evenly() -> None:
    video = sample_video(media_files.video_clip(30.0, fps=5), max_frames=6)
    assert len(video.frames) == 6
    assert video.fps == pytest.approx(0.2)  # 6 frames over 30 s: one every 5 s
    assert [dominant(f.data) for f in video.frames] == ["red", "red", "green", "green",
                                                        "blue", "blue"]


def test_far_apart_frames_are_found_by_seeking() -> None:
    clip = media_files.video_clip(60.0, fps=5, keyframe_every=10)  # a keyframe every 2 s
    video = sample_video(clip, max_frames=6)  # one frame every 10 s: seeks
    assert len(video.frames) == 6 and video.fps == pytest.approx(0.1)
    assert [dominant(f.data) for f in video.frames] == ["red", "red", "green", "green",
                                                        "blue", "blue"]


def test_a_short_clip_is_padded_to_the_minimum_frame_list() -> None:
    video = sample_video(media_files.video_clip(0.5), max_frames=16)
    assert len(video.frames) == MIN_FRAMES and video.fps <= FPS
    assert len({f.sha256 for f in video.frames}) == 1


def test_large_frames_are_scaled_within_the_side() -> None:
    video = sample_video(media_files.video_clip(1.0, size=(1920, 1080)), max_frames=4,
                         max_side=512)
    assert {(f.width, f.height) for f in video.frames} == {(512, 288)}


def test_webm_is_read_too() -> None:
    clip = media_files.video_clip(2.0, container="webm", codec="libvpx")
    assert is_video(clip) and len(sample_video(clip, max_frames=8).frames) == 4


def test_audio_is_not_a_video_and_mime_or_name_decide_first() -> None:
    assert not is_video(media_files.voice_note(1.0))
    assert not is_video(media_files.voice_note(1.0, container="mp4", codec="aac"))
    assert is_video(media_files.video_clip(1.0))  # an MP4 known by its video stream
    assert is_video(b"", "clip.MOV") and is_video(b"", mime="video/mp4")
    assert not is_video(media_files.video_clip(1.0), mime="audio/mp4")


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200,  # a header and nothing else
    media_files.video_clip(2.0)[:600],  # cut short
    b"not a video at all",
])
def test_damaged_videos_are_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(VideoError) as caught:
        sample_video(data, max_frames=4)
    assert caught.value.user_message == "That video seems to be damaged; I couldn't play it."


def test_too_long_is_refused_from_the_header() -> None:
    with pytest.raises(VideoError) as caught:
        probe_video(media_files.video_clip(20.0, fps=2), max_seconds=10)
    assert caught.value.user_message == ("That video is too long (20 seconds); I watch videos "
                                         "up to 10 seconds.")


def test_a_recording_has_no_picture() -> None:
    with pytest.raises(VideoError, match="no video stream"):
        probe_video(media_files.voice_note(1.0, container="mp4", codec="aac"))


async def test_reader_shares_the_budget_and_names_what_it_left_out() -> None:
    reader = VideoReader(MemoryBudget(256 * 1024 * 1024), max_frames=12,
                         max_bytes=3 * 2**20)
    clips = [Upload("a.mp4", media_files.video_clip(10.0, fps=2)),
             Upload("broken.mp4", b"\x00\x00\x00\x18ftypisom"),
             Upload("huge.mp4", b"\x00" * (4 * 2**20)),
             Upload("late.mp4", media_files.video_clip(1.0))]
    assert reader.max_videos == 3  # 4 frames each at least
    watching = await reader.read(clips)
    assert [len(v.frames) for v in watching.videos] == [4]  # 12 frames over 3 videos
    assert watching.refused == [
        "broken.mp4: that video seems to be damaged; I couldn't play it.",
        "huge.mp4 is too large (4 MB); I watch videos up to 3 MB.",
        "I watch at most 3 videos in one message, so I skipped late.mp4.",
    ]
