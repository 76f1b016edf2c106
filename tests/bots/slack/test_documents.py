"""Documents shared in Slack: downloaded with the bot token from the (fake) file host, read
into the turn, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests import media_files
from tests.bots.slack.conftest import HarnessFactory, message
from tests.bots.slack.fake_slack import TEAM, TOKEN
from tests.fakes.model_server import Reply

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def test_pdf_and_docx_are_read_and_a_broken_one_noted(
        make_harness: HarnessFactory, db_url: str) -> None:
    async with make_harness(db_url) as h:
        pdf = h.slack.add_file("F1", "plan.pdf", media_files.pdf(["Ship on 3 March."]),
                               "application/pdf")
        memo = h.slack.add_file("F2", "memo.docx", media_files.docx("Owner: Dana."), DOCX)
        bad = h.slack.add_file("F3", "old.xlsx", b"PK\x03\x04 not really", "application/"
                               "vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        h.model.enqueue(Reply(text="Dana ships on 3 March."))
        await h.event(message("who and when?", channel="D1", channel_type="im",
                              subtype="file_share", files=[pdf, memo, bad]))
        await h.idle()
        assert sorted(c.args["path"] for c in h.slack.of("FILE")) == [
            f"/files-pri/{TEAM}-F1/download/plan.pdf",
            f"/files-pri/{TEAM}-F2/download/memo.docx",
            f"/files-pri/{TEAM}-F3/download/old.xlsx"]
        sent = h.model.requests[-1].json["messages"][-1]["content"]
        assert isinstance(sent, str) and sent.startswith("who and when?")
        assert "Ship on 3 March." in sent and "Owner: Dana." in sent
        assert "[Document: plan.pdf (PDF, 1 pages)]" in sent and "old.xlsx" not in sent
        shown = " ".join(m.text for m in h.slack.posted())
        assert "Dana ships on 3 March." in shown and "old.xlsx seems to be damaged" in shown
        body = b"".join(r.body for r in h.model.requests)
        assert TOKEN.encode() not in body and b"files-pri" not in body


async def test_audio_clip_is_transcribed_and_answered(
        make_harness: HarnessFactory) -> None:
    async with make_harness(CHATBRIDGE_ASR_MODEL="qwen3-omni-flash") as h:
        clip = h.slack.add_file("F9", "audio_message.webm",
                                media_files.voice_note(1.0, container="webm"),
                                "audio/webm", subtype="slack_audio")
        h.model.enqueue(Reply(text="Is the build green?"), Reply(text="Yes, it is."))
        await h.event(message("", channel="D1", channel_type="im", subtype="file_share",
                              files=[clip]))
        await h.idle()
        asr = h.model.requests[0].json
        assert asr["model"] == "qwen3-omni-flash"
        assert asr["messages"][0]["content"][0]["type"] == "input_audio"
        assert h.model.requests[-1].json["messages"][-1]["content"] == \
            "[voice message, transcribed] Is the build green?"
        shown = " ".join(m.text for m in h.slack.posted())
        assert "Yes, it is." in shown and "Heard:" in shown
