"""The remote backend: the cluster's registry on another agent (the server), reached over its API.

Each call is one ``POST /v1/registry/OP`` (:mod:`fleetlet.api.registry` is the other end); records and errors
are :mod:`fleetlet.registry.codec`'s, so a conflict, a missing unit or a compacted revision raises here what it
raised on the server. A server that cannot be reached raises :class:`RegistryUnavailable`.

Watches do not raise it: like an etcd client's, a watch whose connection breaks, or whose server falls silent for
longer than :data:`SILENCE_SECONDS`, reconnects (with growing pauses) and resumes after the last change it
delivered, so its receiver sees every change once, in order, however often the connection broke. A revision the
server no longer keeps raises :class:`RevisionCompacted`, as from any backend.

Leader records are passed through as they are: ``expires_at`` is on the server's clock. Agents that joined
through the server do not lead (the server does), so nothing here compares it with a local clock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import Clock, SystemClock
from fleetlet.cluster.auth import REGISTRY_TOKEN_HEADER
from fleetlet.registry.codec import (
    NDJSON,
    PATH,
    WATCH_HEARTBEAT_SECONDS,
    Json,
    RegistryProtocolError,
    decode_change,
    decode_error,
    decode_leader,
    decode_page,
    decode_schedule,
    decode_unit,
    json_int,
    json_object,
    json_str,
    leader_json,
)
from fleetlet.registry.errors import RegistryClosed, RegistryUnavailable
from fleetlet.registry.model import (
    Change,
    DesiredState,
    LeaderRecord,
    ScheduleView,
    UnitPage,
    UnitRecord,
    check_desired_state,
)
from fleetlet.registry.protocol import DEFAULT_PAGE
from fleetlet.registry.watch import Position
from fleetlet.units.model import UnitFile

log = logging.getLogger(__name__)

CALL_TIMEOUT = 10.0
# A watch that hears nothing, not even a heartbeat, for this long reconnects: the server or the path is gone.
SILENCE_SECONDS = 3 * WATCH_HEARTBEAT_SECONDS
RECONNECT_PAUSES = (0.1, 0.2, 0.5, 1.0, 2.0)  # then the last, until the server answers again


class RemoteRegistry:
    """The :class:`~fleetlet.registry.protocol.Registry` served at ``url`` (an agent's API, ``http://host:port``).

    ``token`` is the cluster key's registry token, when the server has a key. Use it as ``async with``.
    """

    def __init__(
        self, url: str, *, token: str | None = None, clock: Clock | None = None, timeout: float = CALL_TIMEOUT
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {REGISTRY_TOKEN_HEADER: token} if token is not None else {}
        self._clock = clock or SystemClock()
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._watches: set[anyio.CancelScope] = set()

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        for scope in self._watches:
            scope.cancel()
        if self._session is not None:
            with anyio.CancelScope(shield=True):  # a cancelled caller still releases the connections
                await self._session.close()

    # --- the port ----------------------------------------------------------------------------------------------

    async def revision(self) -> int:
        return json_int(await self._call("revision", {}), "revision")

    async def get_unit(self, name: str) -> UnitRecord | None:
        found = (await self._call("get-unit", {"name": name})).get("unit")
        return decode_unit(found) if found is not None else None

    async def list_units(self, *, limit: int = DEFAULT_PAGE, after: str | None = None) -> UnitPage:
        return decode_page(await self._call("list-units", {"limit": limit, "after": after}))

    async def put_unit(
        self, name: str, unit: UnitFile, *, desired_state: DesiredState = "inactive", expect_revision: int | None = None
    ) -> int:
        check_desired_state(desired_state)
        args = {
            "name": name,
            "text": unit.serialize(),
            "desiredState": desired_state,
            "expectRevision": expect_revision,
        }
        return json_int(await self._call("put-unit", args), "revision")

    async def set_desired_state(self, name: str, state: DesiredState, *, expect_revision: int | None = None) -> int:
        check_desired_state(state)
        args = {"name": name, "state": state, "expectRevision": expect_revision}
        return json_int(await self._call("set-desired-state", args), "revision")

    async def delete_unit(self, name: str, *, expect_revision: int | None = None) -> int:
        args = {"name": name, "expectRevision": expect_revision}
        return json_int(await self._call("delete-unit", args), "revision")

    async def schedule(self) -> ScheduleView:
        return decode_schedule(await self._call("schedule", {}))

    async def machine_schedule(self, machine_id: str) -> ScheduleView:
        return decode_schedule(await self._call("machine-schedule", {"machineId": machine_id}))

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        args = {"unit": unit, "machineId": machine_id, "expectRevision": expect_revision, "term": term}
        return json_int(await self._call("set-machine", args), "revision")

    async def clear_machine(self, unit: str, *, expect_revision: int | None = None, term: int | None = None) -> int:
        args = {"unit": unit, "expectRevision": expect_revision, "term": term}
        return json_int(await self._call("clear-machine", args), "revision")

    async def leader(self) -> LeaderRecord | None:
        return _leader_or_none(await self._call("leader", {}))

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        return _leader_or_none(await self._call("campaign", {"machineId": machine_id, "ttl": ttl}))

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        return decode_leader((await self._call("renew", {"record": leader_json(record), "ttl": ttl})).get("leader"))

    async def resign(self, record: LeaderRecord) -> None:
        await self._call("resign", {"record": leader_json(record)})

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        if from_revision < 0:
            raise ValueError("from_revision must be >= 0")
        async with sink:
            with anyio.CancelScope() as scope:
                self._watches.add(scope)
                try:
                    if self._closed:
                        scope.cancel()
                    await self._follow(Position(from_revision), prefix, sink)
                finally:
                    self._watches.discard(scope)
            if self._closed:
                raise RegistryClosed("the registry was closed")

    # --- the wire ----------------------------------------------------------------------------------------------

    async def _call(self, op: str, args: Json) -> Json:
        session = self._open_session()
        try:
            async with session.post(
                f"{self.url}{PATH}/{op}",
                data=orjson.dumps(args),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RegistryUnavailable(self.url, _reason(exc)) from exc
        answer = _decode(body, status)
        if status != 200:
            raise decode_error(answer)
        return answer

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed or self._session is None:
            raise RegistryClosed("the registry was closed" if self._closed else "the registry is not open")
        return self._session

    async def _follow(self, position: Position, prefix: str, sink: MemoryObjectSendStream[Change]) -> None:
        """Stream changes into ``sink`` across reconnections until the receiver goes away."""
        failures = 0
        while True:
            try:
                await self._stream(position, prefix, sink)
                failures = 0  # the server ended the stream cleanly (shutting down): reconnect at once
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the receiver closed its end
            except RegistryUnavailable as exc:
                if failures == 0:
                    log.warning("registry watch broken (%s); reconnecting", exc.reason)
                pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)]
                failures += 1
                await self._clock.sleep(pause)

    async def _stream(self, position: Position, prefix: str, sink: MemoryObjectSendStream[Change]) -> None:
        session = self._open_session()
        args = {"fromRevision": position.resume_after, "prefix": prefix}
        # The changes of an interrupted write that were delivered already: the server sends them again first.
        interrupted, to_skip = position.revision, position.delivered
        try:
            async with session.post(
                f"{self.url}{PATH}/watch",
                data=orjson.dumps(args),
                headers={"Content-Type": "application/json", "Accept": NDJSON},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=SILENCE_SECONDS),
            ) as response:
                if response.status != 200:
                    raise decode_error(_decode(await response.read(), response.status))
                async for line in response.content:
                    message = _decode(line, 200)
                    if "heartbeat" in message:
                        continue
                    if "error" in message:
                        raise decode_error(message)
                    change = decode_change(message)
                    if to_skip and change.revision == interrupted:
                        to_skip -= 1
                        continue
                    await sink.send(change)
                    position.delivered_one(change.revision)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RegistryUnavailable(self.url, _reason(exc)) from exc


def _leader_or_none(answer: Json) -> LeaderRecord | None:
    record = answer.get("leader")
    return decode_leader(record) if record is not None else None


def _decode(body: bytes, status: int) -> Json:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RegistryProtocolError(f"HTTP {status} with a body that is not JSON: {body[:80]!r}") from exc
    answer = json_object(data, f"HTTP {status} answer")
    if status != 200 and "error" not in answer:
        raise RegistryProtocolError(f"HTTP {status} without an error in the answer")
    return answer


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def locate(members: Sequence[str], *, token: str | None = None, per_member: float = CALL_TIMEOUT) -> str:
    """The URL of the cluster's registry, asked of each member in turn (``GET /v1/registry``) until one answers.

    Any member knows it: the server answers its own URL, a joined agent the one it uses. RegistryUnavailable,
    with every member's reason, when none answers; RegistryError when one refuses (a wrong cluster key).
    """
    reasons: list[str] = []
    headers = {REGISTRY_TOKEN_HEADER: token} if token is not None else {}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=per_member)) as session:
        for member in members:
            try:
                async with session.get(f"{member.rstrip('/')}{PATH}") as response:
                    body, status = await response.read(), response.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reasons.append(f"{member}: {_reason(exc)}")
                continue
            answer = _decode(body, status)
            if status != 200:
                raise decode_error(answer)
            return json_str(answer, "url")
    raise RegistryUnavailable(", ".join(members), "; ".join(reasons) or "no member to ask")
