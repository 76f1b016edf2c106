"""Bad input, end to end through the real bolt app: every case gets a clear message or
the right HTTP status, and the bot still answers the next ordinary message.

Partly covered elsewhere (not repeated here): PDF/HEIC/SVG and external files, a declared
size over ``max_file_mb`` and a mislabelled image (test_files, test_events); wrong secret,
stale and missing signatures and a few malformed JSON bodies (test_events).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import time
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import text as sql

from tests.bots.slack.conftest import (
    SECRET,
    Harness,
    HarnessFactory,
    envelope,
    mention,
    message,
)
from tests.bots.slack.test_events import png
from tests.core.test_images import png_header_only
from tests.fakes.model_server import Reply

HELP = "I answer with an AI model"


def dm(text: str, **extra: Any) -> dict[str, Any]:
    """A message at the top level of Ann's direct message channel."""
    return message(text, channel="D1", channel_type="im", **extra)


def posts(h: Harness) -> list[str]:
    """Every message the bot has posted, as it stands now."""
    return [m.text for m in h.slack.posted()]


async def still_answers(h: Harness) -> None:
    """The bot answers an ordinary message afterwards: nothing got stuck."""
    before = len(h.model.requests)
    h.model.enqueue(Reply(text="Still here."))
    assert await h.event(dm("Are you still there?")) == 200
    await h.idle()
    assert posts(h)[-1] == "Still here."
    assert len(h.model.requests) == before + 1


def jpeg(size: tuple[int, int] = (200, 150)) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", size, "navy").save(buf, "JPEG")
    return buf.getvalue()


def signature(body: bytes, stamp: str, secret: str = SECRET, version: str = "v0") -> str:
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return f"{version}={digest.hexdigest()}"


async def post_raw(h: Harness, body: bytes, headers: dict[str, str]) -> int:
    """POST exactly these bytes and headers to /slack/events."""
    async with h.session.post(h.url + "/slack/events", data=body, headers={
            "Content-Type": "application/json", **headers}) as resp:
        return resp.status


# ---------------------------------------------------------------- empty and oversized text

@pytest.mark.parametrize("event", [
    dm(""),
    dm(" \n\t "),
    dm("", subtype="file_share", files=[]),
    mention(""),  # only "<@bot>"
], ids=["dm-empty", "dm-whitespace", "dm-no-files", "bare-mention"])
async def test_empty_message_gets_the_help_text(harness: Harness, event: dict[str, Any]) -> None:
    h = harness
    assert await h.event(event) == 200
    await h.idle()
    assert len(posts(h)) == 1 and HELP in posts(h)[0]
    assert not h.model.requests
    await still_answers(h)


async def test_text_over_max_input_chars_is_refused_once(make_harness: HarnessFactory) -> None:
    toml = """
[defaults]
max_input_chars = 50
[profiles.support]
max_input_chars = 10
[slack.channels]
C9 = "support"
"""
    async with make_harness(toml=toml) as h:
        h.model.enqueue(Reply(text="Fifty is fine."))
        await h.event(dm("a" * 50))
        await h.idle()
        assert posts(h) == ["Fifty is fine."]

        long = dm("b" * 51)
        await h.event(long, event_id="EvLong")
        await h.idle()
        await h.event(long, event_id="EvLong", retry=1)  # Slack's redelivery: no 2nd notice
        await h.idle()
        assert len(posts(h)) == 2
        assert "too long (51 characters)" in posts(h)[1] and "limit is 50" in posts(h)[1]

        await h.event(mention("c" * 11, channel="C9"))  # the channel's profile: 10
        await h.idle()
        assert "too long (11 characters)" in posts(h)[-1] and "limit is 10" in posts(h)[-1]
        assert len(h.model.requests) == 1
        await still_answers(h)


# ---------------------------------------------------------------- files

UNREADABLE = [
    ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "image/png", "damaged"),
    ("cut.jpg", jpeg()[:400], "image/jpeg", "damaged"),
    ("bomb.png", png_header_only(40_000, 40_000), "image/png", "too many pixels"),
    ("tiny.png", png(size=(4, 4)), "image/png", "too small"),
    ("thin.png", png(size=(10, 2500)), "image/png", "long and thin"),
]


@pytest.mark.parametrize(("name", "data", "mime", "says"), UNREADABLE,
                         ids=[u[0] for u in UNREADABLE])
async def test_unreadable_image_is_explained(harness: Harness, name: str, data: bytes,
                                             mime: str, says: str) -> None:
    h = harness
    file = h.slack.add_file("F1", name, data, mime)
    await h.event(dm("what is this?", subtype="file_share", files=[file]))
    await h.idle()
    assert len(h.slack.of("FILE")) == 1
    [shown] = posts(h)
    assert shown.startswith(":warning:") and says in shown
    assert not h.model.requests  # bad input: the model is not asked
    await still_answers(h)


async def test_unsupported_file_is_noted_and_the_text_answered(harness: Harness) -> None:
    h = harness
    file = h.slack.add_file("F1", "song.mp3", b"ID3\x04\x00" + b"\x00" * 64, "audio/mpeg")
    h.model.enqueue(Reply(text="I can't hear it, but hello."))
    await h.event(dm("listen to this", subtype="file_share", files=[file]))
    await h.idle()
    assert not h.slack.of("FILE")  # never downloaded
    assert any("song.mp3" in p and "I can only read" in p for p in posts(h))
    assert posts(h)[-1] == "I can't hear it, but hello."
    sent = h.model.requests[-1].json["messages"][-1]["content"]
    assert "listen to this" in sent and "song.mp3" in sent
    await still_answers(h)


async def test_image_with_huge_dimensions_is_shrunk_and_answered(harness: Harness) -> None:
    h = harness
    file = h.slack.add_file("F1", "poster.png", png("white", (3600, 2400)), "image/png")
    h.model.enqueue(Reply(text="A white poster."))
    await h.event(dm("what is this?", subtype="file_share", files=[file]))
    await h.idle()
    assert posts(h) == ["A white poster."]
    content = h.model.requests[-1].json["messages"][-1]["content"]
    [url] = [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
    sent = PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(sent.size) == 2048 and sent.size[0] > sent.size[1]
    await still_answers(h)


async def test_download_bigger_than_declared_is_cut_off(make_harness: HarnessFactory) -> None:
    async with make_harness(toml="[slack]\nmax_file_mb = 1\n") as h:
        data = b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 2**19)  # 1.5 MiB
        file = h.slack.add_file("F1", "liar.png", data, "image/png")
        file["size"] = 1000  # what Slack said; the download says otherwise
        h.model.enqueue(Reply(text="Text only, then."))
        await h.event(dm("see this", subtype="file_share", files=[file]))
        await h.idle()
        assert any("liar.png" in p and "larger than 1.0 MB" in p for p in posts(h))
        assert posts(h)[-1] == "Text only, then."
        content = h.model.requests[-1].json["messages"][-1]["content"]
        assert isinstance(content, str) and "liar.png" in content  # no image sent
        await still_answers(h)


# ---------------------------------------------------------------- HTTP level

BODIES: list[tuple[str, bytes, str, set[int], set[int]]] = [
    # id, body, content type, status when signed, status when not
    ("deep-nesting", b"[" * 100_000, "application/json", {400}, {401}),
    ("not-utf8", b'{"type": "event_callback", "x": "\xff\xfe"}', "application/json",
     {400, 401}, {401}),
    ("empty", b"", "application/json", {400}, {401}),
    ("empty-object", b"{}", "application/json", {400}, {401}),
    ("files-not-a-list", json.dumps(envelope(dm("hi", files=5))).encode(),
     "application/json", {400}, {401}),
    ("form-payload-not-json", b"payload=%7Bnot+json", "application/x-www-form-urlencoded",
     {400}, {401}),
    ("over-1mb", b'{"a": "' + b"x" * (1024 * 1024) + b'"}', "application/json", {413}, {413}),
]


@pytest.mark.parametrize(("body", "ctype", "signed", "unsigned"),
                         [b[1:] for b in BODIES], ids=[b[0] for b in BODIES])
async def test_malformed_body_gets_a_4xx_never_a_500(
    harness: Harness, body: bytes, ctype: str, signed: set[int], unsigned: set[int],
) -> None:
    h = harness
    status, _ = await h.post(body, content_type=ctype)
    assert status in signed
    status, _ = await h.post(body, content_type=ctype, sign=False)
    assert status in unsigned
    await h.idle()
    assert not h.model.requests and not h.slack.posted()
    await still_answers(h)


SIGNATURES = ["timestamp-not-a-number", "timestamp-in-the-future", "wrong-digest",
              "wrong-version", "other-body", "empty-signature", "retry-with-bad-signature"]


@pytest.mark.parametrize("case", SIGNATURES)
async def test_bad_signature_or_timestamp_is_401(harness: Harness, case: str) -> None:
    h = harness
    body = json.dumps(envelope(dm("let me in"))).encode()
    now = str(int(time.time()))
    headers = {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": signature(body, now)}
    if case == "timestamp-not-a-number":
        headers["X-Slack-Request-Timestamp"] = "soon"
    elif case == "timestamp-in-the-future":
        later = str(int(time.time()) + 10 * 60)
        headers = {"X-Slack-Request-Timestamp": later,
                   "X-Slack-Signature": signature(body, later)}
    elif case == "wrong-digest":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif case == "wrong-version":
        headers["X-Slack-Signature"] = signature(body, now, version="v1")
    elif case == "other-body":
        body = json.dumps(envelope(dm("a different message"))).encode()
    elif case == "empty-signature":
        headers["X-Slack-Signature"] = ""
    else:
        headers.update({"X-Slack-Signature": "v0=" + "f" * 64, "X-Slack-Retry-Num": "1",
                        "X-Slack-Retry-Reason": "http_error"})
    assert await post_raw(h, body, headers) == 401
    await h.idle()
    assert not h.model.requests and not h.slack.posted()
    await still_answers(h)


async def test_unknown_event_types_are_acknowledged_and_ignored(harness: Harness) -> None:
    h = harness
    deliveries = [
        envelope({"type": "reaction_added", "user": "U1", "reaction": "tada",
                  "item": {"type": "message", "channel": "C1", "ts": "1.000001"},
                  "event_ts": "1.000002"}),
        envelope({"type": "team_join", "user": {"id": "U5", "name": "new"},
                  "event_ts": "1.000003"}),
        envelope({"type": "some_future_event", "payload": {"nested": [1, 2, 3]},
                  "event_ts": "1.000004"}),
        envelope(dm("topic changed", subtype="some_future_subtype")),
        {"token": "t", "type": "app_rate_limited", "team_id": "T0TEAM",
         "minute_rate_limited": 1518467820, "api_app_id": "A0APP"},
    ]
    for delivery in deliveries:
        status, _ = await h.post(json.dumps(delivery))
        assert status == 200, delivery  # any other answer and Slack delivers it again
    await h.idle()
    assert not h.model.requests
    assert not [m for m in h.slack.methods() if m.startswith(("chat.", "assistant."))]
    await still_answers(h)


# ---------------------------------------------------------------- unicode

UNICODE = {
    "rtl": "مرحبا بالعالم \u200fשלום עולם\u200e and English",  # noqa: RUF001
    "emoji-zwj": "👩\u200d👩\u200d👧\u200d👦 🏳\ufe0f\u200d🌈 🇵🇹 👍🏽 🧑🏿\u200d💻",
    "zero-width": "a\u200bb\u200cc\u200dd\u2060e\ufefff",
    "lone-surrogate": "broken \ud800 pair \udfff here",
    "nul": "before\x00after",
}
UNENCODABLE = re.compile("[\ud800-\udfff\x00\ufffd]")
NAME = "ראובן 👨\u200d👩\u200d👧"  # an RTL display name with a ZWJ sequence


def storable(case: str) -> bool:
    """Whether the text can be stored and sent as it is (UTF-8 holds it)."""
    return case not in ("lone-surrogate", "nul")


def same_text(got: str, sent: str, case: str) -> bool:
    """Intact; for text UTF-8 cannot hold, intact but for those characters (dropped or
    replaced by U+FFFD)."""
    if storable(case):
        return got == sent
    return UNENCODABLE.sub("", got) == UNENCODABLE.sub("", sent)


async def stored_user_rows(h: Harness) -> list[tuple[str, str]]:
    async with h.runtime.store.engine.connect() as conn:
        rows = await conn.execute(sql(
            "SELECT author_name, text FROM messages WHERE role = 'user' ORDER BY id"))
        return [(r[0], r[1]) for r in rows]


@pytest.mark.parametrize("case", [
    "lone-surrogate", "nul",
])
async def test_unencodable_text_gets_an_answer_and_breaks_nothing(
    make_harness: HarnessFactory, db_url: str, case: str,
) -> None:
    async with make_harness(db_url) as h:
        event = mention(UNICODE[case])
        assert await h.event(event) == 200
        await h.idle()
        [shown] = h.slack.posted()  # an answer or a clear error, in the thread
        assert shown.thread_ts == event["ts"] and shown.text
        await still_answers(h)


@pytest.mark.parametrize("case", list(UNICODE))
async def test_unicode_is_answered_and_stored_intact(
    make_harness: HarnessFactory, db_url: str, case: str, request: pytest.FixtureRequest,
) -> None:
    text = UNICODE[case]
    answer = f"echo: {text}" if storable(case) else "Answered."
    async with make_harness(db_url) as h:
        h.slack.users["U3"] = NAME
        h.model.enqueue(Reply(text=answer, chunk_size=3))  # deltas split ZWJ sequences
        event = mention(text, user="U3")
        assert await h.event(event) == 200
        await h.idle()
        assert posts(h) == [answer]
        [sent] = [m["content"] for m in h.model.requests[-1].json["messages"]
                  if m["role"] == "user"]
        assert same_text(sent, f"{NAME}: {text}", case)
        [(author, stored)] = await stored_user_rows(h)
        assert author == NAME and same_text(stored, text, case)
        async with h.runtime.store.engine.connect() as conn:
            replies = (await conn.execute(sql(
                "SELECT text FROM messages WHERE role = 'assistant'"))).scalars().all()
        assert list(replies) == [answer]
        await still_answers(h)
