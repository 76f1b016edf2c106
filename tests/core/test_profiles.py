"""Profiles: presets, validation at start-up, budgets sized for the model."""

from __future__ import annotations

import pytest

from core.context import build_messages
from core.errors import ConfigError
from core.profiles import PRESETS, Profile, build_profile, context_window
from core.store import StoredMessage


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets(name: str) -> None:
    profile = build_profile("p", {"preset": name})
    assert (profile.sampling.temperature, profile.sampling.top_p) == PRESETS[name]


def test_raw_values_override_the_preset_and_base() -> None:
    base = build_profile("default", {"preset": "creative_writing", "system_prompt": "Hi"})
    profile = build_profile("x", {"temperature": 0.5}, base=base)
    assert (profile.sampling.temperature, profile.sampling.top_p) == (0.5, 0.95)
    assert profile.system_prompt == "Hi"


@pytest.mark.parametrize("raw", [
    {"temperature": 2.0}, {"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5},
    {"preset": "poetry"}, {"temperature": "hot"}, {"tempreature": 0.3},
    {"enable_thinking": "yes"}, {"image_turns": -1}, {"system_prompt": ""},
    {"show_thinking": "yes"},
])
def test_bad_values_are_config_errors(raw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        build_profile("bad", raw)


def test_budget_sized_for_the_model() -> None:
    assert context_window("qwen-plus-latest") == 131_072
    assert Profile().budget_for("qwen-plus") == 32_768
    assert Profile().budget_for("smollm2") == 1_024
    assert Profile(context_tokens=500).budget_for("qwen-plus") == 500


def test_context_placeholders_for_old_images() -> None:
    history = [StoredMessage(1, "user", "look", "Ann", 5, 2),
               StoredMessage(2, "assistant", "a cat", "", 5, 0)]
    messages = build_messages(Profile(system_prompt="S"), history, show_authors=True)
    assert messages[0].text == "S"
    assert messages[1].text == "Ann: look\n[2 earlier images not shown]"
    assert messages[2].role == "assistant"
