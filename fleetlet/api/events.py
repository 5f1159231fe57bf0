"""``GET /v1/events``: the agent's event stream, over a websocket, or as NDJSON with ``?format=ndjson``.

Query: ``index=N`` resumes after event N. Without it, the client first gets a snapshot (the latest event of every
live key, marked ``"snapshot": true``, at the current index), then a heartbeat that marks the snapshot's end and
says the index it was taken at, then live events: list-then-watch in one request. ``topic=`` (repeatable:
``state``, ``state:hello_world@*``) and ``machine=ID`` filter both the snapshot and the live events.

``topic=journal:NAME`` (a glob, or bare ``journal`` for every unit) asks for the entries of the journals of the
matching units on this agent, one ``journal`` event each, in index order among the other events; no other request
gets them, and they are never in a snapshot. A unit's journal is tapped (:mod:`fleetlet.events.journal_taps`)
only while some connection asks for it, so an entry written while nobody did is no event, and a resumed stream
has only the entries the hub still holds: a unit's history is at ``/v1/units/NAME/journal``.

On an agent whose registry is on etcd, ``unit`` and ``schedule`` events come from a registry feed that runs only
while somebody wants them (:mod:`fleetlet.events.on_demand`): a connection whose filter can match those topics
holds it for as long as it lasts, from before its snapshot, which is therefore current.

Every frame is one JSON document on a line of its own: a websocket text message holds one or more frames (the
events taken from the hub at once, so a busy stream costs one message per batch, not per event), and NDJSON is a
stream of them. A client splits each message on newlines. The frames:

- an event, as the hub encoded it once for every subscriber; the events a subscriber takes at once are one
  message, joined once for every subscriber that takes the same ones (:mod:`fleetlet.events.batches`);
- a heartbeat ``{"type":"heartbeat","index","time"}`` every :data:`HEARTBEAT_SECONDS`: it keeps an idle
  connection alive and gives the index to resume after, which moves on even when the filter lets nothing through;
- an error ``{"type":"error","code","message","index"}``, the last frame before the server closes the stream:

  - ``index-too-old``: the index has aged out of the hub's ring (or an earlier run of the agent made it): start
    over without one. Websocket close code :data:`INDEX_TOO_OLD_CLOSE`, after Kubernetes' 410 Gone.
  - ``too-slow``: the client is more than the hub's ``max_lag`` events behind and did not gain between two
    heartbeats, or the ring dropped events it had not been sent, or a write to it stayed stuck for
    :data:`WRITE_TIMEOUT_SECONDS`. Resume from the error's index: every event up to it was sent before the
    error. Close code :data:`TOO_SLOW_CLOSE` (after 1008, policy violation), reason ``too slow: resume from
    index N``.

NDJSON carries the same frames, so one parser reads both forms: its status is 200 even for ``index-too-old``
(the request itself was fine; the error is a line of the stream), and the answer ends after an error line. When
the server shuts down, a websocket closes with 1001 (going away) and an NDJSON answer ends: clients resume.

Each connection runs its own tasks over its own cursor into the hub (:mod:`fleetlet.events.hub`), so publishing
never waits for a subscriber and a slow subscriber delays nobody else.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, Protocol

import anyio
from aiohttp import WSMsgType, hdrs, web

from fleetlet.api.errors import APIError
from fleetlet.api.journal import Followers
from fleetlet.api.requests import non_negative_int, one_query_value
from fleetlet.clock import Clock
from fleetlet.events.filters import EventFilter, parse_filter
from fleetlet.events.hub import EventHub, IndexTooOld, Subscription, TooSlow
from fleetlet.events.journal_taps import JournalTaps
from fleetlet.events.model import Event, error_json, heartbeat_json

HEARTBEAT_SECONDS: Final = 5.0
# A write that stays stuck this long (the client stopped reading) makes the subscriber too slow, however few
# events it lags: its connection holds buffers and a cursor for nothing.
WRITE_TIMEOUT_SECONDS: Final = 10.0
# For the last frames of a stream and the close handshake; past it the connection is dropped.
CLOSE_TIMEOUT_SECONDS: Final = 5.0
# Events taken from the hub at once, and sent as one message (an NDJSON write).
BATCH: Final = 256
INDEX_TOO_OLD_CLOSE: Final = 4410
TOO_SLOW_CLOSE: Final = 4008
GOING_AWAY_CLOSE: Final = 1001
NDJSON_TYPE: Final = "application/x-ndjson"
NO_STREAM: Final = "no event stream on this endpoint"
NO_JOURNAL: Final = "the journal topic is not available on this endpoint"
NOT_A_STREAM: Final = "the event stream needs a websocket: upgrade the connection, or ask for format=ndjson"
# Clients only listen; what little they send (pings, close) is small.
_MAX_CLIENT_MESSAGE: Final = 64 * 1024


# The topics of the registry feed, which an agent on etcd runs only while a holder holds it.
REGISTRY_TOPICS: Final = ("unit", "schedule")


def routes(
    hub: EventHub | None,
    clock: Clock,
    followers: Followers,
    prefix: str,
    journal_taps: JournalTaps | None = None,
    registry_events: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> list[web.RouteDef]:
    """The stream of ``hub`` (None: a 404, for an API with no agent behind it); ``followers`` ends it on shutdown.

    ``journal_taps`` publish the journals a ``journal`` topic asks for into ``hub``; without them, asking is a 400.
    ``registry_events`` holds the feed of ``unit`` and ``schedule`` events while its block runs (None: the feed
    always runs).
    """

    async def events(request: web.Request) -> web.StreamResponse:
        if hub is None:
            raise APIError(404, NO_STREAM)
        after = parse_index(request)
        event_filter = _filter(request)
        ndjson = parse_format(one_query_value(request, "format"))
        sink: _Sink = _NdjsonSink() if ndjson else _WebSocketSink()
        if not sink.can_prepare(request):
            raise APIError(400, NOT_A_STREAM)
        journal_globs = event_filter.journal_globs
        if journal_globs and journal_taps is None:
            raise APIError(400, NO_JOURNAL)
        async with contextlib.AsyncExitStack() as wanted:
            # Held and tapped before the subscription starts, and for as long as it lasts: the snapshot is what
            # the registry holds now, and every change or entry after the subscription's index is an event it gets.
            if registry_events is not None and any(event_filter.may_match(t) for t in REGISTRY_TOPICS):
                await wanted.enter_async_context(registry_events())
            if journal_globs and journal_taps is not None:
                await wanted.enter_async_context(journal_taps.tapping(journal_globs))
            return await stream(hub, request, after, event_filter, sink)

    async def stream(
        hub: EventHub, request: web.Request, after: int | None, event_filter: EventFilter, sink: _Sink
    ) -> web.StreamResponse:
        too_old: IndexTooOld | None = None
        snapshot: list[Event] | None = None
        try:
            # Back to back, with no await between: the live events continue exactly where the snapshot stands.
            subscription = hub.subscribe(after, event_filter)
            snapshot = hub.snapshot(event_filter) if after is None else None
        except IndexTooOld as e:
            too_old = e
        await sink.prepare(request)
        if too_old is not None:
            frame = error_json("index-too-old", str(too_old), hub.last_index)
            async with _abort_after(request, clock, CLOSE_TIMEOUT_SECONDS):
                await _last_words(sink, frame, INDEX_TOO_OLD_CLOSE, "index too old: start again without one")
            return sink.response
        await _Feed(subscription, sink, clock, request).run(snapshot, followers)
        return sink.response

    return [web.get(f"{prefix}/events", events)]


def parse_index(request: web.Request) -> int | None:
    """The index to resume after; None when absent; APIError 400 when not a non-negative integer."""
    if "index" not in request.query:
        return None
    return non_negative_int("index", one_query_value(request, "index"))


def parse_format(text: str) -> bool:
    """True for NDJSON; APIError 400 for a format the stream does not come in."""
    if text in ("", "ndjson"):
        return text == "ndjson"
    raise APIError(400, f"format must be ndjson, or absent for a websocket, not {text!r}")


def _filter(request: web.Request) -> EventFilter:
    try:
        return parse_filter(request.query.getall("topic", []), one_query_value(request, "machine"))
    except ValueError as e:
        raise APIError(400, str(e)) from None


# --- the two forms of the stream ---------------------------------------------------------------------------------


class _Sink(Protocol):
    """Where a stream's frames go: a websocket, or an NDJSON answer."""

    @property
    def response(self) -> web.StreamResponse: ...

    # Whether :meth:`until_closed` can tell: an HTTP answer cannot, and its connection is looked at instead.
    @property
    def tells_close(self) -> bool: ...

    def can_prepare(self, request: web.Request) -> bool: ...

    async def prepare(self, request: web.Request) -> None: ...

    async def send(self, message: bytes) -> None:
        """Write one message: one or more frames, joined by newlines; ConnectionError when the client is gone.

        A write stuck waiting for the transport to drain has handed the whole message to it already: aiohttp
        writes first, then waits.
        """

    async def close(self, code: int, reason: str) -> None:
        """End the stream, as ``code`` and ``reason`` for a websocket."""

    async def until_closed(self) -> None:
        """Return when the client closes the stream (or, for a form that cannot tell, at once)."""


class _WebSocketSink:
    # Every event taken at once in one message, a JSON document a line: with hundreds of subscribers, one message
    # per event costs the server (and each client) a frame and a send per event, which is what saturates first.
    tells_close = True

    def __init__(self) -> None:
        # Not compressed: each event's bytes go out as encoded once, instead of deflated once per subscriber.
        self._ws = web.WebSocketResponse(compress=False, max_msg_size=_MAX_CLIENT_MESSAGE)

    @property
    def response(self) -> web.StreamResponse:
        return self._ws

    def can_prepare(self, request: web.Request) -> bool:
        return self._ws.can_prepare(request).ok

    async def prepare(self, request: web.Request) -> None:
        await self._ws.prepare(request)

    async def send(self, message: bytes) -> None:
        # The cheapest send aiohttp has for bytes encoded already (send_str would encode them again), and with
        # compression off, one header and one transport write.
        await self._ws.send_frame(message, WSMsgType.TEXT)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason.encode())

    async def until_closed(self) -> None:
        # Reading also answers the client's pings. A client has nothing to say yet: its messages are ignored.
        async for _ in self._ws:
            pass


class _NdjsonSink:
    tells_close = False

    def __init__(self) -> None:
        self._response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: NDJSON_TYPE, hdrs.CACHE_CONTROL: "no-cache"})
        self._response.enable_chunked_encoding()

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    def can_prepare(self, request: web.Request) -> bool:
        return True

    async def prepare(self, request: web.Request) -> None:
        await self._response.prepare(request)

    async def send(self, message: bytes) -> None:
        await self._response.write(message + b"\n")

    async def close(self, code: int, reason: str) -> None:
        await self._response.write_eof()

    async def until_closed(self) -> None:
        pass


@asynccontextmanager
async def _abort_after(request: web.Request, clock: Clock, seconds: float) -> AsyncIterator[None]:
    """Drop the connection when the block takes longer than ``seconds``; its stuck writes then return or fail.

    Not a cancellation: a write cancelled while it waits for the transport to drain leaves aiohttp's connection
    with a cancelled waiter that every later write of the connection awaits and raises at once, so the stream's
    last frames could never be sent. A write is therefore never cancelled, only released by the client reading or
    by the transport going.
    """
    async with anyio.create_task_group() as tg:

        async def watchdog() -> None:
            await clock.sleep(seconds)
            if request.transport is not None:
                request.transport.abort()

        tg.start_soon(watchdog)
        yield
        tg.cancel_scope.cancel()


async def _last_words(sink: _Sink, frame: bytes | None, code: int, reason: str) -> None:
    """Send the stream's last ``frame`` and close it."""
    try:
        if frame is not None:
            await sink.send(frame)
        await sink.close(code, reason)
    except ConnectionError:
        pass  # the client left first


def _joined(events: Iterable[Event]) -> bytes:
    return b"\n".join([e.json for e in events])


# --- one subscriber ----------------------------------------------------------------------------------------------


class _End(enum.Enum):
    GONE = "the client went away"
    TOO_SLOW = "the client fell behind"
    SHUTDOWN = "the server shuts down"


class _Feed:
    """One connection's stream: a pump that writes events and heartbeats, a watcher on the clock, a reader.

    Only the pump writes, so frames never interleave and the index a heartbeat carries counts every event before
    it. The watcher wakes the pump when a heartbeat is due, and notices what the pump cannot while stuck in a
    write: the cursor falling behind, a write lasting too long, a connection gone, the server shutting down.

    Whoever sees the end first stops the feed; the pump writes nothing more, and the stream's last frames follow
    whatever it has handed to the transport. Nothing that may be writing is cancelled (see :func:`_abort_after`):
    the pump stops at its next step, and a stuck write is released by the client reading or the connection
    being dropped after :data:`CLOSE_TIMEOUT_SECONDS`.
    """

    def __init__(self, subscription: Subscription, sink: _Sink, clock: Clock, request: web.Request) -> None:
        self._subscription = subscription
        self._sink = sink
        self._clock = clock
        self._request = request
        self.ended: _End | None = None
        self.resume_index = subscription.index  # once ended: where the client resumes
        self._stopped = anyio.Event()
        self._sent = subscription.index  # while writing: the index of the last event handed to the transport
        self._writing_since: float | None = None
        self._heartbeat_due = False
        self._watching = anyio.CancelScope()  # the watcher's: it only sleeps, so it may be cancelled
        self._pump_done = anyio.Event()
        self._reader_done = anyio.Event()

    async def run(self, snapshot: Sequence[Event] | None, followers: Followers) -> None:
        """Stream ``snapshot`` (then a heartbeat closing it) and live events until the connection must end."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, followers)
            tg.start_soon(self._pump, snapshot)
            if self._sink.tells_close:
                tg.start_soon(self._read_until_closed)
            else:
                self._reader_done.set()
            await self._stopped.wait()
            self._watching.cancel()
            async with _abort_after(self._request, self._clock, CLOSE_TIMEOUT_SECONDS):
                await self._last_words()
                await self._pump_done.wait()
                await self._reader_done.wait()

    def _stop(self, ended: _End) -> None:
        if self.ended is not None:
            return
        self.ended = ended
        self.resume_index = self._sent if self._writing_since is not None else self._subscription.index
        self._stopped.set()
        self._subscription.nudge()  # the pump, if it waits for events, looks again

    async def _last_words(self) -> None:
        if self.ended is _End.TOO_SLOW:
            index = self.resume_index
            message = f"this connection fell too far behind the stream: resume from index {index}"
            frame = error_json("too-slow", message, index)
            await _last_words(self._sink, frame, TOO_SLOW_CLOSE, f"too slow: resume from index {index}")
        elif self.ended is _End.SHUTDOWN:
            await _last_words(self._sink, None, GOING_AWAY_CLOSE, "server shutting down")

    async def _pump(self, snapshot: Sequence[Event] | None) -> None:
        try:
            if snapshot is not None:
                for start in range(0, len(snapshot), BATCH):
                    await self._write(_joined(snapshot[start : start + BATCH]), self._subscription.index)
                await self._heartbeat()
            while True:
                if self._heartbeat_due:
                    self._heartbeat_due = False
                    await self._heartbeat()
                if self.ended is not None:
                    return  # checked last thing before the wait: a stop from now on nudges it
                batch = self._subscription.take(BATCH)
                if batch is not None and batch.events:
                    await self._write(batch.message, batch.through)
                # At once if more came meanwhile (no second look at the hub for the common case, a batch that
                # reached the head); else until a publish, or a nudge for a stop or a heartbeat due.
                await self._subscription.wait()
        except TooSlow:  # the ring dropped events it had not taken
            self._stop(_End.TOO_SLOW)
        except ConnectionError:
            self._stop(_End.GONE)
        finally:
            self._pump_done.set()

    async def _write(self, message: bytes, through: int) -> None:
        """Send ``message``, the events the cursor took up to index ``through``, filtered out ones included."""
        if self.ended is not None:
            return
        self._writing_since = self._clock.monotonic()
        # Counted before the write: if stuck, the write has handed the message to the transport already, so a
        # client that gets the closing frame got this message before it.
        self._sent = through
        await self._sink.send(message)
        self._writing_since = None

    async def _heartbeat(self) -> None:
        index = self._subscription.index
        await self._write(heartbeat_json(index, self._clock.time()), index)

    async def _watch(self, followers: Followers) -> None:
        with self._watching:
            with followers.following():
                while True:
                    await self._clock.sleep(HEARTBEAT_SECONDS)
                    self._look()
            self._stop(_End.SHUTDOWN)  # reached when the shutdown cancelled the block, and only then

    def _look(self) -> None:
        """A heartbeat's look at the connection: gone, too slow, or due a heartbeat."""
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self._stop(_End.GONE)
            return
        since = self._writing_since
        try:
            self._subscription.check()
        except TooSlow:
            self._stop(_End.TOO_SLOW)
            return
        if since is not None and self._clock.monotonic() - since >= WRITE_TIMEOUT_SECONDS:
            self._stop(_End.TOO_SLOW)
            return
        self._heartbeat_due = True
        self._subscription.nudge()

    async def _read_until_closed(self) -> None:
        try:
            await self._sink.until_closed()
        finally:
            self._reader_done.set()
        self._stop(_End.GONE)
