"""Conversation memory in SQL."""

from core.store.models import Base
from core.store.store import ContextLimits, Store, StoredMessage, TurnPart, TurnStart, UsageRow

__all__ = ["Base", "ContextLimits", "Store", "StoredMessage", "TurnPart", "TurnStart", "UsageRow"]
