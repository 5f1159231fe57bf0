"""fleet's v1 /units resource over a MemoryRegistry (and SqliteRegistry): every status code and JSON field."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetlet.api import MAX_BODY_BYTES, StaticView, UnitState, fleet_v1_app
from fleetlet.api.errors import APIError
from fleetlet.api.submit import check_options
from fleetlet.api.wire import current_state, parse_unit_body, reported_active, state_index, unit_json
from fleetlet.clock import ManualClock
from fleetlet.registry import MemoryRegistry, Registry, ScheduleEntry, SqliteRegistry, UnitRecord
from fleetlet.registry.model import text_hash
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.syntax import parse
from tests.fleet_units import HELLO_WORLD

U = "/fleet/v1/units"
JSON_HEADERS = {"Content-Type": "application/json"}
HELLO_OPTIONS = [
    {"section": "Unit", "name": "Description", "value": "Hello"},
    {"section": "Service", "name": "ExecStart", "value": '/bin/sh -c "echo hi"'},
]
HELLO = UnitFile.from_options((o["section"], o["name"], o["value"]) for o in HELLO_OPTIONS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serve(registry: Registry | None = None, **kwargs: Any) -> AsyncIterator[TestClient[Any, Any]]:
    reg = registry if registry is not None else MemoryRegistry(ManualClock())
    async with TestClient(TestServer(fleet_v1_app(reg, **kwargs))) as client:
        yield client
    await reg.aclose()


async def put(client: TestClient[Any, Any], name: str, body: object, path: str = U) -> tuple[int, Any]:
    resp = await client.put(f"{path}/{name}", data=orjson.dumps(body), headers=JSON_HEADERS)
    return resp.status, await _body(resp)


async def get(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    resp = await client.get(path)
    return resp.status, await _body(resp)


async def _body(resp: Any) -> Any:
    data = await resp.read()
    if not data:
        return None
    assert resp.content_type == "application/json"
    return orjson.loads(data)


def error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# --- pure helpers ------------------------------------------------------------------------------------------------


def _record(desired: str = "inactive") -> UnitRecord:
    text = HELLO.serialize()
    return UnitRecord("hello.service", text, text_hash(text), desired, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("machine", "active", "expected"),
    [
        (None, None, "inactive"),
        (None, "active", "inactive"),  # a state from a machine it is no longer scheduled on does not count
        ("m1", None, "inactive"),  # scheduled, not (yet) reported by its machine
        ("m1", "inactive", "loaded"),
        ("m1", "failed", "loaded"),
        ("m1", "deactivating", "loaded"),
        ("m1", "activating", "launched"),
        ("m1", "active", "launched"),
        ("m1", "reloading", "launched"),
    ],
)
def test_current_state_follows_fleets_rule(machine: str | None, active: str | None, expected: str) -> None:
    entry = ScheduleEntry("hello.service", machine, 1) if machine else None
    assert current_state(entry, active) == expected


def test_the_state_index_reads_the_state_of_the_scheduled_machine_only() -> None:
    index = state_index(
        [
            UnitState("hello.service", "h", "m1", "loaded", "active", "running"),
            UnitState("hello.service", "h", "m2", "loaded", "failed", "failed"),
        ]
    )
    assert reported_active(index, "hello.service", ScheduleEntry("hello.service", "m2", 1)) == "failed"
    assert reported_active(index, "hello.service", ScheduleEntry("hello.service", "m3", 1)) is None
    assert reported_active(index, "hello.service", None) is None
    assert reported_active(index, "other.service", ScheduleEntry("other.service", "m1", 1)) is None


def test_unit_json_omits_the_machine_of_an_unscheduled_unit() -> None:
    assert unit_json(_record(), None, {}) == {
        "currentState": "inactive",
        "desiredState": "inactive",
        "name": "hello.service",
        "options": HELLO_OPTIONS,
    }
    index = {("hello.service", "m1"): "active"}
    placed = unit_json(_record("launched"), ScheduleEntry("hello.service", "m1", 4), index)
    assert (placed["machineID"], placed["currentState"]) == ("m1", "launched")


def test_an_empty_option_value_is_omitted_as_fleet_did() -> None:
    text = "[Service]\nExecStart=/bin/true\nExecStartPre=\n"
    record = UnitRecord("a.service", text, text_hash(text), "inactive", 1)
    assert unit_json(record, None, {})["options"][1] == {"section": "Service", "name": "ExecStartPre"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "unable to decode body: "),
        (b"[]", "unable to decode body: expected a JSON object, not an array"),
        (b'{"name": 3}', "unable to decode body: name: expected a string, not a number"),
        (b'{"options": {}}', "unable to decode body: options: expected an array, not an object"),
        (b'{"options": [1]}', "unable to decode body: options[0]: expected an object, not a number"),
        (
            b'{"options": [{"value": true}]}',
            "unable to decode body: options[0].value: expected a string, not a boolean",
        ),
    ],
)
def test_parse_unit_body_refuses_what_go_could_not_decode(body: bytes, message: str) -> None:
    with pytest.raises(APIError) as info:
        parse_unit_body(body)
    assert info.value.status == 400
    assert info.value.message.startswith(message)


def test_parse_unit_body_reads_missing_fields_as_empty_and_ignores_unknown_ones() -> None:
    body = parse_unit_body(b'{"options": [{"section": "Service", "name": "ExecStart"}], "currentState": "x"}')
    assert (body.name, body.desired_state, body.options) == ("", "", (UnitOption("Service", "ExecStart", ""),))


def test_check_options_refuses_an_option_that_would_not_survive_storage() -> None:
    with pytest.raises(APIError, match=r"option Service\.ExecStart='/bin/true\\nUser=root' cannot be stored"):
        check_options("a.service", [UnitOption("Service", "ExecStart", "/bin/true\nUser=root")])


# --- GET /units --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_of_an_empty_registry_omits_units_and_token() -> None:
    async with serve() as client:
        assert await get(client, f"{U}?alt=json") == (200, {})


@pytest.mark.anyio
async def test_list_pages_through_every_unit_in_name_order() -> None:
    registry = MemoryRegistry(ManualClock())
    names = [f"u{i:02}.service" for i in range(5)]
    for name in reversed(names):
        await registry.put_unit(name, HELLO)
    await registry.set_machine("u01.service", "m1")
    view = StaticView(state_list=[UnitState("u01.service", HELLO.hash, "m1", "loaded", "inactive", "dead")])
    async with serve(registry, page_size=2, view=view) as client:
        seen: list[dict[str, Any]] = []
        status, page = await get(client, f"{U}?alt=json")
        pages = 1
        while "nextPageToken" in page:
            assert status == 200
            assert len(page["units"]) == 2
            seen += page["units"]
            status, page = await get(client, f"{U}?alt=json&nextPageToken={page['nextPageToken']}")
            pages += 1
        seen += page["units"]
    assert pages == 3
    assert [u["name"] for u in seen] == names
    assert seen[1] == {
        "currentState": "loaded",
        "desiredState": "inactive",
        "machineID": "m1",
        "name": "u01.service",
        "options": HELLO_OPTIONS,
    }
    assert "machineID" not in seen[0]


class CountingView(StaticView):
    """A static view that counts how often the API asks for the states."""

    calls = 0

    def states(self) -> Sequence[UnitState]:
        self.calls += 1
        return super().states()


@pytest.mark.anyio
async def test_current_state_in_list_and_get_is_what_the_scheduled_machine_reports() -> None:
    registry = MemoryRegistry(ManualClock())
    reports = {
        "active.service": ("m1", "active"),  # started: launched
        "failed.service": ("m1", "failed"),  # loaded but dead: loaded
        "moved.service": ("m2", "active"),  # reported by a machine it is not scheduled on: inactive
        "silent.service": (None, None),  # scheduled, not reported yet: inactive
    }
    for name in reports:
        await registry.put_unit(name, HELLO, desired_state="launched")
        await registry.set_machine(name, "m1")
    view = CountingView(
        state_list=[
            UnitState(name, HELLO.hash, machine, "loaded", active, "x")
            for name, (machine, active) in reports.items()
            if machine is not None and active is not None
        ]
    )
    expected = {
        "active.service": "launched",
        "failed.service": "loaded",
        "moved.service": "inactive",
        "silent.service": "inactive",
    }
    async with serve(registry, view=view) as client:
        status, page = await get(client, U)
        assert status == 200
        assert {u["name"]: u["currentState"] for u in page["units"]} == expected
        assert view.calls == 1  # once per request, not once per unit
        for name, state in expected.items():
            status, unit = await get(client, f"{U}/{name}")
            assert (status, unit["currentState"], unit["machineID"]) == (200, state, "m1")


@pytest.mark.anyio
async def test_list_refuses_two_page_tokens_and_a_foreign_one() -> None:
    async with serve() as client:
        assert await get(client, f"{U}?nextPageToken=a&nextPageToken=b") == (
            400,
            error(400, "too many values for page token"),
        )
        status, body = await get(client, f"{U}?nextPageToken=_w")
        assert status == 400
        assert body["error"]["code"] == 400
        assert "invalid page token" in body["error"]["message"]


# --- GET /units/NAME ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_one_unit_and_a_missing_one() -> None:
    async with serve() as client:
        assert await put(client, "hello.service", {"options": HELLO_OPTIONS, "desiredState": "launched"}) == (201, None)
        assert await get(client, f"{U}/hello.service?alt=json") == (
            200,
            {
                "currentState": "inactive",
                "desiredState": "launched",
                "name": "hello.service",
                "options": HELLO_OPTIONS,
            },
        )
        assert await get(client, f"{U}/nope.service?alt=json") == (404, error(404, "unit does not exist"))


@pytest.mark.anyio
async def test_v1_alpha_serves_the_same_resource() -> None:
    async with serve() as client:
        assert await put(client, "hello.service", {"options": HELLO_OPTIONS}, path="/v1-alpha/units") == (201, None)
        status, page = await get(client, "/v1-alpha/units?alt=json")
        assert status == 200
        assert [u["name"] for u in page["units"]] == ["hello.service"]
        assert (await get(client, "/v1-alpha/units/hello.service"))[1] == (await get(client, f"{U}/hello.service"))[1]


# --- PUT /units/NAME ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_put_creates_with_inactive_or_the_given_state_then_sets_the_desired_state() -> None:
    registry = MemoryRegistry(ManualClock())
    async with serve(registry) as client:
        assert await put(client, "a.service", {"name": "a.service", "options": HELLO_OPTIONS}) == (201, None)
        assert await put(client, "b.service", {"options": HELLO_OPTIONS, "desiredState": "loaded"}) == (201, None)
        a, b = await registry.get_unit("a.service"), await registry.get_unit("b.service")
        assert a is not None
        assert b is not None
        assert (a.desired_state, a.hash, b.desired_state) == ("inactive", HELLO.hash, "loaded")
        assert await put(client, "a.service", {"desiredState": "launched"}) == (204, None)
        # The same options again are no change: only the desired state moves.
        assert await put(client, "a.service", {"options": HELLO_OPTIONS, "desiredState": "loaded"}) == (204, None)
        a2 = await registry.get_unit("a.service")
        assert a2 is not None
        assert (a2.desired_state, a2.text) == ("loaded", a.text)


@pytest.mark.anyio
async def test_put_with_other_options_replaces_the_unit() -> None:
    registry = MemoryRegistry(ManualClock())
    changed = [*HELLO_OPTIONS, {"section": "X-Fleet", "name": "MachineMetadata", "value": "disk=ssd"}]
    async with serve(registry) as client:
        assert await put(client, "a.service", {"options": HELLO_OPTIONS, "desiredState": "launched"}) == (201, None)
        assert await put(client, "a.service", {"options": changed}) == (201, None)
        assert (await get(client, f"{U}/a.service"))[1]["options"] == changed
        a = await registry.get_unit("a.service")
        assert a is not None
        assert a.desired_state == "inactive"


@pytest.mark.anyio
async def test_put_conflicts() -> None:
    async with serve() as client:
        assert await put(client, "a.service", {"desiredState": "launched"}) == (
            409,
            error(409, "unit does not exist and options field empty"),
        )
        assert await put(client, "a.service", {"options": HELLO_OPTIONS}) == (201, None)
        assert await put(client, "a.service", {}) == (
            409,
            error(409, "must provide DesiredState to update existing unit"),
        )
        assert await put(client, "a.service", {"options": HELLO_OPTIONS}) == (
            409,
            error(409, "must provide DesiredState to update existing unit"),
        )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        (
            "a.service",
            {"name": "b.service", "options": HELLO_OPTIONS},
            'name in URL "a.service" differs from unit name in request body "b.service"',
        ),
        ("a.service", {"options": HELLO_OPTIONS, "desiredState": "running"}, 'invalid desiredState "running"'),
        ("a.bogus", {"options": HELLO_OPTIONS}, "invalid unit name 'a.bogus'"),
        (
            "web@.service",
            {"options": HELLO_OPTIONS, "desiredState": "launched"},
            "web@.service is a template: only its instances run (start one, such as web@1.service)",
        ),
        ("web@.service", {"options": HELLO_OPTIONS, "desiredState": "loaded"}, "web@.service is a template"),
        (
            "a.service",
            {
                "options": [
                    {"section": "Service", "name": "Restart", "value": "sometimes"},
                    {"section": "Service", "name": "ExecStart", "value": "/bin/true"},
                    {"section": "X-Fleet", "name": "Global", "value": "true"},
                    {"section": "X-Fleet", "name": "MachineOf", "value": "b.service"},
                ]
            },
            "a.service:2: Restart=: invalid value 'sometimes'",
        ),
    ],
)
async def test_put_refuses_invalid_requests(name: str, body: dict[str, Any], message: str) -> None:
    async with serve() as client:
        status, answer = await put(client, name, body)
        assert status == 400
        assert answer["error"]["code"] == 400
        assert answer["error"]["message"].startswith(message)
        assert await get(client, U) == (200, {})


@pytest.mark.anyio
async def test_put_reports_every_unit_file_error_with_its_line() -> None:
    options = [
        {"section": "Service", "name": "Restart", "value": "sometimes"},
        {"section": "Service", "name": "ExecStart", "value": "/bin/true"},
        {"section": "X-Fleet", "name": "Global", "value": "true"},
        {"section": "X-Fleet", "name": "MachineOf", "value": "b.service"},
    ]
    async with serve() as client:
        status, answer = await put(client, "a.service", {"options": options})
    # Lines of the normalized text: [Service] 1, Restart 2, ExecStart 3, blank 4, [X-Fleet] 5, Global 6, MachineOf 7.
    assert (status, answer) == (
        400,
        error(
            400,
            "a.service:2: Restart=: invalid value 'sometimes'"
            " (valid: always, no, on-abnormal, on-abort, on-failure, on-success, on-watchdog)\n"
            "a.service:7: MachineOf= cannot be combined with Global=true:"
            " a global unit runs on every machine, not beside its peers",
        ),
    )


@pytest.mark.anyio
async def test_put_needs_one_json_content_type() -> None:
    body = orjson.dumps({"options": HELLO_OPTIONS})
    async with serve() as client:
        resp = await client.put(f"{U}/a.service", data=body, headers={"Content-Type": "text/plain"})
        assert (resp.status, await _body(resp)) == (415, error(415, "only acceptable Content-Type is application/json"))
        resp = await client.put(f"{U}/a.service", data=body, skip_auto_headers=["Content-Type"])
        assert (resp.status, await _body(resp)) == (415, error(415, "expected 1 Content-Type, got 0"))
        resp = await client.put(
            f"{U}/a.service?alt=json", data=body, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert resp.status == 201


@pytest.mark.anyio
async def test_put_of_malformed_json_is_400() -> None:
    async with serve() as client:
        resp = await client.put(f"{U}/a.service", data=b'{"options": [', headers=JSON_HEADERS)
        answer = await _body(resp)
    assert resp.status == 400
    assert answer["error"]["message"].startswith("unable to decode body: ")


@pytest.mark.anyio
async def test_put_of_a_body_over_the_limit_is_413() -> None:
    async with serve() as client:
        resp = await client.put(f"{U}/a.service", data=io.BytesIO(b" " * (MAX_BODY_BYTES + 1)), headers=JSON_HEADERS)
        answer = await _body(resp)
    assert (resp.status, answer) == (413, error(413, f"request body too large: the limit is {MAX_BODY_BYTES} bytes"))


@pytest.mark.anyio
async def test_put_accepts_fleets_hello_world() -> None:
    options = [{"section": s, "name": n, "value": v} for s, n, v in parse(HELLO_WORLD).options]
    async with serve() as client:
        assert await put(client, "hello_world.service", {"options": options, "desiredState": "launched"}) == (201, None)
        assert (await get(client, f"{U}/hello_world.service"))[1]["options"] == options


# --- DELETE /units/NAME ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_delete_and_delete_again() -> None:
    registry = MemoryRegistry(ManualClock())
    async with serve(registry) as client:
        assert await put(client, "a.service", {"options": HELLO_OPTIONS}) == (201, None)
        await registry.set_machine("a.service", "m1")
        resp = await client.delete(f"{U}/a.service?alt=json")
        assert (resp.status, await resp.read()) == (204, b"")
        resp = await client.delete(f"{U}/a.service?alt=json")
        assert (resp.status, await _body(resp)) == (404, error(404, "unit does not exist"))
        assert (await registry.schedule()).entries == {}


# --- routing -----------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_paths_and_wrong_methods_answer_in_fleets_error_shape() -> None:
    async with serve() as client:
        assert await get(client, "/fleet/v1/nothing") == (404, error(404, "resource not found"))
        assert await get(client, f"{U}/") == (404, error(404, "resource not found"))
        resp = await client.post(U, data=b"{}", headers=JSON_HEADERS)
        assert (resp.status, await _body(resp)) == (405, error(405, "only GET supported against this resource"))
        assert resp.headers["Allow"] == "GET"
        resp = await client.post(f"{U}/a.service", data=b"{}", headers=JSON_HEADERS)
        assert (resp.status, await _body(resp)) == (
            405,
            error(405, "only GET, PUT and DELETE supported against this resource"),
        )


# --- SQLite ------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_resource_over_a_sqlite_registry(tmp_path: Path) -> None:
    registry = SqliteRegistry(tmp_path / "registry.db", ManualClock())
    await registry.open()
    view = StaticView(state_list=[UnitState("b.service", HELLO.hash, "m1", "loaded", "active", "running")])
    async with serve(registry, page_size=1, view=view) as client:
        assert await put(client, "a.service", {"options": HELLO_OPTIONS}) == (201, None)
        assert await put(client, "b.service", {"options": HELLO_OPTIONS, "desiredState": "loaded"}) == (201, None)
        assert await put(client, "b.service", {"desiredState": "launched"}) == (204, None)
        await registry.set_machine("b.service", "m1")
        status, first = await get(client, f"{U}?alt=json")
        assert status == 200
        assert [u["name"] for u in first["units"]] == ["a.service"]
        status, second = await get(client, f"{U}?alt=json&nextPageToken={first['nextPageToken']}")
        assert second == {
            "units": [
                {
                    "currentState": "launched",
                    "desiredState": "launched",
                    "machineID": "m1",
                    "name": "b.service",
                    "options": HELLO_OPTIONS,
                }
            ]
        }
        resp = await client.delete(f"{U}/a.service")
        assert resp.status == 204
        assert await registry.get_unit("a.service") is None


@pytest.mark.anyio
async def test_a_template_is_submitted_but_not_loaded_or_started() -> None:
    async with serve() as client:
        assert (await put(client, "web@.service", {"options": HELLO_OPTIONS}))[0] == 201
        status, answer = await put(client, "web@.service", {"desiredState": "launched"})
        assert (status, answer["error"]["message"]) == (
            400,
            "web@.service is a template: only its instances run (start one, such as web@1.service)",
        )
        assert (await put(client, "web@1.service", {"options": HELLO_OPTIONS, "desiredState": "launched"}))[0] == 201
