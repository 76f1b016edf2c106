"""Slack shows tools working: task_update chunks in streamed threads, a status line in a
top-level DM; a real MCP server behind the real bolt dispatch path."""

from __future__ import annotations

from tests.bots.slack.conftest import HarnessFactory, mention, message
from tests.bots.tool_scripts import MCP_TOML, script
from tests.core.tools.webserver import WebServer
from tests.fakes.model_server import Reply


async def test_slack_streamed_thread_shows_task_updates(make_harness: HarnessFactory) -> None:
    async with make_harness(toml=MCP_TOML) as h:
        script(h.model)
        assert await h.event(mention("what is 20 + 22?")) == 200
        await h.idle()
        chunks = [c for call in h.slack.of("chat.startStream") + h.slack.of("chat.appendStream")
                  + h.slack.of("chat.stopStream") for c in call.args.get("chunks") or []
                  if c.get("type") == "task_update"]
        assert [(c["title"], c["status"]) for c in chunks] == [
            ("Asking calc (add)…", "in_progress"), ("Asking calc (add)…", "complete")]
        assert chunks[0]["id"] == chunks[1]["id"]
        [answer] = h.slack.posted()
        assert answer.text == "The sum is 42." and answer.stopped
        tool_messages = [m for m in h.model.requests[-1].json["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in tool_messages] == ["42"]


async def test_slack_top_level_dm_shows_a_status_line(make_harness: HarnessFactory) -> None:
    async with make_harness(toml=MCP_TOML) as h:
        script(h.model)
        assert await h.event(message("what is 20 + 22?", channel="D1",
                                     channel_type="im")) == 200
        await h.idle()
        first = h.slack.of("chat.postMessage")[0]
        assert first.args["markdown_text"] == "_Asking calc (add)…_"
        [answer] = h.slack.posted()  # the status line was edited into the answer
        assert "The sum is 42." in answer.text and "Asking" not in answer.text


async def test_slack_task_for_a_read_link_names_its_source(
        make_harness: HarnessFactory) -> None:
    toml = '[defaults]\ntools = ["fetch_url"]\n[tools.fetch_url]\nallow_hosts = ["127.0.0.1"]\n'
    with WebServer() as web:
        async with make_harness(toml=toml) as h:
            url = f"{web.url}/page"
            h.model.enqueue(Reply(text="", tool_calls=[("fetch_url", f'{{"url": "{url}"}}')]),
                            Reply(text="Otters hold hands."))
            assert await h.event(mention(f"summarise {url}")) == 200
            await h.idle()
            chunks = [c for call in h.slack.of("chat.startStream")
                      + h.slack.of("chat.appendStream") + h.slack.of("chat.stopStream")
                      for c in call.args.get("chunks") or [] if c.get("type") == "task_update"]
            assert [c["status"] for c in chunks] == ["in_progress", "complete"]
            assert chunks[0]["title"] == "Reading 127.0.0.1…"
            assert chunks[1]["sources"] == [{"type": "url", "url": url, "text": "127.0.0.1"}]
