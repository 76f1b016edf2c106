"""Format checks of single setting values (numbers, URLs, names, tokens), each naming the setting.

A failed check is a ``ConfigError`` whose message starts with the setting's name; a secret's
value is never quoted in it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.errors import ConfigError

__all__ = [
    "check_database_url", "check_debug", "check_http_url", "check_log", "check_name",
    "check_secret", "integer", "number",
]

_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]+$")
_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("plain", "json")


def number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    """A number of at least ``minimum``; unset or empty gives ``default``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from err
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, not {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, not {raw!r}")
    return value


def integer(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """A whole number of at least ``minimum``; unset or empty gives ``default``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from err
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {raw!r}")
    return value


def check_name(name: str, value: str) -> str:
    """A model name (or a comma-list item): no spaces or control characters."""
    if not _NAME.match(value):
        raise ConfigError(f"{name}: {value!r} is not a model name (no spaces allowed)")
    return value


def check_http_url(name: str, value: str) -> str:
    """An ``http://`` or ``https://`` URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or not _NAME.match(value):
        shown = f"{parts.scheme}://{parts.hostname}" if parts.hostname else repr(value[:40])
        raise ConfigError(f"{name} must be an http(s) URL such as https://host/path, "
                          f"not {shown}")
    return value


def check_secret(name: str, value: str) -> str:
    """A key or token: no spaces or control characters inside (a paste mistake)."""
    if value and not _NAME.match(value):
        raise ConfigError(f"{name} holds spaces or control characters: paste it again "
                          "without them")
    return value


def check_database_url(name: str, value: str) -> str:
    """A SQLAlchemy URL with one of the async drivers chatbridge ships."""
    try:
        url = make_url(value)
    except ArgumentError as err:
        raise ConfigError(f"{name} is not a database URL (e.g. sqlite+aiosqlite:///path/"
                          "chatbridge.db or postgresql+asyncpg://user:pass@host/db)") from err
    if url.drivername not in _DRIVERS:
        raise ConfigError(f"{name} must use one of the drivers {', '.join(_DRIVERS)}, "
                          f"not {url.drivername!r}")
    return value


def check_debug(env: Mapping[str, str]) -> bool:
    """``CHATBRIDGE_DEBUG``: on (``1``, ``true``, ``yes``, ``on``) or off."""
    raw = env.get("CHATBRIDGE_DEBUG", "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"CHATBRIDGE_DEBUG must be 1 or 0 (true or false), not {raw!r}")


def check_log(env: Mapping[str, str]) -> tuple[str, str]:
    """``CHATBRIDGE_LOG_LEVEL`` and ``CHATBRIDGE_LOG_FORMAT``, validated."""
    level = env.get("CHATBRIDGE_LOG_LEVEL", "").strip().upper() or "WARNING"
    if level not in LOG_LEVELS or not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"CHATBRIDGE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, "
                          f"not {env['CHATBRIDGE_LOG_LEVEL']!r}")
    fmt = env.get("CHATBRIDGE_LOG_FORMAT", "").strip().lower() or "plain"
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"CHATBRIDGE_LOG_FORMAT must be plain or json, "
                          f"not {env['CHATBRIDGE_LOG_FORMAT']!r}")
    return level, fmt
