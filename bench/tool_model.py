"""The loopback model server for ``bench_tools``: a user message saying ``rounds=N`` gets N
rounds of tool calls (one ``noop`` call each) before the answer.

Run: ``python -m bench.tool_model --port N`` (until killed).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import threading
from typing import Any

from tests.fakes.model_server import FakeModelServer, Reply, _Handler


class _ToolHandler(_Handler):
    def _openai(self, reply: Reply, body: dict[str, Any], stream: bool) -> None:
        messages = body.get("messages") or []
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        last = users[-1] if users else 0
        wanted = re.search(r"rounds=(\d+)", str(messages[last].get("content") if users else ""))
        done = sum(1 for m in messages[last:] if m.get("role") == "assistant"
                   and m.get("tool_calls"))
        if wanted and done < int(wanted[1]):
            reply = Reply(text="", tool_calls=[("noop", "{}")])
        super()._openai(reply, body, stream)


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = FakeModelServer("127.0.0.1", args.port)
    server._httpd.RequestHandlerClass = _ToolHandler
    server.record = False
    with server, contextlib.suppress(KeyboardInterrupt):
        print(f"tool model server on {server.url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
