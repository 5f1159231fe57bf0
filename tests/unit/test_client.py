"""fleetlet.Client against the real API app on a real socket, TCP and unix, over a MemoryRegistry."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from fleetlet import client
from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.client import (
    APIRequestFailed,
    Client,
    ClientError,
    EndpointUnreachable,
    InvalidEndpoint,
    Machine,
    Unit,
    UnitConflict,
)
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.errors import FleetletError
from fleetlet.registry import MemoryRegistry
from fleetlet.units.check import load_unit
from fleetlet.units.model import UnitFile, UnitOption
from tests.fleet_units import HELLO_WORLD

PAGE_SIZE = 2
HELLO = load_unit(HELLO_WORLD, "hello.service").file
OTHER = UnitFile.from_options([("Service", "ExecStart", "/usr/bin/docker run --rm busybox true")])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry(ManualClock())


@asynccontextmanager
async def served(app: web.Application, site: str, tmp_path: Path) -> AsyncIterator[str]:
    """Serve ``app`` on a real socket; yield the endpoint a client dials."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        if site == "tcp":
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            yield f"http://{host}:{port}"
        else:
            path = tmp_path / "api.sock"
            await web.UnixSite(runner, str(path)).start()
            yield f"unix://{path}"
    finally:
        await runner.cleanup()


@pytest.fixture(params=["tcp", "unix"])
async def endpoint(request: pytest.FixtureRequest, registry: MemoryRegistry, tmp_path: Path) -> AsyncIterator[str]:
    async with registry, served(fleet_v1_app(registry, page_size=PAGE_SIZE), request.param, tmp_path) as url:
        yield url


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound, so no one else takes it, but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# --- units -------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_then_get_returns_the_unit_as_submitted(endpoint: str) -> None:
    async with Client(endpoint) as fleet:
        assert await fleet.submit("hello.service", HELLO) is True
        unit = await fleet.unit("hello.service")
    assert unit == Unit("hello.service", HELLO.options, "inactive", "inactive", None)
    assert unit.unit_file == HELLO
    assert unit.hash == HELLO.hash


@pytest.mark.anyio
async def test_submit_of_the_same_contents_is_a_no_op_and_keeps_the_desired_state(endpoint: str) -> None:
    async with Client(endpoint) as fleet:
        await fleet.submit("hello.service", HELLO)
        await fleet.start("hello.service")
        assert await fleet.submit("hello.service", HELLO) is False
        unit = await fleet.unit("hello.service")
    assert unit is not None
    assert unit.desired_state == "launched"


@pytest.mark.anyio
async def test_submit_of_other_contents_is_a_conflict_and_create_unit_replaces(endpoint: str) -> None:
    async with Client(endpoint) as fleet:
        await fleet.submit("hello.service", HELLO)
        with pytest.raises(UnitConflict, match=r"^unit hello.service already exists with different contents$"):
            await fleet.submit("hello.service", OTHER)
        await fleet.create_unit("hello.service", OTHER, desired_state="loaded")
        unit = await fleet.unit("hello.service")
    assert unit is not None
    assert (unit.hash, unit.desired_state) == (OTHER.hash, "loaded")


@pytest.mark.anyio
async def test_units_follows_page_tokens_to_the_last_page(endpoint: str) -> None:
    names = [f"u{i}.service" for i in range(2 * PAGE_SIZE + 1)]
    async with Client(endpoint) as fleet:
        assert await fleet.units() == []
        for name in reversed(names):
            await fleet.create_unit(name, OTHER)
        units = await fleet.units()
    assert [u.name for u in units] == names
    assert {u.hash for u in units} == {OTHER.hash}


@pytest.mark.anyio
async def test_units_reports_the_machine_of_a_scheduled_unit(endpoint: str, registry: MemoryRegistry) -> None:
    async with Client(endpoint) as fleet:
        await fleet.create_unit("hello.service", HELLO, desired_state="launched")
        await registry.set_machine("hello.service", "1a2b3c4d")
        (unit,) = await fleet.units()
    assert (unit.desired_state, unit.current_state, unit.machine_id) == ("launched", "launched", "1a2b3c4d")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("command", "desired"),
    [("load", "loaded"), ("start", "launched"), ("stop", "loaded"), ("unload", "inactive")],
)
async def test_state_commands_set_fleets_desired_states(endpoint: str, command: str, desired: str) -> None:
    async with Client(endpoint) as fleet:
        await fleet.create_unit("hello.service", HELLO, desired_state="launched" if command != "start" else "loaded")
        await getattr(fleet, command)("hello.service")
        unit = await fleet.unit("hello.service")
    assert unit is not None
    assert unit.desired_state == desired


@pytest.mark.anyio
async def test_destroy_removes_the_unit(endpoint: str) -> None:
    async with Client(endpoint) as fleet:
        await fleet.submit("hello.service", HELLO)
        await fleet.destroy("hello.service")
        assert await fleet.unit("hello.service") is None
        assert await fleet.units() == []


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_unknown_unit_is_none_and_destroying_it_is_a_404(endpoint: str) -> None:
    async with Client(endpoint) as fleet:
        assert await fleet.unit("nope.service") is None
        with pytest.raises(APIRequestFailed) as info:
            await fleet.destroy("nope.service")
    assert (info.value.status, info.value.message) == (404, "unit does not exist")
    assert str(info.value) == "unit does not exist (HTTP 404)"


@pytest.mark.anyio
async def test_setting_the_state_of_an_unknown_unit_is_a_409(endpoint: str) -> None:
    async with Client(endpoint) as fleet:
        with pytest.raises(APIRequestFailed) as info:
            await fleet.start("nope.service")
    assert (info.value.status, info.value.message) == (409, "unit does not exist and options field empty")


@pytest.mark.anyio
async def test_an_invalid_unit_file_is_a_400_with_its_file_and_line(endpoint: str) -> None:
    bad = UnitFile.from_options(
        [UnitOption("Service", "Restart", "sometimes"), UnitOption("Service", "ExecStart", "/bin/true")]
    )
    async with Client(endpoint) as fleet:
        with pytest.raises(APIRequestFailed) as info:
            await fleet.submit("a.service", bad)
        assert await fleet.units() == []
    assert info.value.status == 400
    assert info.value.message.startswith("a.service:2: Restart=: invalid value 'sometimes'")


@pytest.mark.anyio
async def test_a_closed_tcp_port_is_unreachable(closed_port: int) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}"
    async with Client(endpoint) as fleet:
        with pytest.raises(EndpointUnreachable) as info:
            await fleet.units()
    assert str(info.value) == f"cannot reach the fleet API at {endpoint}: connection refused"
    assert info.value.endpoint == endpoint


@pytest.mark.anyio
async def test_a_missing_unix_socket_is_unreachable(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path / 'missing.sock'}"
    async with Client(endpoint) as fleet:
        with pytest.raises(EndpointUnreachable) as info:
            await fleet.unit("hello.service")
    assert str(info.value) == f"cannot reach the fleet API at {endpoint}: no such socket"


@pytest.mark.anyio
async def test_a_server_that_never_answers_times_out() -> None:
    # The kernel completes the connection from the listen backlog; nothing ever reads the request.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with Client(endpoint, timeout=0.05) as fleet:
            with pytest.raises(EndpointUnreachable, match=r": no answer within 0.05s$"):
                await fleet.units()


@pytest.mark.anyio
async def test_a_server_that_is_not_fleet_is_an_unexpected_response(tmp_path: Path) -> None:
    app = web.Application()
    async with served(app, "unix", tmp_path) as endpoint, Client(endpoint) as fleet:
        with pytest.raises(ClientError, match=r"HTTP 404\): the body is not JSON$"):
            await fleet.units()


@pytest.mark.parametrize(
    "endpoint", ["ftp://host", "unix://relative/path.sock", "unix://", "http://", "127.0.0.1:8080"]
)
def test_an_endpoint_of_another_form_is_refused(endpoint: str) -> None:
    with pytest.raises(InvalidEndpoint, match=r"^invalid endpoint "):
        Client(endpoint)


@pytest.mark.anyio
async def test_a_client_used_outside_async_with_says_so() -> None:
    with pytest.raises(ClientError, match="not open"):
        await Client("http://127.0.0.1:1").units()


def test_client_errors_are_fleetlet_errors() -> None:
    for error in (EndpointUnreachable, APIRequestFailed, InvalidEndpoint, UnitConflict):
        assert issubclass(error, ClientError)
    assert issubclass(ClientError, FleetletError)


@pytest.mark.anyio
async def test_every_request_asks_for_json_like_fleetctl(registry: MemoryRegistry, tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append((request.method, request.query_string))
        return await handler(request)

    app = fleet_v1_app(registry, page_size=PAGE_SIZE)
    app.middlewares.append(record)
    async with registry, served(app, "tcp", tmp_path) as endpoint, Client(endpoint) as fleet:
        for name in ("a.service", "b.service", "c.service"):
            await fleet.create_unit(name, OTHER)
        await fleet.start("a.service")
        await fleet.unit("a.service")
        await fleet.units()
        await fleet.destroy("a.service")
    assert [method for method, _ in seen] == ["PUT"] * 4 + ["GET"] * 3 + ["DELETE"]
    assert [query.split("&")[0] for _, query in seen] == ["alt=json"] * len(seen)
    assert seen[6][1].startswith("alt=json&nextPageToken=")


# --- states and machines -----------------------------------------------------------------------------------------

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
STATES = [
    UnitState("u2.service", "h2", A, "loaded", "active", "running"),
    UnitState("u1.service", "h1", A, "loaded", "failed", "failed"),
    UnitState("u3.service", "", "b", "loaded", "inactive", "dead"),
]


@pytest.fixture
async def cluster(registry: MemoryRegistry, tmp_path: Path) -> AsyncIterator[str]:
    app = fleet_v1_app(
        registry,
        page_size=PAGE_SIZE,
        view=StaticView([MachineSpec(A, {"group": "web"}, "10.0.0.1"), MachineSpec("b")], list(STATES)),
    )
    async with registry, served(app, "unix", tmp_path) as url:
        yield url


@pytest.mark.anyio
async def test_states_follows_pages_and_filters(cluster: str) -> None:
    async with Client(cluster) as fleet:
        every = await fleet.states()
        on_a = await fleet.states(machine_id=A)
        u3 = await fleet.states(unit_name="u3.service")
    assert every == [
        client.UnitState("u1.service", "h1", A, "loaded", "failed", "failed"),
        client.UnitState("u2.service", "h2", A, "loaded", "active", "running"),
        client.UnitState("u3.service", "", "b", "loaded", "inactive", "dead"),
    ]
    assert [s.name for s in on_a] == ["u1.service", "u2.service"]
    assert u3 == every[2:]


@pytest.mark.anyio
async def test_machines_reads_ip_and_metadata_and_their_absence(cluster: str) -> None:
    async with Client(cluster) as fleet:
        assert await fleet.machines() == [Machine(A, "10.0.0.1", {"group": "web"}), Machine("b", "", {})]


@pytest.mark.anyio
async def test_states_and_machines_of_an_agentless_api_are_empty(endpoint: str) -> None:
    async with Client(endpoint) as fleet:
        assert await fleet.states() == []
        assert await fleet.machines() == []
