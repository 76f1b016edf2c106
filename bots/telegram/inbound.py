"""Telegram messages as plain facts: where they belong, who wrote them, what they hold.

Pure functions over python-telegram-bot's ``Message``; no I/O. Conversation keys and
event ids follow DESIGN.md: a conversation is ``bot/chat_id[/message_thread_id]`` (or
``bot/business_connection_id/chat_id``), and a message is identified by its chat and
``message_id`` (plus the business connection), never by the delivery's ``update_id``. Each
album item is recorded under its own identity; the items answered together are read as
one, identified by the first (an item arriving after the album was gathered is a group of
its own). In business chats the customers write, not the shop: a "/command" there is
plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import Message, MessageEntity, User
from telegram.constants import ChatType

from core.types import Author

__all__ = ["Command", "FileRef", "Incoming", "Place", "read_messages"]

_IMAGE_EXT = re.compile(r"\.(png|jpe?g|webp|gif|bmp|tiff?|heic|heif)$", re.IGNORECASE)
_DOCUMENT_EXT = re.compile(r"\.(pdf|docx|pptx|xlsx|txt|md|markdown|csv|html?)$", re.IGNORECASE)
_DOCUMENT_MIMES = frozenset({
    "application/pdf", "text/plain", "text/markdown", "text/csv", "text/html",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
})
_KINDS = (  # attribute, how a person would call it
    ("voice", "voice messages"), ("audio", "audio files"), ("video", "videos"),
    ("video_note", "video messages"), ("animation", "GIFs"), ("sticker", "stickers"),
    ("document", "files of this type"), ("location", "locations"), ("venue", "places"),
    ("contact", "contacts"), ("poll", "polls"), ("dice", "dice"), ("game", "games"),
    ("story", "stories"), ("paid_media", "paid media"),
)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a message was written, and so where the answer goes."""

    chat_id: int
    chat_type: str
    thread_id: int | None = None  # a forum topic, never a plain reply chain
    business_connection_id: str | None = None

    @property
    def private(self) -> bool:
        """A one-to-one chat with the bot (not a business chat)."""
        return self.chat_type == ChatType.PRIVATE and self.business_connection_id is None

    @property
    def group(self) -> bool:
        """A group or supergroup: several people, the bot answers when addressed."""
        return self.chat_type in (ChatType.GROUP, ChatType.SUPERGROUP)

    def scope(self, bot_id: int) -> str:
        """The conversation key."""
        if self.business_connection_id is not None:
            return f"{bot_id}/{self.business_connection_id}/{self.chat_id}"
        if self.thread_id is not None:
            return f"{bot_id}/{self.chat_id}/{self.thread_id}"
        return f"{bot_id}/{self.chat_id}"

    def event_id(self, bot_id: int, key: str) -> str:
        """The identity of a message (``key``: its message_id; an album's first one)."""
        if self.business_connection_id is not None:
            return f"{bot_id}/{self.business_connection_id}/{self.chat_id}/{key}"
        return f"{bot_id}/{self.chat_id}/{key}"


@dataclass(frozen=True, slots=True)
class FileRef:
    """An image (or a document) to fetch with getFile."""

    file_id: str
    size: int | None
    name: str = ""
    mime: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    """A bot command addressed to us: ``/model qwen-max`` → ("model", "qwen-max")."""

    name: str
    args: str
    explicit: bool  # written as /name@our_bot


@dataclass(frozen=True, slots=True)
class Incoming:
    """One thing to answer: a message, or an album gathered into one."""

    place: Place
    reply_to: int  # message_id the answer refers to
    key: str  # message identity within the chat
    author: Author
    text: str
    images: tuple[FileRef, ...]
    addressed: bool  # private chat, or mentioned / replied to / commanded in a group
    command: Command | None
    unsupported: str | None  # what we got and cannot read ("voice messages")
    empty: bool  # nothing a person wrote (a service message: member joined, pin, …)
    bare_mention: bool = False  # only "@our_bot": addressed, but no question
    album: str | None = None  # media_group_id of an album's items
    documents: tuple[FileRef, ...] = ()  # PDF, Word, … read into the message's text
    recordings: tuple[FileRef, ...] = ()  # voice notes and audio, for a speech model
    videos: tuple[FileRef, ...] = ()  # videos, video notes and animations: sampled frames


def place_of(message: Message) -> Place:
    """Where ``message`` was written (the conversation it belongs to)."""
    thread = message.message_thread_id if message.is_topic_message else None
    return Place(message.chat.id, message.chat.type, thread, message.business_connection_id)


def _author(message: Message) -> Author:
    if message.sender_chat is not None:  # anonymous admin or a channel writing in a group
        return Author(f"chat{message.sender_chat.id}", message.sender_chat.title or "")
    user = message.from_user
    return Author(str(user.id), user.full_name) if user else Author("unknown")


def _entities(message: Message) -> dict[MessageEntity, str]:
    if message.text is not None:
        return message.parse_entities()
    return message.parse_caption_entities()


def _command(message: Message, me: User) -> Command | None:
    text = message.text or message.caption or ""
    for entity, value in _entities(message).items():
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            name, _, target = value[1:].partition("@")
            if target and target.lower() != (me.username or "").lower():
                return None
            return Command(name.lower(), text[len(value):].strip(), bool(target))
    return None


def _mentions_me(message: Message, me: User) -> bool:
    handle = f"@{me.username}".lower() if me.username else None
    for entity, value in _entities(message).items():
        if entity.type == MessageEntity.MENTION and value.lower() == handle:
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == me.id:
            return True
        if entity.type == MessageEntity.BOT_COMMAND and handle and value.lower().endswith(handle):
            return True
    return False


def _replies_to_me(message: Message, me: User) -> bool:
    replied = message.reply_to_message
    if replied is None or replied.forum_topic_created is not None:
        return False  # in a forum every message "replies" to its topic's first message
    return replied.from_user is not None and replied.from_user.id == me.id


def _text(message: Message, me: User) -> str:
    text = message.text or message.caption or ""
    if me.username:  # "@my_bot what is this?" → "what is this?"
        text = re.sub(rf"(?i)@{re.escape(me.username)}\b[,:]?", "", text)
    replied = message.reply_to_message
    quoted = (message.quote.text if message.quote else None) or (
        replied.text or replied.caption if replied else None)
    if replied is not None and quoted and not _replies_to_me(message, me) \
            and replied.forum_topic_created is None:
        who = _author(replied).name or "someone"
        text = f"[replying to {who}: \"{quoted[:1000]}\"]\n{text.strip()}"
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _images(message: Message) -> tuple[FileRef, ...]:
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return (FileRef(largest.file_id, largest.file_size),)
    doc = message.document
    if doc is not None and ((doc.mime_type or "").startswith("image/")
                            or _IMAGE_EXT.search(doc.file_name or "")):
        return (FileRef(doc.file_id, doc.file_size),)
    return ()


def _documents(message: Message) -> tuple[FileRef, ...]:
    doc = message.document
    if doc is None or _images(message):
        return ()
    if (doc.mime_type or "") in _DOCUMENT_MIMES or _DOCUMENT_EXT.search(doc.file_name or ""):
        return (FileRef(doc.file_id, doc.file_size, doc.file_name or "document",
                        doc.mime_type or ""),)
    return ()


def _recordings(message: Message) -> tuple[FileRef, ...]:
    if message.voice is not None:
        voice = message.voice
        return (FileRef(voice.file_id, voice.file_size, "voice message",
                        voice.mime_type or "audio/ogg"),)
    if message.audio is not None:
        audio = message.audio
        return (FileRef(audio.file_id, audio.file_size, audio.file_name or "audio file",
                        audio.mime_type or "audio/mpeg"),)
    return ()


def _videos(message: Message) -> tuple[FileRef, ...]:
    if message.video is not None:
        video = message.video
        return (FileRef(video.file_id, video.file_size, video.file_name or "video",
                        video.mime_type or "video/mp4"),)
    if message.video_note is not None:  # the round ones: always MP4, no name or type given
        note = message.video_note
        return (FileRef(note.file_id, note.file_size, "video message", "video/mp4"),)
    if message.animation is not None and not _images(message):
        animation = message.animation  # a "GIF": Telegram sends it as a silent MP4
        return (FileRef(animation.file_id, animation.file_size,
                        animation.file_name or "animation", animation.mime_type or "video/mp4"),)
    doc = message.document
    if doc is not None and (doc.mime_type or "").startswith("video/"):
        return (FileRef(doc.file_id, doc.file_size, doc.file_name or "video", doc.mime_type
                        or "video/mp4"),)
    return ()


def _unsupported(message: Message) -> str | None:
    for attribute, label in _KINDS:
        if getattr(message, attribute, None):
            return label
    return None


def read_messages(messages: Sequence[Message], me: User) -> Incoming:
    """What one message, or the items of one album, ask of the bot."""
    first = min(messages, key=lambda m: m.message_id)
    place = place_of(first)
    commands = not first.media_group_id and first.business_connection_id is None
    command = _command(first, me) if commands else None
    texts: list[str] = []
    images: list[FileRef] = []
    documents: list[FileRef] = []
    recordings: list[FileRef] = []
    videos: list[FileRef] = []
    mentioned = replied = False
    unsupported: str | None = None
    for message in sorted(messages, key=lambda m: m.message_id):
        found = _images(message)
        images.extend(found)
        papers = _documents(message)
        documents.extend(papers)
        recordings.extend(_recordings(message))
        clips = _videos(message)
        videos.extend(clips)
        if not found and not papers and not clips:
            unsupported = unsupported or _unsupported(message)
        mentioned = mentioned or _mentions_me(message, me)
        replied = replied or _replies_to_me(message, me)
        text = _text(message, me)
        if text:
            texts.append(text)
    key = str(first.message_id)
    # A bare /command reaches a group bot only when Telegram deems it ours (privacy mode)
    # or when privacy mode is off; the caller ignores bare commands it does not know.
    addressed = not place.group or mentioned or replied or command is not None
    empty = not texts and not images and not documents and not videos \
        and unsupported is None and command is None
    return Incoming(
        place=place, reply_to=first.message_id, key=key, author=_author(first),
        text="\n\n".join(texts), images=tuple(images), addressed=addressed, command=command,
        unsupported=unsupported if not images and not documents and not videos else None,
        empty=empty, bare_mention=empty and mentioned, album=first.media_group_id,
        documents=tuple(documents), recordings=tuple(recordings), videos=tuple(videos),
    )
