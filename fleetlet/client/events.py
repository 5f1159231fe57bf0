"""Reading the cluster's event stream over the agent's websocket, resuming it across lost connections.

A stream remembers where it is (:class:`Position`: after the last event or heartbeat's index) and reconnects from
there, so a dropped connection or a restarted server loses no change and repeats none; see :func:`event_stream`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, NoReturn

import aiohttp
import anyio
import orjson
from yarl import URL

from fleetlet.client.errors import EndpointUnreachable, EventsLost, UnexpectedResponse
from fleetlet.client.records import Event, as_int, as_object, decode_event
from fleetlet.client.transport import OWN_PREFIX, Answer, Transport, request_errors
from fleetlet.clock import Clock

# Reconnecting to the event stream: the first wait, the longest, and how long to keep trying before giving up.
RECONNECT_FIRST: Final = 0.1
RECONNECT_MAX: Final = 2.0
RECONNECT_FOR: Final = 300.0
# The server sends a heartbeat every 5 s: a stream silent for this long has a dead connection under it.
EVENTS_SILENCE: Final = 30.0


async def event_stream(
    transport: Transport,
    clock: Clock,
    topics: Iterable[str],
    machine: str | None,
    index: int | None,
    *,
    resume: bool,
    reconnect_for: float,
) -> AsyncGenerator[Event, None]:
    """The events of :meth:`fleetlet.client.Client.events`, which documents them; ``clock`` paces reconnections."""
    query = [("alt", "json"), *(("topic", t) for t in topics), *([("machine", machine)] if machine else [])]
    position = Position(index)
    delay = RECONNECT_FIRST
    failing_since: float | None = None
    connected = False
    endpoint = transport.endpoint
    while True:
        frames = position.frames
        try:
            async with _event_socket(transport, query, position.index) as ws:
                connected = True
                while True:
                    for event in await _next_events(ws, position, endpoint):
                        yield event
        except _StartOver:
            continue  # the server no longer has what came since: a fresh snapshot, at once
        except EndpointUnreachable:
            if not (resume and connected):
                raise
            if position.frames != frames:  # that connection worked: this is a new outage
                failing_since, delay = None, RECONNECT_FIRST
            now = clock.monotonic()
            if failing_since is None:
                failing_since = now
            elif now - failing_since >= reconnect_for:
                raise
        await clock.sleep(delay)
        delay = min(2 * delay, RECONNECT_MAX)


class _StartOver(Exception):
    """The stream cannot resume where it was; it begins again with a snapshot."""


class Position:
    """Where an event stream resumes, as its frames come: after the last event or heartbeat's index.

    None until a stream begun without an index has had its whole snapshot (the heartbeat after it says so): a
    stream cut before then takes a new snapshot rather than resume with part of one.
    """

    def __init__(self, index: int | None) -> None:
        self.index = index
        self.snapshots = index is None  # begun without an index: may start over with a snapshot
        self.frames = 0
        self.pending: Exception | None = None  # an error frame that followed events in one message

    def take(self, doc: dict[str, Any], endpoint: str) -> Event | None:
        """The event of a frame, or None for a heartbeat; an error frame raised as what it means."""
        self.frames += 1
        if "topic" in doc:
            event = decode_event(doc, endpoint)
            if not event.snapshot:
                self.index = event.index
            return event
        kind, index = doc.get("type"), as_int(doc, "index", endpoint)
        if index is None:
            raise UnexpectedResponse(endpoint, 101, f"a {kind} frame without an index")
        if kind == "heartbeat":
            self.index = index
            return None
        if kind == "error" and doc.get("code") == "too-slow":
            if self.index is not None:
                self.index = max(self.index, index)
            raise EndpointUnreachable(endpoint, f"the server closed the event stream: {doc.get('message')}")
        if kind == "error" and doc.get("code") == "index-too-old":
            if self.snapshots:
                self.index = None
                raise _StartOver
            raise EventsLost(self.index if self.index is not None else index)
        raise UnexpectedResponse(endpoint, 101, f"unknown event stream frame: {_one_line(doc)}")


async def _next_events(ws: aiohttp.ClientWebSocketResponse, position: Position, endpoint: str) -> list[Event]:
    """The events of the stream's next message (one or more, a JSON document a line), heartbeats taken in passing.

    EndpointUnreachable when the stream ends. A frame that ends the stream (an error) after events of the same
    message is raised at the next call, once those events are yielded.
    """
    if position.pending is not None:
        pending, position.pending = position.pending, None
        raise pending
    while True:
        try:
            msg = await ws.receive(timeout=EVENTS_SILENCE)
        except TimeoutError:
            raise EndpointUnreachable(endpoint, f"no heartbeat from the event stream for {EVENTS_SILENCE:g}s") from None
        if msg.type is aiohttp.WSMsgType.TEXT:
            events: list[Event] = []
            for line in msg.data.splitlines():
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise UnexpectedResponse(endpoint, 101, "an event stream frame is not JSON") from None
                try:
                    event = position.take(as_object(doc, endpoint), endpoint)
                except Exception as exc:
                    if not events:
                        raise
                    position.pending = exc
                    return events
                if event is not None:
                    events.append(event)
            if events:
                return events
        elif msg.type is aiohttp.WSMsgType.BINARY:
            raise UnexpectedResponse(endpoint, 101, "an event stream frame is binary")
        else:  # closed, by the server (shutting down, say) or the network
            said = f" {msg.extra}" if msg.type is aiohttp.WSMsgType.CLOSE and msg.extra else ""
            code = f" ({ws.close_code}{said})" if ws.close_code else ""
            raise EndpointUnreachable(endpoint, f"the event stream closed{code}")


@asynccontextmanager
async def _event_socket(
    transport: Transport, query: list[tuple[str, str]], index: int | None
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    session = transport.session()
    resume = [("index", str(index))] if index is not None else []
    url = transport.root.with_path(OWN_PREFIX).joinpath("events").with_query([*query, *resume])
    # Only the handshake is bound by the timeout; then silence is, since the server sends heartbeats.
    timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=transport.timeout)
    async with AsyncExitStack() as stack:
        with request_errors(transport.endpoint, transport.timeout):
            try:
                with anyio.fail_after(transport.timeout):
                    ws = await stack.enter_async_context(session.ws_connect(url, timeout=timeout))
            except aiohttp.WSServerHandshakeError as e:
                await _refused_upgrade(transport, url, e.status)
        yield ws


async def _refused_upgrade(transport: Transport, url: URL, status: int) -> NoReturn:
    """Raise what the server said, which a refused websocket handshake does not keep: ask again, plainly."""
    if status >= 400:
        async with transport.session().get(url) as response:
            transport.decode(Answer(response.status, await response.read()))  # raises fleet's error
    raise UnexpectedResponse(transport.endpoint, status, "no event stream: the websocket upgrade was refused")


def _one_line(doc: object) -> str:
    return orjson.dumps(doc).decode()[:200]
