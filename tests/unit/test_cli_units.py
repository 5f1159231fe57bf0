"""fleetctl's unit commands through ``main([...])`` against the real API app on a unix socket over a MemoryRegistry.

``main`` runs its own event loop, so each command runs in a worker thread while the test's loop serves the API.
No agent runs: a command that waits would wait for nothing, so these use ``--no-block`` or units already where
the command puts them; ``test_cli_blocking`` covers the waiting.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import orjson
import pytest
from aiohttp import web

from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.cli.main import main
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry
from fleetlet.units.check import load_unit
from tests.fleet_units import HELLO_WORLD

pytestmark = pytest.mark.anyio

SIMPLE = """\
# a comment fleet drops
[Unit]
Description=Simple

[Service]
ExecStart = /usr/bin/docker run --rm busybox true
"""
SIMPLE_CAT = """\
[Unit]
Description=Simple

[Service]
ExecStart=/usr/bin/docker run --rm busybox true
"""
SIMPLE_HASH = load_unit(SIMPLE, "simple.service").hash
HELLO_HASH = load_unit(HELLO_WORLD, "hello.service").hash
MACHINE = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
GLOBAL = SIMPLE + "\n[X-Fleet]\nGlobal=true\n"

Run = tuple[int, str, str]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(registry: MemoryRegistry, socket: Path, view: StaticView | None = None) -> AsyncIterator[str]:
    # small pages: lists cross page boundaries
    runner = web.AppRunner(fleet_v1_app(registry, page_size=2, view=view))
    await runner.setup()
    try:
        await web.UnixSite(runner, str(socket)).start()
        yield f"unix://{socket}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def registry() -> AsyncIterator[MemoryRegistry]:
    async with MemoryRegistry(ManualClock()) as registry:
        yield registry


@pytest.fixture
def view() -> StaticView:
    """What the API reports beyond the registry: no machine and no unit state until a test adds them."""
    return StaticView()


@pytest.fixture
async def endpoint(registry: MemoryRegistry, view: StaticView, tmp_path: Path) -> AsyncIterator[str]:
    async with serving(registry, tmp_path / "api.sock", view) as url:
        yield url


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory, where lazy creation looks for unit files."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("FLEETCTL_ENDPOINT", raising=False)
    monkeypatch.delenv("FLEETLET_ENDPOINT", raising=False)
    return work


class Fleetctl:
    """The CLI as a user types it, pointed at the test's API unless told otherwise."""

    def __init__(self, endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.endpoint = endpoint
        self.capsys = capsys

    async def __call__(self, *args: str, endpoint: str | None = None) -> Run:
        """Run ``fleetctl ARGS --endpoint E``; the exit status, stdout and stderr."""
        argv = [*args, "--endpoint", endpoint] if endpoint is not None else [*args, "--endpoint", self.endpoint]
        return await self.bare(*argv)

    async def bare(self, *argv: str) -> Run:
        self.capsys.readouterr()
        status = await anyio.to_thread.run_sync(main, list(argv))
        captured = self.capsys.readouterr()
        return status, captured.out, captured.err


@pytest.fixture
def cli(endpoint: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> Fleetctl:
    return Fleetctl(endpoint, capsys)


def write(directory: Path, name: str, text: str = SIMPLE) -> Path:
    path = directory / name
    path.write_text(text)
    return path


async def desired(registry: MemoryRegistry, name: str) -> str | None:
    record = await registry.get_unit(name)
    return None if record is None else record.desired_state


# --- submit and cat ----------------------------------------------------------------------------------------------


async def test_submit_names_the_unit_after_its_file_and_cat_prints_the_normalized_text(
    cli: Fleetctl, workdir: Path
) -> None:
    write(workdir, "simple.service")
    assert await cli("submit", "simple.service") == (0, "Unit simple.service inactive\n", "")
    assert await cli("cat", "simple") == (0, SIMPLE_CAT, "")


async def test_submit_takes_paths_and_is_idempotent(cli: Fleetctl, workdir: Path, registry: MemoryRegistry) -> None:
    (workdir / "units").mkdir()
    write(workdir / "units", "simple.service")
    write(workdir / "units", "hello.service", HELLO_WORLD)
    assert await cli("submit", "units/simple.service", "./units/hello") == (
        0,
        "Unit simple.service inactive\nUnit hello.service inactive\n",
        "",
    )
    assert await cli("submit", "units/simple.service") == (0, "", "")
    assert await desired(registry, "hello.service") == "inactive"


async def test_submit_refuses_other_contents_under_a_submitted_name(cli: Fleetctl, workdir: Path) -> None:
    write(workdir, "simple.service")
    await cli("submit", "simple.service")
    write(workdir, "simple.service", SIMPLE.replace("Simple", "Changed"))
    assert await cli("submit", "simple.service") == (
        1,
        "",
        "Error creating units: unit simple.service in the registry differs from local unit file simple.service; "
        "destroy it first to submit the new contents\n",
    )
    assert (await cli("cat", "simple.service"))[1] == SIMPLE_CAT


async def test_submit_reports_an_invalid_file_as_verify_does(
    cli: Fleetctl, workdir: Path, registry: MemoryRegistry
) -> None:
    write(workdir, "bad.service", SIMPLE + "ExecStop\n")
    assert await cli("submit", "bad.service") == (1, "", "bad.service:7: expected key=value\n")
    assert await registry.get_unit("bad.service") is None


async def test_submit_of_a_missing_file(cli: Fleetctl) -> None:
    assert await cli("submit", "nope.service") == (
        1,
        "",
        "Error creating units: unable to find Unit(nope.service) in Registry or on filesystem\n",
    )


async def test_submit_of_an_invalid_name(cli: Fleetctl) -> None:
    assert await cli("submit", "@x.service") == (
        1,
        "",
        "Error creating units: invalid unit name '@x.service': it cannot start with \"@\"\n",
    )


async def test_cat_of_an_unknown_unit(cli: Fleetctl) -> None:
    assert await cli("cat", "nope") == (1, "", "Unit nope.service not found\n")


# --- list-unit-files ---------------------------------------------------------------------------------------------


@pytest.fixture
async def listed(cli: Fleetctl, workdir: Path, registry: MemoryRegistry, view: StaticView) -> Fleetctl:
    """hello.service launched on MACHINE, simple.service inactive, everywhere.service global and launched."""
    view.state_list.append(UnitState("hello.service", HELLO_HASH, MACHINE, "loaded", "active", "running"))
    write(workdir, "hello.service", HELLO_WORLD)
    write(workdir, "simple.service")
    write(workdir, "everywhere.service", GLOBAL)
    assert (await cli("start", "--no-block", "hello", "everywhere"))[0] == 0
    assert (await cli("submit", "simple.service"))[0] == 0
    await registry.set_machine("hello.service", MACHINE)
    return cli


async def test_list_unit_files_prints_fleetctls_table(listed: Fleetctl) -> None:
    everywhere = load_unit(GLOBAL, "everywhere.service").hash
    assert await listed("list-unit-files") == (
        0,
        "UNIT\t\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n"
        f"everywhere.service\t{everywhere[:7]}\tlaunched\t-\t\tglobal\n"
        f"hello.service\t\t{HELLO_HASH[:7]}\tlaunched\tlaunched\t1a2b3c4d...\n"
        f"simple.service\t\t{SIMPLE_HASH[:7]}\tinactive\tinactive\t-\n",
        "",
    )


async def test_list_unit_files_full_without_legend(listed: Fleetctl) -> None:
    status, out, err = await listed("list-unit-files", "--full", "--no-legend", "--fields", "unit,hash,target")
    assert (status, err) == (0, "")
    assert out.splitlines()[1:] == [
        f"hello.service\t\t{HELLO_HASH}\t{MACHINE}",
        f"simple.service\t\t{SIMPLE_HASH}\t-",
    ]


async def test_list_unit_files_fields_in_the_order_asked(listed: Fleetctl) -> None:
    assert await listed("list-unit-files", "-l", "--fields", "desc,global,unit") == (
        0,
        "DESC\t\tGLOBAL\tUNIT\n"
        "Simple\t\ttrue\teverywhere.service\n"
        "HelloWorldApp\tfalse\thello.service\n"
        "Simple\t\tfalse\tsimple.service\n",
        "",
    )


async def test_list_unit_files_json(listed: Fleetctl) -> None:
    status, out, err = await listed("list-unit-files", "--json", "--fields", "unit,hash,state,target,global")
    assert (status, err) == (0, "")
    assert orjson.loads(out)[1:] == [
        {"unit": "hello.service", "hash": HELLO_HASH, "state": "launched", "target": MACHINE, "global": False},
        {"unit": "simple.service", "hash": SIMPLE_HASH, "state": "inactive", "target": None, "global": False},
    ]


async def test_list_unit_files_of_an_empty_cluster(cli: Fleetctl) -> None:
    assert await cli("list-unit-files") == (0, "UNIT\tHASH\tDSTATE\tSTATE\tTARGET\n", "")
    assert await cli("list-unit-files", "--json") == (0, "[]\n", "")


@pytest.mark.parametrize(
    ("fields", "message"),
    [("", "Must define output format"), ("unit,machine", 'Invalid key in output format: "machine"')],
)
async def test_list_unit_files_refuses_bad_fields(cli: Fleetctl, fields: str, message: str) -> None:
    assert await cli("list-unit-files", "--fields", fields) == (1, "", message + "\n")


# --- load, start, stop, unload -----------------------------------------------------------------------------------


async def test_start_submits_a_local_file_first(cli: Fleetctl, workdir: Path, registry: MemoryRegistry) -> None:
    write(workdir, "simple.service")
    assert await cli("start", "--no-block", "./simple.service") == (
        0,
        "Unit simple.service inactive\nTriggered unit simple.service start\n",
        "",
    )
    assert await desired(registry, "simple.service") == "launched"
    assert await cli("start", "simple.service") == (0, "", "")  # already launched: nothing to do


async def test_start_an_instance_from_a_local_template(cli: Fleetctl, workdir: Path, registry: MemoryRegistry) -> None:
    write(workdir, "hello_world@.service", HELLO_WORLD)
    assert await cli("start", "--no-block", "hello_world@3.service") == (
        0,
        "Unit hello_world@3.service inactive\nTriggered unit hello_world@3.service start\n",
        "",
    )
    assert await registry.get_unit("hello_world@.service") is None  # the template itself is not submitted
    assert (await cli("cat", "hello_world@3"))[1] == (await cli("cat", "hello_world@3.service"))[1]
    assert await desired(registry, "hello_world@3.service") == "launched"


async def test_load_an_instance_from_a_submitted_template(
    cli: Fleetctl, workdir: Path, registry: MemoryRegistry
) -> None:
    write(workdir, "t@.service")
    assert (await cli("submit", "t@.service"))[0] == 0
    (workdir / "t@.service").unlink()
    assert await cli("load", "t@a", "--no-block") == (
        0,
        "Unit t@a.service inactive\nTriggered unit t@a.service load\n",
        "",
    )
    assert await desired(registry, "t@a.service") == "loaded"


async def test_start_of_an_instance_without_any_template(cli: Fleetctl) -> None:
    assert await cli("start", "t@1.service") == (
        1,
        "",
        "Error creating units: unable to find template Unit(t@.service) in Registry or on filesystem\n",
    )


async def test_start_of_an_unknown_unit(cli: Fleetctl) -> None:
    assert await cli("start", "nope") == (
        1,
        "",
        "Error creating units: unable to find Unit(nope.service) in Registry or on filesystem\n",
    )


async def test_start_warns_when_the_local_file_differs(cli: Fleetctl, workdir: Path) -> None:
    write(workdir, "simple.service")
    await cli("submit", "simple.service")
    write(workdir, "simple.service", SIMPLE.replace("Simple", "Changed"))
    assert await cli("start", "--no-block", "simple.service") == (
        0,
        "Triggered unit simple.service start\n",
        "WARNING: Unit simple.service in registry differs from local unit file simple.service.\n",
    )


async def test_a_glob_acts_on_the_submitted_units_it_matches(
    cli: Fleetctl, workdir: Path, registry: MemoryRegistry
) -> None:
    write(workdir, "hello_world@.service", HELLO_WORLD)
    write(workdir, "simple.service")
    await cli("submit", "hello_world@1.service", "hello_world@2.service", "simple.service")
    assert await cli("start", "--no-block", "hello_world@*") == (
        0,
        "Triggered unit hello_world@1.service start\nTriggered unit hello_world@2.service start\n",
        "",
    )
    assert await desired(registry, "simple.service") == "inactive"
    assert await cli("stop", "--no-block", "hello_world@*", "hello_world@1.service") == (
        0,
        "Triggered unit hello_world@1.service stop\nTriggered unit hello_world@2.service stop\n",
        "",
    )
    assert await cli("destroy", "*") == (
        0,
        "Destroyed hello_world@1.service\nDestroyed hello_world@2.service\nDestroyed simple.service\n",
        "",
    )
    assert await cli("list-unit-files", "--no-legend") == (0, "", "")


@pytest.mark.parametrize("command", ["start", "stop", "unload", "destroy"])
async def test_a_glob_that_matches_nothing(cli: Fleetctl, command: str) -> None:
    doing = {"start": "starting", "stop": "stopping", "unload": "unloading", "destroy": "destroying"}[command]
    assert await cli(command, "hello_world@*") == (
        1,
        "",
        f"Error {doing} units: no submitted unit matches hello_world@*\n",
    )


async def test_a_malformed_glob(cli: Fleetctl) -> None:
    assert await cli("stop", "a[") == (1, "", "Error stopping units: invalid glob 'a[': '[' is never closed\n")


async def test_stop_unload_load_through_the_states(cli: Fleetctl, workdir: Path, registry: MemoryRegistry) -> None:
    write(workdir, "simple.service")
    await cli("submit", "simple.service")
    assert await cli("stop", "simple") == (1, "", "Unable to stop unit simple.service in state inactive\n")
    assert await cli("load", "simple", "--no-block") == (0, "Triggered unit simple.service load\n", "")
    assert await cli("stop", "simple") == (0, "", "")  # already loaded
    assert await cli("start", "simple", "--no-block") == (0, "Triggered unit simple.service start\n", "")
    assert await cli("stop", "--no-block", "simple") == (0, "Triggered unit simple.service stop\n", "")
    assert await desired(registry, "simple.service") == "loaded"
    assert await cli("unload", "simple", "--no-block") == (0, "Triggered unit simple.service unload\n", "")
    assert await cli("unload", "simple") == (0, "", "")
    assert await desired(registry, "simple.service") == "inactive"


async def test_a_global_unit_is_triggered_as_global(cli: Fleetctl, workdir: Path) -> None:
    write(workdir, "everywhere.service", GLOBAL)
    assert await cli("start", "everywhere") == (
        0,
        "Unit everywhere.service inactive\nTriggered global unit everywhere.service start\n",
        "",
    )


@pytest.mark.parametrize(("command", "doing"), [("stop", "stopping"), ("unload", "unloading")])
async def test_stop_and_unload_of_an_unknown_unit(cli: Fleetctl, command: str, doing: str) -> None:
    assert await cli(command, "nope") == (1, "", f"Error {doing} units: unable to find unit nope.service\n")


# --- destroy -----------------------------------------------------------------------------------------------------


async def test_destroy(cli: Fleetctl, workdir: Path, registry: MemoryRegistry) -> None:
    write(workdir, "simple.service")
    await cli("start", "--no-block", "simple.service")
    assert await cli("destroy", "simple.service") == (0, "Destroyed simple.service\n", "")
    await cli("start", "--no-block", "simple.service")
    assert await cli("destroy", "--no-block", "simple.service") == (0, "Destroyed simple.service\n", "")
    assert await registry.get_unit("simple.service") is None


async def test_destroy_of_an_unknown_unit(cli: Fleetctl) -> None:
    assert await cli("destroy", "nope.service") == (
        1,
        "",
        "Error destroying units: unable to find unit nope.service\n",
    )


# --- endpoints and errors ----------------------------------------------------------------------------------------


async def test_an_unreachable_endpoint(cli: Fleetctl, tmp_path: Path) -> None:
    missing = f"unix://{tmp_path}/missing.sock"
    assert await cli("list-unit-files", endpoint=missing) == (
        1,
        "",
        f"Error: cannot reach the fleet API at {missing}: no such socket\n",
    )


async def test_an_invalid_endpoint(cli: Fleetctl) -> None:
    assert await cli("cat", "x", endpoint="ftp://host") == (
        1,
        "",
        "Error: invalid endpoint 'ftp://host': expected http://HOST:PORT, https://HOST:PORT or unix:///PATH\n",
    )


async def test_the_endpoint_from_the_environment_and_the_flag_winning(
    cli: Fleetctl, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = f"unix://{tmp_path}/missing.sock"
    monkeypatch.setenv("FLEETCTL_ENDPOINT", cli.endpoint)
    assert (await cli.bare("list-unit-files")) == (0, "UNIT\tHASH\tDSTATE\tSTATE\tTARGET\n", "")
    monkeypatch.setenv("FLEETLET_ENDPOINT", missing)  # fleetlet's own variable wins over fleetctl's
    assert (await cli.bare("list-unit-files"))[2] == f"Error: cannot reach the fleet API at {missing}: no such socket\n"
    assert (await cli.bare("list-unit-files", "--endpoint", cli.endpoint))[0] == 0


async def test_the_default_endpoint_is_the_local_agent(cli: Fleetctl) -> None:
    status, _, err = await cli.bare("list-unit-files")
    assert status == 1
    assert err.startswith("Error: cannot reach the fleet API at unix:///var/run/fleetlet.sock: ")


async def test_an_api_error_is_one_line(cli: Fleetctl, tmp_path: Path) -> None:
    closed = MemoryRegistry(ManualClock())
    await closed.aclose()  # every call fails: the API answers 500 with fleet's error body
    async with serving(closed, tmp_path / "broken.sock") as broken:
        assert await cli("list-unit-files", endpoint=broken) == (
            1,
            "",
            "Error: internal error; see the agent's log (HTTP 500)\n",
        )


@pytest.mark.parametrize(
    ("seconds", "reason"), [("0", "must be more than 0 seconds: '0'"), ("soon", "not a number of seconds: 'soon'")]
)
async def test_request_timeout_must_be_positive_seconds(cli: Fleetctl, seconds: str, reason: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        await cli("list-unit-files", "--request-timeout", seconds)
    assert exit_.value.code == 2
    assert cli.capsys.readouterr().err.endswith(f"error: argument --request-timeout: {reason}\n")


async def test_request_timeout_bounds_a_request_that_gets_no_answer(cli: Fleetctl, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as silent:  # listens, so connecting succeeds, but never answers
        silent.bind(str(tmp_path / "silent.sock"))
        silent.listen()
        endpoint = f"unix://{tmp_path}/silent.sock"
        assert await cli("cat", "x", "--request-timeout", "0.05", endpoint=endpoint) == (
            1,
            "",
            f"Error: cannot reach the fleet API at {endpoint}: no answer within 0.05s\n",
        )


# --- --replace ---------------------------------------------------------------------------------------------------

CHANGED = SIMPLE.replace("Simple", "Changed")
CHANGED_CAT = SIMPLE_CAT.replace("Simple", "Changed")


async def test_submit_replace_replaces_an_inactive_unit(cli: Fleetctl, workdir: Path, registry: MemoryRegistry) -> None:
    write(workdir, "simple.service")
    await cli("submit", "simple.service")
    write(workdir, "simple.service", CHANGED)
    assert await cli("submit", "--replace", "simple.service") == (0, "Unit simple.service replaced\n", "")
    assert (await cli("cat", "simple"))[1] == CHANGED_CAT
    assert await desired(registry, "simple.service") == "inactive"
    assert await cli("submit", "--replace", "simple.service") == (0, "", "")  # the same contents: nothing to do


@pytest.mark.parametrize(("command", "state"), [("submit", "loaded"), ("submit", "launched"), ("load", "launched")])
async def test_replace_refuses_a_state_its_command_would_not_leave_the_unit_in(
    cli: Fleetctl, workdir: Path, registry: MemoryRegistry, command: str, state: str
) -> None:
    write(workdir, "simple.service")
    await cli("submit", "simple.service")
    await registry.set_desired_state("simple.service", state)  # type: ignore[arg-type]
    write(workdir, "simple.service", CHANGED)
    message = f"cannot replace unit simple.service in state {state} with {command}; use start --replace"
    if command == "submit":
        assert await cli("submit", "--replace", "simple.service") == (1, "", f"Error creating units: {message}\n")
    else:  # load warns, as without --replace, and acts on what the cluster has
        assert await cli("load", "--replace", "--no-block", "simple.service") == (
            0,
            "Triggered unit simple.service load\n",
            f"WARNING: {message}\n",
        )
    assert (await cli("cat", "simple"))[1] == SIMPLE_CAT


@pytest.mark.parametrize("state", ["inactive", "loaded", "launched"])
async def test_start_replace_replaces_in_any_state_and_keeps_starting(
    cli: Fleetctl, workdir: Path, registry: MemoryRegistry, state: str
) -> None:
    write(workdir, "simple.service")
    await cli("submit", "simple.service")
    await registry.set_desired_state("simple.service", state)  # type: ignore[arg-type]
    write(workdir, "simple.service", CHANGED)
    # Even a unit launched already is started again: its machine restarts it with the new contents.
    assert await cli("start", "--replace", "--no-block", "simple.service") == (
        0,
        "Unit simple.service replaced\nTriggered unit simple.service start\n",
        "",
    )
    assert (await cli("cat", "simple"))[1] == CHANGED_CAT
    assert await desired(registry, "simple.service") == "launched"


async def test_load_replace_keeps_the_desired_state_it_replaces_in(
    cli: Fleetctl, workdir: Path, registry: MemoryRegistry
) -> None:
    write(workdir, "simple.service")
    await cli("submit", "simple.service")
    write(workdir, "simple.service", CHANGED)
    assert await cli("load", "--replace", "--no-block", "simple.service") == (
        0,
        "Unit simple.service replaced\nTriggered unit simple.service load\n",
        "",
    )
    assert await desired(registry, "simple.service") == "loaded"
    assert (await cli("cat", "simple"))[1] == CHANGED_CAT


# --- options before the command ----------------------------------------------------------------------------------


async def test_the_endpoint_before_the_command(cli: Fleetctl, tmp_path: Path) -> None:
    missing = f"unix://{tmp_path}/missing.sock"
    assert await cli.bare("--endpoint", cli.endpoint, "list-unit-files") == (
        0,
        "UNIT\tHASH\tDSTATE\tSTATE\tTARGET\n",
        "",
    )
    # after the command wins, whichever of the two is the good one
    assert (await cli.bare("--endpoint", missing, "list-unit-files", "--endpoint", cli.endpoint))[0] == 0
    assert await cli.bare("--endpoint", cli.endpoint, "list-unit-files", "--endpoint", missing) == (
        1,
        "",
        f"Error: cannot reach the fleet API at {missing}: no such socket\n",
    )


async def test_the_request_timeout_before_the_command_is_not_clobbered(cli: Fleetctl, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as silent:  # listens, so connecting succeeds, but never answers
        silent.bind(str(tmp_path / "silent.sock"))
        silent.listen()
        endpoint = f"unix://{tmp_path}/silent.sock"
        expected = (1, "", f"Error: cannot reach the fleet API at {endpoint}: no answer within 0.05s\n")
        assert await cli.bare("--request-timeout", "0.05", "--endpoint", endpoint, "cat", "x") == expected
        assert await cli.bare(
            "--request-timeout", "9", "cat", "x", "--request-timeout", "0.05", "--endpoint", endpoint
        ) == (expected)


async def test_a_bad_option_before_the_command(cli: Fleetctl) -> None:
    with pytest.raises(SystemExit) as exit_:
        await cli.bare("--request-timeout", "soon", "list-units")
    assert exit_.value.code == 2
    assert cli.capsys.readouterr().err.endswith("error: argument --request-timeout: not a number of seconds: 'soon'\n")


# --- list-unit-files' TARGET and JSON ----------------------------------------------------------------------------


async def test_list_unit_files_shows_the_target_machines_ip(listed: Fleetctl, view: StaticView) -> None:
    view.machine_list.append(MachineSpec(MACHINE, {}, "192.0.2.7"))
    status, out, err = await listed("list-unit-files", "--no-legend", "--fields", "unit,target")
    assert (status, err) == (0, "")
    assert out.splitlines()[1:] == ["hello.service\t\t1a2b3c4d.../192.0.2.7", "simple.service\t\t-"]
    status, out, _ = await listed("list-unit-files", "--no-legend", "-l", "--fields", "tmachine")
    assert out.splitlines()[1:] == [f"{MACHINE}/192.0.2.7", "-"]


async def test_list_unit_files_json_has_every_field_on_one_line(listed: Fleetctl, view: StaticView) -> None:
    view.machine_list.append(MachineSpec(MACHINE, {}, "192.0.2.7"))
    status, out, err = await listed("list-unit-files", "--json")
    assert (status, err) == (0, "")
    assert out.endswith("]\n")
    assert out.count("\n") == 1
    assert orjson.loads(out)[1] == {
        "unit": "hello.service",
        "hash": HELLO_HASH,
        "dstate": "launched",
        "state": "launched",
        "target": MACHINE,
        "desc": "HelloWorldApp",
        "global": False,
    }
    assert list(orjson.loads(out)[0]) == ["unit", "hash", "dstate", "state", "target", "desc", "global"]
