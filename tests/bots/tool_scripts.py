"""What the adapters' tool tests share: a config with a real MCP server (stdio, written with
the ``mcp`` package) and a model script that calls its ``add`` tool once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.fakes.model_server import FakeModelServer, Reply

ROOT = Path(__file__).resolve().parents[2]
MCP_TOML = f"""
[defaults]
tools = ["mcp:calc/add"]
[mcp.servers.calc]
command = {json.dumps(sys.executable)}
args = ["-m", "tests.core.tools.mcp_server"]
cwd = {json.dumps(str(ROOT))}
env = {{ PYTHONPATH = {json.dumps(str(ROOT))} }}
"""


def script(model: FakeModelServer) -> None:
    model.enqueue(Reply(text="", tool_calls=[("calc__add", '{"a": 20, "b": 22}')]),
                  Reply(text="The sum is 42.", chunk_size=4))


