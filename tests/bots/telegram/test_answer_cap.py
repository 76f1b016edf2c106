"""Telegram: a huge answer is sent cut at ``max_answer_chars`` with a note; stored whole."""

from __future__ import annotations

from pathlib import Path

from core.answer_cap import DEFAULT_MAX_ANSWER_CHARS, cut_notice
from tests.bots.answers import HUGE, stored_answers
from tests.bots.telegram.conftest import ALICE, make_settings, run_bot
from tests.bots.telegram.conftest import message as tg_message
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply


async def test_telegram_sends_a_capped_answer(tmp_path: Path, bot_api: FakeBotApi,
                                              fake_model: FakeModelServer,
                                              sqlite_url: str) -> None:
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url)
    async with run_bot(settings, bot_api, fake_model) as bot:
        fake_model.enqueue(Reply(text=HUGE, chunk_size=997))
        bot.send(tg_message("write a lot"))
        await bot.answered(ALICE["id"], 3)  # (idle alone may come before the poll took it)
        await bot.idle()
        await bot.settle()
        texts = bot_api.texts(ALICE["id"])
    assert 3 <= len(texts) <= 4  # 12,000 characters: three Telegram messages and the note
    assert cut_notice(DEFAULT_MAX_ANSWER_CHARS, len(HUGE)) in texts[-1]
    assert stored_answers(Path(sqlite_url.split("///", 1)[1])) == [HUGE]
