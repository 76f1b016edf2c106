"""The [slack] table and the Slack credentials are checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.settings import load_settings
from bots.slack.config import DEFAULT_PROMPTS, load_slack_config
from core.errors import ConfigError

BASE = {"CHATBRIDGE_MODEL_BASE_URL": "http://127.0.0.1:9/v1", "CHATBRIDGE_MODEL_API_KEY": "",
        "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}


def load(tmp_path: Path, toml: str = "", **env: str):  # type: ignore[no-untyped-def]
    (tmp_path / "chatbridge.toml").write_text(toml)
    return load_slack_config(load_settings({**BASE, **env}, cwd=tmp_path))


def test_defaults_and_options(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert not config.socket_mode and config.api_url == "https://slack.com/api/"
    assert config.max_file_bytes == 20 * 1024 * 1024 and config.prompts_for(None) == \
        DEFAULT_PROMPTS
    config = load(tmp_path, """
[profiles.support]
system_prompt = "You help customers."
[slack]
reset_command = "/new"
allow_bots = true
dm_profile = "support"
max_file_mb = 5
[slack.channels]
C123 = "support"
[slack.prompts]
support = [{title = "Order", message = "Where is my order?"}]
""", SLACK_APP_TOKEN="xapp-1")
    assert config.socket_mode and config.reset_command == "/new" and config.allow_bots
    assert config.profile_for_channel("C123") == "support"
    assert config.profile_for_channel("C999") is None
    assert config.prompts_for("support")[0].title == "Order"
    assert config.max_file_bytes == 5 * 1024 * 1024
    assert "xoxb-1" not in repr(config)
    assert (config.surface, config.stream_max_seconds, config.stream_max_chars) == \
        ("auto", 240.0, 10_000)
    config = load(tmp_path, '[slack]\nsurface = "agent"\nstream_max_seconds = 200\n'
                  'stream_max_chars = 8000\n')
    assert (config.surface, config.stream_max_seconds, config.stream_max_chars) == \
        ("agent", 200.0, 8000)


@pytest.mark.parametrize(("toml", "env", "expect"), [
    ("", {"SLACK_BOT_TOKEN": ""}, "SLACK_BOT_TOKEN"),
    ("", {"SLACK_SIGNING_SECRET": ""}, "SLACK_SIGNING_SECRET"),
    ("", {"SLACK_APP_TOKEN": "xoxb-2"}, "xapp"),
    ("[slack]\ncolour = 1\n", {}, "unknown"),
    ("[slack.channels]\nC1 = \"nope\"\n", {}, "unknown profile"),
    ("[slack]\nreset_command = \"reset\"\n", {}, "/name"),
    ("[slack]\nmax_file_mb = 0\n", {}, "max_file_mb"),
    ("[slack.prompts]\ndefault = [{title = \"x\"}]\n", {}, "title and a message"),
    ("[slack]\nsurface = \"home\"\n", {}, "surface"),
    ("[slack]\nstream_max_seconds = 300\n", {}, "stream_max_seconds"),
    ("[slack]\nstream_max_chars = 50000\n", {}, "stream_max_chars"),
    ("[defaults]\nshow_thinking = \"yes\"\n", {}, "show_thinking"),
])
def test_bad_settings(tmp_path: Path, toml: str, env: dict[str, str], expect: str) -> None:
    with pytest.raises(ConfigError, match=expect):
        load(tmp_path, toml, **env)
