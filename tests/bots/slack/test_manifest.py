"""The app manifest asks for what the adapter uses: its events, scopes and command."""

from __future__ import annotations

import re
from pathlib import Path

from bots.slack.config import SlackConfig

MANIFEST = Path(__file__).parents[3] / "bots" / "slack" / "manifest.yml"


def listed(section: str) -> set[str]:
    text = MANIFEST.read_text()
    block = text.split(f"{section}:", 1)[1]
    items = []
    for line in block.splitlines()[1:]:
        match = re.match(r"^\s+- ([\w.:]+)", line)
        if not match:
            break
        items.append(match.group(1))
    return set(items)


def test_manifest_events_scopes_and_command() -> None:
    assert listed("bot_events") == {
        "app_context_changed", "app_home_opened", "app_mention",
        "message.channels", "message.groups", "message.im"}
    assert listed("bot") == {
        "app_mentions:read", "assistant:write", "channels:history", "groups:history",
        "im:history", "chat:write", "commands", "files:read", "users:read"}
    assert f"command: {SlackConfig.reset_command}" in MANIFEST.read_text()


def test_manifest_uses_agent_messaging() -> None:
    text = MANIFEST.read_text()
    assert "\n  agent_view:\n    agent_description: " in text
    assert "\n  assistant_view:" not in text  # new apps can only use agent_view
    description = text.split("agent_description: ", 1)[1].splitlines()[0]
    assert len(description) <= 300
    assert "messages_tab_enabled: true" in text
