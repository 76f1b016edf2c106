"""What a turn asks the knowledge base: small talk is not searched, a short follow-up is
searched with the question before it, and the passages' tokens are made room for."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from core.knowledge.search import fts_terms
from core.store import StoredMessage

__all__ = ["FOLLOW_UP_WORDS", "is_follow_up", "is_small_talk", "make_room", "passage_tokens",
           "search_text"]

# A message with fewer words that say what it is about than this, which points back
# ("and how much is it?", "what about Finland?"), is a follow-up of the question before it.
FOLLOW_UP_WORDS = 3

# Greetings, thanks and acknowledgements (English): nothing in a knowledge base answers
# them, and "I don't know" would be a strange reply to "thanks!".
_SMALL_TALK = frozenset("""hi hello hey hiya howdy yo thanks thank thx ty cheers ok okay
k kk fine great good cool nice perfect awesome super wonderful excellent brilliant lovely
bye goodbye cya later morning afternoon evening night day yes yeah yep yup sure alright
got understood noted appreciate appreciated welcome lol haha much lot""".split())
_ASKING = frozenset("how what when where which who whom whose why".split())
# Words by which a short message points back at the question before it.
_LEADING = frozenset("and also or but plus".split())
_POINTING = frozenset("it its that this these those they them their there same one ones "
                      "then".split())


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def is_small_talk(text: str) -> bool:
    """Whether ``text`` is only a greeting, thanks or acknowledgement (with stop words);
    a question ("?", or a word such as "how") never is."""
    words = _words(text)
    if not words or len(words) > 8 or "?" in text or any(w in _ASKING for w in words):
        return False
    content = fts_terms(text)
    return bool(content) and all(w in _SMALL_TALK for w in content) and any(
        w in _SMALL_TALK for w in words)


def is_follow_up(text: str) -> bool:
    """Whether ``text`` reads as a follow-up: short, and pointing back ("and …", "what
    about …", "it", "that", "there"…)."""
    words = _words(text)
    if not words or len(fts_terms(text)) >= FOLLOW_UP_WORDS:
        return False
    opening = " ".join(words[:2])
    return (words[0] in _LEADING or opening in ("what about", "how about")
            or any(w in _POINTING for w in words))


def search_text(text: str, history: Sequence[StoredMessage]) -> str:
    """The text to search the knowledge base with: ``text``, preceded by the previous
    question when ``text`` is a short follow-up of it."""
    if not is_follow_up(text):
        return text
    answered = False
    for message in reversed(history):
        if message.role != "user":
            answered = True  # past the current message(s): an answer came before them
        elif answered and message.text.strip():
            return f"{message.text.strip()}\n{text}"
    return text


def make_room(history: Sequence[StoredMessage], tokens: int, budget: int
              ) -> tuple[StoredMessage, ...]:
    """``history`` without its oldest messages, until they and ``tokens`` more (the
    passages) fit ``budget``; a summary first and this turn's own messages are kept."""
    kept = list(history)
    used = sum(m.token_count for m in kept) + tokens
    first = 1 if kept and _is_summary(kept[0]) else 0
    current = 0  # this turn's messages: the user messages after the last answer
    while current < len(kept) - first and kept[-1 - current].role == "user":
        current += 1
    while used > budget and len(kept) - first > max(current, 1):
        used -= kept.pop(first).token_count
    return tuple(kept)


def _is_summary(message: StoredMessage) -> bool:
    from core.store.summaries import SUMMARY_ROLE

    return message.role == SUMMARY_ROLE


def passage_tokens(count: Callable[[str], int], block: str) -> int:
    """Tokens the passages add to the system prompt (with the blank line before them)."""
    return count(f"\n\n{block}") if block else 0
