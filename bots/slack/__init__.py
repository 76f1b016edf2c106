"""The Slack adapter (work in progress)."""

from __future__ import annotations

from bots.settings import Settings
from core.errors import ConfigError


def main(settings: Settings, *, port: int) -> int:
    """Run the Slack bot."""
    raise ConfigError("`chatbridge slack` is not available in this version yet")
