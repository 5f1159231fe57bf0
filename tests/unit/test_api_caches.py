"""What the API keeps between requests (the schedule, units' options as JSON) and that no write is ever hidden by it:
the caches alone, then GET /units and GET /units/NAME after each kind of write, over MemoryRegistry and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.api.caches import OptionsCache, ScheduleCache
from fleetlet.api.wire import options_json
from fleetlet.clock import ManualClock
from fleetlet.registry import MemoryRegistry, Registry, SqliteRegistry, UnitRecord
from fleetlet.registry.model import ScheduleView, text_hash
from fleetlet.units.model import UnitFile
from fleetlet.units.syntax import parse

U = "/fleet/v1/units"
JSON_HEADERS = {"Content-Type": "application/json"}
HELLO = UnitFile.from_options([("Unit", "Description", "Hello"), ("Service", "ExecStart", "/bin/sh -c 'echo hi'")])
BYE = UnitFile.from_options([("Unit", "Description", "Bye"), ("Service", "ExecStart", "/bin/true")])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingRegistry(MemoryRegistry):
    """A memory registry that counts its reads of the whole schedule."""

    schedule_reads = 0

    async def schedule(self) -> ScheduleView:
        self.schedule_reads += 1
        return await super().schedule()


def _record(name: str, unit: UnitFile) -> UnitRecord:
    text = unit.serialize()
    return UnitRecord(name, text, text_hash(text), "inactive", 1)


def _json(options: object) -> Any:
    return orjson.loads(orjson.dumps({"options": options}))["options"]


def _options_doc(unit: UnitFile) -> list[dict[str, str]]:
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit.options]


# --- ScheduleCache -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_schedule_is_read_once_per_revision() -> None:
    registry = CountingRegistry(ManualClock())
    async with registry:
        await registry.put_unit("a.service", HELLO)
        await registry.set_machine("a.service", "m1")
        cache = ScheduleCache()
        revision = await registry.revision()
        first = await cache.at(registry, revision)
        again = await cache.at(registry, revision)
        assert again is first
        assert registry.schedule_reads == 1
        assert first.entries["a.service"].machine_id == "m1"

        await registry.set_machine("a.service", "m2")
        moved = await cache.at(registry, await registry.revision())
        assert registry.schedule_reads == 2
        assert moved.entries["a.service"].machine_id == "m2"


@pytest.mark.anyio
async def test_a_write_to_a_unit_alone_makes_the_schedule_read_again() -> None:
    registry = CountingRegistry(ManualClock())
    async with registry:
        await registry.put_unit("a.service", HELLO)
        cache = ScheduleCache()
        await cache.at(registry, await registry.revision())
        await registry.set_desired_state("a.service", "launched")
        await cache.at(registry, await registry.revision())
        assert registry.schedule_reads == 2


# --- OptionsCache ------------------------------------------------------------------------------------------------


def test_options_are_fleets_json_of_the_units_text_and_serialized_once() -> None:
    cache = OptionsCache()
    record = _record("a.service", HELLO)
    first = cache.json_of(record)
    assert _json(first) == options_json(parse(record.text).options) == _options_doc(HELLO)
    assert cache.json_of(record) is first
    assert cache.json_of(_record("other-name.service", HELLO)) is first  # same text, same hash
    assert _json(cache.json_of(_record("a.service", BYE))) == _options_doc(BYE)
    assert len(cache) == 2


def test_the_least_recently_used_options_are_dropped_beyond_the_entries_allowed() -> None:
    cache = OptionsCache(max_entries=2)
    units = [UnitFile.from_options([("Service", "ExecStart", f"/bin/echo {i}")]) for i in range(3)]
    kept = [cache.json_of(_record("a.service", unit)) for unit in units[:2]]
    assert cache.json_of(_record("a.service", units[0])) is kept[0]  # now the most recently used
    cache.json_of(_record("a.service", units[2]))
    assert len(cache) == 2
    assert cache.json_of(_record("a.service", units[0])) is kept[0]
    again = cache.json_of(_record("a.service", units[1]))  # was dropped: serialized anew
    assert again is not kept[1]
    assert _json(again) == _options_doc(units[1])


def test_the_options_kept_never_exceed_the_bytes_allowed() -> None:
    size = len(orjson.dumps(_options_doc(HELLO)))
    cache = OptionsCache(max_bytes=size)
    cache.json_of(_record("a.service", HELLO))
    assert (len(cache), cache.total_bytes) == (1, size)
    big = UnitFile.from_options([("Service", "ExecStart", "/bin/echo " + "x" * size)])
    served = cache.json_of(_record("big.service", big))
    assert _json(served) == _options_doc(big)  # served, but too big to keep: the smaller one stays
    assert (len(cache), cache.total_bytes) == (1, size)
    cache.json_of(_record("bye.service", BYE))
    assert len(cache) == 1
    assert cache.total_bytes <= size


# --- the API: never a stale answer -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Registry]:
    if request.param == "memory":
        async with MemoryRegistry(ManualClock()) as memory:
            yield memory
    else:
        async with SqliteRegistry(tmp_path / "registry.db", ManualClock()) as sqlite:
            yield sqlite


@asynccontextmanager
async def serve(registry: Registry, **kwargs: Any) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(fleet_v1_app(registry, **kwargs))) as client:
        yield client


async def get(client: TestClient[Any, Any], path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200
    return orjson.loads(await resp.read())


async def put(client: TestClient[Any, Any], name: str, body: dict[str, Any]) -> int:
    resp = await client.put(f"{U}/{name}", data=orjson.dumps(body), headers=JSON_HEADERS)
    return resp.status


async def listed(client: TestClient[Any, Any]) -> dict[str, Any]:
    """Every unit of GET /units by name, following the page tokens."""
    found: dict[str, Any] = {}
    page = await get(client, U)
    while True:
        found |= {u["name"]: u for u in page.get("units", [])}
        if "nextPageToken" not in page:
            return found
        page = await get(client, f"{U}?nextPageToken={page['nextPageToken']}")


@pytest.mark.anyio
async def test_a_put_is_seen_by_the_next_list_and_get(registry: Registry) -> None:
    async with serve(registry, page_size=1) as client:
        assert await put(client, "a.service", {"options": _options_doc(HELLO)}) == 201
        assert await put(client, "b.service", {"options": _options_doc(HELLO)}) == 201
        assert (await listed(client))["a.service"]["options"] == _options_doc(HELLO)
        assert (await get(client, f"{U}/a.service"))["options"] == _options_doc(HELLO)

        assert await put(client, "a.service", {"options": _options_doc(BYE)}) == 201  # new contents
        assert (await listed(client))["a.service"]["options"] == _options_doc(BYE)
        assert (await get(client, f"{U}/a.service"))["options"] == _options_doc(BYE)

        assert await put(client, "a.service", {"desiredState": "launched"}) == 204
        assert (await listed(client))["a.service"]["desiredState"] == "launched"
        assert (await get(client, f"{U}/a.service"))["desiredState"] == "launched"

        assert (await client.delete(f"{U}/b.service")).status == 204
        assert list(await listed(client)) == ["a.service"]


@pytest.mark.anyio
async def test_a_schedule_change_is_seen_by_the_next_list_and_get(registry: Registry) -> None:
    view = StaticView(
        state_list=[
            UnitState("a.service", HELLO.hash, "m1", "loaded", "active", "running"),
            UnitState("a.service", HELLO.hash, "m2", "loaded", "failed", "failed"),
        ]
    )
    await registry.put_unit("a.service", HELLO, desired_state="launched")
    await registry.put_unit("b.service", HELLO)
    async with serve(registry, page_size=1, view=view) as client:
        unit = (await listed(client))["a.service"]
        assert ("machineID" in unit, unit["currentState"]) == (False, "inactive")

        await registry.set_machine("a.service", "m1")
        unit = (await listed(client))["a.service"]
        assert (unit["machineID"], unit["currentState"]) == ("m1", "launched")
        unit = await get(client, f"{U}/a.service")
        assert (unit["machineID"], unit["currentState"]) == ("m1", "launched")

        await registry.set_machine("a.service", "m2")  # moved: m2 reports it failed
        unit = await get(client, f"{U}/a.service")
        assert (unit["machineID"], unit["currentState"]) == ("m2", "loaded")
        unit = (await listed(client))["a.service"]
        assert (unit["machineID"], unit["currentState"]) == ("m2", "loaded")

        await registry.clear_machine("a.service")
        unit = (await listed(client))["a.service"]
        assert ("machineID" in unit, unit["currentState"]) == (False, "inactive")
        assert "machineID" not in await get(client, f"{U}/a.service")


@pytest.mark.anyio
async def test_a_write_between_two_pages_of_a_listing_is_seen_by_the_later_page(registry: Registry) -> None:
    await registry.put_unit("a.service", HELLO)
    await registry.put_unit("b.service", HELLO)
    async with serve(registry, page_size=1) as client:
        first = await get(client, U)
        assert [u["name"] for u in first["units"]] == ["a.service"]
        await registry.set_machine("b.service", "m1")
        second = await get(client, f"{U}?nextPageToken={first['nextPageToken']}")
    assert second["units"][0]["machineID"] == "m1"


@pytest.mark.anyio
async def test_the_pages_of_a_listing_share_one_read_of_the_schedule() -> None:
    registry = CountingRegistry(ManualClock())
    async with registry:
        for i in range(5):
            await registry.put_unit(f"u{i}.service", HELLO)
        async with serve(registry, page_size=2) as client:
            assert len(await listed(client)) == 5
            assert registry.schedule_reads == 1
            await registry.set_machine("u3.service", "m1")
            assert (await listed(client))["u3.service"]["machineID"] == "m1"
            assert registry.schedule_reads == 2
