"""Scenarios a user lives through with `fleetlet agent` as a real process on a real engine: templates, units no
machine can take, conflicts, and an agent killed with SIGKILL and started again on the same state directory.

Container names carry the machine ID, which is new for every test, so parallel runs do not collide. The ``agents``
fixture kills the agents and removes their containers whatever happens.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fleetlet.exec.runtime import ContainerState
from tests.integration.agent_rig import BOUND, Agents, children, inspect_raw, processes_naming, until

pytestmark = pytest.mark.integration

# What list-unit-files shows of each unit: its name, desired state, current state and machine.
FIELDS = "unit,dstate,state,target"
LOOP = "sh -c \"trap 'exit 0' TERM; while true; do echo hi; sleep 1; done\""


def _service(directory: Path, unit: str, container: str, x_fleet: str = "") -> Path:
    """A unit whose main process is a busybox container named ``container``; ``x_fleet`` its [X-Fleet] lines."""
    path = directory / unit
    text = (
        f"[Unit]\nDescription=scenario {unit}\n\n[Service]\n"
        f"ExecStart=/usr/bin/docker run --rm --name {container} busybox {LOOP}\n"
        f"ExecStop=/usr/bin/docker stop {container}\n"
    )
    path.write_text(text + (f"\n[X-Fleet]\n{x_fleet}\n" if x_fleet else ""))
    return path


def _cells(agents: Agents, *command: str) -> list[list[str]]:
    """The rows of a list command without its legend, each split into its non-empty tab-separated cells."""
    out = agents.fleetlet(*command, "--no-legend").stdout
    return [[cell for cell in line.split("\t") if cell] for line in out.splitlines()]


def _unit_files(agents: Agents) -> list[list[str]]:
    """list-unit-files' rows of FIELDS, the target reduced to its machine ID (the column may add ``/IP``)."""
    rows = _cells(agents, "list-unit-files", "--full", "--fields", FIELDS)
    return [[*row[:-1], row[-1].partition("/")[0]] for row in rows]


def _running(agents: Agents, container: str) -> ContainerState | None:
    state = agents.inspect(container)
    return state if state is not None and state.running else None


def _log_since(agents: Agents, mark: int) -> str:
    return agents.log.read_text()[mark:]


def _journal(agents: Agents, unit: str) -> list[str]:
    """The messages of a unit's journal on this machine (NDJSON, one entry a line), oldest first."""
    path = agents.state_dir / "journal" / f"{unit}.journal"
    if not path.exists():
        return []
    return [orjson.loads(line)["message"] for line in path.read_bytes().splitlines() if line.strip()]


@contextlib.contextmanager
def _sampling(agents: Agents) -> Iterator[list[frozenset[str]]]:
    """Sample the names of the machine's running containers, from the engine, until the block ends."""
    samples: list[frozenset[str]] = []
    errors: list[Exception] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                samples.append(frozenset(c.name for c in agents.containers() if c.running))
            except Exception as e:  # reported by the test's thread, below
                errors.append(e)
                return
            done.wait(0.05)

    sampler = threading.Thread(target=sample, name="container-sampler", daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join(timeout=BOUND)
    assert not errors, errors
    assert samples, "the sampler took no sample"


def test_an_instance_starts_from_a_local_template(agents: Agents, tmp_path: Path) -> None:
    agents.start()
    prefix = f"web-{agents.machine_id[:12]}"
    # Written as `cat` prints a unit (normalized), so the two texts compare whole.
    template = (
        "[Unit]\nDescription=web instance %i\n\n[Service]\n"
        f"ExecStart=/usr/bin/docker run --rm --name {prefix}-%i busybox {LOOP}\n"
        f"ExecStop=/usr/bin/docker stop {prefix}-%i\n"
    )
    (tmp_path / "web@.service").write_text(template)

    started = agents.fleetlet("start", "--no-block", "web@3.service", cwd=tmp_path)
    assert started.stdout == "Unit web@3.service inactive\nTriggered unit web@3.service start\n"

    until(lambda: _running(agents, f"{prefix}-3"))
    assert [c.name for c in agents.containers()] == [f"{prefix}-3"]
    assert agents.fleetlet("cat", "web@3.service").stdout == template
    # The instance is submitted and launched; the template only lent its text: it is not a unit of the cluster.
    until(lambda: _unit_files(agents) == [["web@3.service", "launched", "launched", agents.machine_id]])


def test_a_unit_no_machine_can_take_stays_unscheduled_with_its_reason(agents: Agents, tmp_path: Path) -> None:
    agents.start()
    container = f"nowhere-{agents.machine_id[:12]}"
    nowhere = _service(tmp_path, "nowhere.service", container, "MachineMetadata=group=nowhere")
    reason = f"cannot place nowhere.service: machine {agents.machine_id[:8]}: metadata group=nowhere not satisfied"

    agents.fleetlet("start", "--no-block", str(nowhere))
    until(lambda: reason in agents.log.read_text())
    assert _unit_files(agents) == [["nowhere.service", "launched", "inactive", "-"]]

    # A unit the machine can take, started afterwards: once it runs, the engine and this machine's reconciler have
    # both acted after the decision on nowhere.service, and still nothing was created for it.
    witness = _service(tmp_path, "witness.service", f"witness-{agents.machine_id[:12]}")
    agents.fleetlet("start", "--no-block", str(witness))
    until(lambda: _running(agents, f"witness-{agents.machine_id[:12]}"))
    assert [c.name for c in agents.containers()] == [f"witness-{agents.machine_id[:12]}"]
    assert agents.inspect(container) is None
    assert _unit_files(agents)[0] == ["nowhere.service", "launched", "inactive", "-"]

    # `fleetlet explain` and `fleetlet status` will show the engine's reason through the API (another engineer is
    # adding them); until then the agent's log is where it shows. Once `explain` exists, it must say it too.
    explained = agents.fleetlet("explain", "nowhere.service", check=False)
    if "invalid choice" not in explained.stderr:
        assert explained.returncode == 0, explained.stderr
        assert "metadata group=nowhere not satisfied" in explained.stdout


def test_two_conflicting_units_are_never_both_launched(agents: Agents, tmp_path: Path) -> None:
    agents.start()
    a_container, b_container = f"a-{agents.machine_id[:12]}", f"b-{agents.machine_id[:12]}"
    a = _service(tmp_path, "a.service", a_container, "Conflicts=b.service")
    b = _service(tmp_path, "b.service", b_container)

    with _sampling(agents) as samples:
        agents.fleetlet("start", "--no-block", str(a))
        until(lambda: _running(agents, a_container))
        a_state = agents.inspect(a_container)
        assert a_state is not None

        mark = len(agents.log.read_text())
        agents.fleetlet("start", "--no-block", str(b))
        reason = f"cannot place b.service: machine {agents.machine_id[:8]}: conflicts with a.service"
        until(lambda: reason in _log_since(agents, mark))
        assert agents.inspect(b_container) is None
        assert [row[0::3] for row in _unit_files(agents)] == [["a.service", agents.machine_id], ["b.service", "-"]]
        still = _running(agents, a_container)
        assert still is not None
        assert still.id == a_state.id

        agents.fleetlet("destroy", "a.service")
        until(lambda: _running(agents, b_container))
        until(lambda: _unit_files(agents) == [["b.service", "launched", "launched", agents.machine_id]])
        assert agents.inspect(a_container) is None

    both = [sample for sample in samples if {a_container, b_container} <= sample]
    assert not both, f"{len(both)} of {len(samples)} samples found both containers running"
    assert any(a_container in sample for sample in samples)
    assert any(b_container in sample for sample in samples)


def test_an_agent_killed_with_sigkill_comes_back_and_adopts_its_container(agents: Agents, tmp_path: Path) -> None:
    first = agents.start()
    container = f"one-{agents.machine_id[:12]}"
    one = _service(tmp_path, "one.service", container)
    two = _service(tmp_path, "two.service", f"two-{agents.machine_id[:12]}")
    agents.fleetlet("start", "--no-block", str(one))
    agents.fleetlet("load", "--no-block", str(two))
    acknowledged = [
        ["one.service", "launched", "launched", agents.machine_id],
        ["two.service", "loaded", "loaded", agents.machine_id],
    ]
    until(lambda: _running(agents, container) and _unit_files(agents) == acknowledged)
    before = inspect_raw(agents, container)
    assert before is not None
    assert "Adopted running" not in " ".join(_journal(agents, "one.service"))
    helpers = children(first.pid)

    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=BOUND) == -signal.SIGKILL
    assert _running(agents, container) is not None

    second = agents.start()
    until(lambda: _unit_files(agents) == acknowledged)
    until(lambda: any("Adopted running" in message for message in _journal(agents, "one.service")))
    after = inspect_raw(agents, container)
    assert after is not None
    assert after["Id"] == before["Id"]
    assert after["State"]["Running"]
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert [c.name for c in agents.containers()] == [container]  # nothing for two.service: it is only loaded

    # Nothing of the killed agent lives on: no process it had started, no process on the state directory but the
    # agent now serving it.
    assert [pid for pid in helpers if Path(f"/proc/{pid}").exists()] == []
    assert processes_naming(agents.state_dir) == [second.pid]


def test_acknowledged_submissions_survive_sigkill(agents: Agents, tmp_path: Path) -> None:
    first = agents.start()
    names = [f"bulk-{n:02d}.service" for n in range(20)]
    files = [_service(tmp_path, name, f"bulk-{agents.machine_id[:12]}-{n:02d}") for n, name in enumerate(names)]

    agents.fleetlet("submit", *map(str, files))
    first.kill()  # at once: the CLI's success is the promise under test
    assert first.wait(timeout=BOUND) == -signal.SIGKILL

    agents.start()
    assert _unit_files(agents) == [[name, "inactive", "inactive", "-"] for name in names]
