"""MCP servers' tools: a real server written with the ``mcp`` package, over stdio and over
streamable HTTP, driven through the tool loop, ``chatbridge ask`` and ``chatbridge check``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from bots.settings import load_settings
from core.errors import ConfigError
from core.model import OpenAIClient
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.tools import Registry, ToolContext
from core.tools.mcp import McpServerConfig, McpServers, mcp_servers
from core.tools.registry import ToolError
from core.types import Author, ChatRequest, FinalEvent, ReplyEvent
from tests.bots.test_cli import one_clean_line, run
from tests.fakes.model_server import FakeModelServer, Reply

ROOT = Path(__file__).resolve().parents[3]
SERVER = ["-m", "tests.core.tools.mcp_server"]


def stdio_config(name: str = "t", **env: str) -> McpServerConfig:
    return McpServerConfig(name, command=sys.executable, args=tuple(SERVER), cwd=str(ROOT),
                           env={"PYTHONPATH": str(ROOT), **env})


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """The same server over streamable HTTP, in a process of its own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, *SERVER, "http", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture(params=["stdio", "http"])
async def servers(request: pytest.FixtureRequest) -> AsyncIterator[McpServers]:
    if request.param == "stdio":
        config = stdio_config()
    else:
        url = request.getfixturevalue("http_server")
        config = McpServerConfig("t", url=url, headers={"Authorization": "Bearer hdr-secret-1"})
    async with McpServers((config,)).running() as running:
        assert running.failures == {}
        yield running


_n = 0


async def ask(service: ChatService, text: str) -> list[ReplyEvent]:
    global _n
    _n += 1
    req = ChatRequest(platform="console", scope="console/mcp", author=Author("u1"), text=text,
                      event_id=f"m{_n}")
    return [e async for e in service.handle(req)]


def tool_results(fake: FakeModelServer) -> list[str]:
    return [m["content"] for m in fake.requests[-1].json["messages"] if m["role"] == "tool"]


async def test_tools_are_listed_and_called_through_the_loop(
        servers: McpServers, engine: AsyncEngine, fake_model: FakeModelServer) -> None:
    tools = {t.name: t for t in servers.tools()}
    assert set(tools) == {"t__add", "t__sleepy", "t__fail", "t__die", "t__whoami"}
    assert tools["t__add"].key == "mcp:t/add" and tools["t__add"].source == "mcp:t"
    assert tools["t__add"].parameters["required"] == ["a", "b"]
    assert "ctx" not in tools["t__whoami"].parameters["properties"]
    profile = Profile(tools=("mcp:t/add", "mcp:t/sleepy", "mcp:t/fail"),
                      tool_timeout_seconds=1.5)
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=10)
        service = ChatService(store=open_store(engine), model=model, options=ServiceOptions(
            model="qwen-plus", profiles={"default": profile},
            tools=Registry(servers.tools())))
        offered = [t.name for t in service.toolbox(profile)]
        assert offered == ["t__add", "t__sleepy", "t__fail"]  # the globs filter
        fake_model.enqueue(Reply(text="", tool_calls=[("t__add", '{"a": 2, "b": 40}'),
                                                      ("t__sleepy", '{"seconds": 30}'),
                                                      ("t__fail", "{}")]),
                           Reply(text="42, and the others failed."))
        began = time.monotonic()
        events = await ask(service, "go")
        assert time.monotonic() - began < 15  # the hanging call cost its timeout, no more
        assert isinstance(events[-1], FinalEvent)
        added, slept, failed = tool_results(fake_model)
        assert added == "42"
        assert slept.startswith("error: the tool 't__sleepy' did not finish within 1.5 s")
        assert failed.startswith("error:") and "fail" in failed
        fake_model.enqueue(Reply(text="", tool_calls=[("t__add", '{"a": 1, "b": 1}')]),
                           Reply(text="2"))
        events = await ask(service, "again")  # the server still serves after a timeout
        assert tool_results(fake_model)[-1] == "2"


async def test_a_server_that_dies_mid_call_does_not_hang_the_turn(
        engine: AsyncEngine, fake_model: FakeModelServer) -> None:
    async with McpServers((stdio_config(),)).running() as servers, \
            aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=10)
        profile = Profile(tools=("mcp:t/*",), tool_timeout_seconds=10)
        service = ChatService(store=open_store(engine), model=model, options=ServiceOptions(
            model="qwen-plus", profiles={"default": profile},
            tools=Registry(servers.tools())))
        fake_model.enqueue(Reply(text="", tool_calls=[("t__die", "{}")]),
                           Reply(text="", tool_calls=[("t__add", '{"a": 1, "b": 2}')]),
                           Reply(text="The tool server is gone."))
        began = time.monotonic()
        events = await ask(service, "die")
        assert time.monotonic() - began < 10
        final = events[-1]
        assert isinstance(final, FinalEvent) and final.text == "The tool server is gone."
        [after] = tool_results(fake_model)[1:]
        assert after.startswith("error:") and "'t'" in after

        # It is started again (a new process), and its tools work as before.
        add = next(t for t in servers.tools() if t.name == "t__add")
        deadline = time.monotonic() + 20
        while True:
            try:
                assert await add.run({"a": 2, "b": 2}, ToolContext()) == "4"
                break
            except ToolError:
                assert time.monotonic() < deadline, "the server was not started again"
                await asyncio.sleep(0.2)


async def test_headers_reach_an_http_server(http_server: str) -> None:
    config = McpServerConfig("h", url=http_server, headers={"Authorization": "Bearer hdr-x9"})
    async with McpServers((config,)).running() as servers:
        whoami = next(t for t in servers.tools() if t.name == "h__whoami")
        assert await whoami.run({}, ToolContext()) == "token ends in x9"


async def test_env_reaches_the_server_and_is_a_secret(tmp_path: Path) -> None:
    async with McpServers((stdio_config(TEST_TOKEN="tok-secret-42"),)).running() as servers:
        whoami = next(t for t in servers.tools() if t.name == "t__whoami")
        assert await whoami.run({}, ToolContext()) == "token ends in 42"
    config = tmp_path / "c.toml"
    config.write_text('[mcp.servers.gh]\nurl = "https://mcp.example/mcp"\n'
                      'headers = { Authorization = "Bearer hdr-secret-9" }\n'
                      '[mcp.servers.local]\ncommand = "srv"\nenv = { KEY = "env-secret-7" }\n'
                      '[defaults]\ntools = ["mcp:gh/*", "fetch_url"]\n')
    settings = load_settings({"CHATBRIDGE_CONFIG": str(config), "CHATBRIDGE_MODEL_API_KEY": "k"},
                             cwd=tmp_path)
    assert {"Bearer hdr-secret-9", "env-secret-7"} <= set(settings.secrets())
    assert "secret" not in repr(settings.mcp)


def test_bad_mcp_config_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="either command"):
        mcp_servers({"servers": {"x": {"command": "a", "url": "http://b"}}})
    with pytest.raises(ConfigError, match="unknown setting"):
        mcp_servers({"servers": {"x": {"command": "a", "argv": []}}})
    config = tmp_path / "c.toml"
    config.write_text('[defaults]\ntools = ["mcp:nothere/*"]\n')
    with pytest.raises(ConfigError, match="names no MCP server"):
        load_settings({"CHATBRIDGE_CONFIG": str(config), "CHATBRIDGE_MODEL_API_KEY": "k"},
                      cwd=tmp_path)


async def test_a_server_that_fails_to_start_is_one_line(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    bad = McpServerConfig("broken", command="/nonexistent/mcp-server")
    hangs = McpServerConfig("mute", command=sys.executable, args=("-c", "import time; "
                                                                  "time.sleep(60)"),
                            startup_seconds=1)
    async with McpServers((bad, stdio_config(), hangs)).running() as servers:
        assert set(servers.failures) == {"broken", "mute"}
        assert "No such file" in servers.failures["broken"]
        assert servers.failures["mute"] == "no answer within 1 s"
        assert {t.source for t in servers.tools()} == {"mcp:t"}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(w.startswith("MCP server 'broken' did not start") for w in warnings)
    assert all("\n" not in w for w in warnings)


def _config(tmp_path: Path, tools: str = '"mcp:t/*", "mcp:broken/*"') -> dict[str, str]:
    path = tmp_path / "chatbridge.toml"
    path.write_text(f'[defaults]\ntools = [{tools}]\n'
                    f'[mcp.servers.t]\ncommand = {json.dumps(sys.executable)}\n'
                    f'args = ["-m", "tests.core.tools.mcp_server"]\ncwd = {json.dumps(str(ROOT))}\n'
                    f'env = {{ PYTHONPATH = {json.dumps(str(ROOT))} }}\n'
                    '[mcp.servers.broken]\ncommand = "/nonexistent/mcp-server"\n')
    return {"CHATBRIDGE_CONFIG": str(path)}


def test_chatbridge_ask_calls_an_mcp_tool(tmp_path: Path, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="", tool_calls=[("t__add", '{"a": 19, "b": 23}')]),
                       Reply(text="It is 42."))
    result = run(tmp_path, fake_model, "ask", "what is 19+23?", **_config(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "It is 42."
    assert tool_results(fake_model) == ["42"]
    # The broken server is reported in one line and its tools left out; nothing else.
    assert "MCP server 'broken' did not start" in one_clean_line(result.stderr)


def test_tools_list_and_check_report_servers(tmp_path: Path,
                                             fake_model: FakeModelServer) -> None:
    env = _config(tmp_path)
    listed = run(tmp_path, fake_model, "tools", "list", **env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.split()[:2] == ["t__add", "mcp:t"] for line in lines)
    assert any(line.split()[:2] == ["fetch_url", "built-in"] for line in lines)
    assert any("'broken' did not start" in line for line in lines)
    mine = run(tmp_path, fake_model, "tools", "list", "--profile", "default", **env)
    assert mine.stdout.splitlines()[0] == "profile 'default': tools = ['mcp:t/*', 'mcp:broken/*']"
    assert "fetch_url" not in mine.stdout and "t__die" in mine.stdout
    unknown = run(tmp_path, fake_model, "tools", "list", "--profile", "nope", **env)
    assert unknown.returncode == 2 and "no profile 'nope'" in one_clean_line(unknown.stderr)
    check = run(tmp_path, fake_model, "check", **env)
    assert check.returncode == 1
    assert "ok    mcp t: 5 tools (add, sleepy, fail, die, whoami)" in check.stdout
    assert "FAIL  mcp broken: did not start" in check.stdout

