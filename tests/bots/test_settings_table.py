"""Every setting in the README's Settings table: a bad value stops start-up with one line
naming it (exit code 2), for the command that reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bots.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
CLOSED = "http://127.0.0.1:9"  # nothing listens: a value wrongly accepted fails fast, exit 1

# A bad value for each setting, and the command that reads it.
BAD: dict[str, tuple[str, str]] = {
    "CHATBRIDGE_DATABASE_URL": ("mysql://db/chatbridge", "check"),
    "CHATBRIDGE_MODEL": ("qwen plus", "check"),
    "CHATBRIDGE_MODEL_BASE_URL": ("ftp://models.example/v1", "check"),
    "CHATBRIDGE_MODEL_API_KEY": ("sk-abc def", "check"),
    "DASHSCOPE_API_KEY": ("sk-abc\tdef", "check"),
    "CHATBRIDGE_MODEL_API": ("grpc", "check"),
    "CHATBRIDGE_CONFIG": ("missing.toml", "check"),
    "CHATBRIDGE_SYSTEM_PROMPT": ("   ", "check"),
    "CHATBRIDGE_PRESET": ("wild", "check"),
    "CHATBRIDGE_ENABLE_THINKING": ("maybe", "check"),
    "CHATBRIDGE_CONTEXT_TOKENS": ("lots", "check"),
    "CHATBRIDGE_IMAGE_TURNS": ("-1", "check"),
    "CHATBRIDGE_MAX_IMAGE_SIDE": ("10", "check"),
    "CHATBRIDGE_IMAGE_MEMORY_MB": ("lots", "check"),
    "CHATBRIDGE_MODEL_VISION": ("perhaps", "check"),
    "CHATBRIDGE_MODEL_VIDEO": ("often", "check"),
    "CHATBRIDGE_MAX_VIDEO_FRAMES": ("600", "check"),
    "CHATBRIDGE_MAX_VIDEO_SECONDS": ("0", "check"),
    "CHATBRIDGE_VIDEO_FILE_MB": ("8", "check"),
    "CHATBRIDGE_MODEL_TIMEOUT": ("soon", "check"),
    "CHATBRIDGE_RETRY_SECONDS": ("-5", "check"),
    "CHATBRIDGE_MODEL_FALLBACKS": ("qwen plus,qwen-flash", "check"),
    "CHATBRIDGE_TURN_SECONDS": ("0", "check"),
    "CHATBRIDGE_MODELS": ("qwen max", "check"),
    "CHATBRIDGE_ASR_MODEL": ("qwen3 omni", "check"),
    "CHATBRIDGE_STREAM": ("sometimes", "check"),
    "CHATBRIDGE_LEASE_SECONDS": ("1.5", "check"),
    "CHATBRIDGE_CONCURRENCY": ("0", "check"),
    "CHATBRIDGE_INBOX_POLL_SECONDS": ("fast", "check"),
    "CHATBRIDGE_SHUTDOWN_GRACE": ("-1", "check"),
    "CHATBRIDGE_LOG_LEVEL": ("LOUD", "check"),
    "CHATBRIDGE_LOG_FORMAT": ("xml", "check"),
    "CHATBRIDGE_DEBUG": ("maybe", "check"),
    "CHATBRIDGE_EMBEDDING_MODEL": ("text embedding v4", "check"),
    "CHATBRIDGE_EMBEDDING_DIMENSIONS": ("wide", "check"),
    "CHATBRIDGE_EMBEDDING_BASE_URL": ("dashscope-intl.aliyuncs.com", "check"),
    "SLACK_BOT_TOKEN": ("xoxp-1-user-token", "slack"),
    "SLACK_SIGNING_SECRET": ("two words", "slack"),
    "SLACK_APP_TOKEN": ("xoxb-2", "slack"),
    "CHATBRIDGE_SLACK_API_URL": ("slack.com/api/", "slack"),
    "TELEGRAM_BOT_TOKEN": ("not-a-token", "telegram"),
    "CHATBRIDGE_TELEGRAM_API_URL": ("api.telegram.org/bot", "telegram"),
    "CHATBRIDGE_TELEGRAM_FILE_URL": ("file:///etc/passwd", "telegram"),
    "TELEGRAM_WEBHOOK_URL": ("bot.example.com/telegram/webhook", "telegram"),
    "TELEGRAM_WEBHOOK_SECRET": ("bad secret!", "telegram"),
}
# Good values around the bad one, so that only the bad one can be at fault.
GOOD = {
    "CHATBRIDGE_MODEL_BASE_URL": f"{CLOSED}/v1", "CHATBRIDGE_MODEL_API_KEY": "",
    "CHATBRIDGE_RETRY_SECONDS": "0", "SLACK_BOT_TOKEN": "xoxb-1-2-good",
    "SLACK_SIGNING_SECRET": "s3cr3t", "CHATBRIDGE_SLACK_API_URL": f"{CLOSED}/api/",
    "TELEGRAM_BOT_TOKEN": "123456:AAHgoodgoodgoodgoodgoodgood",
    "CHATBRIDGE_TELEGRAM_API_URL": f"{CLOSED}/bot",
}


def settings_in_readme() -> list[str]:
    """The variable names in the first column of the README's Settings table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n#", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        names += re.findall(r"`([A-Z][A-Z0-9_]+)`", first)
    return names


def test_the_table_lists_the_settings_this_test_knows() -> None:
    listed = settings_in_readme()
    assert len(listed) == len(set(listed))
    assert set(listed) == set(BAD), "add a bad value for each new setting to BAD"


def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting from the machine running the tests; the working directory a new one."""
    import os

    for var in list(os.environ):
        if var.startswith(("CHATBRIDGE_", "DASHSCOPE_", "SLACK_", "TELEGRAM_")):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("name", settings_in_readme())
def test_a_bad_value_is_one_line_naming_the_setting(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _clean_environment(monkeypatch, tmp_path)
    value, command = BAD[name]
    env = {**GOOD, "CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
           name: value}
    if name == "DASHSCOPE_API_KEY":
        del env["CHATBRIDGE_MODEL_API_KEY"]  # else DASHSCOPE_API_KEY is not read
    for var, val in env.items():
        monkeypatch.setenv(var, val)
    code = main([command])
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2, out.out + out.err
    assert len(lines) == 1 and name in lines[0], out.err
    if name.endswith(("_KEY", "_TOKEN", "_SECRET")):
        assert value not in out.err  # a secret's value is never repeated


# The config-file keys of "Memory, caching, prices and retention": a bad value of each.
BAD_CONFIG: dict[str, tuple[str, str]] = {
    "summary_model": ('[defaults]\nsummary_model = ""\n', "summary_model"),
    "prompt_cache": ('[profiles.support]\nprompt_cache = "yes"\n', "prompt_cache"),
    "retention_days": ('[defaults]\nretention_days = 0\n', "retention_days"),
    "[prices.MODEL]": ('[prices.qwen-plus]\ninput = "cheap"\noutput = 1\n',
                       "[prices.qwen-plus]: input"),
}


def config_keys_in_readme() -> list[str]:
    """The keys in the first column of the README's table of config-file keys."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Memory, caching, prices and retention\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return [line.split("|")[1].strip().strip("`") for line in section.splitlines()
            if line.startswith("| `")]


def test_the_config_table_lists_the_keys_this_test_knows() -> None:
    assert set(config_keys_in_readme()) == set(BAD_CONFIG)


@pytest.mark.parametrize("key", config_keys_in_readme())
def test_a_bad_config_value_is_one_line_naming_the_key(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _clean_environment(monkeypatch, tmp_path)
    toml, named = BAD_CONFIG[key]
    (tmp_path / "chatbridge.toml").write_text(toml)
    monkeypatch.setenv("CHATBRIDGE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cb.db")
    code = main(["usage"])
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2, out.out + out.err
    assert len(lines) == 1 and named in lines[0], out.err
