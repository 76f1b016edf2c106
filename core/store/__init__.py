"""Conversation memory in SQL."""

from core.store.models import Base
from core.store.store import Store, StoredMessage, TurnStart

__all__ = ["Base", "Store", "StoredMessage", "TurnStart"]
