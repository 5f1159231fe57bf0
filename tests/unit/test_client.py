"""fleetlet.Client against the real API app on a real socket, TCP and unix, over a MemoryRegistry."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import anyio
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
    MachineNotFound,
    MetadataOp,
    Unit,
    UnitConflict,
    UnitReport,
    metadata_ops,
)
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.errors import FleetletError
from fleetlet.registry import MemoryRegistry
from fleetlet.service.journal import MemoryJournal, format_entry
from fleetlet.service.states import UnitStatus
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
    # Scheduled, but no machine reports it (there is no agent behind this API): not launched yet.
    assert (unit.desired_state, unit.current_state, unit.machine_id) == ("launched", "inactive", "1a2b3c4d")


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
    for error in (EndpointUnreachable, APIRequestFailed, InvalidEndpoint, UnitConflict, MachineNotFound):
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


# --- status, journal, metadata -----------------------------------------------------------------------------------

RUNNING = UnitStatus(
    "hello.service",
    HELLO.hash,
    active="active",
    sub="running",
    since=1_800_000_010.25,
    restarts=1,
    container_id="4f3a2b1c0d9e8f7a",
    main_pid=None,
)


@pytest.fixture
def journal() -> MemoryJournal:
    journal = MemoryJournal("hello.service", ManualClock())
    for i in range(12):
        journal.write(f"line {i}", "stdout")
    return journal


@pytest.fixture
def view(journal: MemoryJournal) -> StaticView:
    return StaticView(
        [MachineSpec(A, {"group": "web"}, "10.0.0.1"), MachineSpec("b")],
        [UnitState("hello.service", HELLO.hash, A, "loaded", "active", "running")],
        statuses={"hello.service": RUNNING},
        journals={"hello.service": journal},
        reasons={"stuck.service": ("machine 1a2b3c4d: metadata disk=ssd not satisfied", "machine b: busy")},
    )


@pytest.fixture
async def agent(registry: MemoryRegistry, view: StaticView, tmp_path: Path) -> AsyncIterator[str]:
    """An API with a unit running on machine A and one that cannot be placed."""
    async with registry:
        await registry.put_unit("hello.service", HELLO, desired_state="launched")
        await registry.set_machine("hello.service", A)
        await registry.put_unit("stuck.service", OTHER, desired_state="launched")
        async with served(fleet_v1_app(registry, view=view), "unix", tmp_path) as url:
            yield url


def lines_of(journal: MemoryJournal, n: int) -> list[str]:
    return [format_entry(entry, "hello.service") for entry in journal.tail(n)]


@pytest.mark.anyio
async def test_status_reports_the_unit_its_machine_and_its_state(agent: str) -> None:
    async with Client(agent) as fleet:
        report = await fleet.status("hello.service")
        (unit,) = [u for u in await fleet.units() if u.name == "hello.service"]
    assert report == UnitReport(
        name="hello.service",
        description="HelloWorldApp",
        hash=HELLO.hash,
        desired_state="launched",
        current_state="launched",
        machine_id=A,
        primary_ip="10.0.0.1",
        load_state="loaded",
        active_state="active",
        sub_state="running",
        result="success",
        since=1_800_000_010.25,
        restarts=1,
        container_id="4f3a2b1c0d9e8f7a",
    )
    assert unit.current_state == "launched"  # the machine reports it active


@pytest.mark.anyio
async def test_status_of_a_unit_that_cannot_be_placed_reads_absent_fields_as_empty(agent: str) -> None:
    async with Client(agent) as fleet:
        report = await fleet.status("stuck.service")
    assert report == UnitReport(
        name="stuck.service",
        hash=OTHER.hash,
        desired_state="launched",
        current_state="inactive",
        reasons=("machine 1a2b3c4d: metadata disk=ssd not satisfied", "machine b: busy"),
    )
    assert (report.machine_id, report.since, report.main_pid, report.exit_status) == (None, None, None, None)


@pytest.mark.anyio
async def test_status_of_an_unknown_unit_is_a_404(agent: str) -> None:
    async with Client(agent) as fleet:
        with pytest.raises(APIRequestFailed) as info:
            await fleet.status("nope.service")
    assert (info.value.status, info.value.message) == (404, "unit does not exist")


@pytest.mark.anyio
@pytest.mark.parametrize(("lines", "expected"), [(None, 10), (3, 3), (0, 0), (50, 12)])
async def test_journal_yields_the_last_lines_without_newlines(
    agent: str, journal: MemoryJournal, lines: int | None, expected: int
) -> None:
    async with Client(agent) as fleet:
        got = [
            line
            async for line in (
                fleet.journal("hello.service") if lines is None else fleet.journal("hello.service", lines)
            )
        ]
    assert got == lines_of(journal, expected)
    assert got == [] or got[-1].endswith(" hello.service[stdout]: line 11")


@pytest.mark.anyio
async def test_journal_of_a_unit_without_one_is_empty_and_of_an_unknown_unit_a_404(agent: str) -> None:
    async with Client(agent) as fleet:
        assert [line async for line in fleet.journal("stuck.service", follow=True)] == []
        with pytest.raises(APIRequestFailed) as info:
            async for _ in fleet.journal("nope.service"):
                pass
    assert (info.value.status, info.value.message) == (404, "unit does not exist")


@pytest.mark.anyio
async def test_journal_follow_yields_new_lines_as_they_come_until_the_journal_ends(
    agent: str, journal: MemoryJournal
) -> None:
    async with Client(agent) as fleet, aclosing(fleet.journal("hello.service", 2, follow=True)) as lines:
        with anyio.fail_after(5):
            assert [await anext(lines), await anext(lines)] == lines_of(journal, 2)
            journal.write("a line longer than aiohttp's line reader takes: " + "x" * 200_000, "stderr")
            assert await anext(lines) == lines_of(journal, 1)[0]
            journal.write("héllo wörld", "stdout")
            assert await anext(lines) == lines_of(journal, 1)[0]
            journal.close()
            assert [line async for line in lines] == []


@pytest.mark.anyio
async def test_leaving_a_followed_journal_early_releases_the_connection(agent: str, journal: MemoryJournal) -> None:
    async with Client(agent) as fleet:
        with anyio.fail_after(5):
            async with aclosing(fleet.journal("hello.service", 1, follow=True)) as lines:
                async for _ in lines:
                    break
            assert await fleet.status("hello.service") is not None  # the client goes on working


@pytest.mark.anyio
async def test_journal_refuses_a_negative_count(agent: str) -> None:
    async with Client(agent) as fleet:
        with pytest.raises(ValueError, match="negative"):
            async for _ in fleet.journal("hello.service", -1):
                pass


@pytest.mark.anyio
@pytest.mark.parametrize("follow", [False, True])
async def test_a_journal_that_never_starts_times_out_even_when_following(follow: bool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        async with Client(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=0.05) as fleet:
            with pytest.raises(EndpointUnreachable, match=r": no answer within 0.05s$"):
                async for _ in fleet.journal("hello.service", follow=follow):
                    pass


@pytest.mark.anyio
async def test_a_journal_that_is_not_text_is_an_unexpected_response(tmp_path: Path) -> None:
    async def json_journal(request: web.Request) -> web.Response:
        return web.json_response({"lines": []})

    app = web.Application()
    app.router.add_get("/v1/units/{name}/journal", json_journal)
    async with served(app, "unix", tmp_path) as endpoint, Client(endpoint) as fleet:
        with pytest.raises(client.UnexpectedResponse, match=r"HTTP 200\): the journal is not text/plain$"):
            async for _ in fleet.journal("hello.service"):
                pass


def test_metadata_ops_add_replace_and_remove_by_key() -> None:
    assert metadata_ops(A, {"a": "1", "b": "2", "c": "3"}, {"b": "2", "c": "4", "d": "5"}) == [
        MetadataOp("remove", A, "a"),
        MetadataOp("replace", A, "c", "4"),
        MetadataOp("add", A, "d", "5"),
    ]
    assert metadata_ops(A, {"a": "1"}, {"a": "1"}) == []


def test_metadata_op_json_is_fleets_shape() -> None:
    assert MetadataOp("add", A, "k", "v").to_json() == {
        "op": "add",
        "path": f"/{A}/metadata/k",
        "value": {"value": "v"},
    }
    assert MetadataOp("remove", A, "k").to_json() == {"op": "remove", "path": f"/{A}/metadata/k"}


@pytest.mark.anyio
async def test_set_metadata_makes_the_machines_metadata_exactly_that(
    registry: MemoryRegistry, view: StaticView, tmp_path: Path
) -> None:
    patches: list[bytes] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "PATCH":
            patches.append(await request.read())
        return await handler(request)

    app = fleet_v1_app(registry, view=view)
    app.middlewares.append(record)
    async with registry, served(app, "unix", tmp_path) as endpoint, Client(endpoint) as fleet:
        await fleet.set_metadata(A, {"disk": "ssd", "region": "eu"})
        assert (await fleet.machines())[0] == Machine(A, "10.0.0.1", {"disk": "ssd", "region": "eu"})
        await fleet.set_metadata(A, {"disk": "ssd", "region": "eu"})  # no change: no request
        await fleet.set_metadata("b", {})
        with pytest.raises(MachineNotFound, match=r"^machine c0ffee not found$"):
            await fleet.set_metadata("c0ffee", {"a": "b"})
    assert len(patches) == 1


@pytest.mark.anyio
async def test_patch_machines_passes_the_apis_refusals_on(agent: str) -> None:
    async with Client(agent) as fleet:
        with pytest.raises(APIRequestFailed) as info:
            await fleet.patch_machines([MetadataOp("add", A, "k", "v"), MetadataOp("add", A, "bad key", "v")])
        assert info.value.status == 400
        assert info.value.message.startswith('operations[1]: invalid metadata key "bad key"')
        with pytest.raises(APIRequestFailed) as info:
            await fleet.patch_machines([MetadataOp("remove", "c0ffee", "k")])
        assert (info.value.status, info.value.message) == (404, "machine not found")
        assert (await fleet.machines())[0].metadata == {"group": "web"}
