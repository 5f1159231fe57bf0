"""The client's Unit records: what they say of themselves (hash, global) and how a listing's pages are decoded."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fleetlet.client import Client, UnexpectedResponse, Unit
from fleetlet.diagnostics import Report
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.names import parse_name
from fleetlet.units.xfleet import requirements

SERVICE = ("Service", "ExecStart", "/bin/true")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _unit(name: str, *options: tuple[str, str, str]) -> Unit:
    return Unit(name, tuple(UnitOption(*o) for o in options), "inactive", "inactive", None)


@pytest.mark.parametrize(
    ("name", "xfleet", "expected"),
    [
        ("a.service", [], False),
        ("a.service", [("MachineMetadata", "region=us")], False),
        ("a.service", [("Global", "true")], True),
        ("a.service", [("Global", "false")], False),
        ("a.service", [("Global", "yes"), ("Global", "no")], False),  # the last value wins
        ("a.service", [("Global", "no"), ("Global", "On")], True),
        ("a.service", [("Global", "true"), ("Global", "nonsense")], True),  # the last valid value
        ("a.service", [("Global", '"true"')], True),  # a quoted list of one
        ("a@true.service", [("Global", "%i")], True),  # specifiers are replaced first
        ("a@false.service", [("Global", "%i")], False),
        ("a.service", [("global", "true")], False),  # not a key of [X-Fleet]
    ],
)
def test_is_global_reads_x_fleet_as_the_scheduler_does(
    name: str, xfleet: list[tuple[str, str]], expected: bool
) -> None:
    unit = _unit(name, SERVICE, *(("X-Fleet", key, value) for key, value in xfleet))
    assert unit.is_global is expected
    assert requirements(unit.unit_file, parse_name(name), Report(name)).is_global is expected


def test_global_in_another_section_does_not_count() -> None:
    assert _unit("a.service", SERVICE, ("Service", "Global", "true")).is_global is False


@pytest.mark.parametrize(
    "options",
    [
        [SERVICE],
        [("Unit", "Description", "x"), SERVICE, ("Unit", "After", "y")],  # interleaved sections: normalized first
        [SERVICE, ("X-Fleet", "Global", "true")],
    ],
)
def test_hash_is_the_hash_of_the_unit_file(options: list[tuple[str, str, str]]) -> None:
    unit = _unit("a.service", *options)
    assert unit.hash == UnitFile.from_options(options).hash
    assert _unit("b.service", *options).hash == unit.hash  # the name takes no part


def test_units_with_other_options_have_other_hashes() -> None:
    assert _unit("a.service", SERVICE).hash != _unit("a.service", ("Service", "ExecStart", "/bin/false")).hash


# --- decoding pages ----------------------------------------------------------------------------------------------


@asynccontextmanager
async def serving_pages(pages: dict[str, Any], tmp_path: Path) -> AsyncIterator[Client]:
    """A client of a server answering GET /units with ``pages`` by page token ("" for the first)."""

    async def units(request: web.Request) -> web.Response:
        return web.json_response(pages[request.query.get("nextPageToken", "")])

    app = web.Application()
    app.router.add_get("/fleet/v1/units", units)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        path = tmp_path / "api.sock"
        await web.UnixSite(runner, str(path)).start()
        async with Client(f"unix://{path}") as fleet:
            yield fleet
    finally:
        await runner.cleanup()


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    """The collector on for the test, and as the test found it afterwards."""
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.anyio
@pytest.mark.usefixtures("collector_enabled")
async def test_units_decodes_every_page_and_reads_missing_option_fields_as_empty(tmp_path: Path) -> None:
    pages = {
        "": {
            "units": [{"name": "a.service", "options": [{"section": "Service", "name": "ExecStart"}]}],
            "nextPageToken": "t1",
        },
        "t1": {"units": [{"name": "b.service", "desiredState": "launched", "machineID": "m1"}]},
    }
    async with serving_pages(pages, tmp_path) as fleet:
        found = await fleet.units()
    assert found == [
        Unit("a.service", (UnitOption("Service", "ExecStart", ""),), "inactive", "inactive", None),
        Unit("b.service", (), "launched", "inactive", "m1"),
    ]
    assert gc.isenabled()


@pytest.mark.anyio
@pytest.mark.usefixtures("collector_enabled")
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"section": "Service"}, "expected a JSON array"),
        ([1], "expected a JSON object"),
        ([{"section": "Service", "name": "ExecStart", "value": 1}], "value is not a string"),
        ([{"section": None, "name": "ExecStart"}], "section is not a string"),
    ],
)
async def test_options_of_the_wrong_shape_are_an_unexpected_response(
    options: object, message: str, tmp_path: Path
) -> None:
    pages = {"": {"units": [{"name": "a.service", "options": options}]}}
    async with serving_pages(pages, tmp_path) as fleet:
        with pytest.raises(UnexpectedResponse, match=f"HTTP 200\\): {message}$"):
            await fleet.units()
    assert gc.isenabled()  # the pause of the collector while a page is decoded ends with it, even in failure


@pytest.mark.anyio
async def test_a_program_that_turned_the_collector_off_finds_it_off(tmp_path: Path) -> None:
    pages = {"": {"units": [{"name": "a.service"}]}}
    was = gc.isenabled()
    gc.disable()
    try:
        async with serving_pages(pages, tmp_path) as fleet:
            await fleet.units()
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
