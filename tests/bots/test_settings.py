"""Settings from the environment, .env and chatbridge.toml."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bots.settings import LOCAL, load_settings
from core.errors import ConfigError
from core.vision import Vision


def test_defaults_with_a_dashscope_key(tmp_path: Path) -> None:
    s = load_settings({"DASHSCOPE_API_KEY": "sk-1"}, cwd=tmp_path)
    assert s.model == "qwen3.5-plus" and s.model_api == "openai"
    assert s.model_base_url == "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
    assert s.model_api_key == "sk-1"
    assert s.database_url == \
        f"sqlite+aiosqlite:///{os.environ['XDG_DATA_HOME']}/chatbridge/chatbridge.db"
    assert "sk-1" not in repr(s)


def test_native_api_default_base(tmp_path: Path) -> None:
    s = load_settings({"DASHSCOPE_API_KEY": "k", "CHATBRIDGE_MODEL_API": "dashscope"},
                      cwd=tmp_path)
    assert s.model_base_url == "https://dashscope-intl.aliyuncs.com/api/v1"


def test_own_key_wins_and_empty_means_none(tmp_path: Path) -> None:
    s = load_settings({"DASHSCOPE_API_KEY": "ds", "CHATBRIDGE_MODEL_API_KEY": "",
                       "CHATBRIDGE_MODEL_BASE_URL": "http://127.0.0.1:8080/v1"}, cwd=tmp_path)
    assert s.model_api_key is None


def test_remote_without_key_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CHATBRIDGE_MODEL_API_KEY"):
        load_settings({"CHATBRIDGE_MODEL_BASE_URL": "https://api.openai.com/v1"}, cwd=tmp_path)


def test_local_model_when_nothing_is_configured(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    s = load_settings({}, cwd=tmp_path)
    assert s.model_base_url == LOCAL and s.model == "smollm2"


def test_dotenv_and_toml(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DASHSCOPE_API_KEY=from-dotenv\nCHATBRIDGE_MODEL=qwen-flash\n")
    (tmp_path / "chatbridge.toml").write_text(
        '[defaults]\npreset = "factual_qa"\n[profiles.support]\nmodel = "qwen-plus"\n'
    )
    s = load_settings({"CHATBRIDGE_MODEL": "qwen-max"}, cwd=tmp_path)
    assert s.model_api_key == "from-dotenv" and s.model == "qwen-max"  # env beats .env
    assert s.profiles["support"].model == "qwen-plus"
    assert s.profiles["support"].sampling.temperature == 0.1


@pytest.mark.parametrize("env", [
    {"CHATBRIDGE_MODEL_API": "grpc"}, {"CHATBRIDGE_MODEL_TIMEOUT": "soon"},
    {"CHATBRIDGE_PRESET": "nope"}, {"CHATBRIDGE_CONFIG": "missing.toml"},
    {"CHATBRIDGE_ENABLE_THINKING": "maybe"}, {"CHATBRIDGE_SHUTDOWN_GRACE": "-1"},
])
def test_bad_settings(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings({"DASHSCOPE_API_KEY": "k", **env}, cwd=tmp_path)


def test_shutdown_grace(tmp_path: Path) -> None:
    assert load_settings({"DASHSCOPE_API_KEY": "k"}, cwd=tmp_path).shutdown_grace == 25.0
    s = load_settings({"DASHSCOPE_API_KEY": "k", "CHATBRIDGE_SHUTDOWN_GRACE": "0.5"},
                      cwd=tmp_path)
    assert s.shutdown_grace == 0.5


def test_limits_from_toml(tmp_path: Path) -> None:
    (tmp_path / "chatbridge.toml").write_text("[limits]\nuser_turns_per_minute = 5\n")
    s = load_settings({"DASHSCOPE_API_KEY": "k"}, cwd=tmp_path)
    assert s.limits.user_turns_per_minute == 5
    (tmp_path / "chatbridge.toml").write_text("[limits]\nuser_turns_per_hour = 5\n")
    with pytest.raises(ConfigError, match="unknown"):
        load_settings({"DASHSCOPE_API_KEY": "k"}, cwd=tmp_path)


def test_the_local_model_runs_with_factual_qa_unless_sampling_is_chosen(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    local = load_settings({}, cwd=tmp_path).profiles["default"].sampling
    assert (local.temperature, local.top_p) == (0.1, 0.7)  # factual_qa
    chosen = load_settings({"CHATBRIDGE_PRESET": "creative_writing"}, cwd=tmp_path)
    assert chosen.profiles["default"].sampling.temperature == 0.9
    (tmp_path / "chatbridge.toml").write_text(
        "[defaults]\ntemperature = 0.5\n[profiles.poet]\npreset = \"creative_writing\"\n")
    own = load_settings({}, cwd=tmp_path).profiles
    assert (own["default"].sampling.temperature, own["default"].sampling.top_p) == (0.5, None)
    assert own["poet"].sampling.temperature == 0.9
    remote = load_settings({"DASHSCOPE_API_KEY": "k"}, cwd=tmp_path / "nowhere")
    assert remote.profiles["default"].sampling.temperature is None  # the server's default


def test_vision_flags_from_config_and_environment(tmp_path: Path) -> None:
    (tmp_path / "chatbridge.toml").write_text(
        '[models]\nchoices = ["qwen-max"]\n[models."qwen-max"]\nvision = false\n'
        '[models.my-vl]\nvision = true\n')
    s = load_settings({"CHATBRIDGE_MODEL": "custom", "CHATBRIDGE_MODEL_VISION": "no",
                       "CHATBRIDGE_MODEL_API_KEY": "k"}, cwd=tmp_path)
    assert s.vision == {"qwen-max": False, "my-vl": True, "custom": False}
    assert s.model_choices == ("qwen-max",)


def test_video_flags_from_config_and_environment(tmp_path: Path) -> None:
    (tmp_path / "chatbridge.toml").write_text(
        '[models.my-vllm]\nvision = true\nvideo = true\n[models."qwen3.5-flash"]\nvideo = false\n')
    s = load_settings({"CHATBRIDGE_MODEL": "custom", "CHATBRIDGE_MODEL_VIDEO": "yes",
                       "CHATBRIDGE_MAX_VIDEO_FRAMES": "32", "CHATBRIDGE_MODEL_API_KEY": "k"},
                      cwd=tmp_path)
    assert s.video == {"my-vllm": True, "qwen3.5-flash": False, "custom": True}
    assert s.vision == {"my-vllm": True}
    assert (s.max_video_frames, s.max_video_seconds) == (32, 300)
    vision = Vision(s.vision, s.video)
    assert vision.takes_video("my-vllm") and not vision.takes_video("qwen3.5-flash")
    assert vision.takes_video("qwen3-vl-plus") and vision.takes_video("Qwen/Qwen2.5-VL-7B")
    assert not vision.takes_video("qwen-plus") and not vision.takes_video("gpt-4o")


@pytest.mark.parametrize("toml", [
    '[models."qwen-max"]\nvision = "no"\n', '[models."qwen-max"]\nvisoin = true\n',
    '[models."qwen-max"]\nvideo = 1\n',
    '[models]\nqwen-max = true\n',
])
def test_bad_vision_flags_stop_startup(tmp_path: Path, toml: str) -> None:
    (tmp_path / "chatbridge.toml").write_text(toml)
    with pytest.raises(ConfigError, match="qwen-max"):
        load_settings({"CHATBRIDGE_MODEL_API_KEY": "k"}, cwd=tmp_path)
