"""A Slack channel answered from a knowledge base: cited answers, sources, "I don't know"."""

from __future__ import annotations

from tests.bots.slack.conftest import HarnessFactory, mention
from tests.core.knowledge.seed import FAQ_URL, PROFILE_TOML, seed, stored_sources
from tests.fakes.model_server import Reply

TOML = PROFILE_TOML + """
[slack.channels]
C1 = "shop"
"""


async def test_answer_cites_the_right_passage(make_harness: HarnessFactory,
                                              db_url: str) -> None:
    await seed(db_url)
    async with make_harness(db_url, TOML) as h:
        h.model.enqueue(Reply(text="You have 30 days to return it [1]."))
        await h.event(mention("How long do I have to return an item?"))
        await h.idle()
        system = h.model.requests[-1].json["messages"][0]["content"]
        assert system.startswith("You answer customers of a small shop.")
        assert "\n[1] Shop FAQ — Returns (https://shop.example/help/faq)\n" in system
        assert "within 30 days of delivery" in system.split("\n[2] ")[0]
        [answer] = h.slack.posted()
        assert answer.text.startswith("You have 30 days to return it [1].")
        assert "Sources: [1]" in answer.text and FAQ_URL in answer.text

        # Nothing in the knowledge base: the bot says it does not know; no model call.
        calls = len(h.model.requests)
        await h.event(mention("Who won the football match yesterday?"))
        await h.idle()
        assert len(h.model.requests) == calls
        assert h.slack.posted()[-1].text.startswith("I don't know")
    sources = await stored_sources(db_url)
    assert sources[0][:3] == ("You have 30 days to return it [1].", 1, "Shop FAQ > Returns")
    assert sources[0][3] == FAQ_URL


async def test_i_dont_know_offers_a_person_who_takes_over(make_harness: HarnessFactory,
                                                          db_url: str) -> None:
    import json

    await seed(db_url)
    toml = TOML + '\n[profiles.shop.handoff]\nstaff = "slack:C0STAFF"\n'
    async with make_harness(db_url, toml) as h:
        await h.event(mention("Who won the football match yesterday?"))
        await h.idle()
        [answer] = h.slack.posted()
        assert answer.text.startswith("I don't know")
        assert 'Write "human" to talk to a person' in answer.text
        buttons = [e for b in answer.blocks if b.get("type") == "actions"
                   for e in b["elements"]]
        assert [(b["action_id"], b["text"]["text"]) for b in buttons] == [
            ("handoff_start", "Talk to a person")]
        payload = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T0TEAM"},
                   "container": {"type": "message", "channel_id": "C1",
                                 "message_ts": answer.ts, "thread_ts": answer.thread_ts},
                   "message": {"ts": answer.ts, "thread_ts": answer.thread_ts},
                   "actions": [{"action_id": "handoff_start", "value": buttons[0]["value"]}]}
        for _ in range(2):  # pressed twice: one handoff, one notice
            status, _ = await h.form({"payload": json.dumps(payload)})
            assert status == 200
        await h.idle()
        notices = [m for m in h.slack.posted() if m.channel == "C0STAFF"]
        assert len(notices) == 1 and "did not know the answer" in notices[0].text
        told = [m.text for m in h.slack.posted()
                if m.channel == "C1" and m.thread_ts == answer.thread_ts and m.ts != answer.ts]
        assert sum("I've asked a person from our team" in t for t in told) == 1
        # Now the customer's messages in the thread go to staff, not the model.
        calls = len(h.model.requests)
        await h.event(mention("Are you there?", thread_ts=answer.thread_ts))
        await h.idle()
        assert len(h.model.requests) == calls


async def test_the_transcript_names_the_cited_sources(make_harness: HarnessFactory,
                                                     db_url: str) -> None:
    import json

    from core.export import load_transcripts, to_jsonl, to_markdown

    await seed(db_url)
    async with make_harness(db_url, TOML) as h:
        h.model.enqueue(Reply(text="You have 30 days to return it [1]."))
        await h.event(mention("How long do I have to return an item?", ts="1710000100.000001"))
        await h.idle()
        transcripts = await load_transcripts(h.bot.runtime.store,
                                             scope="T0TEAM/C1/1710000100.000001")
    md = to_markdown(transcripts)
    assert f"Sources: [1] Shop FAQ — Returns ({FAQ_URL})" in md
    rows = [json.loads(line) for line in to_jsonl(transcripts).splitlines()]
    answer = next(r for r in rows if r["role"] == "assistant")
    assert answer["sources"][0] == {"number": 1, "title": "Shop FAQ", "heading":
                                    "Shop FAQ > Returns", "source": FAQ_URL, "cited": True}
    assert all(not s["cited"] for s in answer["sources"][1:])
    assert next(r for r in rows if r["role"] == "user")["sources"] == []
