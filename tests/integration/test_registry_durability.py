"""Every write SqliteRegistry acknowledged survives kill -9 of the process that made it.

A child process writes through a SqliteRegistry (several concurrent writers, so group commit is exercised) and
prints each write's name and revision once the registry has acknowledged it. The test SIGKILLs the child
mid-stream, reopens the database and finds every acknowledged write, with its revision.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.registry import SqliteRegistry
from fleetlet.units.model import UnitFile
from fleetlet.units.syntax import parse

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys
import anyio
from fleetlet.clock import SystemClock
from fleetlet.registry import SqliteRegistry
from fleetlet.units.model import UnitFile
from fleetlet.units.syntax import parse
from fleetlet.units.syntax import parse

async def main(path):
    async with SqliteRegistry(path, SystemClock()) as registry:
        async def writer(w):
            for i in range(100_000):
                name = f"w{w}-{i}.service"
                unit = parse(f"[Service]\\nExecStart=/bin/echo {name}\\n")
                revision = await registry.put_unit(name, unit, desired_state="launched")
                print(name, revision, flush=True)  # only now is it acknowledged
        async with anyio.create_task_group() as tg:
            for w in range(8):
                tg.start_soon(writer, w)

anyio.run(main, sys.argv[1])
"""


def _write_until_killed(path: Path, kill_after: int) -> dict[str, int]:
    """Run the child, SIGKILL it after ``kill_after`` acknowledgements; every acknowledged name → revision."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    acknowledged: dict[str, int] = {}
    try:
        assert child.stdout is not None
        while len(acknowledged) < kill_after:
            line = child.stdout.readline()
            if not line:
                pytest.fail(
                    f"the writer died on its own: {child.wait(10)}; {child.stderr.read() if child.stderr else ''}"
                )
            name, revision = line.split()
            acknowledged[name] = int(revision)
        child.send_signal(signal.SIGKILL)
        # Lines already in the pipe were acknowledged before the kill: they count too. A cut-off line does not.
        for line in child.stdout:
            if line.endswith("\n"):
                name, revision = line.split()
                acknowledged[name] = int(revision)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    return acknowledged


async def _check(path: Path, acknowledged: dict[str, int], *, rewritten: bool = False) -> None:
    """Every acknowledged write is there; with ``rewritten``, a later run may have replaced it with a newer one
    that was committed but killed before its acknowledgement was printed."""
    async with SqliteRegistry(path, ManualClock()) as registry:
        head = await registry.revision()
        assert head >= max(acknowledged.values())
        missing = []
        for name, revision in acknowledged.items():
            record = await registry.get_unit(name)
            ok = record is not None and (record.revision >= revision if rewritten else record.revision == revision)
            if not ok or record is None or record.desired_state != "launched":
                missing.append((name, revision, record))
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        # The database is usable after the crash: the next write follows the last durable one.
        assert await registry.put_unit("after-crash.service", _unit()) == head + 1


def _unit() -> UnitFile:
    return parse("[Service]\nExecStart=/bin/true\n")


@pytest.mark.parametrize("kill_after", [1, 40, 300, 1500])
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, kill_after: int) -> None:
    path = tmp_path / "registry.db"
    acknowledged = _write_until_killed(path, kill_after)
    assert len(acknowledged) >= kill_after
    anyio.run(_check, path, acknowledged)


def test_repeated_crashes_lose_nothing(tmp_path: Path) -> None:
    """Crash, reopen, crash again on the same file: writes of every run are still there."""
    path = tmp_path / "registry.db"
    everything: dict[str, int] = {}
    for kill_after in (25, 120, 60):
        acknowledged = _write_until_killed(path, kill_after)
        # The child's names repeat from run to run: a later run's write replaces an earlier one, with a newer revision.
        everything.update(acknowledged)
    anyio.run(lambda: _check(path, everything, rewritten=True))
