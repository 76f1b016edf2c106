"""Pure translation: events into Incoming values, Slack markup into text, Markdown into parts."""

from __future__ import annotations

from typing import Any

import pytest

from bots.slack.text import Splitter, command_word, plain_text, split_markdown
from bots.slack.translate import incoming_from_event


def body(**event: Any) -> dict[str, Any]:
    return {"team_id": "T1", "type": "event_callback", "event": event}


def translate(allow_bots: bool = False, **event: Any) -> Any:
    return incoming_from_event(body(**event), bot_user_id="UBOT", bot_id="BBOT",
                               allow_bots=allow_bots)


def test_channel_mention_scope_and_identity() -> None:
    msg = translate(type="app_mention", user="U1", text="<@UBOT> hi", ts="5.1", channel="C1")
    assert msg.kind == "channel" and msg.mentioned and msg.shared
    assert msg.scope == "T1/C1/5.1" and msg.event_id == "T1/C1/5.1"
    assert msg.target().thread_ts == "5.1"
    reply = translate(type="message", user="U2", text="more", ts="6.1", thread_ts="5.1",
                      channel="C1", channel_type="channel")
    assert reply.scope == "T1/C1/5.1" and reply.in_thread and not reply.mentioned
    assert reply.event_id == "T1/C1/6.1"


def test_both_copies_of_a_mention_share_the_event_id() -> None:
    a = translate(type="app_mention", user="U1", text="<@UBOT> x", ts="7.1", channel="C1")
    b = translate(type="message", user="U1", text="<@UBOT> x", ts="7.1", channel="C1",
                  channel_type="channel")
    assert a.event_id == b.event_id and a.scope == b.scope and b.mentioned


def test_dm_scopes() -> None:
    top = translate(type="message", user="U1", text="hi", ts="1.1", channel="D1",
                    channel_type="im")
    assert top.kind == "dm" and top.scope == "T1/D1" and top.target().thread_ts is None
    assert not top.shared
    threaded = translate(type="message", user="U1", text="hi", ts="1.2", thread_ts="1.0",
                         channel="D1", channel_type="im")
    assert threaded.kind == "assistant" and threaded.scope == "T1/D1/1.0"
    assert threaded.target().assistant


@pytest.mark.parametrize("event", [
    {"type": "message", "user": "UBOT", "text": "x", "ts": "1", "channel": "D1",
     "channel_type": "im"},
    {"type": "message", "user": "U9", "bot_id": "BBOT", "text": "x", "ts": "1",
     "channel": "D1", "channel_type": "im"},
    {"type": "message", "user": "U9", "bot_id": "BOTHER", "text": "x", "ts": "1",
     "channel": "D1", "channel_type": "im"},
    {"type": "message", "subtype": "message_changed", "ts": "1", "channel": "D1",
     "channel_type": "im"},
    {"type": "message", "subtype": "channel_topic", "user": "U1", "ts": "1", "channel": "C1",
     "channel_type": "channel"},
    {"type": "message", "user": "U1", "text": "x", "ts": "1", "channel": "G1",
     "channel_type": "mpim"},
    {"type": "message", "user": "U1", "text": "x", "channel": "C1"},  # no ts
    {"type": "reaction_added", "user": "U1"},
])
def test_not_answered(event: dict[str, Any]) -> None:
    assert translate(**event) is None


def test_other_bots_when_allowed() -> None:
    msg = translate(allow_bots=True, type="message", subtype="bot_message", bot_id="B7",
                    text="ping", ts="1.1", channel="D1", channel_type="im")
    assert msg is not None and msg.user == "B7"
    own = translate(allow_bots=True, type="message", user="U9", bot_id="BBOT", text="x",
                    ts="1", channel="D1", channel_type="im")
    assert own is None


def test_plain_text() -> None:
    names = {"U1": "Ann"}.get
    text = "<@UBOT> ask <@U1> and <@U2|bob> about <https://x.org|this> &amp; <#C1|general> <!here>"
    assert plain_text(text, name_of=names, drop_user="UBOT") == \
        "ask @Ann and @bob about this (https://x.org) & #general @here"
    assert command_word(" Reset! ") == "reset" and command_word("help") == "help"
    assert command_word("reset everything") is None


def test_split_markdown_keeps_code_blocks_whole_per_part() -> None:
    text = "intro " * 40 + "\n\n```sql\n" + "SELECT 1;\n" * 50 + "```\n\nbye"
    parts = split_markdown(text, 200)
    assert all(len(p) <= 200 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)
    assert all(p.startswith("```sql") for p in parts if "SELECT" in p and "intro" not in p)
    assert split_markdown("short", 200) == ["short"]


def test_splitter_streaming_loses_nothing_and_keeps_the_limit() -> None:
    text = ("para " * 30 + "\n\n") * 5
    whole = split_markdown(text, 300)
    splitter = Splitter(300)
    ops: list[str | None] = []
    for i in range(0, len(text), 11):
        ops += splitter.feed(text[i:i + 11])
    ops += splitter.flush()
    parts = [""]
    for op in ops:
        if op is None:
            parts.append("")
        else:
            parts[-1] += op
    assert all(len(p) <= 300 for p in parts) and len(parts) > 1
    assert " ".join(parts).split() == text.split()
    assert len(whole) > 1 and all(p.rstrip().endswith("para") for p in whole)
