"""The console's /summary and /compact."""

from __future__ import annotations

from core.errors import ChatbridgeError
from core.service import ChatService

__all__ = ["memory_command"]


async def memory_command(service: ChatService, name: str, conversation: str) -> str:
    """The answer to ``/summary`` or ``/compact`` in the named conversation."""
    scope = f"console/{conversation}"
    try:
        if name == "summary":
            return await service.summary(platform="console", scope=scope)
        return await service.compact(platform="console", scope=scope, profile=None)
    except ChatbridgeError as err:
        return f"chatbridge: {err.user_message}"
