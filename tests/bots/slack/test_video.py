"""Video files shared in Slack: downloaded with the bot token from the (fake) file host
through bolt, sampled into frames for a model that watches video, on SQLite and
PostgreSQL; a model that does not gets a placeholder and the person a note."""

from __future__ import annotations

from tests import media_files
from tests.bots.slack.conftest import HarnessFactory, message
from tests.bots.slack.fake_slack import TEAM, TOKEN
from tests.fakes.model_server import Reply


async def test_a_video_file_is_watched(make_harness: HarnessFactory, db_url: str) -> None:
    async with make_harness(db_url, CHATBRIDGE_MODEL="qwen3.5-plus") as h:
        clip = h.slack.add_file("F7", "standup.mp4", media_files.video_clip(3.0), "video/mp4")
        h.model.enqueue(Reply(text="It goes red, green, blue."))
        await h.event(message("what happens here?", channel="D1", channel_type="im",
                              subtype="file_share", files=[clip]))
        await h.idle()
        assert [c.args["path"] for c in h.slack.of("FILE")] == [
            f"/files-pri/{TEAM}-F7/download/standup.mp4"]
        video, text = h.model.requests[-1].json["messages"][-1]["content"]
        assert video["type"] == "video" and len(video["video"]) == 6
        assert text == {"type": "text", "text": "what happens here?"}
        assert "It goes red, green, blue." in " ".join(m.text for m in h.slack.posted())
        body = b"".join(r.body for r in h.model.requests)
        assert TOKEN.encode() not in body and b"files-pri" not in body


async def test_a_model_without_video_says_so(make_harness: HarnessFactory) -> None:
    async with make_harness() as h:  # qwen-plus: text and images, no video
        clip = h.slack.add_file("F8", "clip.mov", media_files.video_clip(1.0), "video/quicktime",
                                subtype="slack_video")
        h.model.enqueue(Reply(text="Hello."))
        await h.event(message("look", channel="D1", channel_type="im", subtype="file_share",
                              files=[clip]))
        await h.idle()
        assert h.model.requests[-1].json["messages"][-1]["content"] == (
            "look\n[a video attached here, not shown: qwen-plus does not watch videos]")
        shown = " ".join(m.text for m in h.slack.posted())
        assert "Hello." in shown and "does not watch videos" in shown
