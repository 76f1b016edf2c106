"""Conversation memory in SQL."""

from core.store.models import Base
from core.store.store import (
    ContextLimits,
    Fence,
    Store,
    StoredMessage,
    TurnPart,
    TurnStart,
    UsageRow,
)

__all__ = [
    "Base", "ContextLimits", "Fence", "Store", "StoredMessage", "TurnPart", "TurnStart",
    "UsageRow",
]
