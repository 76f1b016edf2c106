"""Reading configuration tables (chatbridge.toml) the same way everywhere."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from core.errors import ConfigError

__all__ = ["config_table"]


def config_table(raw: Any, where: str, known: Collection[str]) -> dict[str, Any]:
    """``raw`` as a table holding only ``known`` keys (``None`` is an empty table).

    A ``ConfigError`` names the table and the unknown keys, so a typo stops start-up.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    return raw
