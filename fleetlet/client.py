"""The async client of fleet's v1 API, over HTTP(S) or a unix socket: what the CLI and embedding programs call.

``async with Client("unix:///var/run/fleetlet.sock") as fleet:`` then ``await fleet.start("hello.service")``.
Every request carries ``?alt=json`` as fleetctl's did, and every failure surfaces as a :class:`ClientError`;
aiohttp's exceptions are mapped where requests are made (:func:`_request_errors`) and never escape. The errors
extend the tree drawn in :mod:`fleetlet.errors`::

    FleetletError
    └── ClientError               a client call failed
        ├── InvalidEndpoint       the endpoint is not http://, https:// or unix:// (.endpoint)
        ├── EndpointUnreachable   no answer: refused, socket missing, timed out, connection lost (.endpoint)
        ├── UnexpectedResponse    an answer that is not fleet's API (.endpoint, .status)
        ├── APIRequestFailed      the API refused the request: its .status and .message
        ├── UnitConflict          submit: the unit exists with other contents (.name)
        ├── MachineNotFound       set_metadata: the cluster has no such machine (.machine_id)
        └── EventsLost            events: the stream no longer has the events after .index
"""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, NoReturn, Self

import aiohttp
import anyio
import orjson
from yarl import URL

from fleetlet.clock import Clock, SystemClock
from fleetlet.diagnostics import Report
from fleetlet.errors import FleetletError
from fleetlet.registry.model import DESIRED_STATES, DesiredState
from fleetlet.units import xfleet
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.names import parse_name

# Seconds per request. fleetctl's --request-timeout defaulted to 3; embedding programs get a little more slack, and
# a long list is many requests of one page each, so the limit never grows with the cluster.
DEFAULT_TIMEOUT: Final = 5.0
API_PREFIX: Final = "/fleet/v1"
# fleetlet's own resources (a unit's status and journal), beside fleet's.
OWN_PREFIX: Final = "/v1"
# fleetctl journal's --lines default.
JOURNAL_LINES: Final = 10
# Reconnecting to the event stream: the first wait, the longest, and how long to keep trying before giving up.
RECONNECT_FIRST: Final = 0.1
RECONNECT_MAX: Final = 2.0
RECONNECT_FOR: Final = 300.0
# The server sends a heartbeat every 5 s: a stream silent for this long has a dead connection under it.
EVENTS_SILENCE: Final = 30.0
_UNIX_BASE: Final = URL("http://localhost")
_JSON_HEADERS: Final = {"Content-Type": "application/json"}


class ClientError(FleetletError):
    """A client call failed; the message is one line fit for a terminal."""


class InvalidEndpoint(ClientError):
    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"invalid endpoint {endpoint!r}: {reason}")


class EndpointUnreachable(ClientError):
    """No answer from the endpoint: nothing listens, the socket is missing, the request timed out or was cut."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"cannot reach the fleet API at {endpoint}: {reason}")


class UnexpectedResponse(ClientError):
    """An answer that fleet's API would not give: the endpoint is probably some other server."""

    def __init__(self, endpoint: str, status: int, reason: str) -> None:
        self.endpoint = endpoint
        self.status = status
        super().__init__(f"unexpected answer from {endpoint} (HTTP {status}): {reason}")


class APIRequestFailed(ClientError):
    """The API refused the request with fleet's error body: HTTP ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{message} (HTTP {status})")


class UnitConflict(ClientError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unit {name} already exists with different contents")


class MachineNotFound(ClientError):
    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        super().__init__(f"machine {machine_id} not found")


class EventsLost(ClientError):
    """The event stream no longer keeps the events after ``index``: list the cluster again, then watch."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"the events after index {index} are no longer kept: start again without an index")


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit as the API reports it; ``machine_id`` is None while it is not scheduled."""

    name: str
    options: tuple[UnitOption, ...]
    desired_state: DesiredState
    current_state: DesiredState
    machine_id: str | None

    @property
    def unit_file(self) -> UnitFile:
        return UnitFile.from_options(self.options, source=self.name)

    @property
    def hash(self) -> str:
        """SHA1 of the unit's normalized text, as fleet computes it (fleetctl shows the first 7 digits)."""
        return _hash_of(self.options)

    @property
    def is_global(self) -> bool:
        """Whether ``[X-Fleet] Global=`` has it run on every machine (the other requirements allowing)."""
        for option in self.options:
            if option.name == xfleet.GLOBAL and option.section == xfleet.SECTION:
                # Its values are read by every rule of the section (specifiers, quoted lists, the last one wins).
                return xfleet.requirements(self.unit_file, parse_name(self.name), Report(self.name)).is_global
        return False  # most units: no need to read the section


# Instances of a template share its options, so a listing of many instances hashes them once. A bound, as the
# cache outlives the listing in a program that embeds the client.
_HASHES_KEPT: Final = 1024


@functools.lru_cache(maxsize=_HASHES_KEPT)
def _hash_of(options: tuple[UnitOption, ...]) -> str:
    return UnitFile.from_options(options).hash


@dataclass(frozen=True, slots=True)
class UnitState:
    """A unit's state on the machine that runs it, as the API reports it (fleet's ``schema.UnitState``)."""

    name: str
    hash: str
    machine_id: str
    load_state: str
    active_state: str
    sub_state: str


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine of the cluster: its ID, the IP users reach it at ("" when unknown), its metadata."""

    id: str
    primary_ip: str
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class UnitReport:
    """Everything known of one unit: the registry's record, its machine's report, why it has no machine.

    A field the API left out reads as empty: "" for text, None for ``machine_id``, ``since`` (wall-clock seconds
    of the last change of ``active_state``), ``container_id``, ``main_pid`` and ``exit_status``.
    """

    name: str
    description: str = ""
    hash: str = ""
    desired_state: DesiredState = "inactive"
    current_state: DesiredState = "inactive"
    machine_id: str | None = None
    primary_ip: str = ""
    load_state: str = ""
    active_state: str = ""
    sub_state: str = ""
    result: str = ""
    since: float | None = None
    restarts: int = 0
    container_id: str | None = None
    main_pid: int | None = None
    exit_status: str | None = None
    reasons: tuple[str, ...] = ()  # why it cannot be placed, one reason per machine


@dataclass(frozen=True, slots=True)
class Event:
    """One change in the cluster, from the event stream (:meth:`Client.events`).

    ``topic`` is ``unit``, ``schedule``, ``state``, ``machine`` or ``leader``; ``type`` says what happened
    (``submitted``, ``placed``, ``changed``, ``joined``...); ``key`` names what changed: a unit, ``unit@machine``
    for a state, a machine ID. ``payload`` holds what a consumer needs without a second request. A ``snapshot``
    event describes what existed when the stream began, all of them at the ``index`` the changes continue after.
    """

    index: int
    time: float  # wall-clock seconds since the epoch
    topic: str
    type: str
    key: str
    payload: Mapping[str, Any]
    snapshot: bool = False


MetadataOpKind = Literal["add", "remove", "replace"]


@dataclass(frozen=True, slots=True)
class MetadataOp:
    """One operation of ``PATCH /machines``: set (``add``, ``replace``) or drop (``remove``) a metadata key."""

    op: MetadataOpKind
    machine_id: str
    key: str
    value: str = ""  # ignored by remove

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"op": self.op, "path": f"/{self.machine_id}/metadata/{self.key}"}
        if self.op != "remove":
            doc["value"] = {"value": self.value}
        return doc


def metadata_ops(machine_id: str, current: Mapping[str, str], wanted: Mapping[str, str]) -> list[MetadataOp]:
    """The operations that turn a machine's ``current`` metadata into ``wanted``, by key."""
    ops: list[MetadataOp] = []
    for key in sorted(current.keys() | wanted.keys()):
        if key not in wanted:
            ops.append(MetadataOp("remove", machine_id, key))
        elif key not in current:
            ops.append(MetadataOp("add", machine_id, key, wanted[key]))
        elif current[key] != wanted[key]:
            ops.append(MetadataOp("replace", machine_id, key, wanted[key]))
    return ops


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes


class Client:
    """fleet's v1 API at ``endpoint`` (``http://host:port``, ``https://host:port`` or ``unix:///path.sock``).

    Use as ``async with Client(endpoint) as fleet:``; each request, body included, must finish within
    ``timeout`` seconds or fails with :class:`EndpointUnreachable`. ``clock`` times the waits between reconnections
    of the event stream.
    """

    def __init__(self, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT, clock: Clock | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._clock: Clock = clock or SystemClock()
        self._root, self._socket = _parse_endpoint(endpoint)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.UnixConnector(self._socket) if self._socket is not None else aiohttp.TCPConnector()
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout), raise_for_status=False
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- units -----------------------------------------------------------------------------------------------

    async def units(self) -> list[Unit]:
        """Every unit, in name order, following ``nextPageToken`` across pages.

        A list, not an async iterator: its callers (``list-unit-files``, ``start``'s globs) need every unit before
        printing a line to size the columns, and a list leaves no half-consumed generator holding a connection
        when a caller breaks out early.
        """
        found: list[Unit] = []
        token: str | None = None
        while True:
            params = {"nextPageToken": token} if token else {}
            answer = await self._request("GET", "units", params=params)
            with _collector_paused():
                page = _object(self._decode(answer), self.endpoint)
                found.extend(_unit(doc, self.endpoint) for doc in _list(page.get("units", []), self.endpoint))
            token = page.get("nextPageToken")
            if not token:
                return found
            if not isinstance(token, str):
                raise UnexpectedResponse(self.endpoint, 200, "nextPageToken is not a string")

    async def states(self, machine_id: str | None = None, unit_name: str | None = None) -> list[UnitState]:
        """Every unit state, or those of one machine or one unit, in unit name order across pages."""
        found: list[UnitState] = []
        filters = {k: v for k, v in (("machineID", machine_id), ("unitName", unit_name)) if v}
        token: str | None = None
        while True:
            params = {**filters, "nextPageToken": token} if token else filters
            answer = await self._request("GET", "state", params=params)
            with _collector_paused():
                page = _object(self._decode(answer), self.endpoint)
                found.extend(_unit_state(doc, self.endpoint) for doc in _list(page.get("states", []), self.endpoint))
            token = page.get("nextPageToken")
            if not token:
                return found
            if not isinstance(token, str):
                raise UnexpectedResponse(self.endpoint, 200, "nextPageToken is not a string")

    async def machines(self) -> list[Machine]:
        """Every machine of the cluster, in ID order."""
        page = _object(await self._json("GET", "machines"), self.endpoint)
        return [_machine(doc, self.endpoint) for doc in _list(page.get("machines", []), self.endpoint)]

    async def unit(self, name: str) -> Unit | None:
        """The unit called ``name``, or None when there is none."""
        answer = await self._request("GET", "units", name)
        if answer.status == 404:
            return None
        return _unit(self._decode(answer), self.endpoint)

    async def create_unit(self, name: str, unit_file: UnitFile, desired_state: DesiredState = "inactive") -> None:
        """Create ``name``, or replace it when its contents differ, with ``desired_state`` (fleet's PUT)."""
        await self._put(name, {"name": name, "options": _options_json(unit_file), "desiredState": desired_state})

    async def submit(self, name: str, unit_file: UnitFile) -> bool:
        """fleetctl's submit: create ``name`` inactive; True if created, False if the same contents were there.

        :class:`UnitConflict` when a unit of that name has other contents (replace it with :meth:`create_unit`).
        """
        existing = await self.unit(name)
        if existing is not None:
            if existing.hash != unit_file.hash:
                raise UnitConflict(name)
            return False
        await self.create_unit(name, unit_file)
        return True

    async def set_desired_state(self, name: str, state: DesiredState) -> None:
        """Set an existing unit's desired state; the API answers 409 when there is no such unit."""
        await self._put(name, {"name": name, "desiredState": state})

    async def load(self, name: str) -> None:
        await self.set_desired_state(name, "loaded")

    async def start(self, name: str) -> None:
        await self.set_desired_state(name, "launched")

    async def stop(self, name: str) -> None:
        await self.set_desired_state(name, "loaded")

    async def unload(self, name: str) -> None:
        await self.set_desired_state(name, "inactive")

    async def destroy(self, name: str) -> None:
        """Remove the unit; :class:`APIRequestFailed` 404 when there is none."""
        self._decode(await self._request("DELETE", "units", name))

    # --- machines --------------------------------------------------------------------------------------------

    async def patch_machines(self, ops: Sequence[MetadataOp]) -> None:
        """Apply ``ops`` in one request: the API checks them all first and applies all of them or none."""
        body = orjson.dumps([op.to_json() for op in ops])
        self._decode(await self._request("PATCH", "machines", body=body))

    async def set_metadata(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        """Make a machine's metadata exactly ``metadata``: the keys it lacks added, others replaced or removed.

        :class:`MachineNotFound` when the cluster has no machine ``machine_id``.
        """
        current = next((m for m in await self.machines() if m.id == machine_id), None)
        if current is None:
            raise MachineNotFound(machine_id)
        ops = metadata_ops(machine_id, current.metadata, metadata)
        if ops:
            await self.patch_machines(ops)

    # --- status and journal ----------------------------------------------------------------------------------

    async def status(self, name: str) -> UnitReport:
        """The unit's status; :class:`APIRequestFailed` 404 when there is no such unit."""
        doc = await self._json("GET", "units", name, "status", prefix=OWN_PREFIX)
        return _report(doc, self.endpoint)

    async def journal(
        self, name: str, lines: int = JOURNAL_LINES, *, follow: bool = False
    ) -> AsyncGenerator[str, None]:
        """The last ``lines`` lines of the unit's journal, without their newlines; then, with ``follow``, each new
        line as it comes, until the journal or the connection ends.

        Following is not bound by the client's ``timeout``, only connecting and the answer's first byte are.
        Close the iterator when leaving it early (``contextlib.aclosing``): it holds a connection.
        :class:`APIRequestFailed` 404 when there is no such unit.
        """
        if lines < 0:
            raise ValueError("lines must not be negative")
        session = self._opened()
        params = {"lines": str(lines), **({"follow": "1"} if follow else {})}
        url = self._url(OWN_PREFIX, ("units", name, "journal"), params)
        # Following, no total and no read timeout: a quiet journal is not a dead server. The answer's head must
        # still come within the timeout (fail_after), and without following the session's total applies.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout) if follow else session.timeout
        with _request_errors(self.endpoint, self.timeout):
            async with AsyncExitStack() as stack:
                with anyio.fail_after(self.timeout):
                    response = await stack.enter_async_context(session.request("GET", url, timeout=timeout))
                    if response.status >= 400:
                        self._decode(_Answer(response.status, await response.read()))  # raises fleet's error
                if response.content_type != "text/plain":
                    raise UnexpectedResponse(self.endpoint, response.status, "the journal is not text/plain")
                async for line in _lines(response.content):
                    yield line

    # --- events ----------------------------------------------------------------------------------------------

    async def events(
        self,
        topics: Iterable[str] = (),
        machine: str | None = None,
        index: int | None = None,
        *,
        resume: bool = True,
        reconnect_for: float = RECONNECT_FOR,
    ) -> AsyncGenerator[Event, None]:
        """The cluster's events as they happen, over the agent's websocket, until the caller stops.

        ``topics`` (``state``, ``state:hello*@*``, ...) and ``machine`` filter them. Without ``index``, the stream
        begins with a snapshot (``Event.snapshot``: one event per unit, placement, state, machine and leader that
        exists), then changes: list-then-watch in one call. With ``index``, the changes after that index.

        A dropped connection, a server that restarts or goes away a while, or a stream the server closed because
        this caller read too slowly, is resumed where it stopped: no change lost, none twice. When the server no
        longer has the changes since then (its buffer moved on, or it restarted with a new one), a stream begun
        without an index starts over with a new snapshot, to be taken as the whole state again (as may happen too
        when a connection drops in the middle of a snapshot); one begun with an index raises :class:`EventsLost`.
        Reconnection waits from 0.1 s up to 2 s between attempts and gives up (:class:`EndpointUnreachable`)
        after ``reconnect_for`` seconds without a connection, or at once with ``resume=False`` or when the very
        first connection fails. :class:`APIRequestFailed` for a filter the server refuses.

        Close the iterator when leaving it early (``contextlib.aclosing``): it holds a connection.
        """
        query = [("alt", "json"), *(("topic", t) for t in topics), *([("machine", machine)] if machine else [])]
        position = _Position(index)
        delay = RECONNECT_FIRST
        failing_since: float | None = None
        connected = False
        while True:
            frames = position.frames
            try:
                async with self._event_socket(query, position.index) as ws:
                    connected = True
                    while True:
                        yield await _next_event(ws, position, self.endpoint)
            except _StartOver:
                continue  # the server no longer has what came since: a fresh snapshot, at once
            except EndpointUnreachable:
                if not (resume and connected):
                    raise
                if position.frames != frames:  # that connection worked: this is a new outage
                    failing_since, delay = None, RECONNECT_FIRST
                now = self._clock.monotonic()
                if failing_since is None:
                    failing_since = now
                elif now - failing_since >= reconnect_for:
                    raise
            await self._clock.sleep(delay)
            delay = min(2 * delay, RECONNECT_MAX)

    @asynccontextmanager
    async def _event_socket(
        self, query: list[tuple[str, str]], index: int | None
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        session = self._opened()
        resume = [("index", str(index))] if index is not None else []
        url = self._root.with_path(OWN_PREFIX).joinpath("events").with_query([*query, *resume])
        # Only the handshake is bound by the timeout; then silence is, since the server sends heartbeats.
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.timeout)
        async with AsyncExitStack() as stack:
            with _request_errors(self.endpoint, self.timeout):
                try:
                    with anyio.fail_after(self.timeout):
                        ws = await stack.enter_async_context(session.ws_connect(url, timeout=timeout))
                except aiohttp.WSServerHandshakeError as e:
                    await self._refused_upgrade(url, e.status)
            yield ws

    async def _refused_upgrade(self, url: URL, status: int) -> NoReturn:
        """Raise what the server said, which a refused websocket handshake does not keep: ask again, plainly."""
        if status >= 400:
            async with self._opened().get(url) as response:
                self._decode(_Answer(response.status, await response.read()))  # raises fleet's error
        raise UnexpectedResponse(self.endpoint, status, "no event stream: the websocket upgrade was refused")

    # --- transport -------------------------------------------------------------------------------------------

    async def _put(self, name: str, body: dict[str, Any]) -> None:
        self._decode(await self._request("PUT", "units", name, body=orjson.dumps(body)))

    async def _json(
        self, method: str, *path: str, params: dict[str, str] | None = None, prefix: str = API_PREFIX
    ) -> Any:
        return self._decode(await self._request(method, *path, params=params, prefix=prefix))

    async def _request(
        self,
        method: str,
        *path: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        prefix: str = API_PREFIX,
    ) -> _Answer:
        session = self._opened()
        url = self._url(prefix, path, params)
        headers = _JSON_HEADERS if body is not None else None
        with _request_errors(self.endpoint, self.timeout):
            async with session.request(method, url, data=body, headers=headers) as response:
                return _Answer(response.status, await response.read())

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ClientError("the client is not open: use it as `async with Client(endpoint) as fleet:`")
        return self._session

    def _url(self, prefix: str, path: Sequence[str], params: dict[str, str] | None) -> URL:
        return self._root.with_path(prefix).joinpath(*path).with_query({"alt": "json", **(params or {})})

    def _decode(self, answer: _Answer) -> Any:
        """The JSON of a success (None when empty); fleet's error body as APIRequestFailed otherwise."""
        try:
            doc = orjson.loads(answer.body) if answer.body else None
        except orjson.JSONDecodeError:
            raise UnexpectedResponse(self.endpoint, answer.status, "the body is not JSON") from None
        if answer.status < 400:
            return doc
        error = doc.get("error") if isinstance(doc, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str):
            raise UnexpectedResponse(self.endpoint, answer.status, "no fleet error body")
        raise APIRequestFailed(answer.status, message)


def _parse_endpoint(endpoint: str) -> tuple[URL, str | None]:
    """The root URL of the API's server and, for ``unix://``, the socket's path."""
    url = URL(endpoint)
    if url.scheme == "unix":
        if url.host or url.path in ("", "/"):
            raise InvalidEndpoint(endpoint, "expected an absolute socket path: unix:///path/to.sock")
        return _UNIX_BASE, url.path
    if url.scheme in ("http", "https"):
        if not url.host:
            raise InvalidEndpoint(endpoint, "no host")
        return url.with_path("/").with_query(None).with_fragment(None), None
    raise InvalidEndpoint(endpoint, "expected http://HOST:PORT, https://HOST:PORT or unix:///PATH")


@contextmanager
def _request_errors(endpoint: str, timeout: float) -> Iterator[None]:
    """aiohttp's and the OS's errors as :class:`EndpointUnreachable`, named after the endpoint."""
    try:
        yield
    except TimeoutError as e:  # before ClientError: aiohttp's timeouts are both
        raise EndpointUnreachable(endpoint, f"no answer within {timeout:g}s") from e
    except aiohttp.ClientConnectorError as e:
        raise EndpointUnreachable(endpoint, _os_reason(e.os_error)) from e
    except (aiohttp.ClientError, OSError) as e:
        raise EndpointUnreachable(endpoint, f"connection lost: {e}") from e


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The lines of a text body as they arrive, however long (aiohttp's own line reader caps their length)."""
    pending = b""
    async for chunk in content.iter_any():
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


class _StartOver(Exception):
    """The stream cannot resume where it was; it begins again with a snapshot."""


class _Position:
    """Where an event stream resumes, as its frames come: after the last event or heartbeat's index.

    None until a stream begun without an index has had its whole snapshot (the heartbeat after it says so): a
    stream cut before then takes a new snapshot rather than resume with part of one.
    """

    def __init__(self, index: int | None) -> None:
        self.index = index
        self.snapshots = index is None  # begun without an index: may start over with a snapshot
        self.frames = 0

    def take(self, doc: dict[str, Any], endpoint: str) -> Event | None:
        """The event of a frame, or None for a heartbeat; an error frame raised as what it means."""
        self.frames += 1
        if "topic" in doc:
            event = _event(doc, endpoint)
            if not event.snapshot:
                self.index = event.index
            return event
        kind, index = doc.get("type"), _int(doc, "index", endpoint)
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


async def _next_event(ws: aiohttp.ClientWebSocketResponse, position: _Position, endpoint: str) -> Event:
    """The next event of the stream, heartbeats taken in passing; EndpointUnreachable when the stream ends."""
    while True:
        try:
            msg = await ws.receive(timeout=EVENTS_SILENCE)
        except TimeoutError:
            raise EndpointUnreachable(endpoint, f"no heartbeat from the event stream for {EVENTS_SILENCE:g}s") from None
        if msg.type is aiohttp.WSMsgType.TEXT:
            try:
                doc = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                raise UnexpectedResponse(endpoint, 101, "an event stream frame is not JSON") from None
            event = position.take(_object(doc, endpoint), endpoint)
            if event is not None:
                return event
        elif msg.type is aiohttp.WSMsgType.BINARY:
            raise UnexpectedResponse(endpoint, 101, "an event stream frame is binary")
        else:  # closed, by the server (shutting down, say) or the network
            said = f" {msg.extra}" if msg.type is aiohttp.WSMsgType.CLOSE and msg.extra else ""
            code = f" ({ws.close_code}{said})" if ws.close_code else ""
            raise EndpointUnreachable(endpoint, f"the event stream closed{code}")


def _one_line(doc: object) -> str:
    return orjson.dumps(doc).decode()[:200]


def _os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such socket"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return error.strerror or str(error)


# --- wire --------------------------------------------------------------------------------------------------------


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a page of a listing is decoded.

    A page of units is some ten thousand new objects (each option a dict, then a tuple), most of them kept until
    the listing ends: the collector would walk them, and everything else the program holds, again and again as a
    listing grows, to free nothing (decoded JSON has no cycles): for 10,000 units, as long as the decoding itself.
    The pause spans no await, so no other task runs under it, and ends with the page.
    """
    if not gc.isenabled():  # the program's choice: leave it
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _options_json(unit_file: UnitFile) -> list[dict[str, str]]:
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit_file.options]


def _unit(doc: object, endpoint: str) -> Unit:
    """fleet's ``schema.Unit``; a field left out (``omitempty``) reads as empty."""
    unit = _object(doc, endpoint)
    return Unit(
        name=_str(unit, "name", endpoint),
        options=_options(_list(unit.get("options", []), endpoint), endpoint),
        desired_state=_state(unit, "desiredState", endpoint),
        current_state=_state(unit, "currentState", endpoint),
        machine_id=_str(unit, "machineID", endpoint) or None,
    )


def _unit_state(doc: object, endpoint: str) -> UnitState:
    state = _object(doc, endpoint)
    return UnitState(
        name=_str(state, "name", endpoint),
        hash=_str(state, "hash", endpoint),
        machine_id=_str(state, "machineID", endpoint),
        load_state=_str(state, "systemdLoadState", endpoint),
        active_state=_str(state, "systemdActiveState", endpoint),
        sub_state=_str(state, "systemdSubState", endpoint),
    )


def _machine(doc: object, endpoint: str) -> Machine:
    machine = _object(doc, endpoint)
    metadata = _object(machine.get("metadata", {}), endpoint)
    return Machine(
        id=_str(machine, "id", endpoint),
        primary_ip=_str(machine, "primaryIP", endpoint),
        metadata={key: _str(metadata, key, endpoint) for key in metadata},
    )


def _report(doc: object, endpoint: str) -> UnitReport:
    report = _object(doc, endpoint)
    since = report.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
        raise UnexpectedResponse(endpoint, 200, "since is not a number")
    return UnitReport(
        name=_str(report, "name", endpoint),
        description=_str(report, "description", endpoint),
        hash=_str(report, "hash", endpoint),
        desired_state=_state(report, "desiredState", endpoint),
        current_state=_state(report, "currentState", endpoint),
        machine_id=_str(report, "machineID", endpoint) or None,
        primary_ip=_str(report, "primaryIP", endpoint),
        load_state=_str(report, "loadState", endpoint),
        active_state=_str(report, "activeState", endpoint),
        sub_state=_str(report, "subState", endpoint),
        result=_str(report, "result", endpoint),
        since=float(since) if since is not None else None,
        restarts=_int(report, "restarts", endpoint) or 0,
        container_id=_str(report, "containerID", endpoint) or None,
        main_pid=_int(report, "mainPID", endpoint),
        exit_status=_str(report, "exitStatus", endpoint) or None,
        reasons=tuple(_text(r, "reasons", endpoint) for r in _list(report.get("reasons", []), endpoint)),
    )


def _options(docs: list[Any], endpoint: str) -> tuple[UnitOption, ...]:
    """A unit's options. Every unit of a listing has a dozen or so: the usual option (an object of strings, or
    fields left out) is read inline, and anything else goes through the checks that name what is wrong."""
    options = []
    for doc in docs:
        if isinstance(doc, dict):
            section, name, value = doc.get("section", ""), doc.get("name", ""), doc.get("value", "")
            if isinstance(section, str) and isinstance(name, str) and isinstance(value, str):
                options.append(UnitOption(section, name, value))
                continue
        options.append(_option(_object(doc, endpoint), endpoint))
    return tuple(options)


def _event(doc: dict[str, Any], endpoint: str) -> Event:
    index, time, snapshot = doc.get("index"), doc.get("time"), doc.get("snapshot", False)
    if isinstance(index, bool) or not isinstance(index, int):
        raise UnexpectedResponse(endpoint, 101, "an event's index is not an integer")
    if isinstance(time, bool) or not isinstance(time, int | float):
        raise UnexpectedResponse(endpoint, 101, "an event's time is not a number")
    if not isinstance(snapshot, bool):
        raise UnexpectedResponse(endpoint, 101, "an event's snapshot is not a boolean")
    return Event(
        index=index,
        time=float(time),
        topic=_str(doc, "topic", endpoint),
        type=_str(doc, "type", endpoint),
        key=_str(doc, "key", endpoint),
        payload=_object(doc.get("payload", {}), endpoint),
        snapshot=snapshot,
    )


def _option(doc: dict[str, Any], endpoint: str) -> UnitOption:
    return UnitOption(_str(doc, "section", endpoint), _str(doc, "name", endpoint), _str(doc, "value", endpoint))


def _object(doc: object, endpoint: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise UnexpectedResponse(endpoint, 200, "expected a JSON object")
    return doc


def _list(doc: object, endpoint: str) -> list[Any]:
    if not isinstance(doc, list):
        raise UnexpectedResponse(endpoint, 200, "expected a JSON array")
    return doc


def _str(doc: dict[str, Any], key: str, endpoint: str) -> str:
    return _text(doc.get(key, ""), key, endpoint)


def _text(value: object, key: str, endpoint: str) -> str:
    if not isinstance(value, str):
        raise UnexpectedResponse(endpoint, 200, f"{key} is not a string")
    return value


def _int(doc: dict[str, Any], key: str, endpoint: str) -> int | None:
    value = doc.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise UnexpectedResponse(endpoint, 200, f"{key} is not an integer")
    return value


def _state(doc: dict[str, Any], key: str, endpoint: str) -> DesiredState:
    value = doc.get(key, "inactive")  # fleet omitted empty fields; an empty state is no state
    for state in DESIRED_STATES:
        if value == state:
            return state
    raise UnexpectedResponse(endpoint, 200, f"{key} {value!r} is not one of {', '.join(DESIRED_STATES)}")
