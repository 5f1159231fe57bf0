"""``Client.events()`` against the real event stream on a unix socket: snapshot then changes, filters, resumption
across dropped connections and server restarts, the errors it raises. The server's clock paces heartbeats and the
client's paces its reconnections: both are ManualClocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from anyio.streams.memory import MemoryObjectReceiveStream

from fleetlet.api import fleet_v1_app
from fleetlet.api.events import HEARTBEAT_SECONDS
from fleetlet.client import (
    RECONNECT_MAX,
    APIRequestFailed,
    Client,
    EndpointUnreachable,
    Event,
    EventsLost,
    UnexpectedResponse,
)
from fleetlet.clock import ManualClock
from fleetlet.events.hub import EventHub
from fleetlet.events.model import Event as HubEvent
from fleetlet.events.model import Topic
from fleetlet.registry import MemoryRegistry

FIRST = 1000
BIG = "x" * 100_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Server:
    """The API over ``hub`` on a unix socket, which tests stop and start again."""

    path: Path
    hub: EventHub
    clock: ManualClock = field(default_factory=ManualClock)  # the server's: heartbeats
    queries: list[str] = field(default_factory=list)  # of every event stream request, in order
    _runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.path}"

    async def start(self, hub: EventHub | None = None) -> None:
        self.hub = hub or self.hub

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path == "/v1/events":
                self.queries.append(request.query_string)
            return await handler(request)

        app = fleet_v1_app(MemoryRegistry(ManualClock()), clock=self.clock, events=self.hub)
        app.middlewares.append(record)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def publish(self, topic: Topic, key: str, **payload: Any) -> HubEvent:
        return self.hub.publish(topic, "changed", key, payload)


@asynccontextmanager
async def served(tmp_path: Path, **hub: Any) -> AsyncIterator[Server]:
    clock = ManualClock()
    server = Server(tmp_path / "api.sock", EventHub(clock, first_index=FIRST, **hub), clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Consumer:
    """A task reading ``Client.events()``, handing each event over only when the test takes it."""

    clock: ManualClock  # the client's: reconnection waits
    events: MemoryObjectReceiveStream[Event]
    failure: list[BaseException]

    async def take(self, count: int = 1) -> list[Event]:
        """The next ``count`` events, moving the client's clock through its reconnection waits as needed."""
        found: list[Event] = []
        with anyio.fail_after(10):
            while len(found) < count:
                await self.clock.settle()
                try:
                    found.append(self.events.receive_nowait())
                    continue
                except anyio.WouldBlock:
                    pass
                except anyio.EndOfStream:
                    raise AssertionError(f"the stream ended: {self.failure}") from None
                if self.clock.next_deadline is not None:
                    self.clock.advance(self.clock.next_deadline - self.clock.monotonic())
        return found

    async def failed(self) -> BaseException:
        """What ended the stream, moving the client's clock through its reconnection waits."""
        with anyio.fail_after(10):
            while not self.failure:
                await self.clock.settle()
                if self.failure:
                    break
                with pytest.raises(anyio.WouldBlock):
                    self.events.receive_nowait()
                if self.clock.next_deadline is not None:
                    self.clock.advance(self.clock.next_deadline - self.clock.monotonic())
        return self.failure[0]


@asynccontextmanager
async def consuming(endpoint: str, **options: Any) -> AsyncIterator[Consumer]:
    clock = ManualClock()
    send, receive = anyio.create_memory_object_stream[Event]()
    failure: list[BaseException] = []

    async def consume(fleet: Client) -> None:
        with send:
            try:
                async with aclosing(fleet.events(**options)) as stream:
                    async for event in stream:
                        await send.send(event)
            except Exception as e:
                failure.append(e)

    with receive:
        async with Client(endpoint, clock=clock) as fleet, anyio.create_task_group() as tg:
            tg.start_soon(consume, fleet)
            yield Consumer(clock, receive, failure)
            tg.cancel_scope.cancel()


def mirror(event: HubEvent, *, snapshot_at: int | None = None) -> Event:
    """What the client yields for a hub's event; as part of a snapshot taken at ``snapshot_at``."""
    index = event.index if snapshot_at is None else snapshot_at
    snapshot = snapshot_at is not None
    return Event(index, event.time, event.topic, event.type, event.key, dict(event.payload), snapshot)


# --- the stream --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_snapshot_then_every_change_in_order(tmp_path: Path) -> None:
    async with served(tmp_path) as server:
        a = server.publish("unit", "a.service", name="a.service")
        m = server.publish("machine", "m1", id="m1", metadata={"region": "eu"})
        at = server.hub.last_index
        async with consuming(server.endpoint) as consumer:
            assert await consumer.take(2) == [mirror(a, snapshot_at=at), mirror(m, snapshot_at=at)]
            live = [server.publish("state", "a.service@m1", name="a.service", active="active") for _ in range(3)]
            assert await consumer.take(3) == [mirror(e) for e in live]
    assert server.queries == ["alt=json"]


@pytest.mark.anyio
async def test_an_index_gives_the_changes_after_it_and_no_snapshot(tmp_path: Path) -> None:
    async with served(tmp_path) as server:
        published = [server.publish("unit", f"u{i}.service") for i in range(4)]
        async with consuming(server.endpoint, index=published[1].index) as consumer:
            assert await consumer.take(2) == [mirror(e) for e in published[2:]]
    assert server.queries == [f"alt=json&index={published[1].index}"]


@pytest.mark.anyio
async def test_topics_and_machine_filter_the_stream(tmp_path: Path) -> None:
    async with served(tmp_path) as server:
        options = {"topics": ["state:hello*", "machine"], "machine": "m1", "index": FIRST}
        async with consuming(server.endpoint, **options) as consumer:
            shown = [
                server.publish("machine", "m1", id="m1"),
                server.publish("state", "hello.service@m1", name="hello.service", machineID="m1"),
            ]
            server.publish("state", "hello.service@m2", name="hello.service", machineID="m2")
            server.publish("state", "other.service@m1", name="other.service", machineID="m1")
            server.publish("unit", "hello.service", name="hello.service")
            last = server.publish("machine", "m1", id="m1", metadata={"a": "b"})
            assert await consumer.take(3) == [mirror(e) for e in [*shown, last]]
    assert server.queries == [f"alt=json&topic=state:hello*&topic=machine&machine=m1&index={FIRST}"]


@pytest.mark.anyio
async def test_the_stream_over_tcp(tmp_path: Path) -> None:
    hub = EventHub(ManualClock(), first_index=FIRST)
    runner = web.AppRunner(fleet_v1_app(MemoryRegistry(ManualClock()), clock=ManualClock(), events=hub))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        async with consuming(f"http://{host}:{port}", index=FIRST) as consumer:
            published = [hub.publish("unit", "submitted", f"u{i}.service", {}) for i in range(2)]
            assert await consumer.take(2) == [mirror(e) for e in published]
    finally:
        await runner.cleanup()


# --- resumption --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_server_restart_is_resumed_after_the_last_event_without_loss_or_duplicate(tmp_path: Path) -> None:
    async with served(tmp_path) as server, consuming(server.endpoint, index=FIRST) as consumer:
        first = server.publish("unit", "a.service")
        assert await consumer.take() == [mirror(first)]
        await server.stop()
        missed = [server.publish("unit", f"u{i}.service") for i in range(3)]  # while the server is down
        await consumer.clock.advance_to_next()  # a failed attempt: nothing listens
        await server.start()
        assert await consumer.take(3) == [mirror(e) for e in missed]
        later = server.publish("unit", "b.service")
        assert await consumer.take() == [mirror(later)]
        assert server.queries[0] == f"alt=json&index={FIRST}"
        assert server.queries[-1] == f"alt=json&index={first.index}"


@pytest.mark.anyio
async def test_heartbeats_move_the_resume_index_past_filtered_out_events(tmp_path: Path) -> None:
    async with served(tmp_path) as server, consuming(server.endpoint, topics=["machine"]) as consumer:
        for i in range(3):
            server.publish("unit", f"u{i}.service")
        await server.clock.settle()
        server.clock.advance(HEARTBEAT_SECONDS)
        await server.clock.settle()
        await server.stop()  # after the heartbeat: the client reads it before the close
        await server.start()
        shown = server.publish("machine", "m1", id="m1")
        assert await consumer.take() == [mirror(shown)]
        assert server.queries == ["alt=json&topic=machine", f"alt=json&topic=machine&index={FIRST + 3}"]


@pytest.mark.anyio
async def test_a_restart_with_a_new_hub_starts_a_stream_without_index_over_with_a_snapshot(tmp_path: Path) -> None:
    async with served(tmp_path) as server, consuming(server.endpoint) as consumer:
        old = server.publish("unit", "a.service")
        assert await consumer.take() == [mirror(old, snapshot_at=FIRST + 1)]
        await server.stop()
        # The agent's next run: a new hub, whose indexes all come after the old one's, holding what exists now.
        hub = EventHub(server.clock, first_index=FIRST + 100)
        now = [hub.publish("unit", "changed", "a.service", {}), hub.publish("unit", "changed", "b.service", {})]
        await server.start(hub)
        assert await consumer.take(2) == [mirror(e, snapshot_at=FIRST + 102) for e in now]
        later = hub.publish("unit", "changed", "c.service", {})
        assert await consumer.take() == [mirror(later)]
        assert server.queries == ["alt=json", f"alt=json&index={FIRST + 1}", "alt=json"]


@pytest.mark.anyio
async def test_a_stream_begun_at_an_index_the_server_lost_raises_events_lost(tmp_path: Path) -> None:
    async with served(tmp_path) as server, consuming(server.endpoint, index=FIRST) as consumer:
        old = server.publish("unit", "a.service")
        assert await consumer.take() == [mirror(old)]
        await server.stop()
        await server.start(EventHub(server.clock, first_index=FIRST + 100))
        failure = await consumer.failed()
    assert isinstance(failure, EventsLost)
    assert failure.index == old.index
    assert str(failure) == f"the events after index {old.index} are no longer kept: start again without an index"


@pytest.mark.anyio
async def test_a_consumer_too_slow_for_the_server_is_resumed_without_loss_or_duplicate(tmp_path: Path) -> None:
    async with served(tmp_path, max_lag=4) as server, consuming(server.endpoint, index=FIRST) as consumer:
        connector = aiohttp.UnixConnector(str(server.path))
        async with aiohttp.ClientSession("http://localhost", connector=connector) as session:
            fast = await session.ws_connect(f"/v1/events?index={FIRST}")
            published = []
            for i in range(40):  # the consumer takes none of them yet: its connection's buffers fill up
                published.append(server.publish("unit", f"u{i}.service", blob=BIG))
                assert (await fast.receive()).json()["index"] == published[-1].index
            for _ in range(2):  # two looks at a lagging subscriber that did not catch up: too slow
                await server.clock.settle()
                server.clock.advance(HEARTBEAT_SECONDS)
            assert await consumer.take(40) == [mirror(e) for e in published]
            await fast.close()
    queries = [q for q in server.queries if q.startswith("alt=json")]  # the client's, not the fast reader's
    assert len(queries) == 2
    resumed_at = int(queries[1].removeprefix("alt=json&index="))
    assert FIRST < resumed_at < published[-1].index


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_without_resume_a_dropped_stream_is_unreachable(tmp_path: Path) -> None:
    async with served(tmp_path) as server, consuming(server.endpoint, resume=False) as consumer:
        event = server.publish("unit", "a.service")
        assert await consumer.take() == [mirror(event, snapshot_at=event.index)]
        await server.stop()
        failure = await consumer.failed()
    assert isinstance(failure, EndpointUnreachable)
    assert failure.reason == "the event stream closed (1001 server shutting down)"


@pytest.mark.anyio
async def test_reconnection_backs_off_and_gives_up_after_reconnect_for(tmp_path: Path) -> None:
    async with served(tmp_path) as server, consuming(server.endpoint, reconnect_for=10) as consumer:
        event = server.publish("unit", "a.service")
        assert await consumer.take() == [mirror(event, snapshot_at=event.index)]
        await server.stop()
        waits = []
        with anyio.fail_after(10):
            while not consumer.failure:
                before = consumer.clock.monotonic()
                if consumer.clock.next_deadline is None:
                    await consumer.clock.settle()
                    continue
                waits.append(round(await consumer.clock.advance_to_next() - before, 3))
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, RECONNECT_MAX, RECONNECT_MAX, RECONNECT_MAX, RECONNECT_MAX]
    (failure,) = consumer.failure
    assert isinstance(failure, EndpointUnreachable)
    assert failure.reason == "connection refused"  # the stopped server's socket file is still there


@pytest.mark.anyio
async def test_an_endpoint_unreachable_from_the_start_fails_at_once(tmp_path: Path) -> None:
    async with consuming(f"unix://{tmp_path / 'nothing.sock'}") as consumer:
        failure = await consumer.failed()
        assert consumer.clock.monotonic() == 0
    assert isinstance(failure, EndpointUnreachable)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        ({"topics": ["units"]}, 400, "unknown topic 'units': expected one of unit, schedule, state, machine, leader"),
        ({"topics": ["state:["]}, 400, "invalid key pattern '[': "),
    ],
)
async def test_a_filter_the_server_refuses_is_its_error(
    options: dict[str, Any], status: int, message: str, tmp_path: Path
) -> None:
    async with served(tmp_path) as server, consuming(server.endpoint, **options) as consumer:
        failure = await consumer.failed()
    assert isinstance(failure, APIRequestFailed)
    assert failure.status == status
    assert failure.message.startswith(message)


@pytest.mark.anyio
async def test_an_api_without_an_event_stream_says_so(tmp_path: Path) -> None:
    runner = web.AppRunner(fleet_v1_app(MemoryRegistry(ManualClock())))
    await runner.setup()
    try:
        await web.UnixSite(runner, str(tmp_path / "api.sock")).start()
        async with consuming(f"unix://{tmp_path / 'api.sock'}") as consumer:
            failure = await consumer.failed()
    finally:
        await runner.cleanup()
    assert isinstance(failure, APIRequestFailed)
    assert (failure.status, failure.message) == (404, "no event stream on this endpoint")


@pytest.mark.anyio
async def test_a_server_that_is_not_fleetlet_is_an_unexpected_response(tmp_path: Path) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/v1/events", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(tmp_path / "api.sock")).start()
        async with consuming(f"unix://{tmp_path / 'api.sock'}") as consumer:
            failure = await consumer.failed()
    finally:
        await runner.cleanup()
    assert isinstance(failure, UnexpectedResponse)
    assert failure.status == 200


@pytest.mark.anyio
async def test_a_message_of_several_events_is_yielded_event_by_event_and_an_error_after_them(tmp_path: Path) -> None:
    """The server batches the events it takes at once into one message, a JSON document a line."""
    events = [
        b'{"index":11,"time":1.0,"topic":"unit","type":"submitted","key":"a.service","payload":{}}',
        b'{"index":12,"time":2.0,"topic":"unit","type":"submitted","key":"b.service","payload":{}}',
        b'{"type":"heartbeat","index":13,"time":3.0}',
        b'{"type":"error","code":"index-too-old","message":"gone","index":13}',
    ]

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_frame(b"\n".join(events), aiohttp.WSMsgType.TEXT)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/v1/events", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(tmp_path / "api.sock")).start()
        seen: list[str] = []

        async def consume() -> None:
            async with Client(f"unix://{tmp_path / 'api.sock'}") as fleet, aclosing(fleet.events(index=10)) as events:
                async for event in events:
                    seen.append(event.key)

        with pytest.raises(EventsLost):
            await consume()
    finally:
        await runner.cleanup()
    assert seen == ["a.service", "b.service"]
