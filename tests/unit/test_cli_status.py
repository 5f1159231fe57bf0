"""``fleetlet status``: the block as a pure function of the report, and the command against the API, exact output."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import pytest

from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.cli.status import ago, format_status, timestamp
from fleetlet.client import UnitReport
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry
from fleetlet.service.journal import MemoryJournal, format_entry
from fleetlet.service.states import UnitStatus
from fleetlet.units.model import UnitFile
from tests.cli_rig import Fleetctl, cli, served

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
HASH = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
SINCE = 1_795_734_601.0  # Thu 2026-11-26 23:10:01 UTC
RUNNING = UnitReport(
    name="hello.service",
    description="Hello World",
    hash=HASH,
    desired_state="launched",
    current_state="launched",
    machine_id=A,
    primary_ip="192.0.2.7",
    load_state="loaded",
    active_state="active",
    sub_state="running",
    result="success",
    since=SINCE,
    container_id="4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c",
)
JOURNAL = ["Nov 26 23:10:01 fleetlet: Starting Hello World..."]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the block ---------------------------------------------------------------------------------------------------


def test_a_running_container_unit_reads_like_systemctl_status() -> None:
    assert format_status(RUNNING, JOURNAL, now=SINCE + 5, tz=UTC) == (
        "● hello.service - Hello World\n"
        "   Loaded: loaded (hash 1a2b3c4)\n"
        "   Active: active (running) since Thu 2026-11-26 23:10:01 UTC; 5s ago\n"
        "Container: 4f3a2b1c0d9e\n"
        "  Machine: 1a2b3c4d.../192.0.2.7\n"
        "\n"
        "Nov 26 23:10:01 fleetlet: Starting Hello World...\n"
    )


def test_a_failed_process_unit_shows_its_result_main_pid_exit_and_restarts() -> None:
    failed = replace(
        RUNNING,
        description="",
        current_state="loaded",
        active_state="failed",
        sub_state="failed",
        result="exit-code",
        container_id=None,
        main_pid=4242,
        exit_status="code=exited, status=1/FAILURE",
        restarts=3,
        primary_ip="",
    )
    assert format_status(failed, [], now=SINCE + 185, tz=UTC) == (
        "● hello.service\n"
        "  Loaded: loaded (hash 1a2b3c4)\n"
        "  Active: failed (Result: exit-code) since Thu 2026-11-26 23:10:01 UTC; 3min 5s ago\n"
        "Main PID: 4242 (code=exited, status=1/FAILURE)\n"
        "Restarts: 3\n"
        " Machine: 1a2b3c4d...\n"
    )


def test_a_restarting_unit_shows_why_it_ended() -> None:
    restarting = replace(
        RUNNING, active_state="activating", sub_state="auto-restart", result="signal", container_id=None
    )
    block = format_status(restarting, [], now=SINCE, tz=UTC)
    assert "Active: activating (auto-restart) (Result: signal) since Thu 2026-11-26 23:10:01 UTC; 0s ago\n" in block


def test_an_ended_unit_without_process_shows_its_last_exit() -> None:
    ended = replace(RUNNING, active_state="inactive", sub_state="dead", container_id=None, exit_status="code=exited")
    assert "Last exit: code=exited\n" in format_status(ended, [], now=SINCE, tz=UTC)


def test_a_unit_that_cannot_be_placed() -> None:
    report = UnitReport(
        name="hello.service",
        hash=HASH,
        desired_state="launched",
        reasons=("machine 1a2b3c4d: metadata group=hw_webservers not satisfied", "machine 9f8e7d6c: busy"),
    )
    assert format_status(report, [], now=SINCE, tz=UTC) == (
        "● hello.service\n"
        "    Loaded: not loaded (hash 1a2b3c4)\n"
        "    Active: inactive (dead)\n"
        "   Machine: -\n"
        "Not placed: machine 1a2b3c4d: metadata group=hw_webservers not satisfied; machine 9f8e7d6c: busy\n"
    )


def test_timestamps_are_in_the_zone_given_or_the_local_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert timestamp(SINCE, UTC) == "Thu 2026-11-26 23:10:01 UTC"
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert timestamp(SINCE) == "Thu 2026-11-26 23:10:01 UTC"
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (-3, "0s ago"),
        (0, "0s ago"),
        (59.9, "59s ago"),
        (60, "1min 0s ago"),
        (299, "4min 59s ago"),
        (300, "5min ago"),
        (3599, "59min ago"),
        (3600, "1h 0min ago"),
        (6 * 3600 - 1, "5h 59min ago"),
        (6 * 3600, "6h ago"),
        (86400 - 1, "23h ago"),
        (86400 + 7200, "1 day 2h ago"),
        (3 * 86400 + 5, "3 days ago"),
    ],
)
def test_ago_in_systemds_words(seconds: float, words: str) -> None:
    assert ago(seconds) == words


# --- the command -------------------------------------------------------------------------------------------------


@pytest.fixture
def journal() -> MemoryJournal:
    journal = MemoryJournal("hello.service", ManualClock())
    for i in range(12):
        journal.write(f"line {i}", "stdout")
    return journal


@pytest.fixture
async def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal: MemoryJournal) -> AsyncIterator[str]:
    monkeypatch.delenv("FLEETCTL_ENDPOINT", raising=False)
    monkeypatch.delenv("FLEETLET_ENDPOINT", raising=False)
    hello = UnitFile.from_options([("Unit", "Description", "Hello World"), ("Service", "ExecStart", "/bin/true")])
    stuck = UnitFile.from_options([("Service", "ExecStart", "/bin/false")])
    view = StaticView(
        [MachineSpec(A, {}, "192.0.2.7")],
        [UnitState("hello.service", hello.hash, A, "loaded", "active", "running")],
        statuses={"hello.service": UnitStatus("hello.service", hello.hash, active="active", sub="running", main_pid=7)},
        journals={"hello.service": journal},
        reasons={"stuck.service": ("machine 1a2b3c4d: metadata disk=ssd not satisfied",)},
    )
    async with MemoryRegistry(ManualClock()) as registry:
        await registry.put_unit("hello.service", hello, desired_state="launched")
        await registry.set_machine("hello.service", A)
        await registry.put_unit("stuck.service", stuck, desired_state="launched")
        async with served(fleet_v1_app(registry, view=view), tmp_path) as url:
            yield url


@pytest.fixture
def fleetctl(endpoint: str, capsys: pytest.CaptureFixture[str]) -> Fleetctl:
    return cli(endpoint, capsys)


def tail(journal: MemoryJournal, n: int) -> str:
    return "".join(f"{format_entry(e, 'hello.service')}\n" for e in journal.tail(n))


@pytest.mark.anyio
async def test_status_prints_each_unit_then_its_last_journal_lines(fleetctl: Fleetctl, journal: MemoryJournal) -> None:
    hello = UnitFile.from_options([("Unit", "Description", "Hello World"), ("Service", "ExecStart", "/bin/true")])
    stuck = UnitFile.from_options([("Service", "ExecStart", "/bin/false")])
    assert await fleetctl("status", "hello", "stuck.service", "--lines", "2") == (
        0,
        "● hello.service - Hello World\n"
        f"  Loaded: loaded (hash {hello.hash[:7]})\n"
        "  Active: active (running)\n"
        "Main PID: 7\n"
        " Machine: 1a2b3c4d.../192.0.2.7\n"
        "\n" + tail(journal, 2) + "\n"
        "● stuck.service\n"
        f"    Loaded: not loaded (hash {stuck.hash[:7]})\n"
        "    Active: inactive (dead)\n"
        "   Machine: -\n"
        "Not placed: machine 1a2b3c4d: metadata disk=ssd not satisfied\n",
        "",
    )


@pytest.mark.anyio
async def test_status_shows_ten_journal_lines_by_default_and_none_with_zero(
    fleetctl: Fleetctl, journal: MemoryJournal
) -> None:
    status, out, _ = await fleetctl("status", "hello.service")
    assert (status, out.split("\n\n", 1)[1]) == (0, tail(journal, 10))
    status, out, _ = await fleetctl("status", "hello.service", "-n", "0")
    assert (status, "\n\n" in out, out.endswith(" Machine: 1a2b3c4d.../192.0.2.7\n")) == (0, False, True)


@pytest.mark.anyio
async def test_status_of_an_unknown_unit_says_so_and_fails_after_the_others(fleetctl: Fleetctl) -> None:
    status, out, err = await fleetctl("status", "nope.service", "stuck", "-n", "0")
    assert (status, err) == (1, "Unit nope.service does not exist.\n")
    assert out.startswith("● stuck.service\n")


@pytest.mark.anyio
async def test_status_refuses_a_bad_line_count(fleetctl: Fleetctl) -> None:
    with pytest.raises(SystemExit) as info:
        await fleetctl("status", "hello.service", "--lines", "-1")
    assert info.value.code == 2
