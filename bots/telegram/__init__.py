"""The Telegram adapter (work in progress)."""

from __future__ import annotations

from bots.settings import Settings
from core.errors import ConfigError


def main(settings: Settings, *, webhook: bool, port: int) -> int:
    """Run the Telegram bot."""
    raise ConfigError("`chatbridge telegram` is not available in this version yet")
