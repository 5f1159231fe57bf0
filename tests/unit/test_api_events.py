"""``GET /v1/events`` over a real unix socket: the handshake, resumption, filters, heartbeats, errors, backpressure,
NDJSON, and how a stream ends. Tests publish into the hub directly; the API's clock is a ManualClock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from fleetlet.api import fleet_v1_app
from fleetlet.api.events import (
    CLOSE_TIMEOUT_SECONDS,
    HEARTBEAT_SECONDS,
    INDEX_TOO_OLD_CLOSE,
    NO_JOURNAL,
    NOT_A_STREAM,
    TOO_SLOW_CLOSE,
    WRITE_TIMEOUT_SECONDS,
)
from fleetlet.api.view import StaticView
from fleetlet.clock import ManualClock
from fleetlet.events.hub import EventHub
from fleetlet.events.journal_taps import JournalTaps
from fleetlet.events.model import Event, state_key
from fleetlet.registry import MemoryRegistry
from fleetlet.service.journal import Journal, MemoryJournal

FIRST = 1000  # the index the hub's first event follows
M1 = "1a2b3c4d5e6f70819293a4b5c6d7e8f9"
KNOWN_TOPICS = "unit, schedule, state, machine, leader, journal"
E = "/v1/events"
EPOCH = ManualClock().time()

Frame = dict[str, Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Api:
    client: aiohttp.ClientSession
    runner: web.AppRunner
    clock: ManualClock
    hub: EventHub
    handled: list[str]  # the event requests whose handler has returned, by query string
    returned: anyio.Event  # set each time one has
    taps: JournalTaps | None = None

    async def ws(self, query: str = "") -> aiohttp.ClientWebSocketResponse:
        return await self.client.ws_connect(f"{E}?{query}" if query else E)


@asynccontextmanager
async def serve(
    tmp_path: Path,
    *,
    hub: bool = True,
    capacity: int = 1000,
    max_lag: int = 100,
    journals: dict[str, Journal] | None = None,  # given: the stream has journal taps over these
    registry_events: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> AsyncIterator[Api]:
    clock = ManualClock()
    event_hub = EventHub(clock, capacity=capacity, max_lag=max_lag, first_index=FIRST)
    taps = JournalTaps(event_hub, StaticView(journals=journals), M1, clock) if journals is not None else None
    handled: list[str] = []
    returned = anyio.Event()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if request.path == E:
                handled.append(request.query_string)
                returned.set()

    async with MemoryRegistry(ManualClock()) as registry, anyio.create_task_group() as tg:
        app = fleet_v1_app(
            registry,
            clock=clock,
            events=event_hub if hub else None,
            journal_taps=taps,
            registry_events=registry_events,
        )
        app.middlewares.append(record)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            if taps is not None:
                await tg.start(taps.run)
            await web.UnixSite(runner, str(tmp_path / "api.sock")).start()
            connector = aiohttp.UnixConnector(str(tmp_path / "api.sock"))
            async with aiohttp.ClientSession("http://localhost", connector=connector) as client:
                yield Api(client, runner, clock, event_hub, handled, returned, taps)
        finally:
            await runner.cleanup()
            tg.cancel_scope.cancel()


def submitted(hub: EventHub, name: str) -> Event:
    return hub.publish("unit", "submitted", name, {"name": name, "hash": "abc", "desiredState": "inactive"})


def state(hub: EventHub, name: str, machine: str, active: str) -> Event:
    payload = {"name": name, "machineID": machine, "load": "loaded", "active": active, "sub": active}
    return hub.publish("state", "changed", state_key(name, machine), payload)


def doc(event: Event, *, snapshot_at: int | None = None) -> Frame:
    """The frame a client gets for ``event``; as part of a snapshot taken at index ``snapshot_at``."""
    frame: Frame = orjson.loads(event.json)
    if snapshot_at is not None:
        frame.update(index=snapshot_at, snapshot=True)
    return frame


def heartbeat(index: int, at: float = 0.0) -> Frame:
    return {"type": "heartbeat", "index": index, "time": EPOCH + at}


def frames_of(data: str) -> list[Frame]:
    """The frames of one websocket message: one JSON document a line."""
    return [orjson.loads(line) for line in data.split("\n")]


async def receive(ws: aiohttp.ClientWebSocketResponse, count: int = 1) -> list[Frame]:
    """The next ``count`` frames, from as many messages as they came in."""
    found: list[Frame] = []
    with anyio.fail_after(5):
        while len(found) < count:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, msg
            found.extend(frames_of(msg.data))
    assert len(found) == count, found
    return found


async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[Frame], int | None, str]:
    """Every frame left, then the close code and reason."""
    found: list[Frame] = []
    with anyio.fail_after(5):
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                assert msg.type is WSMsgType.CLOSE, msg
                return found, msg.data, msg.extra or ""
            found.extend(frames_of(msg.data))


def error(code: int, message: str) -> Frame:
    return {"error": {"code": code, "message": message}}


# --- the request -------------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("index=x", "index must be a non-negative integer, not 'x'"),
        ("index=-1", "index must be a non-negative integer, not '-1'"),
        ("index=", "index must be a non-negative integer, not ''"),
        ("index=1&index=2", "too many values for index"),
        ("topic=units", f"unknown topic 'units': expected one of {KNOWN_TOPICS}"),
        ("topic=state&topic=bogus:x", f"unknown topic 'bogus': expected one of {KNOWN_TOPICS}"),
        ("machine=a&machine=b", "too many values for machine"),
        ("format=json", "format must be ndjson, or absent for a websocket, not 'json'"),
    ],
)
async def test_bad_parameters_are_a_400_before_any_upgrade(query: str, message: str, tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        forms = [f"{E}?{query}"] if "format" in query else [f"{E}?{query}", f"{E}?{query}&format=ndjson"]
        for url in forms:
            resp = await api.client.get(url)
            assert (resp.status, orjson.loads(await resp.read())) == (400, error(400, message))
        with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
            await api.ws(query)
        assert failed.value.status == 400


@pytest.mark.anyio
async def test_a_plain_get_is_told_to_use_a_websocket_or_ndjson(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        resp = await api.client.get(E)
        assert (resp.status, orjson.loads(await resp.read())) == (400, error(400, NOT_A_STREAM))


@pytest.mark.anyio
@pytest.mark.parametrize("query", ["", "?format=ndjson", "?index=5"])
async def test_an_api_without_a_hub_has_no_event_stream(query: str, tmp_path: Path) -> None:
    async with serve(tmp_path, hub=False) as api:
        resp = await api.client.get(E + query)
        body = error(404, "no event stream on this endpoint")
        assert (resp.status, orjson.loads(await resp.read())) == (404, body)


@pytest.mark.anyio
async def test_the_stream_is_fleetlets_own_resource(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        resp = await api.client.get("/fleet/v1/events?format=ndjson")
        assert (resp.status, orjson.loads(await resp.read())) == (404, error(404, "resource not found"))


# --- snapshot, then live -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_without_an_index_the_snapshot_then_a_heartbeat_then_live_events(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        b = submitted(api.hub, "b.service")
        a = submitted(api.hub, "a.service")
        running = state(api.hub, "a.service", "m1", "activating")
        running = state(api.hub, "a.service", "m1", "active")  # replaces the previous state of the same key
        api.hub.publish("unit", "destroyed", "gone.service", {"name": "gone.service"}, gone=True)
        at = api.hub.last_index
        ws = await api.ws()
        # By topic, then key: one event per live key, at the index the live events continue after.
        assert await receive(ws, 4) == [doc(e, snapshot_at=at) for e in (a, b, running)] + [heartbeat(at)]
        live = [submitted(api.hub, "c.service"), state(api.hub, "b.service", "m2", "active")]
        assert await receive(ws, 2) == [doc(e) for e in live]
        assert live[0].index == at + 1
        await ws.close()


@pytest.mark.anyio
async def test_an_empty_hub_sends_an_empty_snapshot_closed_by_its_heartbeat(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        ws = await api.ws()
        assert await receive(ws) == [heartbeat(FIRST)]
        (first,) = [submitted(api.hub, "a.service")]
        assert await receive(ws) == [doc(first)]
        await ws.close()


@pytest.mark.anyio
async def test_events_published_while_the_snapshot_is_sent_follow_it_once(tmp_path: Path) -> None:
    """Subscribing and taking the snapshot at once: nothing between them lost, nothing twice."""
    async with serve(tmp_path) as api:
        names = [f"u{i:03}.service" for i in range(600)]  # several batches of snapshot
        for name in names:
            submitted(api.hub, name)
        at = api.hub.last_index
        ws = await api.ws()
        later = [submitted(api.hub, name) for name in names[:3]]  # before the client read anything
        frames = await receive(ws, len(names) + 1 + len(later))
    assert [f["key"] for f in frames[: len(names)]] == names
    assert {f["index"] for f in frames[: len(names)]} == {at}
    assert frames[len(names)] == heartbeat(at)
    assert frames[len(names) + 1 :] == [doc(e) for e in later]


# --- resumption --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_resuming_after_an_index_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        published = [submitted(api.hub, f"u{i}.service") for i in range(10)]
        ws = await api.ws(f"index={published[3].index}")
        assert await receive(ws, 6) == [doc(e) for e in published[4:]]
        more = [submitted(api.hub, f"v{i}.service") for i in range(3)]
        got = (await receive(ws, 3))[0]  # in one message; the client takes the first, then goes
        await ws.close()
        assert got == doc(more[0])
        published += [submitted(api.hub, "w.service")]
        ws = await api.ws(f"index={got['index']}")
        assert await receive(ws, 3) == [doc(e) for e in [*more[1:], published[-1]]]
        await ws.close()


@pytest.mark.anyio
async def test_resuming_at_the_latest_index_sends_only_what_comes_next(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        submitted(api.hub, "a.service")
        ws = await api.ws(f"index={api.hub.last_index}")
        event = submitted(api.hub, "b.service")
        assert await receive(ws) == [doc(event)]
        await ws.close()


@pytest.mark.anyio
@pytest.mark.parametrize("index", [0, FIRST, FIRST + 5])
async def test_an_index_aged_out_of_the_ring_is_an_error_frame_and_close_4410(index: int, tmp_path: Path) -> None:
    async with serve(tmp_path, capacity=4) as api:
        for i in range(10):
            submitted(api.hub, f"u{i}.service")
        ws = await api.ws(f"index={index}")
        frames, code, reason = await until_closed(ws)
    assert code == INDEX_TOO_OLD_CLOSE == 4410
    assert reason == "index too old: start again without one"
    message = f"index {index} is older than the oldest event kept ({FIRST + 7}): start again without one"
    assert frames == [{"type": "error", "code": "index-too-old", "message": message, "index": FIRST + 10}]


@pytest.mark.anyio
async def test_an_index_from_the_future_is_too_old_as_well(tmp_path: Path) -> None:
    """An index this hub never made (a restarted agent's index is always newer): start again."""
    async with serve(tmp_path) as api:
        ws = await api.ws(f"index={FIRST + 50}")
        frames, code, _ = await until_closed(ws)
    assert (code, [f["code"] for f in frames]) == (4410, ["index-too-old"])


# --- filters -----------------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("topic=state", ["hello.service@m1", "hello.service@m2", "other.service@m1"]),
        ("topic=state:hello*@*", ["hello.service@m1", "hello.service@m2"]),
        ("topic=state:*@m2&topic=unit", ["hello.service", "hello.service@m2"]),
        ("machine=m1", ["hello.service@m1", "other.service@m1"]),
        ("topic=unit&machine=m1", []),
    ],
)
async def test_filters_apply_to_the_snapshot_and_to_live_events(query: str, keys: list[str], tmp_path: Path) -> None:
    def publish_all(hub: EventHub) -> list[Event]:
        return [
            submitted(hub, "hello.service"),
            state(hub, "hello.service", "m1", "active"),
            state(hub, "hello.service", "m2", "active"),
            state(hub, "other.service", "m1", "failed"),
        ]

    async with serve(tmp_path) as api:
        publish_all(api.hub)
        at = api.hub.last_index
        ws = await api.ws(query)
        snapshot = await receive(ws, len(keys) + 1)
        assert [f["key"] for f in snapshot[:-1]] == sorted(keys, key=lambda k: ("@" in k, k))
        assert all(f["snapshot"] is True for f in snapshot[:-1])
        assert snapshot[-1] == heartbeat(at)
        live = [e for e in publish_all(api.hub) if e.key in keys]
        await api.clock.settle()
        api.clock.advance(HEARTBEAT_SECONDS)
        assert await receive(ws, len(live) + 1) == [doc(e) for e in live] + [heartbeat(at + 4, HEARTBEAT_SECONDS)]
        await ws.close()


@pytest.mark.anyio
async def test_subscribers_at_the_same_index_get_the_same_message_and_a_filtered_one_its_own(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        published = [submitted(api.hub, "a.service"), state(api.hub, "a.service", M1, "active")]
        wss = [await api.ws(f"index={FIRST}") for _ in range(2)]
        filtered = await api.ws(f"index={FIRST}&topic=state")
        with anyio.fail_after(5):
            messages = [(await ws.receive()).data for ws in [*wss, filtered]]
            async with api.client.get(f"{E}?index={FIRST}&format=ndjson") as answer:
                ndjson = await answer.content.readline() + await answer.content.readline()
        whole = b"\n".join(e.json for e in published).decode()
        assert messages == [whole, whole, published[1].json.decode()]
        assert ndjson.decode() == whole + "\n"  # the same bytes, a line each
        for ws in [*wss, filtered]:
            await ws.close()


# --- heartbeats --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_heartbeats_come_every_few_seconds_with_the_index_the_stream_is_at(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        ws = await api.ws(f"index={FIRST}&topic=state")
        await api.clock.settle()
        api.clock.advance(HEARTBEAT_SECONDS)
        assert await receive(ws) == [heartbeat(FIRST, HEARTBEAT_SECONDS)]
        # Filtered out: no frame of its own, but the next heartbeat moves past it.
        skipped = submitted(api.hub, "a.service")
        await api.clock.settle()
        api.clock.advance(HEARTBEAT_SECONDS - 1)
        shown = state(api.hub, "a.service", "m1", "active")
        assert await receive(ws) == [doc(shown)]
        await api.clock.settle()
        api.clock.advance(1)
        assert await receive(ws) == [heartbeat(shown.index, 2 * HEARTBEAT_SECONDS)]
        assert skipped.index < shown.index
        await ws.close()


@pytest.mark.anyio
async def test_a_heartbeat_carries_the_index_past_filtered_out_events(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        ws = await api.ws(f"index={FIRST}&topic=machine")
        for i in range(3):
            submitted(api.hub, f"u{i}.service")
        await api.clock.settle()
        api.clock.advance(HEARTBEAT_SECONDS)
        assert await receive(ws) == [heartbeat(FIRST + 3, HEARTBEAT_SECONDS)]
        await ws.close()


# --- NDJSON ------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ndjson_carries_the_same_frames_one_a_line(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        a = submitted(api.hub, "a.service")
        at = api.hub.last_index
        resp = await api.client.get(f"{E}?format=ndjson")
        assert (resp.status, resp.headers["Content-Type"]) == (200, "application/x-ndjson")
        assert resp.headers["Transfer-Encoding"] == "chunked"
        with anyio.fail_after(5):
            assert await resp.content.readline() == orjson.dumps(doc(a, snapshot_at=at)) + b"\n"
            assert orjson.loads(await resp.content.readline()) == heartbeat(at)
            live = [submitted(api.hub, "b.service"), submitted(api.hub, "c.service")]
            assert [await resp.content.readline() for _ in live] == [e.json + b"\n" for e in live]
            api.clock.advance(HEARTBEAT_SECONDS)
            assert orjson.loads(await resp.content.readline()) == heartbeat(live[-1].index, HEARTBEAT_SECONDS)
        resp.close()


@pytest.mark.anyio
async def test_ndjson_resumes_and_ends_after_an_index_too_old_line(tmp_path: Path) -> None:
    async with serve(tmp_path, capacity=2) as api:
        published = [submitted(api.hub, f"u{i}.service") for i in range(4)]
        resp = await api.client.get(f"{E}?format=ndjson&index={published[1].index}")
        with anyio.fail_after(5):
            assert (await resp.content.readline(), await resp.content.readline()) == (
                published[2].json + b"\n",
                published[3].json + b"\n",
            )
        resp.close()
        resp = await api.client.get(f"{E}?format=ndjson&index={FIRST}")
        assert resp.status == 200
        with anyio.fail_after(5):
            lines = (await resp.read()).splitlines()
        assert [orjson.loads(line)["code"] for line in lines] == ["index-too-old"]


# --- backpressure ------------------------------------------------------------------------------------------------


BIG = "x" * 100_000  # a few of these fill the socket's buffers of a client that reads nothing


async def publish_paced(api: Api, fast: aiohttp.ClientWebSocketResponse, count: int) -> list[Event]:
    """Publish big events one at a time, each once the fast client has it: only a client that does not read
    falls behind."""
    published = []
    for i in range(count):
        event = api.hub.publish("unit", "replaced", f"u{i}.service", {"name": f"u{i}.service", "blob": BIG})
        assert await receive(fast) == [doc(event)]
        published.append(event)
    return published


@pytest.mark.anyio
async def test_a_subscriber_that_falls_behind_is_closed_while_a_fast_one_gets_everything(tmp_path: Path) -> None:
    async with serve(tmp_path, max_lag=4) as api:
        fast = await api.ws(f"index={FIRST}")
        slow = await api.ws(f"index={FIRST}")
        await api.clock.settle()
        api.clock.advance(1)  # so that its writes get stuck well after the first heartbeat's look at it
        published = await publish_paced(api, fast, 40)
        # The slow one's writes are stuck and its cursor lags: it has not gained between two looks (the
        # heartbeats'), and the second ends it, before any write has been stuck for WRITE_TIMEOUT_SECONDS.
        for tick in (1, 2):
            await api.clock.settle()
            api.clock.advance(HEARTBEAT_SECONDS)
            assert await receive(fast) == [heartbeat(published[-1].index, 1 + tick * HEARTBEAT_SECONDS)]
        frames, code, reason = await until_closed(slow)
        # It got what was handed to its connection before it fell behind, and the error says where to resume.
        *events, last = frames
        index = last["index"]
        assert last == {
            "type": "error",
            "code": "too-slow",
            "message": f"this connection fell too far behind the stream: resume from index {index}",
            "index": index,
        }
        assert (code, reason) == (TOO_SLOW_CLOSE, f"too slow: resume from index {index}")
        assert 0 < len(events) < 40 - 4
        assert events == [doc(e) for e in published[: len(events)]]
        assert index == events[-1]["index"]
        # Resumed where it said: the rest, without a gap or a duplicate, while the fast one goes on.
        resumed = await api.ws(f"index={index}")
        assert await receive(resumed, 40 - len(events)) == [doc(e) for e in published[len(events) :]]
        more = await publish_paced(api, fast, 2)
        assert await receive(resumed, 2) == [doc(e) for e in more]
        await fast.close()
        await resumed.close()


@pytest.mark.anyio
async def test_a_write_stuck_for_less_than_the_limit_is_waited_for(tmp_path: Path) -> None:
    async with serve(tmp_path, max_lag=1000) as api:
        fast = await api.ws(f"index={FIRST}")
        slow = await api.ws(f"index={FIRST}")
        published = await publish_paced(api, fast, 20)
        await api.clock.settle()
        api.clock.advance(WRITE_TIMEOUT_SECONDS - 1)  # one heartbeat, sent at once
        assert await receive(fast) == [heartbeat(published[-1].index, WRITE_TIMEOUT_SECONDS - 1)]
        # Reading again, it gets every event, and the heartbeat that came due while a write was stuck right after
        # that write, with the index of the event before it.
        frames = await receive(slow, 21)
        (at,) = [i for i, f in enumerate(frames) if f["type"] == "heartbeat"]
        assert 0 < at < 20
        assert frames[at] == heartbeat(frames[at - 1]["index"], WRITE_TIMEOUT_SECONDS - 1)
        assert frames[:at] + frames[at + 1 :] == [doc(e) for e in published]
        await fast.close()
        await slow.close()


@pytest.mark.anyio
async def test_a_write_stuck_for_the_limit_is_too_slow_however_little_it_lags(tmp_path: Path) -> None:
    async with serve(tmp_path, max_lag=1000) as api:
        fast = await api.ws(f"index={FIRST}")
        slow = await api.ws(f"index={FIRST}")
        published = await publish_paced(api, fast, 20)
        for tick in (1, 2):
            await api.clock.settle()
            api.clock.advance(HEARTBEAT_SECONDS)
            assert await receive(fast) == [heartbeat(published[-1].index, tick * HEARTBEAT_SECONDS)]
        assert api.clock.monotonic() == WRITE_TIMEOUT_SECONDS
        frames, code, reason = await until_closed(slow)
        assert (code, frames[-1]["code"]) == (TOO_SLOW_CLOSE, "too-slow")
        assert reason == f"too slow: resume from index {frames[-2]['index']}"
        assert frames[:-1] == [doc(e) for e in published[: len(frames) - 1]]
        await fast.close()


@pytest.mark.anyio
async def test_a_client_that_never_reads_again_is_dropped_after_the_close_timeout(tmp_path: Path) -> None:
    async with serve(tmp_path, max_lag=4) as api:
        fast = await api.ws(f"index={FIRST}")
        slow = await api.ws(f"index={FIRST}")
        await publish_paced(api, fast, 40)
        for _ in range(2):  # too slow: the error and the close frame are stuck behind the rest
            await api.clock.settle()
            api.clock.advance(HEARTBEAT_SECONDS)
        await api.clock.settle()
        assert not api.returned.is_set()
        api.clock.advance(CLOSE_TIMEOUT_SECONDS)
        with anyio.fail_after(5):
            await api.returned.wait()
        assert api.handled == [f"index={FIRST}"]
        with anyio.fail_after(5):
            while (msg := await slow.receive()).type is WSMsgType.TEXT:
                assert {f["topic"] for f in frames_of(msg.data)} == {"unit"}  # events only: the error was dropped
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)  # cut, without a close frame
        await fast.close()


@pytest.mark.anyio
async def test_a_subscriber_the_ring_left_behind_is_too_slow_when_it_reads_again(tmp_path: Path) -> None:
    async with serve(tmp_path, capacity=8) as api:
        fast = await api.ws(f"index={FIRST}")
        slow = await api.ws(f"index={FIRST}")
        published = await publish_paced(api, fast, 40)
        frames, code, reason = await until_closed(slow)
        *events, last = frames
        assert events == [doc(e) for e in published[: len(events)]]
        assert last["code"] == "too-slow"
        assert (code, reason) == (TOO_SLOW_CLOSE, f"too slow: resume from index {events[-1]['index']}")
        # Resuming from there is too late: the ring no longer has what came next.
        resumed = await api.ws(f"index={last['index']}")
        assert [f["code"] for f in (await until_closed(resumed))[0]] == ["index-too-old"]
        await fast.close()


# --- the end of a stream -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_stream_ends_when_its_websocket_client_closes(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        ws = await api.ws("topic=unit")
        await receive(ws)  # the empty snapshot's heartbeat
        await ws.close()
        with anyio.fail_after(5):
            await api.returned.wait()
        assert api.handled == ["topic=unit"]
        assert ws.close_code == 1000


@pytest.mark.anyio
async def test_an_ndjson_stream_ends_at_the_next_check_after_its_client_goes(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        resp = await api.client.get(f"{E}?format=ndjson")
        with anyio.fail_after(5):
            assert orjson.loads(await resp.content.readline()) == heartbeat(FIRST)
            resp.close()
            while not api.returned.is_set():
                await api.clock.settle()
                api.clock.advance(HEARTBEAT_SECONDS)
                await api.clock.settle()
        assert api.handled == ["format=ndjson"]


@pytest.mark.anyio
async def test_the_servers_shutdown_closes_every_stream_at_once(tmp_path: Path) -> None:
    # aiohttp waits up to 60 s for the handlers of open connections; the streams must not make it wait.
    with anyio.fail_after(10):
        async with serve(tmp_path) as api:
            ws = await api.ws()
            resp = await api.client.get(f"{E}?format=ndjson&index={FIRST}")
            assert await receive(ws) == [heartbeat(FIRST)]
            event = submitted(api.hub, "a.service")
            assert await receive(ws) == [doc(event)]
            assert await resp.content.readline() == event.json + b"\n"
            ends: list[object] = []

            async def read_to_the_end() -> None:
                ends.append(await until_closed(ws))  # reading also answers the server's close
                ends.append(await resp.read())

            async with anyio.create_task_group() as tg:
                tg.start_soon(read_to_the_end)
                await api.runner.cleanup()
            assert sorted(api.handled) == ["", f"format=ndjson&index={FIRST}"]
            # The websocket is told to go away; the NDJSON answer ends as an answer ends, not cut.
            assert ends == [([], 1001, "server shutting down"), b""]


# --- the journal topic -------------------------------------------------------------------------------------------


def journal_frame(index: int, unit: str, message: str, at: float = 0.0) -> Frame:
    payload = {"name": unit, "machineID": M1, "stream": "stdout", "message": message, "time": EPOCH + at}
    return {"index": index, "time": EPOCH + at, "topic": "journal", "type": "entry", "key": unit, "payload": payload}


def two_journals() -> dict[str, MemoryJournal]:
    clock = ManualClock()  # the journals' own: the entries are stamped at EPOCH
    return {"a.service": MemoryJournal("a.service", clock), "b.service": MemoryJournal("b.service", clock)}


@pytest.mark.anyio
async def test_a_stream_that_does_not_ask_for_the_journal_never_gets_it(tmp_path: Path) -> None:
    journals = two_journals()
    async with serve(tmp_path, journals=dict(journals)) as api:
        every, units = await api.ws(), await api.ws("topic=unit&topic=state")
        assert await receive(every) == await receive(units) == [heartbeat(FIRST)]
        journals["a.service"].write("nobody asked", "stdout")
        event = submitted(api.hub, "c.service")
        assert await receive(every) == await receive(units) == [doc(event)]
        assert api.taps is not None
        assert api.taps.tapped == frozenset()
        assert api.hub.last_index == FIRST + 1  # the entry was no event at all
        await every.close()
        await units.close()


@pytest.mark.anyio
async def test_asking_for_a_units_journal_gets_its_entries_among_the_other_events(tmp_path: Path) -> None:
    journals = two_journals()
    async with serve(tmp_path, journals=dict(journals)) as api:
        ws = await api.ws("topic=journal:a.service&topic=unit")
        assert await receive(ws) == [heartbeat(FIRST)]  # journal entries are never in a snapshot
        journals["b.service"].write("not asked for", "stdout")
        journals["a.service"].write("Hello World", "stdout")
        # b's entry was no event: nobody asked for b.
        assert await receive(ws) == [journal_frame(FIRST + 1, "a.service", "Hello World")]
        event = submitted(api.hub, "c.service")
        journals["a.service"].write("again", "stdout")
        assert await receive(ws, 2) == [doc(event), journal_frame(FIRST + 3, "a.service", "again")]
        await ws.close()


@pytest.mark.anyio
async def test_two_streams_share_one_tap_which_stops_when_both_are_gone(tmp_path: Path) -> None:
    journals = two_journals()
    async with serve(tmp_path, journals=dict(journals)) as api:
        first = await api.ws("topic=journal:a.service")
        second = await api.ws("topic=journal:*")
        assert api.taps is not None
        assert api.taps.tapped == {"a.service", "b.service"}
        assert await receive(first) == await receive(second) == [heartbeat(FIRST)]
        journals["a.service"].write("once", "stdout")
        assert await receive(first) == await receive(second) == [journal_frame(FIRST + 1, "a.service", "once")]
        await second.close()
        with anyio.fail_after(5):
            await api.returned.wait()
        await anyio.wait_all_tasks_blocked()
        assert api.taps.tapped == {"a.service"}
        await first.close()
        with anyio.fail_after(5):
            while len(api.handled) < 2:
                await anyio.wait_all_tasks_blocked()
        await anyio.wait_all_tasks_blocked()
        assert api.taps.tapped == frozenset()
        journals["a.service"].write("nobody listens", "stdout")
        await anyio.wait_all_tasks_blocked()
        assert api.hub.last_index == FIRST + 1


@pytest.mark.anyio
async def test_a_journal_stream_resumes_after_an_index_with_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    journals = two_journals()
    async with serve(tmp_path, journals=dict(journals)) as api:
        query = "topic=journal:a.service&topic=unit"
        ws = await api.ws(query)
        # Another subscriber keeps the tap open while the first one is away.
        keeper = await api.ws("topic=journal:a*")
        assert await receive(ws) == await receive(keeper) == [heartbeat(FIRST)]
        journals["a.service"].write("one", "stdout")
        (got,) = await receive(ws)
        assert await receive(keeper) == [got]
        await ws.close()
        missed = submitted(api.hub, "c.service")
        journals["a.service"].write("two", "stdout")
        assert await receive(keeper) == [journal_frame(FIRST + 3, "a.service", "two")]
        ws = await api.ws(f"{query}&index={got['index']}")
        assert await receive(ws, 2) == [doc(missed), journal_frame(FIRST + 3, "a.service", "two")]
        await ws.close()
        await keeper.close()


@pytest.mark.anyio
async def test_the_journal_topic_comes_as_ndjson_too(tmp_path: Path) -> None:
    journals = two_journals()
    async with serve(tmp_path, journals=dict(journals)) as api:
        resp = await api.client.get(f"{E}?format=ndjson&topic=journal:b*")
        with anyio.fail_after(5):
            assert orjson.loads(await resp.content.readline()) == heartbeat(FIRST)
            journals["b.service"].write("line", "stdout")
            assert orjson.loads(await resp.content.readline()) == journal_frame(FIRST + 1, "b.service", "line")
        resp.close()


@pytest.mark.anyio
@pytest.mark.parametrize("topic", ["journal", "journal:a.service", "unit&topic=journal:*"])
async def test_an_endpoint_without_journal_taps_refuses_the_journal_topic(topic: str, tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        resp = await api.client.get(f"{E}?format=ndjson&topic={topic}")
        assert (resp.status, orjson.loads(await resp.read())) == (400, error(400, NO_JOURNAL))
        with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
            await api.ws(f"topic={topic}")
        assert failed.value.status == 400
