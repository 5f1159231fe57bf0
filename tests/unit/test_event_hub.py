"""The event hub: indexes, resumption, snapshots, filters, and subscribers that fall behind."""

from __future__ import annotations

import anyio
import orjson
import pytest

from fleetlet.clock import ManualClock
from fleetlet.events.batches import Batch, BatchCache
from fleetlet.events.filters import EventFilter, parse_filter
from fleetlet.events.hub import EventHub, IndexTooOld, Subscription, TooSlow
from fleetlet.events.model import Event, state_key

pytestmark = pytest.mark.anyio

M1 = "1a2b3c4d" + "0" * 24
M2 = "9f8e7d6c" + "0" * 24


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def hub(**kwargs: int) -> EventHub:
    return EventHub(ManualClock(epoch=1_700_000_000.0), **kwargs)


def test_indexes_start_at_the_clock_in_microseconds_and_increase_by_one() -> None:
    h = hub()
    first = h.last_index
    assert first == 1_700_000_000_000_000
    a = h.publish("unit", "submitted", "a.service", {"name": "a.service"})
    b = h.publish("unit", "submitted", "b.service", {"name": "b.service"})
    assert (a.index, b.index, h.last_index) == (first + 1, first + 2, first + 2)


def test_an_event_is_encoded_once_with_every_field() -> None:
    event = hub().publish("state", "changed", state_key("a.service", M1), {"active": "active"})
    assert orjson.loads(event.json) == {
        "index": event.index,
        "time": 1_700_000_000.0,
        "topic": "state",
        "type": "changed",
        "key": f"a.service@{M1}",
        "payload": {"active": "active"},
    }
    assert orjson.loads(event.as_snapshot(99).json)["snapshot"] is True


def test_resuming_from_any_kept_index_loses_and_duplicates_nothing() -> None:
    h = hub()
    events = [h.publish("unit", "submitted", f"u{i}.service", {}) for i in range(10)]
    for i, event in enumerate(events):
        sub = h.subscribe(after=event.index)
        assert sub.poll() == events[i + 1 :]
        assert sub.poll() == []
    assert h.subscribe(after=events[0].index - 1).poll() == events  # just before the oldest: still whole


def test_an_index_older_than_the_ring_or_from_the_future_is_refused() -> None:
    h = hub(capacity=3)
    events = [h.publish("unit", "submitted", f"u{i}.service", {}) for i in range(5)]
    with pytest.raises(IndexTooOld) as too_old:
        h.subscribe(after=events[0].index)
    assert too_old.value.oldest == events[2].index
    h.subscribe(after=events[1].index)  # the event after it is still kept
    with pytest.raises(IndexTooOld):
        h.subscribe(after=h.last_index + 1)  # e.g. from before a restart with a clock set back


def test_an_index_from_an_earlier_run_of_the_agent_is_too_old() -> None:
    clock = ManualClock(epoch=1_700_000_000.0)
    before = EventHub(clock)
    old = before.publish("unit", "submitted", "a.service", {}).index
    clock.advance(1.0)
    with pytest.raises(IndexTooOld):
        EventHub(clock).subscribe(after=old)


def test_a_subscriber_without_an_index_gets_only_what_follows() -> None:
    h = hub()
    h.publish("unit", "submitted", "a.service", {})
    sub = h.subscribe()
    later = h.publish("unit", "submitted", "b.service", {})
    assert sub.poll() == [later]


def test_the_snapshot_holds_the_latest_event_of_each_live_key_at_the_current_index() -> None:
    h = hub()
    h.remember("machine", "joined", M1, {"id": M1})
    h.publish("unit", "submitted", "a.service", {"desiredState": "inactive"})
    h.publish("unit", "desired-state-changed", "a.service", {"desiredState": "launched"})
    h.publish("unit", "submitted", "b.service", {})
    h.publish("unit", "destroyed", "b.service", {}, gone=True)
    h.publish("schedule", "placed", "a.service", {"machineID": M1})
    snapshot = h.snapshot()
    assert [(e.topic, e.type, e.key) for e in snapshot] == [
        ("unit", "desired-state-changed", "a.service"),
        ("schedule", "placed", "a.service"),
        ("machine", "joined", M1),
    ]
    assert all(e.snapshot and e.index == h.last_index for e in snapshot)
    assert [e.key for e in h.snapshot(parse_filter(["machine"]))] == [M1]


def test_remembering_publishes_nothing() -> None:
    h = hub()
    sub = h.subscribe()
    h.remember("unit", "submitted", "a.service", {})
    assert (sub.poll(), sub.lag) == ([], 0)


def test_filters_by_topic_key_glob_and_machine() -> None:
    h = hub()
    sub_state = h.subscribe(event_filter=parse_filter(["state:hello_world@*"]))
    sub_m2 = h.subscribe(event_filter=parse_filter(["state", "schedule", "machine"], machine=M2))
    events = [
        h.publish("state", "changed", state_key("hello_world@1.service", M1), {"machineID": M1}),
        h.publish("state", "changed", state_key("other.service", M2), {"machineID": M2}),
        h.publish("schedule", "moved", "x.service", {"machineID": M1, "previousMachineID": M2}),
        h.publish("machine", "metadata-changed", M2, {"id": M2}),
        h.publish("unit", "submitted", "y.service", {}),
    ]
    assert sub_state.poll() == [events[0]]
    assert sub_m2.poll() == events[1:4]
    assert sub_state.index == sub_m2.index == h.last_index  # filtered-out events are passed, not pending


@pytest.mark.parametrize(
    ("topics", "message"),
    [(["nope"], "unknown topic 'nope'"), (["state:[z-a]"], "invalid key pattern '[z-a]'")],
)
def test_bad_filters_say_what_is_wrong(topics: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_filter(topics)


def test_a_subscriber_far_behind_that_does_not_catch_up_is_too_slow_and_others_are_not_held_back() -> None:
    h = hub(max_lag=3)
    slow, fast = h.subscribe(), h.subscribe()
    for i in range(4):
        h.publish("unit", "submitted", f"u{i}.service", {})
        assert len(fast.poll()) == 1
    slow.check()  # 4 behind: noted, not yet judged
    h.publish("unit", "submitted", "u4.service", {})
    with pytest.raises(TooSlow) as too_slow:
        slow.check()  # 5 behind: it has not gained since
    assert (too_slow.value.index, too_slow.value.lag) == (h.last_index - 5, 5)
    assert [e.key for e in fast.poll()] == ["u4.service"]
    fast.check()


def test_a_subscriber_far_behind_that_catches_up_is_not_too_slow() -> None:
    h = hub(max_lag=3)
    start = h.last_index
    for i in range(10):
        h.publish("unit", "submitted", f"u{i}.service", {})
    resumed = h.subscribe(after=start)  # resuming from an old index: 10 behind
    resumed.check()
    assert len(resumed.poll(limit=4)) == 4
    resumed.check()  # still 6 behind, but gaining
    assert len(resumed.poll()) == 6
    resumed.check()


def test_a_subscriber_whose_unread_events_left_the_ring_is_too_slow() -> None:
    h = hub(capacity=3)
    sub = h.subscribe()
    for i in range(4):
        h.publish("unit", "submitted", f"u{i}.service", {})
    with pytest.raises(TooSlow):
        sub.poll()


def test_poll_takes_at_most_limit_events() -> None:
    h = hub()
    sub = h.subscribe()
    for i in range(5):
        h.publish("unit", "submitted", f"u{i}.service", {})
    assert [len(sub.poll(limit=2)) for _ in range(4)] == [2, 2, 1, 0]


async def test_next_batch_waits_for_a_matching_event() -> None:
    h = hub()
    sub = h.subscribe(event_filter=EventFilter(parse_filter(["state"]).topics))
    got: list[Event] = []

    async def read() -> None:
        got.extend(await sub.next_batch())

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        h.publish("unit", "submitted", "a.service", {})  # not matching: it keeps waiting
        await anyio.wait_all_tasks_blocked()
        assert got == []
        state = h.publish("state", "changed", state_key("a.service", M1), {})
    assert got == [state]


async def test_wait_returns_on_a_publish_or_a_nudge_and_a_nudge_before_the_wait_is_kept() -> None:
    h = hub()
    sub, other = h.subscribe(), h.subscribe()
    woken: list[str] = []

    async def wait(s: Subscription, name: str) -> None:
        await s.wait()
        woken.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, sub, "sub")
        tg.start_soon(wait, other, "other")
        await anyio.wait_all_tasks_blocked()
        sub.nudge()  # wakes that one alone
        await anyio.wait_all_tasks_blocked()
        assert woken == ["sub"]
        h.publish("unit", "submitted", "a.service", {})
    assert woken == ["sub", "other"]
    other.poll()
    other.nudge()  # nobody waits yet: the next wait returns at once
    with anyio.fail_after(1):
        await other.wait()


# --- batches shared between subscribers --------------------------------------------------------------------------


def test_subscribers_at_the_same_place_with_equal_filters_share_one_batch() -> None:
    h = hub()
    start = h.last_index
    # Filters parsed apart, as two connections' are: equal, not the same object.
    subs = [h.subscribe(event_filter=parse_filter(["state"])) for _ in range(3)]
    events = [h.publish("state", "changed", state_key(f"u{i}.service", M1), {}) for i in range(3)]
    batches = [s.take() for s in subs]
    assert batches[0] is batches[1] is batches[2]
    batch = batches[0]
    assert batch is not None
    assert (list(batch.events), batch.through) == (events, start + 3)
    assert batch.message == b"\n".join(e.json for e in events)
    assert all(s.index == start + 3 for s in subs)


def test_different_filters_or_places_do_not_share() -> None:
    h = hub()
    start = h.last_index
    every, states, units = h.subscribe(), h.subscribe(event_filter=parse_filter(["state"])), h.subscribe()
    state = h.publish("state", "changed", state_key("a.service", M1), {})
    unit = h.publish("unit", "submitted", "a.service", {})
    later = h.subscribe(after=start + 1)  # one event further on
    assert units.poll(limit=1) == [state]  # ahead of the others from now on
    # Each would get another's events if they shared.
    assert every.poll() == [state, unit]
    assert states.poll() == [state]
    assert later.poll() == [unit]
    assert units.poll() == [unit]


def test_a_shared_batch_is_the_same_however_late_it_is_taken() -> None:
    h = hub()
    early, late = h.subscribe(), h.subscribe()
    first = [h.publish("unit", "submitted", f"u{i}.service", {}) for i in range(2)]
    assert early.poll() == first
    more = h.publish("unit", "submitted", "v.service", {})
    assert late.poll() == [*first, more]  # not the batch early took: it ends further on
    assert early.poll() == [more]


def test_a_batch_the_filter_lets_nothing_through_still_moves_the_cursor() -> None:
    h = hub()
    sub = h.subscribe(event_filter=parse_filter(["machine"]))
    h.publish("unit", "submitted", "a.service", {})
    batch = sub.take()
    assert batch is not None
    assert (list(batch.events), batch.message, batch.through, sub.index) == ([], b"", h.last_index, h.last_index)
    assert sub.take() is None


def test_the_batch_cache_forgets_the_oldest_first() -> None:
    cache = BatchCache(size=2)
    batches = [Batch([], i) for i in range(3)]
    for i, batch in enumerate(batches):
        cache.put((i, i, EventFilter()), batch)
    assert len(cache) == 2
    assert cache.get((0, 0, EventFilter())) is None
    assert cache.get((2, 2, EventFilter())) is batches[2]


async def test_a_wait_cancelled_leaves_nothing_for_a_publish_or_a_nudge_to_trip_on() -> None:
    h = hub()
    sub = h.subscribe()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sub.wait)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    sub.nudge()
    event = h.publish("unit", "submitted", "a.service", {})
    with anyio.fail_after(1):
        await sub.wait()  # at once: nudged, and an event follows the cursor
    assert sub.poll() == [event]
