"""Faults while an answer streams: only the final text must arrive, and it must be whole."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telegram.ext import Application

import bots.telegram.app as telegram_app
import bots.telegram.render as telegram_render
from bots.telegram.config import TelegramConfig
from tests.bots.telegram.conftest import (
    ALICE,
    GROUP,
    Bot,
    make_settings,
    mention,
    message,
    run_bot,
)
from tests.bots.telegram.fake_bot_api import Call, FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply

EAGER = """
[telegram]
album_seconds = 0.3
draft_interval = 0
edit_interval = 0
"""
ANSWER = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
          "omicron pi rho sigma tau upsilon phi chi psi omega")


@pytest.fixture
async def eager(tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
                sqlite_url: str) -> AsyncIterator[Bot]:
    """A bot that sends every partial update (no throttling)."""
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url, toml=EAGER)
    async with run_bot(settings, bot_api, fake_model) as running:
        yield running


async def test_a_partial_edit_stopped_by_flood_control_is_repeated_by_the_final(
        eager: Bot) -> None:
    # The last streaming edit (the whole text) meets 429: it was not shown, so the final
    # pass must still edit, although it carries the same text.
    eager.api.fail("editMessageText", 429, retry_after=1,
                   when=lambda call: call.get("text") == ANSWER)
    eager.model.enqueue(Reply(text=ANSWER, chunk_size=16))
    eager.send(mention("go"))
    await eager.api.wait_for(lambda: len(eager.api.calls_to("editMessageText")) >= 3)
    await eager.settle()
    assert eager.api.texts(GROUP["id"]) == [ANSWER]
    assert [c.get("text") for c in eager.api.calls_to("editMessageText")].count(ANSWER) == 2


async def test_a_partial_edit_lost_to_the_network_is_repeated_by_the_final(
        eager: Bot) -> None:
    eager.api.fail("editMessageText", 502, "Bad Gateway",
                   when=lambda call: call.get("text") == ANSWER)
    eager.model.enqueue(Reply(text=ANSWER, chunk_size=16))
    eager.send(mention("go"))
    await eager.api.wait_for(lambda: len(eager.api.calls_to("editMessageText")) >= 3)
    await eager.settle()
    assert eager.api.texts(GROUP["id"]) == [ANSWER]


@pytest.mark.parametrize("code, description", [
    (400, "Bad Request: TEXTDRAFT_PEER_INVALID"),
    (404, "Not Found: method not found"),
])
async def test_refused_drafts_end_drafting_not_the_answer(
        eager: Bot, caplog: pytest.LogCaptureFixture, code: int, description: str) -> None:
    eager.api.fail("sendMessageDraft", code, description, times=100)
    eager.model.enqueue(Reply(text=ANSWER, chunk_size=8, delay=0.0))
    with caplog.at_level(logging.WARNING):
        eager.send(message("hi"))
        assert await eager.answered(ALICE["id"]) == [ANSWER]
    assert len(eager.api.calls_to("sendMessageDraft")) == 1  # drafting stopped at once
    assert len(eager.api.calls_to("sendMessage")) == 1  # the answer; no apology
    assert eager.api.calls_to("sendChatAction")  # typing went on
    assert sum("no more drafts" in r.getMessage() for r in caplog.records) == 1


async def test_a_deleted_partial_message_is_replaced_not_fatal(eager: Bot) -> None:
    api = eager.api
    deleted: list[int] = []

    def delete_it_first(call: Call) -> bool:
        # An admin deletes the partial answer just before the bot's first edit of it.
        if not deleted:
            sent = api.messages[(GROUP["id"], call.get("message_id"))]
            sent.deleted = True
            deleted.append(sent.message_id)
        return False  # the server itself then answers "message to edit not found"

    api.fail("editMessageText", 400, when=delete_it_first)
    eager.model.enqueue(Reply(text=ANSWER, chunk_size=16))
    eager.send(mention("go"))
    await api.wait_for(lambda: len(api.calls_to("sendMessage")) >= 2)
    await eager.settle()
    assert deleted
    assert api.texts(GROUP["id"]) == [ANSWER]  # the whole answer, once, no apology
    assert len(api.calls_to("sendMessage")) == 2


async def test_a_late_final_message_is_waited_for_and_a_timed_out_one_never_repeated(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer, sqlite_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def quick_timeouts(config: TelegramConfig) -> Any:
        return (Application.builder().token(config.token).base_url(config.api_url)
                .base_file_url(config.file_url).read_timeout(0.5).updater(None).build())

    monkeypatch.setattr(telegram_app, "build_application", quick_timeouts)
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url)
    # Telegram takes the message but answers later than the client's usual read timeout:
    # sendMessage waits longer (it cannot be repeated safely), so it is sent once.
    bot_api.stall("sendMessage", 1.0)
    fake_model.enqueue(Reply(text="the answer"))
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("hi"))
        await bot_api.wait_for(lambda: bot_api.texts(ALICE["id"]), within=20)
        await bot.settle(1.5)
    assert bot_api.texts(ALICE["id"]) == ["the answer"]
    # Later than even that: the message may well have arrived, so it is not sent again,
    # and no "Sorry, something went wrong" follows an answer the person probably sees.
    monkeypatch.setattr(telegram_render, "SEND_TIMEOUT", 0.5)
    bot_api.stall("sendMessage", 2.0, times=2)
    fake_model.enqueue(Reply(text="the second answer"))
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("again"))
        await bot_api.wait_for(lambda: len(bot_api.calls_to("sendMessage")) >= 2, within=20)
        await bot.settle(3.0)
    sends = [c.get("text") for c in bot_api.calls_to("sendMessage")]
    assert sends == ["the answer", "the second answer"]
    assert bot_api.texts(ALICE["id"]) == ["the answer", "the second answer"]
