"""``current_time`` and the profile's tool settings, checked at start-up."""

from __future__ import annotations

import re

import pytest

from core.errors import ConfigError
from core.profiles import build_profile
from core.tools.builtin import current_time_tool
from core.tools.registry import ToolContext


async def test_current_time_in_the_profile_zone() -> None:
    tool = current_time_tool()
    berlin = await tool.run({}, ToolContext(timezone="Europe/Berlin"))
    assert isinstance(berlin, str)
    assert "(Europe/Berlin, UTC+0" in berlin and re.search(r"\+0[12]:00$", berlin)
    utc = await tool.run({}, ToolContext())
    assert isinstance(utc, str) and "(UTC, UTC+0000)" in utc


def test_profile_tool_settings() -> None:
    profile = build_profile("p", {"tools": ["fetch_url", "mcp:gh/*"], "timezone": "Asia/Tokyo",
                                  "max_tool_rounds": 3, "tool_timeout_seconds": 5})
    assert profile.tools == ("fetch_url", "mcp:gh/*") and profile.timezone == "Asia/Tokyo"
    assert (profile.max_tool_rounds, profile.tool_timeout_seconds) == (3, 5.0)
    assert build_profile("q", {}).tools == ()  # none by default


@pytest.mark.parametrize(("raw", "message"), [
    ({"tools": "fetch_url"}, "tools must be a list"),
    ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ({"max_tool_rounds": 0}, "max_tool_rounds"),
    ({"tool_timeout_seconds": -1}, "tool_timeout_seconds"),
])
def test_bad_tool_settings_stop_start_up(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_profile("p", raw)
