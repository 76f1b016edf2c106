"""Per-model prices (per million tokens) from the config's ``[prices.MODEL]`` tables, and costs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.config import config_table
from core.errors import ConfigError

__all__ = ["Price", "parse_prices"]

CREATION_FACTOR = 1.25  # Model Studio bills writing an explicit cache at 125 % of input


@dataclass(frozen=True, slots=True)
class Price:
    """What a model's tokens cost, per million, in the config's currency."""

    input: float
    output: float
    cached_input: float | None = None  # None: input (no cache discount known)
    cache_creation: float | None = None  # None: 1.25 x input

    def cost(self, *, prompt: int, completion: int, cached: int = 0, created: int = 0) -> float:
        """The cost of these tokens (``cached`` and ``created`` are part of ``prompt``)."""
        cached_price = self.input if self.cached_input is None else self.cached_input
        created_price = (self.input * CREATION_FACTOR if self.cache_creation is None
                         else self.cache_creation)
        plain = max(prompt - cached - created, 0)
        return (plain * self.input + cached * cached_price + created * created_price
                + completion * self.output) / 1_000_000


def _rate(raw: Mapping[str, Any], key: str, where: str, *, required: bool) -> float | None:
    if key not in raw:
        if required:
            raise ConfigError(f"{where}: {key} (price per million tokens) is missing")
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or value < 0:
        raise ConfigError(f"{where}: {key} must be a price per million tokens (a number "
                          f"of at least 0), not {value!r}")
    return float(value)


def parse_prices(raw: Any) -> dict[str, Price]:
    """``[prices."qwen3.5-plus"] input = 0.4, cached_input = 0.04, output = 2.4`` → prices."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("[prices] must be a table of tables, one per model")
    prices: dict[str, Price] = {}
    for model, table in raw.items():
        where = f"[prices.{model!r}]" if "." in model else f"[prices.{model}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table (input, cached_input, output)")
        table = config_table(table, where, {"input", "output", "cached_input",
                                            "cache_creation"})
        prices[model] = Price(
            input=_rate(table, "input", where, required=True) or 0.0,
            output=_rate(table, "output", where, required=True) or 0.0,
            cached_input=_rate(table, "cached_input", where, required=False),
            cache_creation=_rate(table, "cache_creation", where, required=False),
        )
    return prices
