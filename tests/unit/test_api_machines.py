"""``PATCH /fleet/v1/machines``: fleet's metadata operations, checked whole, applied all or not at all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetlet.api import StaticView, UnknownMachine, fleet_v1_app
from fleetlet.api.errors import APIError
from fleetlet.api.metadata_patch import MetadataOp, parse_operations, plan
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
B = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
M = "/fleet/v1/machines"
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingView(StaticView):
    """A static view that records every metadata it is told to set."""

    def __init__(self, machines: list[MachineSpec]) -> None:
        super().__init__(machine_list=machines)
        self.set_calls: list[tuple[str, dict[str, str]]] = []

    def set_metadata(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        self.set_calls.append((machine_id, dict(metadata)))
        super().set_metadata(machine_id, metadata)


def machines() -> list[MachineSpec]:
    return [MachineSpec(A, {"region": "us-west", "disk": "hdd"}, "10.0.0.1"), MachineSpec(B)]


@asynccontextmanager
async def serve(view: StaticView) -> AsyncIterator[TestClient[Any, Any]]:
    async with MemoryRegistry(ManualClock()) as registry:
        async with TestClient(TestServer(fleet_v1_app(registry, view=view))) as client:
            yield client


async def patch(client: TestClient[Any, Any], body: object, path: str = M) -> tuple[int, Any]:
    resp = await client.patch(path, data=orjson.dumps(body), headers=JSON_HEADERS)
    data = await resp.read()
    return resp.status, orjson.loads(data) if data else None


def metadata(view: StaticView) -> dict[str, dict[str, str]]:
    return {m.id: dict(m.metadata) for m in view.machines()}


def error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def op(kind: str, machine: str, key: str, value: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"op": kind, "path": f"/{machine}/metadata/{key}"}
    if value is not None:
        doc["value"] = {"value": value}
    return doc


# --- pure --------------------------------------------------------------------------------------------------------


def test_parse_operations_reads_fleets_shape() -> None:
    body = orjson.dumps([op("add", A, "disk", "ssd"), op("remove", A, "region"), op("replace", B, "x", "1")])
    assert parse_operations(body) == (
        MetadataOp("add", A, "disk", "ssd"),
        MetadataOp("remove", A, "region"),
        MetadataOp("replace", B, "x", "1"),
    )


def test_a_remove_needs_no_value_and_ignores_one() -> None:
    body = orjson.dumps([{**op("remove", A, "disk"), "value": {"value": "ignored"}}])
    assert parse_operations(body) == (MetadataOp("remove", A, "disk"),)


def test_plan_applies_in_order_and_keeps_only_machines_that_change() -> None:
    current = {A: {"disk": "hdd", "region": "us-west"}, B: {"x": "1"}}
    ops = [
        MetadataOp("add", A, "disk", "ssd"),
        MetadataOp("remove", A, "region"),
        MetadataOp("add", A, "rack", "r1"),
        MetadataOp("replace", A, "rack", "r2"),
        MetadataOp("remove", B, "nope"),  # no such key: nothing to do
        MetadataOp("replace", B, "x", "1"),  # the same value: nothing to do
    ]
    assert plan(current, ops) == {A: {"disk": "ssd", "rack": "r2"}}
    assert current == {A: {"disk": "hdd", "region": "us-west"}, B: {"x": "1"}}


def test_plan_refuses_an_unknown_machine_before_anything() -> None:
    with pytest.raises(APIError) as info:
        plan({A: {}}, [MetadataOp("add", A, "k", "v"), MetadataOp("add", "c0ffee", "k", "v")])
    assert (info.value.status, info.value.message) == (404, "machine not found")


# --- PATCH -------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("prefix", ["/fleet/v1", "/v1-alpha"])
async def test_patch_adds_replaces_and_removes_then_get_shows_it(prefix: str) -> None:
    view = RecordingView(machines())
    async with serve(view) as client:
        assert await patch(
            client,
            [op("add", A, "rack", "r1"), op("replace", A, "disk", "ssd"), op("remove", A, "region")],
            f"{prefix}/machines",
        ) == (204, None)
        resp = await client.get(f"{prefix}/machines")
        listed = orjson.loads(await resp.read())
    assert view.set_calls == [(A, {"disk": "ssd", "rack": "r1"})]
    assert listed["machines"][0] == {"id": A, "primaryIP": "10.0.0.1", "metadata": {"disk": "ssd", "rack": "r1"}}


@pytest.mark.anyio
async def test_patch_sets_each_machines_whole_metadata_once() -> None:
    view = RecordingView(machines())
    async with serve(view) as client:
        assert await patch(
            client, [op("add", B, "disk", "ssd"), op("add", A, "disk", "nvme"), op("add", B, "rack", "r9")]
        ) == (204, None)
    assert view.set_calls == [(B, {"disk": "ssd", "rack": "r9"}), (A, {"region": "us-west", "disk": "nvme"})]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "ops",
    [[], [op("remove", A, "nope")], [op("replace", A, "disk", "hdd")]],
    ids=["no-ops", "remove-absent-key", "same-value"],
)
async def test_patch_that_changes_nothing_sets_nothing(ops: list[dict[str, Any]]) -> None:
    view = RecordingView(machines())
    async with serve(view) as client:
        assert await patch(client, ops) == (204, None)
    assert view.set_calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"op": "move", "path": f"/{A}/metadata/k"}, 'operations[1]: op "move" is not one of add, remove, replace'),
        ({"path": f"/{A}/metadata/k"}, "operations[1]: op null is not one of add, remove, replace"),
        ("add", "operations[1]: expected an object, not a string"),
        (
            {"op": "add", "path": 3, "value": {"value": "v"}},
            "operations[1]: path must be a string /MACHINE_ID/metadata/KEY, not 3",
        ),
        (op("add", A, "k/x", "v"), f'operations[1]: path "/{A}/metadata/k/x" is not /MACHINE_ID/metadata/KEY'),
        (
            {"op": "add", "path": f"/{A}/labels/k", "value": {"value": "v"}},
            f'operations[1]: path "/{A}/labels/k" is not /MACHINE_ID/metadata/KEY',
        ),
        (
            {"op": "add", "path": "//metadata/k", "value": {"value": "v"}},
            'operations[1]: path "//metadata/k" is not /MACHINE_ID/metadata/KEY',
        ),
        (
            op("add", A, "a=b", "v"),
            "operations[1]: invalid metadata key \"a=b\": no spaces, control characters, '=', ',' or '/'",
        ),
        (
            op("add", A, "a b", "v"),
            "operations[1]: invalid metadata key \"a b\": no spaces, control characters, '=', ',' or '/'",
        ),
        (op("add", A, "k"), 'operations[1]: add needs a non-empty value: {"value": "..."}, not null'),
        (op("replace", A, "k", ""), 'operations[1]: replace needs a non-empty value: {"value": "..."}, not an object'),
        (
            {**op("add", A, "k"), "value": "v"},
            'operations[1]: add needs a non-empty value: {"value": "..."}, not "v"',
        ),
        (op("add", A, "k", "a,b"), "operations[1]: invalid metadata value \"a,b\": no control characters or ','"),
        (op("add", A, "k", "a\nb"), "operations[1]: invalid metadata value \"a\\nb\": no control characters or ','"),
    ],
)
async def test_a_bad_operation_is_a_400_naming_it_and_nothing_changes(bad: object, message: str) -> None:
    view = RecordingView(machines())
    before = metadata(view)
    async with serve(view) as client:
        assert await patch(client, [op("add", A, "rack", "r1"), bad]) == (400, error(400, message))
    assert view.set_calls == []
    assert metadata(view) == before


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[", "unable to decode body: "),
        (b'{"op": "add"}', "unable to decode body: expected a JSON array of operations, not an object"),
        (b"null", "unable to decode body: expected a JSON array of operations, not null"),
    ],
)
async def test_a_body_that_is_not_a_list_of_operations_is_a_400(body: bytes, message: str) -> None:
    view = RecordingView(machines())
    async with serve(view) as client:
        resp = await client.patch(M, data=body, headers=JSON_HEADERS)
        answer = orjson.loads(await resp.read())
    assert resp.status == 400
    assert answer["error"]["code"] == 400
    assert answer["error"]["message"].startswith(message)
    assert view.set_calls == []


@pytest.mark.anyio
async def test_an_unknown_machine_is_a_404_and_nothing_changes() -> None:
    view = RecordingView(machines())
    async with serve(view) as client:
        assert await patch(client, [op("add", A, "rack", "r1"), op("add", "c0ffee", "rack", "r1")]) == (
            404,
            error(404, "machine not found"),
        )
    assert view.set_calls == []


@pytest.mark.anyio
async def test_a_machine_the_view_refuses_to_change_is_a_404() -> None:
    class Refusing(StaticView):
        def set_metadata(self, machine_id: str, metadata: Mapping[str, str]) -> None:
            raise UnknownMachine(machine_id)

    async with serve(Refusing(machine_list=machines())) as client:
        assert await patch(client, [op("add", A, "rack", "r1")]) == (404, error(404, "machine not found"))


@pytest.mark.anyio
async def test_patch_needs_one_json_content_type() -> None:
    view = RecordingView(machines())
    body = orjson.dumps([op("add", A, "rack", "r1")])
    async with serve(view) as client:
        resp = await client.patch(M, data=body, headers={"Content-Type": "text/plain"})
        assert (resp.status, orjson.loads(await resp.read())) == (
            415,
            error(415, "only acceptable Content-Type is application/json"),
        )
        resp = await client.patch(M, data=body, skip_auto_headers=["Content-Type"])
        assert (resp.status, orjson.loads(await resp.read())) == (415, error(415, "expected 1 Content-Type, got 0"))
        assert view.set_calls == []
        resp = await client.patch(
            f"{M}?alt=json", data=body, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert resp.status == 204
    assert view.set_calls == [(A, {"region": "us-west", "disk": "hdd", "rack": "r1"})]


@pytest.mark.anyio
async def test_machines_takes_get_and_patch_only() -> None:
    async with serve(RecordingView(machines())) as client:
        resp = await client.delete(M)
        assert (resp.status, orjson.loads(await resp.read())) == (
            405,
            error(405, "only GET and PATCH supported against this resource"),
        )
        assert resp.headers["Allow"] == "GET, PATCH"
