"""``/v1/registry/...``: the server's registry for the cluster's other agents (the remote backend's other end).

Every operation of the :class:`~fleetlet.registry.protocol.Registry` port is one ``POST /v1/registry/OP`` with its
arguments as a JSON object and its result as one, in the style of etcd's JSON gateway rather than of a REST
resource tree: the caller is a program implementing a port, not a person. Errors are the registry's own, encoded by
:mod:`fleetlet.registry.codec` with an HTTP status, so the remote caller raises the exception the registry raised.

``POST /v1/registry/watch`` streams NDJSON: one change per line, and a ``{"heartbeat": true}`` line every
:data:`WATCH_HEARTBEAT_SECONDS` that tells the caller the server is alive (it times out a silent stream) and lets
a dead caller's watch end at the next write. An error (a compacted revision, the registry closing) is the last
line. ``GET /v1/registry`` says where the cluster's registry is: the agent that holds it answers its own URL, a
joined agent the URL it uses, so a new agent can join through any member.

With a cluster key, every call must carry the key's registry token (:func:`~fleetlet.cluster.auth.registry_token`):
these routes write the schedule directly, past every check the fleet API makes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from aiohttp import hdrs, web
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleetlet.api.journal import Followers
from fleetlet.clock import Clock
from fleetlet.cluster.auth import REGISTRY_TOKEN_HEADER, check_registry_token
from fleetlet.registry.codec import (
    ERROR_STATUS,
    NDJSON,
    PATH,
    WATCH_HEARTBEAT_SECONDS,
    Json,
    RegistryProtocolError,
    change_json,
    decode_leader,
    error_json,
    json_int,
    json_object,
    json_str,
    leader_json,
    page_json,
    schedule_json,
    unit_json,
)
from fleetlet.registry.errors import RegistryError
from fleetlet.registry.model import Change, check_desired_state
from fleetlet.registry.protocol import Registry
from fleetlet.units.syntax import parse

log = logging.getLogger(__name__)

# Changes one watch holds between the registry and the socket; a slow reader slows its watch, nothing more.
WATCH_BUFFER = 512

Operation = Callable[[Registry, Json], Awaitable[Json]]


@dataclass(frozen=True, slots=True)
class RegistryService:
    """What the routes serve: the registry, where it is, and the key its callers must prove."""

    registry: Registry
    url: Callable[[], str]  # the URL of the agent holding the registry (this one's, or the one it uses)
    key: bytes | None
    clock: Clock


def routes(service: RegistryService, followers: Followers) -> list[web.RouteDef]:
    async def call(request: web.Request) -> web.StreamResponse:
        refused = _refusal(service, request)
        if refused is not None:
            return refused
        name = request.match_info["op"]
        try:
            args = json_object(orjson.loads(await request.read() or b"{}"), "arguments")
            if name == "watch":
                return await _watch(service, followers, request, args)
            operation = OPERATIONS.get(name)
            if operation is None:
                return _error(404, "invalid", f"no registry operation {name!r}")
            return _json(200, await operation(service.registry, args))
        except orjson.JSONDecodeError as exc:
            return _error(400, "invalid", f"arguments are not JSON: {exc}")
        except RegistryProtocolError as exc:
            return _error(400, "invalid", str(exc))
        except (RegistryError, ValueError) as exc:
            body = error_json(exc)
            return _json(ERROR_STATUS.get(body["error"]["code"], 500), body)

    async def where(request: web.Request) -> web.Response:
        refused = _refusal(service, request)
        return refused or _json(200, {"url": service.url()})

    return [web.get(PATH, where), web.post(f"{PATH}/{{op}}", call)]


def _refusal(service: RegistryService, request: web.Request) -> web.Response | None:
    if check_registry_token(service.key, request.headers.get(REGISTRY_TOKEN_HEADER)):
        return None
    log.warning("registry call from %s refused: no valid cluster key token", request.remote)
    return _error(401, "unauthorized", "the registry needs the cluster key: this caller does not prove it")


# --- the operations ----------------------------------------------------------------------------------------------


def _expect(args: Json) -> int | None:
    return None if args.get("expectRevision") is None else json_int(args, "expectRevision")


def _term(args: Json) -> int | None:
    return None if args.get("term") is None else json_int(args, "term")


async def _revision(registry: Registry, args: Json) -> Json:
    return {"revision": await registry.revision()}


async def _get_unit(registry: Registry, args: Json) -> Json:
    record = await registry.get_unit(json_str(args, "name"))
    return {"unit": unit_json(record) if record is not None else None}


async def _list_units(registry: Registry, args: Json) -> Json:
    after = args.get("after")
    if after is not None and not isinstance(after, str):
        raise RegistryProtocolError("after must be a string or null")
    return page_json(await registry.list_units(limit=json_int(args, "limit"), after=after))


async def _put_unit(registry: Registry, args: Json) -> Json:
    name = json_str(args, "name")
    unit = parse(json_str(args, "text"), name)
    state = check_desired_state(json_str(args, "desiredState"))
    return {"revision": await registry.put_unit(name, unit, desired_state=state, expect_revision=_expect(args))}


async def _set_desired_state(registry: Registry, args: Json) -> Json:
    state = check_desired_state(json_str(args, "state"))
    return {"revision": await registry.set_desired_state(json_str(args, "name"), state, expect_revision=_expect(args))}


async def _delete_unit(registry: Registry, args: Json) -> Json:
    return {"revision": await registry.delete_unit(json_str(args, "name"), expect_revision=_expect(args))}


async def _schedule(registry: Registry, args: Json) -> Json:
    return schedule_json(await registry.schedule())


async def _machine_schedule(registry: Registry, args: Json) -> Json:
    return schedule_json(await registry.machine_schedule(json_str(args, "machineId")))


async def _set_machine(registry: Registry, args: Json) -> Json:
    unit, machine = json_str(args, "unit"), json_str(args, "machineId")
    return {"revision": await registry.set_machine(unit, machine, expect_revision=_expect(args), term=_term(args))}


async def _clear_machine(registry: Registry, args: Json) -> Json:
    unit = json_str(args, "unit")
    return {"revision": await registry.clear_machine(unit, expect_revision=_expect(args), term=_term(args))}


async def _leader(registry: Registry, args: Json) -> Json:
    record = await registry.leader()
    return {"leader": leader_json(record) if record is not None else None}


def _ttl(args: Json) -> float:
    ttl = args.get("ttl")
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise RegistryProtocolError("ttl must be a number")
    return float(ttl)


async def _campaign(registry: Registry, args: Json) -> Json:
    record = await registry.campaign(json_str(args, "machineId"), _ttl(args))
    return {"leader": leader_json(record) if record is not None else None}


async def _renew(registry: Registry, args: Json) -> Json:
    return {"leader": leader_json(await registry.renew(decode_leader(args.get("record")), _ttl(args)))}


async def _resign(registry: Registry, args: Json) -> Json:
    await registry.resign(decode_leader(args.get("record")))
    return {}


OPERATIONS: dict[str, Operation] = {
    "revision": _revision,
    "get-unit": _get_unit,
    "list-units": _list_units,
    "put-unit": _put_unit,
    "set-desired-state": _set_desired_state,
    "delete-unit": _delete_unit,
    "schedule": _schedule,
    "machine-schedule": _machine_schedule,
    "set-machine": _set_machine,
    "clear-machine": _clear_machine,
    "leader": _leader,
    "campaign": _campaign,
    "renew": _renew,
    "resign": _resign,
}


# --- the watch ---------------------------------------------------------------------------------------------------


async def _watch(
    service: RegistryService, followers: Followers, request: web.Request, args: Json
) -> web.StreamResponse:
    from_revision = json_int(args, "fromRevision")
    prefix = args.get("prefix", "")
    if not isinstance(prefix, str):
        raise RegistryProtocolError("prefix must be a string")
    if from_revision < 0:
        raise ValueError("from_revision must be >= 0")
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: NDJSON})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with followers.following():
        await _WatchStream(service, response).run(from_revision, prefix)
    return response


class _WatchStream:
    """One watch's response: changes as they come, heartbeats while none do, and an error as the last line."""

    def __init__(self, service: RegistryService, response: web.StreamResponse) -> None:
        self._service = service
        self._response = response
        self._writing = anyio.Lock()  # the pump and the heartbeat both write; lines must not interleave
        self._ended = anyio.CancelScope()

    async def run(self, from_revision: int, prefix: str) -> None:
        """Stream until the registry's watch fails, the caller goes away, or the server shuts down."""
        send, receive = anyio.create_memory_object_stream[Change](WATCH_BUFFER)
        with self._ended:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._follow, from_revision, prefix, send)
                tg.start_soon(self._heartbeats)
                await self._pump(receive)
            self._ended.cancel()

    async def _follow(self, from_revision: int, prefix: str, send: MemoryObjectSendStream[Change]) -> None:
        try:
            await self._service.registry.watch(from_revision, send, prefix=prefix)
        except RegistryError as exc:
            await self._write([error_json(exc)])
            self._ended.cancel()

    async def _pump(self, receive: MemoryObjectReceiveStream[Change]) -> None:
        """Write what the watch sends, as many changes per chunk as are waiting: a replay goes out in few writes."""
        async with receive:
            async for change in receive:
                batch = [change_json(change)]
                while len(batch) < WATCH_BUFFER:
                    try:
                        batch.append(change_json(receive.receive_nowait()))
                    except anyio.WouldBlock:
                        break
                await self._write(batch)

    async def _heartbeats(self) -> None:
        while True:
            await self._service.clock.sleep(WATCH_HEARTBEAT_SECONDS)
            await self._write([{"heartbeat": True}])

    async def _write(self, lines: list[Any]) -> None:
        async with self._writing:
            try:
                await self._response.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))
            except (ConnectionError, RuntimeError):  # the caller went away (aiohttp raises either)
                self._ended.cancel()


def _json(status: int, body: Json) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, {"error": {"code": code, "message": message}})
