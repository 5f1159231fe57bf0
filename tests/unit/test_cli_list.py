"""``list-units`` and ``list-machines`` through ``main([...])`` against the API app on a unix socket, exact output.

``main`` runs its own event loop, so each command runs in a worker thread while the test's loop serves the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.cli.list_machines import format_metadata
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry
from tests.cli_rig import Fleetctl, cli, served

pytestmark = pytest.mark.anyio

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
B = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
HASH = "0123456789abcdef0123456789abcdef01234567"
STATES = [
    UnitState("hello.service", HASH, A, "loaded", "active", "running"),
    UnitState("world.service", HASH, B, "loaded", "failed", "failed"),
]
MACHINES = [MachineSpec(A, {"region": "us-west", "group": "web"}, "10.0.0.1"), MachineSpec(B)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.delenv("FLEETCTL_ENDPOINT", raising=False)
    monkeypatch.delenv("FLEETLET_ENDPOINT", raising=False)
    async with MemoryRegistry(ManualClock()) as registry:
        app = fleet_v1_app(registry, page_size=1, view=StaticView(list(MACHINES), list(STATES)))
        async with served(app, tmp_path) as url:
            yield url


@pytest.fixture
def fleetctl(endpoint: str, capsys: pytest.CaptureFixture[str]) -> Fleetctl:
    return cli(endpoint, capsys)


async def test_list_units_prints_fleetctls_default_columns(fleetctl: Fleetctl) -> None:
    assert await fleetctl("list-units") == (
        0,
        "UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\n"
        "hello.service\t1a2b3c4d.../10.0.0.1\tactive\trunning\n"
        "world.service\t9f8e7d6c...\t\tfailed\tfailed\n",
        "",
    )


async def test_list_units_full_without_legend_and_chosen_fields(fleetctl: Fleetctl) -> None:
    assert await fleetctl("list-units", "-l", "--no-legend", "--fields", "unit,hash,load,machine") == (
        0,
        f"hello.service\t{HASH}\tloaded\t{A}/10.0.0.1\nworld.service\t{HASH}\tloaded\t{B}\n",
        "",
    )
    status, out, _ = await fleetctl("list-units", "--fields", "hash,unit")
    assert (status, out) == (0, "HASH\tUNIT\n0123456\thello.service\n0123456\tworld.service\n")


async def test_list_units_json(fleetctl: Fleetctl) -> None:
    status, out, err = await fleetctl("list-units", "--json", "--fields", "unit,machine,sub")
    assert (status, err) == (0, "")
    assert orjson.loads(out) == [
        {"unit": "hello.service", "machine": A, "sub": "running"},
        {"unit": "world.service", "machine": B, "sub": "failed"},
    ]


@pytest.mark.parametrize("command", ["list-units", "list-machines"])
@pytest.mark.parametrize(
    ("fields", "message"),
    [("", "Must define output format"), ("nope", 'Invalid key in output format: "nope"')],
)
async def test_list_commands_refuse_bad_fields(fleetctl: Fleetctl, command: str, fields: str, message: str) -> None:
    assert await fleetctl(command, "--fields", fields) == (1, "", message + "\n")


async def test_list_machines_prints_fleetctls_columns(fleetctl: Fleetctl) -> None:
    assert await fleetctl("list-machines") == (
        0,
        "MACHINE\t\tIP\t\tMETADATA\n1a2b3c4d...\t10.0.0.1\tgroup=web,region=us-west\n9f8e7d6c...\t-\t\t-\n",
        "",
    )
    assert await fleetctl("list-machines", "--full", "--no-legend", "--fields", "machine") == (
        0,
        f"{A}\n{B}\n",
        "",
    )


async def test_list_machines_json(fleetctl: Fleetctl) -> None:
    status, out, err = await fleetctl("list-machines", "--json")
    assert (status, err) == (0, "")
    assert orjson.loads(out) == [
        {"machine": A, "ip": "10.0.0.1", "metadata": {"group": "web", "region": "us-west"}},
        {"machine": B, "ip": None, "metadata": {}},
    ]


async def test_list_units_json_without_fields_has_every_field_in_full_on_one_line(fleetctl: Fleetctl) -> None:
    status, out, err = await fleetctl("list-units", "--json")
    assert (status, err) == (0, "")
    assert out.endswith("]\n")
    assert out.count("\n") == 1
    rows = orjson.loads(out)
    assert rows == [
        {"unit": "hello.service", "machine": A, "active": "active", "sub": "running", "hash": HASH, "load": "loaded"},
        {"unit": "world.service", "machine": B, "active": "failed", "sub": "failed", "hash": HASH, "load": "loaded"},
    ]
    assert list(rows[0]) == ["unit", "machine", "active", "sub", "hash", "load"]  # the default columns first


async def test_json_flags_combine_with_the_table_flags_without_effect(fleetctl: Fleetctl) -> None:
    plain = await fleetctl("list-machines", "--json")
    assert await fleetctl("list-machines", "--json", "--full", "--no-legend") == plain
    assert plain[1].count("\n") == 1


def test_format_metadata_sorts_keys_and_keeps_operators() -> None:
    assert format_metadata({"z": "1", "a": "x", "mem": ">=2048"}) == "a=x,mem>=2048,z=1"
