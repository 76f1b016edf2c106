"""Telegram shows tools working: a status line in the private chat's draft and in the
group's edited message, typing on; a real MCP server behind the real bot."""

from __future__ import annotations

from pathlib import Path

from tests.bots.telegram.conftest import (
    ALICE,
    GROUP,
    TOKEN,
    TOML,
    make_settings,
    mention,
    message,
    run_bot,
)
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.bots.tool_scripts import MCP_TOML, script
from tests.fakes.model_server import FakeModelServer


async def test_telegram_draft_and_group_edit_show_the_status(
        tmp_path: Path, fake_model: FakeModelServer, sqlite_url: str) -> None:
    async with FakeBotApi(TOKEN) as api:
        settings = make_settings(tmp_path, api, fake_model, sqlite_url, toml=TOML + MCP_TOML)
        async with run_bot(settings, api, fake_model) as bot:
            script(fake_model)
            bot.send(message("what is 20 + 22?"))
            assert await bot.answered(ALICE["id"]) == ["The sum is 42."]
            drafts = [d.get("text") for d in api.calls_to("sendMessageDraft")]
            assert "<i>Asking calc (add)…</i>" in drafts
            typing = api.calls_to("sendChatAction")
            assert typing and typing[0].get("action") == "typing"

            script(fake_model)
            bot.send(mention("what is 20 + 22?"))
            assert await bot.answered(GROUP["id"]) == ["The sum is 42."]
            first = next(c for c in api.calls_to("sendMessage")
                         if c.get("chat_id") == GROUP["id"])
            assert first.get("text") == "<i>Asking calc (add)…</i>"
            edits = api.calls_to("editMessageText")
            assert edits and edits[-1].get("text") == "The sum is 42."
