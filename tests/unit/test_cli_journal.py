"""``fleetlet journal [--lines N] [-f] UNIT`` through ``main([...])`` against the API on a unix socket, exact output.

``main`` runs its own event loop, so the command runs in a worker thread while the test's loop serves the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from fleetlet.api import StaticView, fleet_v1_app
from fleetlet.clock import ManualClock
from fleetlet.registry import MemoryRegistry
from fleetlet.service.journal import DEFAULT_FOLLOW_BUFFER, JournalSink, MemoryJournal, format_entry
from fleetlet.units.model import UnitFile
from tests.cli_rig import Fleetctl, Run, cli, served

UNIT = UnitFile.from_options([("Service", "ExecStart", "/bin/true")])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class WatchedJournal(MemoryJournal):
    """A memory journal that says when someone follows it."""

    def __init__(self, unit: str) -> None:
        super().__init__(unit, ManualClock())
        self.followed = anyio.Event()

    async def follow(self, sink: JournalSink, *, last: int = 10, buffer: int = DEFAULT_FOLLOW_BUFFER) -> None:
        self.followed.set()  # the follower subscribes before its first await: nothing written from now is missed
        await super().follow(sink, last=last, buffer=buffer)


@pytest.fixture
def journal() -> WatchedJournal:
    journal = WatchedJournal("hello.service")
    for i in range(12):
        journal.write(f"line {i}", "stdout" if i % 2 else "fleetlet")
    return journal


@pytest.fixture
async def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal: WatchedJournal) -> AsyncIterator[str]:
    monkeypatch.delenv("FLEETCTL_ENDPOINT", raising=False)
    monkeypatch.delenv("FLEETLET_ENDPOINT", raising=False)
    async with MemoryRegistry(ManualClock()) as registry:
        await registry.put_unit("hello.service", UNIT, desired_state="launched")
        await registry.put_unit("quiet.service", UNIT)
        async with served(
            fleet_v1_app(registry, view=StaticView(journals={"hello.service": journal})), tmp_path
        ) as url:
            yield url


@pytest.fixture
def fleetctl(endpoint: str, capsys: pytest.CaptureFixture[str]) -> Fleetctl:
    return cli(endpoint, capsys)


def tail(journal: MemoryJournal, n: int) -> str:
    return "".join(f"{format_entry(e, 'hello.service')}\n" for e in journal.tail(n))


@pytest.mark.anyio
async def test_journal_prints_the_last_ten_lines_by_default(fleetctl: Fleetctl, journal: WatchedJournal) -> None:
    status, out, err = await fleetctl("journal", "hello")
    assert (status, out, err) == (0, tail(journal, 10), "")
    assert out.splitlines()[-1].endswith(" hello.service[stdout]: line 11")
    assert out.splitlines()[-2].endswith(" fleetlet: line 10")


@pytest.mark.anyio
@pytest.mark.parametrize(("lines", "expected"), [("3", 3), ("0", 0), ("40", 12)])
async def test_journal_lines(fleetctl: Fleetctl, journal: WatchedJournal, lines: str, expected: int) -> None:
    assert await fleetctl("journal", "--lines", lines, "hello.service") == (0, tail(journal, expected), "")


@pytest.mark.anyio
async def test_journal_of_a_unit_with_none_prints_nothing(fleetctl: Fleetctl) -> None:
    assert await fleetctl("journal", "quiet.service") == (0, "", "")
    assert await fleetctl("journal", "-f", "quiet.service") == (0, "", "")


@pytest.mark.anyio
async def test_journal_of_an_unknown_unit_says_so(fleetctl: Fleetctl) -> None:
    assert await fleetctl("journal", "nope") == (1, "", "Unit nope.service does not exist.\n")
    assert await fleetctl("journal", "--follow", "nope") == (1, "", "Unit nope.service does not exist.\n")


@pytest.mark.anyio
@pytest.mark.parametrize("flag", ["-f", "--follow"])
async def test_journal_follow_prints_new_lines_until_the_journal_ends(
    fleetctl: Fleetctl, journal: WatchedJournal, flag: str
) -> None:
    backlog = tail(journal, 2)
    result: list[Run] = []

    async def follow() -> None:
        result.append(await fleetctl("journal", flag, "--lines", "2", "hello.service"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await journal.followed.wait()
            journal.write("new one", "stderr")
            journal.write("and another", "stdout")
            journal.close()  # the unit left the machine: the command ends
    assert result == [(0, backlog + tail(journal, 2), "")]
    assert result[0][1].splitlines()[-2].endswith(" hello.service[stderr]: new one")


@pytest.mark.anyio
async def test_journal_refuses_a_bad_line_count(fleetctl: Fleetctl) -> None:
    with pytest.raises(SystemExit) as info:
        await fleetctl("journal", "--lines", "x", "hello.service")
    assert info.value.code == 2
