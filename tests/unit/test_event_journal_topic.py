"""The ``journal`` topic: only for a filter that names it, published through the hub by a tap per unit that runs
only while some subscription wants the unit. Memory journals on a ManualClock, a StaticView, no sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from fleetlet.api.view import StaticView
from fleetlet.clock import ManualClock
from fleetlet.events.filters import EventFilter, parse_filter
from fleetlet.events.hub import EventHub
from fleetlet.events.journal_taps import REFRESH_SECONDS, JournalTaps
from fleetlet.events.model import Event
from fleetlet.service.journal import DEFAULT_FOLLOW_BUFFER, Journal, JournalSink, JournalStream, MemoryJournal

FIRST = 1000
M1 = "1a2b3c4d5e6f70819293a4b5c6d7e8f9"
A, B, WEB = "a.service", "b.service", "web.service"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountedJournal:
    """A MemoryJournal that counts its followers, so a test sees that a tap has really stopped."""

    def __init__(self, unit: str, clock: ManualClock) -> None:
        self._inner = MemoryJournal(unit, clock)
        self.followers = 0

    @property
    def unit(self) -> str:
        return self._inner.unit

    def write(self, message: str, stream: JournalStream = "fleetlet") -> None:
        self._inner.write(message, stream)

    def tail(self, n: int) -> list[Any]:
        return self._inner.tail(n)

    async def follow(self, sink: JournalSink, *, last: int = 10, buffer: int = DEFAULT_FOLLOW_BUFFER) -> None:
        self.followers += 1
        try:
            await self._inner.follow(sink, last=last, buffer=buffer)
        finally:
            self.followers -= 1

    def close(self) -> None:
        self._inner.close()


@dataclass
class Node:
    clock: ManualClock
    hub: EventHub
    view: StaticView
    taps: JournalTaps

    def journal(self, unit: str) -> CountedJournal:
        journal = self.view.journals[unit]
        assert isinstance(journal, CountedJournal)
        return journal

    def add(self, unit: str) -> CountedJournal:
        journal = CountedJournal(unit, self.clock)
        self.view.journals[unit] = journal
        return journal


@asynccontextmanager
async def node(*units: str, run: bool = True) -> AsyncIterator[Node]:
    clock = ManualClock()
    hub = EventHub(clock, first_index=FIRST)
    view = StaticView()
    taps = JournalTaps(hub, view, M1, clock)
    n = Node(clock, hub, view, taps)
    for unit in units:
        n.add(unit)
    async with anyio.create_task_group() as tg:
        if run:
            await tg.start(taps.run)
        yield n
        tg.cancel_scope.cancel()


def entries(events: list[Event]) -> list[tuple[int, str, str]]:
    return [(e.index, e.key, e.payload["message"]) for e in events if e.topic == "journal"]


def unit_event(hub: EventHub, name: str) -> Event:
    return hub.publish("unit", "submitted", name, {"name": name})


# --- the filter --------------------------------------------------------------------------------------------------


def journal_event(unit: str) -> Event:
    return Event(1, 0.0, "journal", "entry", unit, {"name": unit, "machineID": M1})


@pytest.mark.parametrize(
    ("topics", "machine", "wanted"),
    [
        ([], "", []),  # every topic is every topic but the journal
        ([], M1, []),
        (["unit", "state", "machine", "schedule", "leader"], "", []),
        (["journal:a.service"], "", [A]),
        (["journal:*"], "", [A, B, WEB]),
        (["journal"], "", [A, B, WEB]),
        (["journal:?.service", "unit"], "", [A, B]),
        (["journal:web*"], M1, [WEB]),
        (["journal:web*"], "another", []),
    ],
)
def test_only_a_filter_that_names_the_journal_topic_lets_its_events_through(
    topics: list[str], machine: str, wanted: list[str]
) -> None:
    event_filter = parse_filter(topics, machine)
    assert [u for u in (A, B, WEB) if event_filter.matches(journal_event(u))] == wanted


def test_a_filter_without_topics_still_lets_every_other_topic_through() -> None:
    others = [Event(1, 0.0, topic, "x", "k", {}) for topic in ("unit", "schedule", "state", "machine", "leader")]
    assert all(EventFilter().matches(e) for e in others)


@pytest.mark.parametrize(
    ("topics", "globs"),
    [([], ()), (["state", "unit:x"], ()), (["journal:a*", "state"], ("a*",)), (["journal", "journal:b"], ("*", "b"))],
)
def test_the_journal_globs_of_a_filter(topics: list[str], globs: tuple[str, ...]) -> None:
    assert parse_filter(topics).journal_globs == globs


def test_an_unknown_topic_names_the_journal_among_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"expected one of unit, schedule, state, machine, leader, journal$"):
        parse_filter(["journals:a"])


# --- the taps ----------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_without_a_tap_nothing_is_followed_and_no_entry_becomes_an_event() -> None:
    async with node(A) as n:
        n.journal(A).write("hello", "stdout")
        await anyio.wait_all_tasks_blocked()
        assert n.journal(A).followers == 0
        assert n.hub.last_index == FIRST


@pytest.mark.anyio
async def test_a_tap_publishes_the_units_entries_in_order_among_other_events() -> None:
    async with node(A, B) as n:
        subscription = n.hub.subscribe(None, parse_filter(["journal:a.service", "unit"]))
        async with n.taps.tapping(["a.service"]):
            n.journal(A).write("one", "stdout")
            n.journal(B).write("not asked for", "stdout")
            await anyio.wait_all_tasks_blocked()
            unit_event(n.hub, "c.service")
            n.clock.advance(2)
            n.journal(A).write("two", "stderr")
            await anyio.wait_all_tasks_blocked()
        got = subscription.poll()
    assert [(e.index, e.topic, e.key) for e in got] == [
        (FIRST + 1, "journal", A),
        (FIRST + 2, "unit", "c.service"),
        (FIRST + 3, "journal", A),
    ]
    assert dict(got[2].payload) == {
        "name": A,
        "machineID": M1,
        "stream": "stderr",
        "message": "two",
        "time": n.clock.time(),
    }
    assert got[0].payload["time"] == n.clock.time() - 2  # the entry's own time
    assert (got[2].type, got[2].time) == ("entry", n.clock.time())


@pytest.mark.anyio
async def test_journal_events_are_never_in_a_snapshot() -> None:
    async with node(A) as n:
        async with n.taps.tapping([A]):
            n.journal(A).write("one")
            await anyio.wait_all_tasks_blocked()
        assert n.hub.last_index == FIRST + 1
        assert n.hub.snapshot(parse_filter(["journal"])) == []
        assert n.hub.snapshot() == []


@pytest.mark.anyio
async def test_subscribers_share_one_tap_which_stops_when_the_last_leaves() -> None:
    async with node(A, B) as n:
        async with n.taps.tapping(["a.service"]):
            async with n.taps.tapping(["a*", "b.service"]):
                await anyio.wait_all_tasks_blocked()
                assert (n.journal(A).followers, n.journal(B).followers) == (1, 1)
                assert n.taps.tapped == {A, B}
            await anyio.wait_all_tasks_blocked()
            assert (n.journal(A).followers, n.journal(B).followers) == (1, 0)
            n.journal(A).write("once")
            await anyio.wait_all_tasks_blocked()
            assert n.hub.last_index == FIRST + 1  # one event for the entry, not one per subscriber
        await anyio.wait_all_tasks_blocked()
        assert (n.journal(A).followers, n.journal(B).followers) == (0, 0)
        assert n.taps.tapped == frozenset()
        n.journal(A).write("after")
        await anyio.wait_all_tasks_blocked()
        assert n.hub.last_index == FIRST + 1


@pytest.mark.anyio
async def test_globs_tap_every_matching_unit_and_no_other() -> None:
    async with node(A, B, WEB, "web.socket") as n, n.taps.tapping(["*.service"]):
        assert n.taps.tapped == {A, B, WEB}
        for unit in (A, B, WEB, "web.socket"):
            n.journal(unit).write(f"from {unit}")
        await anyio.wait_all_tasks_blocked()
        got = entries(n.hub.subscribe(FIRST, parse_filter(["journal"])).poll())
        # One tap per unit, each its own task: the units' entries interleave as their taps run.
        assert sorted((key, message) for _, key, message in got) == [(u, f"from {u}") for u in (A, B, WEB)]
        assert [index for index, _, _ in got] == [FIRST + 1, FIRST + 2, FIRST + 3]


@pytest.mark.anyio
async def test_resuming_after_an_index_gets_the_journal_events_after_it_once() -> None:
    async with node(A) as n, n.taps.tapping([A]):
        for i in range(3):
            n.journal(A).write(f"line {i}")
            await anyio.wait_all_tasks_blocked()  # an entry is an event once its tap has run
            unit_event(n.hub, f"u{i}.service")
        first = n.hub.subscribe(FIRST, parse_filter(["journal:a.service", "unit"]))
        got = first.poll(limit=3)
        resumed = n.hub.subscribe(got[-1].index, parse_filter(["journal:a.service", "unit"]))
        rest = resumed.poll()
        indexes = [e.index for e in got + rest]
        assert indexes == list(range(FIRST + 1, FIRST + 7))
        assert entries(got + rest) == [(FIRST + 1, A, "line 0"), (FIRST + 3, A, "line 1"), (FIRST + 5, A, "line 2")]


@pytest.mark.anyio
async def test_a_unit_loaded_after_the_subscription_is_tapped_at_the_next_refresh() -> None:
    async with node(A) as n, n.taps.tapping(["*"]):
        late = n.add(B)
        late.write("before the refresh: no event")
        await anyio.wait_all_tasks_blocked()
        assert late.followers == 0
        n.clock.advance(REFRESH_SECONDS)
        await anyio.wait_all_tasks_blocked()
        assert n.taps.tapped == {A, B}
        late.write("tapped")
        await anyio.wait_all_tasks_blocked()
        assert entries(n.hub.subscribe(FIRST).poll()) == []  # the unfiltered stream never has them
        assert entries(n.hub.subscribe(FIRST, parse_filter(["journal"])).poll()) == [(FIRST + 1, B, "tapped")]


@pytest.mark.anyio
async def test_a_reloaded_unit_is_tapped_again_on_its_new_journal() -> None:
    async with node(A) as n, n.taps.tapping([A]):
        old = n.journal(A)
        old.close()  # unloaded: its tap ends with the journal
        await anyio.wait_all_tasks_blocked()
        assert (old.followers, n.taps.tapped) == (0, frozenset())
        new = n.add(A)
        n.clock.advance(REFRESH_SECONDS)
        await anyio.wait_all_tasks_blocked()
        assert new.followers == 1
        new.write("again")
        await anyio.wait_all_tasks_blocked()
        assert entries(n.hub.subscribe(FIRST, parse_filter(["journal"])).poll()) == [(FIRST + 1, A, "again")]


@pytest.mark.anyio
async def test_a_subscription_made_before_the_taps_run_is_tapped_when_they_start() -> None:
    async with node(A, run=False) as n, n.taps.tapping([A]), anyio.create_task_group() as tg:
        assert n.taps.tapped == frozenset()
        await tg.start(n.taps.run)
        assert n.journal(A).followers == 1
        tg.cancel_scope.cancel()
    assert n.journal(A).followers == 0


@pytest.mark.anyio
async def test_a_unit_whose_journal_is_gone_is_not_tapped() -> None:
    class Vanishing(StaticView):
        def journal(self, unit: str) -> Journal | None:
            return None

    clock = ManualClock()
    hub = EventHub(clock, first_index=FIRST)
    view = Vanishing(journals={A: MemoryJournal(A, clock)})
    taps = JournalTaps(hub, view, M1, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(taps.run)
        async with taps.tapping([A]):
            assert taps.tapped == frozenset()
        tg.cancel_scope.cancel()
