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
        └── UnitConflict          submit: the unit exists with other contents (.name)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
import orjson
from yarl import URL

from fleetlet.errors import FleetletError
from fleetlet.registry.model import DESIRED_STATES, DesiredState
from fleetlet.units.model import UnitFile, UnitOption

# Seconds per request. fleetctl's --request-timeout defaulted to 3; embedding programs get a little more slack, and
# a long list is many requests of one page each, so the limit never grows with the cluster.
DEFAULT_TIMEOUT: Final = 5.0
API_PREFIX: Final = "/fleet/v1"
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
        self._base, self._socket = _parse_endpoint(endpoint)
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

    # --- transport -------------------------------------------------------------------------------------------

    async def _put(self, name: str, body: dict[str, Any]) -> None:
        self._decode(await self._request("PUT", "units", name, body=orjson.dumps(body)))

    async def _json(self, method: str, *path: str, params: dict[str, str] | None = None) -> Any:
        return self._decode(await self._request(method, *path, params=params))

    async def _request(
        self, method: str, *path: str, params: dict[str, str] | None = None, body: bytes | None = None
    ) -> _Answer:
        if self._session is None:
            raise ClientError("the client is not open: use it as `async with Client(endpoint) as fleet:`")
        url = self._base.joinpath(*path).with_query({"alt": "json", **(params or {})})
        headers = _JSON_HEADERS if body is not None else None
        with _request_errors(self.endpoint, self.timeout):
            async with self._session.request(method, url, data=body, headers=headers) as response:
                return _Answer(response.status, await response.read())

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
    """The base URL of the API and, for ``unix://``, the socket's path."""
    url = URL(endpoint)
    if url.scheme == "unix":
        if url.host or url.path in ("", "/"):
            raise InvalidEndpoint(endpoint, "expected an absolute socket path: unix:///path/to.sock")
        return _UNIX_BASE.with_path(API_PREFIX), url.path
    if url.scheme in ("http", "https"):
        if not url.host:
            raise InvalidEndpoint(endpoint, "no host")
        return url.with_path(API_PREFIX).with_query(None), None
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
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise UnexpectedResponse(endpoint, 200, f"{key} is not a string")
    return value


def _state(doc: dict[str, Any], key: str, endpoint: str) -> DesiredState:
    value = doc.get(key, "inactive")  # fleet omitted empty fields; an empty state is no state
    for state in DESIRED_STATES:
        if value == state:
            return state
    raise UnexpectedResponse(endpoint, 200, f"{key} {value!r} is not one of {', '.join(DESIRED_STATES)}")
