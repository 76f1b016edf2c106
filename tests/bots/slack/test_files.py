"""Attached files: the bot token only goes to Slack's file hosts; unreadable images are
skipped with a note instead of failing the turn."""

from __future__ import annotations

import pytest

from bots.slack.files import READABLE, token_allowed
from core.images import ACCEPTED_MIMES
from tests.bots.slack.conftest import Harness, mention, message
from tests.bots.slack.fake_slack import TEAM, TOKEN, FakeSlack
from tests.bots.slack.test_events import png
from tests.fakes.model_server import Reply


def notes(h: Harness) -> list[str]:
    return [c.args.get("markdown_text", "") for c in h.slack.of("chat.postMessage")]


def sent_content(h: Harness) -> list[dict[str, object]]:
    content: list[dict[str, object]] = h.model.requests[-1].json["messages"][-1]["content"]
    return content


async def test_token_never_goes_to_an_external_host(harness: Harness) -> None:
    h = harness
    with FakeSlack() as other:  # another host: a different loopback port
        external = other.add_file("F7", "drive.png", png(), "image/png",
                                  is_external=True, mode="external")
        elsewhere = other.add_file("F8", "elsewhere.png", png(), "image/png")
        ours = h.slack.add_file("F1", "ours.png", png("green"), "image/png")
        h.model.enqueue(Reply(text="A green one."))
        await h.event(mention("look", subtype="file_share", files=[external, elsewhere, ours]))
        await h.idle()
        assert all(TOKEN not in str(c.headers) for c in other.calls)
        assert not other.of("FILE")
    assert [c.args["path"] for c in h.slack.of("FILE")] == \
        [f"/files-pri/{TEAM}-F1/download/ours.png"]
    assert any("drive.png" in n and "outside Slack" in n for n in notes(h))
    assert any("elsewhere.png" in n for n in notes(h))
    assert sum(p["type"] == "image_url" for p in sent_content(h)) == 1
    assert h.slack.posted()[-1].text == "A green one."


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://files.slack.com/files-pri/T1-F1/a.png", True),
    ("https://files-edge.slack.com/files-pri/T1-F1/a.png", True),
    ("http://files.slack.com/files-pri/T1-F1/a.png", False),  # never in the clear
    ("https://files.slack.com.evil.example/a.png", False),
    ("https://evilslack.com/a.png", False),
    ("https://docs.google.com/a.png", False),
    ("http://127.0.0.1:9000/files-pri/a.png", True),  # the configured API host and port
    ("http://127.0.0.1:9001/files-pri/a.png", False),
    ("https://127.0.0.1:9000/files-pri/a.png", False),
    ("not a url", False),
])
def test_token_allowed(url: str, allowed: bool) -> None:
    assert token_allowed(url, "http://127.0.0.1:9000/api/") is allowed


async def test_png_and_heic_answers_with_the_png_and_notes_the_heic(harness: Harness) -> None:
    h = harness
    good = h.slack.add_file("F1", "cat.png", png("orange"), "image/png")
    heic = h.slack.add_file("F2", "photo.heic", b"\x00\x00\x00\x18ftypheic" + b"\0" * 64,
                            "image/heic")
    svg = h.slack.add_file("F3", "logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                           "image/svg+xml")
    h.model.enqueue(Reply(text="An orange square."))
    await h.event(message("what are these?", channel="D1", channel_type="im",
                          subtype="file_share", files=[good, heic, svg]))
    await h.idle()
    assert [c.args["path"] for c in h.slack.of("FILE")] == \
        [f"/files-pri/{TEAM}-F1/download/cat.png"]
    content = sent_content(h)
    assert sum(p["type"] == "image_url" for p in content) == 1
    texts = " ".join(str(p.get("text", "")) for p in content if p["type"] == "text")
    assert "photo.heic" in texts and "logo.svg" in texts
    heic_note = next(n for n in notes(h) if "photo.heic" in n)
    assert READABLE in heic_note
    assert h.slack.posted()[-1].text == "An orange square."


async def test_mislabelled_image_is_skipped_not_fatal(harness: Harness) -> None:
    h = harness
    fake = h.slack.add_file("F5", "fake.png", b"GIF? no, plain text", "image/png")
    h.model.enqueue(Reply(text="Just text, then."))
    await h.event(message("see", channel="D1", channel_type="im", subtype="file_share",
                          files=[fake]))
    await h.idle()
    assert any("fake.png" in n for n in notes(h))
    assert h.slack.posted()[-1].text == "Just text, then."


def test_readable_formats_match_the_core() -> None:
    for mime in ACCEPTED_MIMES:
        label = {"image/webp": "WebP"}.get(mime, mime.split("/")[1].upper())
        assert label in READABLE
    assert "TIFF" in READABLE and "HEIC" not in READABLE
