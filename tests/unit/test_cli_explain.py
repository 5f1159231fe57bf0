"""``fleetlet explain UNIT``: the words as a pure function, and the command against the API, exact output."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.cli.explain import explain
from fleetlet.client import UnitReport
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry
from fleetlet.units.model import UnitFile, UnitOption
from tests.cli_rig import Fleetctl, cli, served

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
B = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
PLAIN = UnitFile.from_options([("Service", "ExecStart", "/bin/true")])
PICKY = UnitFile.from_options(
    [
        ("Service", "ExecStart", "/bin/true"),
        ("X-Fleet", "MachineMetadata", "group=hw_webservers"),
        ("X-Fleet", "Conflicts", "hello@*.service"),
    ]
)
REASONS = ("machine 1a2b3c4d: metadata group=hw_webservers not satisfied", "machine 9f8e7d6c: conflicts with a.service")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the words ---------------------------------------------------------------------------------------------------


def test_a_unit_that_cannot_be_placed_gets_one_reason_per_machine() -> None:
    report = UnitReport("hello.service", desired_state="launched", reasons=REASONS)
    assert explain(report, PICKY.options) == [
        "hello.service cannot be placed:",
        "  machine 1a2b3c4d: metadata group=hw_webservers not satisfied",
        "  machine 9f8e7d6c: conflicts with a.service",
    ]


def test_an_inactive_unit_is_not_scheduled() -> None:
    assert explain(UnitReport("hello.service"), PLAIN.options) == [
        "hello.service is not scheduled: its desired state is inactive"
    ]


def test_a_unit_waiting_for_a_decision() -> None:
    assert explain(UnitReport("hello.service", desired_state="loaded"), PLAIN.options) == [
        "hello.service is not scheduled yet: its desired state is loaded, "
        "and the leader has not placed it (is there a leader?)"
    ]


def test_a_scheduled_unit_with_requirements() -> None:
    report = UnitReport(
        "hello.service",
        desired_state="launched",
        current_state="launched",
        machine_id=A,
        primary_ip="192.0.2.7",
        load_state="loaded",
        active_state="active",
        sub_state="running",
    )
    assert explain(report, PICKY.options) == [
        "hello.service is scheduled on machine 1a2b3c4d.../192.0.2.7",
        "  desired state launched, current state launched (loaded active running)",
        "  it requires: MachineMetadata=group=hw_webservers, Conflicts=hello@*.service",
    ]


@pytest.mark.parametrize(
    ("report", "second"),
    [
        (
            UnitReport("hello.service", desired_state="launched", machine_id=B),
            "  desired state launched, current state inactive (the machine has not reported it yet)",
        ),
        (
            UnitReport("hello.service", desired_state="inactive", current_state="loaded", machine_id=B),
            "  its desired state is inactive: it is being unloaded from there",
        ),
    ],
)
def test_a_scheduled_unit_without_requirements(report: UnitReport, second: str) -> None:
    assert explain(report, [UnitOption("Unit", "Description", "x")]) == [
        "hello.service is scheduled on machine 9f8e7d6c...",
        second,
        "  it has no [X-Fleet] requirements: any machine would do",
    ]


# --- the command -------------------------------------------------------------------------------------------------


@pytest.fixture
async def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.delenv("FLEETCTL_ENDPOINT", raising=False)
    monkeypatch.delenv("FLEETLET_ENDPOINT", raising=False)
    view = StaticView(
        [MachineSpec(A, {"group": "hw_webservers"}, "192.0.2.7"), MachineSpec(B)],
        [UnitState("web.service", PICKY.hash, A, "loaded", "failed", "failed")],
        reasons={"stuck.service": REASONS},
    )
    async with MemoryRegistry(ManualClock()) as registry:
        await registry.put_unit("web.service", PICKY, desired_state="launched")
        await registry.set_machine("web.service", A)
        await registry.put_unit("stuck.service", PICKY, desired_state="launched")
        await registry.put_unit("idle.service", PLAIN)
        async with served(fleet_v1_app(registry, view=view), tmp_path) as url:
            yield url


@pytest.fixture
def fleetctl(endpoint: str, capsys: pytest.CaptureFixture[str]) -> Fleetctl:
    return cli(endpoint, capsys)


@pytest.mark.anyio
async def test_explain_a_scheduled_unit(fleetctl: Fleetctl) -> None:
    assert await fleetctl("explain", "web") == (
        0,
        "web.service is scheduled on machine 1a2b3c4d.../192.0.2.7\n"
        "  desired state launched, current state loaded\n"
        "  it requires: MachineMetadata=group=hw_webservers, Conflicts=hello@*.service\n",
        "",
    )


@pytest.mark.anyio
async def test_explain_a_unit_that_cannot_be_placed(fleetctl: Fleetctl) -> None:
    assert await fleetctl("explain", "stuck.service") == (
        0,
        "stuck.service cannot be placed:\n"
        "  machine 1a2b3c4d: metadata group=hw_webservers not satisfied\n"
        "  machine 9f8e7d6c: conflicts with a.service\n",
        "",
    )


@pytest.mark.anyio
async def test_explain_an_inactive_unit_and_an_unknown_one(fleetctl: Fleetctl) -> None:
    assert await fleetctl("explain", "idle.service") == (
        0,
        "idle.service is not scheduled: its desired state is inactive\n",
        "",
    )
    assert await fleetctl("explain", "nope") == (1, "", "Unit nope.service does not exist.\n")
