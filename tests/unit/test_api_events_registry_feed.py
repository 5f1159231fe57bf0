"""``/v1/events`` on an agent that runs its registry feed on demand (on etcd): a connection that can get ``unit``
or ``schedule`` events holds the feed for as long as it lasts, from before its snapshot; any other does not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from fleetlet.events.hub import EventHub
from tests.unit.test_api_events import M1, doc, heartbeat, receive, serve


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Feed:
    """Stands for the on-demand registry feed: counts its holders, and, started, publishes what changed."""

    def __init__(self) -> None:
        self.hub: EventHub | None = None
        self.holders = 0
        self.released = anyio.Event()

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        self.holders += 1
        if self.holders == 1 and self.hub is not None:
            # What a feed started again publishes: the differences since it last ran.
            self.hub.publish("schedule", "placed", "a.service", {"name": "a.service", "machineID": M1})
        try:
            yield
        finally:
            self.holders -= 1
            self.released.set()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "holds"),
    [
        ("", True),
        ("topic=unit", True),
        ("topic=schedule:a*", True),
        (f"topic=schedule&machine={M1}", True),
        (f"machine={M1}", True),  # schedule events concern machines
        ("topic=state&topic=machine&topic=leader", False),
        (f"topic=unit&machine={M1}", False),  # no unit event concerns a machine
    ],
)
async def test_a_stream_that_can_get_unit_or_schedule_events_holds_the_feed_while_it_lasts(
    query: str, holds: bool, tmp_path: Path
) -> None:
    feed = Feed()
    async with serve(tmp_path, registry_events=feed.held) as api:
        feed.hub = api.hub
        ws = await api.ws(query)
        frames = await receive(ws, 2 if holds and "topic=unit" not in query else 1)
        assert feed.holders == (1 if holds else 0)
        if holds and "topic=unit" not in query:
            placed = api.hub.latest("schedule", "a.service")
            assert placed is not None
            # Held before the snapshot was taken: what the feed published on its start is in it.
            assert frames == [doc(placed, snapshot_at=placed.index), heartbeat(placed.index)]
        await ws.close()
        if holds:
            with anyio.fail_after(5):
                await feed.released.wait()
        with anyio.fail_after(5):
            await api.returned.wait()
        assert feed.holders == 0
