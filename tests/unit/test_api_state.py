"""fleet's v1 /state and /machines resources over a static view: filters, pages and every JSON field."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.api.machines import machine_json
from fleetlet.api.state import state_json
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
B = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
HELLO = UnitState("hello.service", "abc123", A, "loaded", "active", "running")
HELLO_B = UnitState("hello.service", "abc123", B, "loaded", "activating", "start")
WORLD = UnitState("world.service", "def456", A, "loaded", "failed", "failed")
STATES = [WORLD, HELLO_B, HELLO]
MACHINES = [MachineSpec(B), MachineSpec(A, {"region": "us-west", "group": "web"}, "10.0.0.1")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serve(
    states: Sequence[UnitState] = STATES, machines: Sequence[MachineSpec] = MACHINES, page_size: int = 100
) -> AsyncIterator[TestClient[Any, Any]]:
    async with MemoryRegistry(ManualClock()) as registry:
        app = fleet_v1_app(registry, page_size=page_size, view=StaticView(list(machines), list(states)))
        async with TestClient(TestServer(app)) as client:
            yield client


async def get(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    resp = await client.get(path)
    assert resp.content_type == "application/json"
    return resp.status, orjson.loads(await resp.read())


HELLO_JSON = {
    "hash": "abc123",
    "machineID": A,
    "name": "hello.service",
    "systemdActiveState": "active",
    "systemdLoadState": "loaded",
    "systemdSubState": "running",
}


def test_state_json_uses_fleets_names_and_omits_empty_fields() -> None:
    assert state_json(HELLO) == HELLO_JSON
    assert state_json(UnitState("x.service", "", "", "loaded", "inactive", "dead")) == {
        "name": "x.service",
        "systemdActiveState": "inactive",
        "systemdLoadState": "loaded",
        "systemdSubState": "dead",
    }


def test_machine_json_omits_an_empty_ip_and_metadata() -> None:
    assert machine_json(MachineSpec(B)) == {"id": B}
    assert machine_json(MACHINES[1]) == {
        "id": A,
        "primaryIP": "10.0.0.1",
        "metadata": {"region": "us-west", "group": "web"},
    }


@pytest.mark.anyio
@pytest.mark.parametrize("prefix", ["/fleet/v1", "/v1-alpha"])
async def test_state_lists_every_state_by_unit_then_machine(prefix: str) -> None:
    async with serve() as client:
        status, body = await get(client, f"{prefix}/state?alt=json")
    assert status == 200
    assert body == {
        "states": [
            HELLO_JSON,
            {
                "hash": "abc123",
                "machineID": B,
                "name": "hello.service",
                "systemdActiveState": "activating",
                "systemdLoadState": "loaded",
                "systemdSubState": "start",
            },
            {
                "hash": "def456",
                "machineID": A,
                "name": "world.service",
                "systemdActiveState": "failed",
                "systemdLoadState": "loaded",
                "systemdSubState": "failed",
            },
        ]
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"machineID={A}", [("hello.service", A), ("world.service", A)]),
        ("unitName=hello.service", [("hello.service", A), ("hello.service", B)]),
        (f"machineID={B}&unitName=hello.service", [("hello.service", B)]),
        ("unitName=nope.service", []),
    ],
)
async def test_state_filters_by_machine_and_unit(query: str, expected: list[tuple[str, str]]) -> None:
    async with serve() as client:
        status, body = await get(client, f"/fleet/v1/state?{query}")
    assert status == 200
    assert [(s["name"], s["machineID"]) for s in body.get("states", [])] == expected


@pytest.mark.anyio
async def test_state_of_no_provider_is_empty() -> None:
    async with MemoryRegistry(ManualClock()) as registry, TestClient(TestServer(fleet_v1_app(registry))) as client:
        assert await get(client, "/fleet/v1/state") == (200, {})
        assert await get(client, "/fleet/v1/machines") == (200, {})


@pytest.mark.anyio
async def test_state_pages_follow_the_token_to_the_last_page() -> None:
    async with serve(page_size=2) as client:
        status, first = await get(client, "/fleet/v1/state")
        assert status == 200
        assert [(s["name"], s["machineID"]) for s in first["states"]] == [("hello.service", A), ("hello.service", B)]
        status, last = await get(client, f"/fleet/v1/state?nextPageToken={first['nextPageToken']}")
    assert status == 200
    assert last == {"states": [state_json(WORLD)]}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("nextPageToken=not-a-token", "invalid page token"),
        ("nextPageToken=WzFd", "invalid page token"),  # [1]
        ("machineID=a&machineID=b", "too many values for machineID"),
    ],
)
async def test_state_refuses_bad_queries(query: str, message: str) -> None:
    async with serve() as client:
        assert await get(client, f"/fleet/v1/state?{query}") == (400, {"error": {"code": 400, "message": message}})


@pytest.mark.anyio
async def test_machines_lists_every_machine_in_id_order() -> None:
    async with serve() as client:
        status, body = await get(client, "/fleet/v1/machines?alt=json")
    assert status == 200
    assert body == {
        "machines": [
            {"id": A, "primaryIP": "10.0.0.1", "metadata": {"region": "us-west", "group": "web"}},
            {"id": B},
        ]
    }


@pytest.mark.anyio
async def test_state_and_machines_are_read_only() -> None:
    async with serve() as client:
        resp = await client.delete("/fleet/v1/state")
        assert resp.status == 405
        assert orjson.loads(await resp.read()) == {
            "error": {"code": 405, "message": "only GET supported against this resource"}
        }
