"""Conversation memory in SQL."""

from core.store.models import Base
from core.store.store import ContextLimits, Store, StoredMessage, TurnStart

__all__ = ["Base", "ContextLimits", "Store", "StoredMessage", "TurnStart"]
