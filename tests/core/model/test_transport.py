"""A model endpoint that cannot be reached: the error names the URL and the cause (refused,
DNS, TLS, timeout) for the operator, and keeps the polite sentence for the person."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import aiohttp
import pytest

from core.errors import ModelUnavailable
from core.model import OpenAIClient
from core.model.transport import shown_url
from core.types import ContextMessage, ModelCall, Sampling
from tests.fakes.model_server import FakeModelServer

CALL = ModelCall("qwen-plus", (ContextMessage("user", "hi"),), Sampling())
POLITE = ModelUnavailable.default_user_message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback server that accepts connections and never answers (a stalled server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


async def fail(base_url: str, model_timeout: float = 5) -> ModelUnavailable:
    async with aiohttp.ClientSession() as http:
        client = OpenAIClient(http, base_url=base_url, api_key="sk-secret-0123456789",
                              timeout=model_timeout)
        with pytest.raises(ModelUnavailable) as caught:
            async for _ in client.stream(CALL):
                pass
    err = caught.value
    assert err.user_message == POLITE  # what a person in a chat sees
    assert "sk-secret" not in err.detail
    return err


async def test_connection_refused() -> None:
    err = await fail("http://127.0.0.1:9/v1")
    assert err.detail == ("http://127.0.0.1:9/v1/chat/completions: could not reach the model "
                          "endpoint: connection refused (nothing listens on that port)")


async def test_dns_failure() -> None:
    err = await fail("http://no-such-host.invalid/v1")
    assert err.detail.startswith("http://no-such-host.invalid/v1/chat/completions: ")
    assert "DNS lookup failed" in err.detail


async def test_tls_failure(fake_model: FakeModelServer) -> None:
    err = await fail(fake_model.openai_base.replace("http://", "https://"))  # it speaks HTTP
    assert err.detail.startswith("https://127.0.0.1:")
    assert "TLS failed" in err.detail


async def test_timeout_waiting_for_a_stalled_server(silent_port: int) -> None:
    err = await fail(f"http://127.0.0.1:{silent_port}/v1", model_timeout=0.5)
    assert "timed out waiting for the answer after 0.5 s" in err.detail


def test_shown_url_drops_credentials_and_query() -> None:
    url = "https://user:pw@host.example/v1/chat?key=sk-abc#frag"
    assert shown_url(url) == "https://host.example/v1/chat"
    assert shown_url("https://api.telegram.org/bot123:TOKEN/getMe", "123:TOKEN") == \
        "https://api.telegram.org/bot***/getMe"
