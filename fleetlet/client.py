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
        └── MachineNotFound       set_metadata: the cluster has no such machine (.machine_id)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

import aiohttp
import anyio
import orjson
from yarl import URL

from fleetlet.errors import FleetletError
from fleetlet.registry.model import DESIRED_STATES, DesiredState
from fleetlet.units.model import UnitFile, UnitOption

# Seconds per request. fleetctl's --request-timeout defaulted to 3; embedding programs get a little more slack, and
# a long list is many requests of one page each, so the limit never grows with the cluster.
DEFAULT_TIMEOUT: Final = 5.0
API_PREFIX: Final = "/fleet/v1"
# fleetlet's own resources (a unit's status and journal), beside fleet's.
OWN_PREFIX: Final = "/v1"
# fleetctl journal's --lines default.
JOURNAL_LINES: Final = 10
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
        return self.unit_file.hash


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
    ``timeout`` seconds or fails with :class:`EndpointUnreachable`.
    """

    def __init__(self, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
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
            page = _object(await self._json("GET", "units", params=params), self.endpoint)
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
            page = _object(await self._json("GET", "state", params=params), self.endpoint)
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


def _os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such socket"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return error.strerror or str(error)


# --- wire --------------------------------------------------------------------------------------------------------


def _options_json(unit_file: UnitFile) -> list[dict[str, str]]:
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit_file.options]


def _unit(doc: object, endpoint: str) -> Unit:
    """fleet's ``schema.Unit``; a field left out (``omitempty``) reads as empty."""
    unit = _object(doc, endpoint)
    options = tuple(_option(_object(o, endpoint), endpoint) for o in _list(unit.get("options", []), endpoint))
    return Unit(
        name=_str(unit, "name", endpoint),
        options=options,
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
