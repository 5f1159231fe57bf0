"""``GET /v1/units/NAME/status``: the registry's record, the machine's report and the placement reasons, in one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.api.status import description, status_json
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry, ScheduleEntry, UnitRecord
from fleetlet.registry.model import text_hash
from fleetlet.service.states import UnitStatus
from fleetlet.units.model import UnitFile

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
B = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
HELLO = UnitFile.from_options([("Unit", "Description", "Hello World"), ("Service", "ExecStart", "/bin/true")])
BARE = UnitFile.from_options([("Service", "ExecStart", "/bin/true")])
MACHINES = [MachineSpec(A, {}, "192.0.2.7"), MachineSpec(B)]
RUNNING = UnitStatus(
    "hello.service",
    HELLO.hash,
    active="active",
    sub="running",
    since=1_800_000_123.5,
    restarts=2,
    container_id="4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
    exit_status="code=exited, status=1/FAILURE",
)
REASONS = ("machine 1a2b3c4d: metadata group=web not satisfied", "machine 9f8e7d6c: conflicts with a.service")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serve(view: StaticView, **units: tuple[UnitFile, str, str | None]) -> AsyncIterator[TestClient[Any, Any]]:
    """Units by name (dots as underscores): their file, desired state and machine."""
    async with MemoryRegistry(ManualClock()) as registry:
        for key, (unit, desired, machine) in units.items():
            name = key.replace("_", ".")
            await registry.put_unit(name, unit, desired_state=desired)  # type: ignore[arg-type]
            if machine is not None:
                await registry.set_machine(name, machine)
        async with TestClient(TestServer(fleet_v1_app(registry, view=view))) as client:
            yield client


async def get(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    resp = await client.get(path)
    assert resp.content_type == "application/json"
    return resp.status, orjson.loads(await resp.read())


def _record(unit: UnitFile, desired: str = "launched") -> UnitRecord:
    text = unit.serialize()
    return UnitRecord("hello.service", text, text_hash(text), desired, 1)  # type: ignore[arg-type]


# --- pure --------------------------------------------------------------------------------------------------------


def test_description_is_the_last_unit_description() -> None:
    twice = UnitFile.from_options(
        [("Unit", "Description", "first"), ("Unit", "Description", "second"), ("Service", "Description", "no")]
    )
    assert description(_record(twice)) == "second"
    assert description(_record(BARE)) == ""


def test_status_json_of_a_running_unit_has_every_field() -> None:
    entry = ScheduleEntry("hello.service", A, 2)
    assert status_json(_record(HELLO), entry, "active", RUNNING, MACHINES, ()) == {
        "name": "hello.service",
        "description": "Hello World",
        "hash": HELLO.hash,
        "desiredState": "launched",
        "currentState": "launched",
        "machineID": A,
        "primaryIP": "192.0.2.7",
        "loadState": "loaded",
        "activeState": "active",
        "subState": "running",
        "result": "success",
        "since": 1_800_000_123.5,
        "restarts": 2,
        "containerID": RUNNING.container_id,
        "exitStatus": "code=exited, status=1/FAILURE",
    }


def test_status_json_of_a_unit_nothing_reports_leaves_the_machines_fields_out() -> None:
    assert status_json(_record(BARE, "loaded"), None, None, None, MACHINES, REASONS) == {
        "name": "hello.service",
        "hash": BARE.hash,
        "desiredState": "loaded",
        "currentState": "inactive",
        "reasons": list(REASONS),
    }


def test_status_json_of_a_process_never_started() -> None:
    fresh = UnitStatus("hello.service", HELLO.hash, main_pid=4242)
    doc = status_json(_record(HELLO), ScheduleEntry("hello.service", B, 2), "inactive", fresh, MACHINES, ())
    assert "since" not in doc  # 0: never changed
    assert "primaryIP" not in doc  # B has none
    assert (doc["mainPID"], doc["restarts"], doc["currentState"], doc["subState"]) == (4242, 0, "loaded", "dead")


# --- GET ---------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_status_of_a_running_unit() -> None:
    view = StaticView(
        machine_list=list(MACHINES),
        state_list=[UnitState("hello.service", HELLO.hash, A, "loaded", "active", "running")],
        statuses={"hello.service": RUNNING},
    )
    async with serve(view, hello_service=(HELLO, "launched", A)) as client:
        status, doc = await get(client, "/v1/units/hello.service/status?alt=json")
    assert status == 200
    assert doc == {
        "name": "hello.service",
        "description": "Hello World",
        "hash": HELLO.hash,
        "desiredState": "launched",
        "currentState": "launched",
        "machineID": A,
        "primaryIP": "192.0.2.7",
        "loadState": "loaded",
        "activeState": "active",
        "subState": "running",
        "result": "success",
        "since": 1_800_000_123.5,
        "restarts": 2,
        "containerID": RUNNING.container_id,
        "exitStatus": "code=exited, status=1/FAILURE",
    }


@pytest.mark.anyio
async def test_status_of_a_failed_unit_is_loaded_with_its_result() -> None:
    failed = UnitStatus("hello.service", HELLO.hash, active="failed", sub="failed", result="exit-code", since=5.0)
    view = StaticView(
        machine_list=list(MACHINES),
        state_list=[UnitState("hello.service", HELLO.hash, A, "loaded", "failed", "failed")],
        statuses={"hello.service": failed},
    )
    async with serve(view, hello_service=(HELLO, "launched", A)) as client:
        status, doc = await get(client, "/v1/units/hello.service/status")
    assert status == 200
    assert (doc["currentState"], doc["activeState"], doc["result"], doc["since"]) == (
        "loaded",
        "failed",
        "exit-code",
        5.0,
    )


@pytest.mark.anyio
async def test_status_of_a_unit_that_cannot_be_placed_gives_the_reasons() -> None:
    view = StaticView(machine_list=list(MACHINES), reasons={"hello.service": REASONS, "other.service": ("x",)})
    async with serve(view, hello_service=(HELLO, "launched", None)) as client:
        status, doc = await get(client, "/v1/units/hello.service/status")
    assert status == 200
    assert doc == {
        "name": "hello.service",
        "description": "Hello World",
        "hash": HELLO.hash,
        "desiredState": "launched",
        "currentState": "inactive",
        "reasons": list(REASONS),
    }


@pytest.mark.anyio
async def test_status_of_a_unit_scheduled_but_not_reported_yet() -> None:
    view = StaticView(machine_list=list(MACHINES))
    async with serve(view, hello_service=(BARE, "loaded", B)) as client:
        status, doc = await get(client, "/v1/units/hello.service/status")
    assert status == 200
    assert doc == {
        "name": "hello.service",
        "hash": BARE.hash,
        "desiredState": "loaded",
        "currentState": "inactive",
        "machineID": B,
    }


@pytest.mark.anyio
async def test_the_current_state_counts_only_the_scheduled_machines_report() -> None:
    view = StaticView(
        machine_list=list(MACHINES),
        state_list=[UnitState("hello.service", HELLO.hash, B, "loaded", "active", "running")],
    )
    async with serve(view, hello_service=(HELLO, "launched", A)) as client:
        status, doc = await get(client, "/v1/units/hello.service/status")
    assert (status, doc["currentState"], doc["machineID"]) == (200, "inactive", A)


@pytest.mark.anyio
async def test_status_of_a_unit_not_in_the_registry_is_a_404() -> None:
    view = StaticView(statuses={"ghost.service": RUNNING})  # a machine's report alone does not make a unit
    async with serve(view) as client:
        assert await get(client, "/v1/units/ghost.service/status") == (
            404,
            {"error": {"code": 404, "message": "unit does not exist"}},
        )
        assert await get(client, "/fleet/v1/units/ghost.service/status") == (
            404,
            {"error": {"code": 404, "message": "resource not found"}},
        )


@pytest.mark.anyio
async def test_status_follows_the_schedule_after_every_write() -> None:
    """The schedule is kept between requests while the registry's revision stands still: a move must show."""
    async with MemoryRegistry(ManualClock()) as registry:
        await registry.put_unit("hello.service", HELLO, desired_state="launched")
        await registry.set_machine("hello.service", A)
        async with TestClient(TestServer(fleet_v1_app(registry, view=StaticView()))) as client:
            assert (await get(client, "/v1/units/hello.service/status"))[1]["machineID"] == A
            await registry.set_machine("hello.service", B)
            assert (await get(client, "/v1/units/hello.service/status"))[1]["machineID"] == B
            await registry.clear_machine("hello.service")
            assert "machineID" not in (await get(client, "/v1/units/hello.service/status"))[1]
