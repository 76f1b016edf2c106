"""Slack: a huge answer is posted cut at ``max_answer_chars`` with a note; stored whole."""

from __future__ import annotations

from pathlib import Path

from core.answer_cap import cut_notice
from tests.bots.answers import HUGE, stored_answers
from tests.bots.slack.conftest import HarnessFactory, message
from tests.fakes.model_server import Reply


async def test_slack_posts_a_capped_answer(make_harness: HarnessFactory, tmp_path: Path) -> None:
    async with make_harness(toml="[defaults]\nmax_answer_chars = 5000\n") as h:
        h.model.enqueue(Reply(text=HUGE, chunk_size=997))
        await h.event(message("write a lot", channel="D1", channel_type="im"))
        await h.idle()
        posted = h.slack.posted()
    shown = "".join(m.text for m in posted)
    assert len(posted) == 1  # not 18 Slack messages
    assert shown.startswith(HUGE[:4000])
    assert cut_notice(5000, len(HUGE)) in shown
    assert len(shown) < 5000 + 200
    assert stored_answers(tmp_path / "s.db") == [HUGE]
