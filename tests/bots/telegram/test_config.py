"""The [telegram] table and the Telegram environment variables, checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.settings import load_settings
from bots.telegram import load_config
from core.errors import ConfigError
from tests.bots.telegram.conftest import TOKEN

BASE = {"CHATBRIDGE_MODEL_BASE_URL": "http://127.0.0.1:9/v1", "CHATBRIDGE_MODEL_API_KEY": "",
        "TELEGRAM_BOT_TOKEN": TOKEN}


def config_from(tmp_path: Path, toml: str = "", **env: str):  # type: ignore[no-untyped-def]
    (tmp_path / "chatbridge.toml").write_text(toml)
    return load_config(load_settings({**BASE, **env}, cwd=tmp_path))


def test_defaults(tmp_path: Path) -> None:
    config = config_from(tmp_path)
    assert config.api_url == "https://api.telegram.org/bot"
    assert config.file_url == "https://api.telegram.org/file/bot"
    assert config.max_file_bytes == 20_000_000 and config.profile_for(1, business=False) is None
    assert TOKEN not in repr(config)


def test_table(tmp_path: Path) -> None:
    config = config_from(tmp_path, """
[telegram]
profile = "general"
business_profile = "support"
greeting = "Hi!"
max_file_mb = 50
[telegram.chats]
"-100123" = "support"
[telegram.greetings]
support = "Welcome to support."
[profiles.general]
[profiles.support]
""")
    assert config.profile_for(-100123, business=False) == "support"
    assert config.profile_for(5, business=True) == "support"
    assert config.profile_for(5, business=False) == "general"
    assert config.greeting_for("support") == "Welcome to support."
    assert config.greeting_for("general") == "Hi!"
    assert config.max_file_bytes == 50_000_000


@pytest.mark.parametrize(("toml", "env", "match"), [
    ("", {"TELEGRAM_BOT_TOKEN": ""}, "TELEGRAM_BOT_TOKEN is not set"),
    ("", {"TELEGRAM_BOT_TOKEN": "not-a-token"}, "does not look like a bot token"),
    ("[telegram]\nprofil = 'x'\n", {}, "unknown setting.*profil"),
    ("[telegram]\nprofile = 'nope'\n", {}, "profile 'nope'"),
    ("[telegram.chats]\nabc = 'default'\n", {}, "not a chat id"),
    ("[telegram]\nedit_interval = -1\n", {}, "edit_interval"),
    ("", {"TELEGRAM_WEBHOOK_SECRET": "bad secret!"}, "TELEGRAM_WEBHOOK_SECRET"),
])
def test_errors(tmp_path: Path, toml: str, env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from(tmp_path, toml, **env)
