"""Which messages concern the bot, and their conversation keys and identities."""

from __future__ import annotations

from typing import Any

from telegram import Message, User

from bots.telegram.inbound import read_messages
from tests.bots.telegram.conftest import ALICE, FORUM, GROUP, mention, message
from tests.bots.telegram.fake_bot_api import BOT_USER

ME = User(**{k: v for k, v in BOT_USER.items() if k in ("id", "is_bot", "first_name",
                                                          "username")})
BOT = BOT_USER["id"]


def msg(data: dict[str, Any]) -> Message:
    parsed = Message.de_json(data, None)
    assert parsed is not None
    return parsed


def test_private_message() -> None:
    m = message("hello")
    got = read_messages([msg(m)], ME)
    assert got.addressed and not got.place.group and got.place.private
    assert got.place.scope(BOT) == f"{BOT}/{ALICE['id']}"
    assert got.place.event_id(BOT, got.key) == f"{BOT}/{ALICE['id']}/{m['message_id']}"
    assert got.author.name == "Alice" and got.text == "hello"


def test_group_mention_is_stripped_and_addressed() -> None:
    got = read_messages([msg(mention("what now?"))], ME)
    assert got.addressed and got.text == "what now?"
    assert not read_messages([msg(message("hi all", chat=GROUP))], ME).addressed
    other = message("@someone_else hi", chat=GROUP,
                    entities=[{"type": "mention", "offset": 0, "length": 13}])
    assert not read_messages([msg(other)], ME).addressed


def test_topics_and_reply_chains() -> None:
    topic = read_messages([msg(mention("x", chat=FORUM, message_thread_id=7,
                                       is_topic_message=True))], ME)
    assert topic.place.scope(BOT) == f"{BOT}/{FORUM['id']}/7"
    chain = read_messages([msg(mention("x", message_thread_id=5))], ME)
    assert chain.place.scope(BOT) == f"{BOT}/{GROUP['id']}"
    # In a forum every message replies to the topic's first message: not to the bot.
    created = {"message_id": 7, "date": 0, "from": BOT_USER, "chat": FORUM,
               "forum_topic_created": {"name": "t", "icon_color": 0}}
    in_topic = message("chatting", chat=FORUM, message_thread_id=7, is_topic_message=True,
                       reply_to_message=created)
    assert not read_messages([msg(in_topic)], ME).addressed


def test_business_identity_includes_the_connection() -> None:
    m = message("hi", business_connection_id="BiZ")
    got = read_messages([msg(m)], ME)
    assert not got.place.private  # no drafts in business chats
    assert got.place.scope(BOT) == f"{BOT}/BiZ/{ALICE['id']}"
    assert got.place.event_id(BOT, got.key) == f"{BOT}/BiZ/{ALICE['id']}/{m['message_id']}"


def test_commands() -> None:
    got = read_messages([msg(message("/model qwen-max"))], ME)
    assert got.command is not None and (got.command.name, got.command.args) == (
        "model", "qwen-max")
    ours = message("/reset@bridge_bot", chat=GROUP,
                   entities=[{"type": "bot_command", "offset": 0, "length": 17}])
    got = read_messages([msg(ours)], ME)
    assert got.addressed and got.command is not None and got.command.explicit
    theirs = message("/reset@other_bot", chat=GROUP,
                     entities=[{"type": "bot_command", "offset": 0, "length": 16}])
    assert not read_messages([msg(theirs)], ME).addressed


def test_album_identity_and_caption() -> None:
    photo = [{"file_id": "p", "file_unique_id": "p", "width": 1, "height": 1}]
    items = [msg(message(media_group_id="g1", photo=photo, caption="look" if i == 1 else None))
             for i in range(3)]
    got = read_messages(items, ME)
    first = min(m.message_id for m in items)
    assert got.key == str(first) and got.text == "look" and len(got.images) == 3
    assert got.reply_to == min(m.message_id for m in items)


def test_other_kinds() -> None:
    voice = read_messages([msg(message(voice={"file_id": "v", "file_unique_id": "v",
                                              "duration": 1}))], ME)
    assert voice.unsupported == "voice messages"
    joined = read_messages([msg(message(new_chat_members=[ALICE], chat=GROUP))], ME)
    assert joined.empty
