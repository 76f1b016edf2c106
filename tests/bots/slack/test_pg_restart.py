"""PostgreSQL restarted between two turns: the next turn is answered as if nothing
happened (no 503 to Slack, no failed turn), without pool_pre_ping — the pooled
connections the restart killed fail before COMMIT and the store runs the transaction
again on a new connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bots.db import create_engine
from tests.bots.slack.conftest import HarnessFactory, message
from tests.fakes.model_server import Reply
from tests.pg import Cluster, bin_dir

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of this test's own (it is restarted)."""
    if bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries")
    server = Cluster()
    try:
        yield server
    finally:
        server.stop()


def test_engine_has_no_pre_ping(cluster: Cluster) -> None:
    engine = create_engine(cluster.url)
    assert not engine.sync_engine.pool._pre_ping  # the store's retry covers it


async def test_turn_after_a_server_restart(make_harness: HarnessFactory,
                                           cluster: Cluster) -> None:
    async with make_harness(cluster.url) as h:
        h.model.enqueue(Reply(text="Before."), Reply(text="After."))
        assert await h.event(message("one", channel="D1", channel_type="im")) == 200
        await h.idle()
        cluster.restart()  # every pooled connection is now dead
        assert await h.event(message("two", channel="D1", channel_type="im")) == 200
        await h.idle()
        assert [m.text for m in h.slack.posted()] == ["Before.", "After."]
        assert len(h.model.requests) == 2
        assert "Before." in str(h.model.requests[-1].json["messages"])  # memory kept
