"""The event hub: one agent's events, indexed, kept in a ring for resumption, read by any number of subscribers.

Publishing never blocks and never waits for a subscriber. Every event goes once into one shared ring; a
subscriber is only a cursor into it (the index of the last event it took), so a thousand subscribers cost a
thousand integers, not a thousand queues, and a slow one cannot delay the others or the agent. A subscriber is
too slow (:class:`TooSlow`; it may resume from its last index over a new connection) when the ring has dropped
events it had not taken yet, or when, checked periodically (:meth:`Subscription.check`), it is more than
``max_lag`` events behind and has not gained on the stream since the previous check. A client resuming from an
old index therefore may start far behind, as long as it catches up.

Indexes are strictly increasing, also across agent restarts: the first index of a hub is the wall-clock time in
microseconds at its start, so an index from an earlier run of the agent is always older than the ring, and a
client resuming with it is told to start over (``index-too-old``) instead of getting silently wrong events.

What a subscriber takes at once is a :class:`~fleetlet.events.batches.Batch`, made by the first subscriber to
take those events through that filter and shared with every other that does (:mod:`fleetlet.events.batches`).

The hub also keeps the latest event of every live key (a unit, a placement, a unit's state on a machine, a
machine, the leader), which is what a client that connects without an index gets first, as a snapshot at the
current index: list-then-watch in one request, with no gap between the two.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from fleetlet.clock import Clock
from fleetlet.events.batches import Batch, BatchCache
from fleetlet.events.filters import EventFilter
from fleetlet.events.model import EXPLICIT_TOPICS, TOPICS, Event, Topic

DEFAULT_CAPACITY: Final = 65_536  # events kept for resumption: minutes of a busy cluster
DEFAULT_MAX_LAG: Final = 4_096  # events a subscriber may fall behind before it is too slow
_TOPIC_ORDER: Final = {topic: i for i, topic in enumerate(TOPICS)}


class IndexTooOld(Exception):
    """A subscriber asked to resume after an index the ring no longer holds (or that this agent never made)."""

    def __init__(self, index: int, oldest: int) -> None:
        self.index = index
        self.oldest = oldest
        super().__init__(f"index {index} is older than the oldest event kept ({oldest}): start again without one")


class TooSlow(Exception):
    """A subscriber fell too far behind the stream."""

    def __init__(self, index: int, lag: int) -> None:
        self.index = index
        self.lag = lag
        super().__init__(f"fell {lag} events behind: resume from index {index}")


class EventHub:
    def __init__(
        self, clock: Clock, *, capacity: int = DEFAULT_CAPACITY, max_lag: int = DEFAULT_MAX_LAG, first_index: int = 0
    ) -> None:
        if capacity < 1 or max_lag < 1:
            raise ValueError("capacity and max_lag must be positive")
        self._clock = clock
        self._ring: deque[Event] = deque(maxlen=capacity)
        self._max_lag = max_lag
        # The index of the last event published: the next one is one more.
        self._index = first_index if first_index > 0 else int(clock.time() * 1_000_000)
        self._live: dict[tuple[Topic, str], Event] = {}
        # Subscriptions waiting for the next event, each on its own future: a publish wakes them, and one of
        # them can be woken alone (Subscription.nudge) without waking the others.
        self._waiting: dict[Subscription, None] = {}
        self._batches = BatchCache()

    @property
    def last_index(self) -> int:
        """The index of the latest event (before any: the index the first one follows)."""
        return self._index

    @property
    def max_lag(self) -> int:
        return self._max_lag

    def publish(self, topic: Topic, type_: str, key: str, payload: Mapping[str, Any], *, gone: bool = False) -> Event:
        """Index, keep and announce an event; ``gone``: the key no longer exists (left out of snapshots)."""
        self._index += 1
        event = Event(self._index, self._clock.time(), topic, type_, key, payload)
        self._ring.append(event)
        if gone:
            self._live.pop((topic, key), None)
        else:
            self._live[(topic, key)] = event
        if self._waiting:
            waiting, self._waiting = self._waiting, {}
            for subscription in waiting:
                subscription._wake()
        return event

    def remember(self, topic: Topic, type_: str, key: str, payload: Mapping[str, Any]) -> None:
        """Record what already exists when the hub starts (units, placements, machines) for snapshots only.

        No event is published: nothing happened. The record is indexed with the current index, as snapshot
        events are.
        """
        self._live[(topic, key)] = Event(self._index, self._clock.time(), topic, type_, key, payload)

    def latest(self, topic: Topic, key: str) -> Event | None:
        """The latest event of a live key: what a producer compares with to say what changed."""
        return self._live.get((topic, key))

    def snapshot(self, event_filter: EventFilter | None = None) -> list[Event]:
        """The latest event of every live key, marked as a snapshot at the current index, by topic and key."""
        found = sorted(self._live.values(), key=lambda e: (_TOPIC_ORDER[e.topic], e.key))
        return [e.as_snapshot(self._index) for e in found if event_filter is None or event_filter.matches(e)]

    def subscribe(self, after: int | None = None, event_filter: EventFilter | None = None) -> Subscription:
        """Events after index ``after`` (None: from now on); :class:`IndexTooOld` when they are no longer kept."""
        if after is None:
            after = self._index
        elif not self._oldest() - 1 <= after <= self._index:
            raise IndexTooOld(after, self._oldest())
        return Subscription(self, after, event_filter or EventFilter())

    def _oldest(self) -> int:
        return self._ring[0].index if self._ring else self._index + 1

    def _take(self, cursor: int, limit: int, event_filter: EventFilter) -> Batch | None:
        """The batch of up to ``limit`` events after ``cursor`` through ``event_filter``; None when there are none
        yet; TooSlow when some of them are no longer kept."""
        lag = self._index - cursor
        if lag <= 0:
            return None
        if cursor < self._oldest() - 1:
            raise TooSlow(cursor, lag)
        through = cursor + min(lag, limit)
        key = (cursor, through, event_filter)
        batch = self._batches.get(key)
        if batch is None:
            batch = Batch(self._matching(cursor, through, event_filter), through)
            self._batches.put(key, batch)
        return batch

    def _matching(self, cursor: int, through: int, event_filter: EventFilter) -> list[Event]:
        ring = self._ring
        start = len(ring) - (self._index - cursor)  # indexes in the ring are consecutive
        taken = [ring[i] for i in range(start, start + through - cursor)]
        if event_filter.everything:
            return [e for e in taken if e.topic not in EXPLICIT_TOPICS]  # no call per event: the common case
        return [e for e in taken if event_filter.matches(e)]


class Subscription:
    """One subscriber's cursor into the hub. Use from one task."""

    __slots__ = ("_checked_lag", "_filter", "_hub", "_nudged", "_ready", "index")

    def __init__(self, hub: EventHub, after: int, event_filter: EventFilter) -> None:
        self._hub = hub
        self._filter = event_filter
        self.index = after  # the last index taken, matching or not: where a client resumes
        self._checked_lag: int | None = None
        self._ready: asyncio.Future[None] | None = None  # while waiting: done at the next publish or nudge
        self._nudged = False

    @property
    def lag(self) -> int:
        """How many events it has yet to take."""
        return self._hub.last_index - self.index

    def check(self) -> None:
        """Raise TooSlow if it is more than ``max_lag`` behind and has not gained since the previous check.

        Call it periodically from outside the reading loop: a subscriber whose writes are stuck never reads.
        """
        lag, previous = self.lag, self._checked_lag
        self._checked_lag = lag
        if lag > self._hub.max_lag and previous is not None and lag >= previous:
            raise TooSlow(self.index, lag)

    def take(self, limit: int = 256) -> Batch | None:
        """The next ``limit`` events at most, as a batch of the matching ones, without waiting; None when there are
        none yet; TooSlow when too far behind. The batch may be shared with other subscribers: do not change it."""
        batch = self._hub._take(self.index, limit, self._filter)
        if batch is not None:
            self.index = batch.through
        return batch

    def poll(self, limit: int = 256) -> list[Event]:
        """The matching events among the next ``limit`` ones, without waiting; TooSlow when too far behind."""
        batch = self.take(limit)
        return [] if batch is None else list(batch.events)

    async def next_batch(self, limit: int = 256) -> list[Event]:
        """The next matching events, waiting until there is at least one."""
        while True:
            found = self.poll(limit)
            if found:
                return found
            if self.lag == 0:
                await self.wait()

    async def wait(self) -> None:
        """Return once an event may follow the cursor, or when nudged (:meth:`nudge`); at once if one already does.

        The way to wait that a task can be woken from without cancelling it (a cancellation could land in a write
        that follows), and with no cancel scope: hundreds of subscribers wait after every batch, so the wait is
        the cheapest there is, a bare future of the event loop (an anyio.Event, made afresh for every wait since
        it cannot be reset, cost a quarter of a wake-up). The hub serves aiohttp, whose loop is asyncio's.
        """
        if self.lag > 0 or self._nudged:
            self._nudged = False
            return
        ready = self._ready = asyncio.get_running_loop().create_future()
        self._hub._waiting[self] = None
        try:
            await ready
        finally:
            self._ready = None
            self._hub._waiting.pop(self, None)
            self._nudged = False

    def nudge(self) -> None:
        """Wake :meth:`wait` now, or make the next call return at once."""
        self._nudged = True
        self._wake()

    def _wake(self) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)
