"""`fleetlet agent` as a separate process on a real engine, driven by the CLI as a user types it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.runtime import LABEL_MACHINE, ContainerState, NoSuchContainer

pytestmark = pytest.mark.integration

FLEETLET = Path(sys.executable).parent / "fleetlet"
BOUND = 20.0  # seconds any one expected change may take
PUBLIC_IP = "192.0.2.7"  # TEST-NET-1: shown, never dialled


@dataclass
class Agents:
    """Agent processes of one test, on one state directory and machine ID; all killed at teardown."""

    docker_url: str
    state_dir: Path
    machine_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"unix://{self.state_dir}/fleetlet.sock"

    @property
    def log(self) -> Path:
        return self.state_dir / "agent.log"

    def start(self) -> subprocess.Popen[bytes]:
        argv = [
            str(FLEETLET),
            "agent",
            *("--state-dir", str(self.state_dir)),
            *("--listen", f"127.0.0.1:{_free_port()}"),
            *("--machine-id", self.machine_id),
            *("--metadata", "group=hw_webservers,region=lab"),
            *("--public-ip", PUBLIC_IP),
        ]
        with self.log.open("ab") as log:
            process = subprocess.Popen(argv, env=self._env(), stdout=log, stderr=log)
        self.processes.append(process)
        _until(lambda: process.poll() is not None or self.fleetlet("list-unit-files", check=False).returncode == 0)
        assert process.poll() is None, self.log.read_text()
        return process

    def fleetlet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(FLEETLET), *args, "--endpoint", self.endpoint],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=BOUND,
            check=False,
        )
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def containers(self) -> list[ContainerState]:
        async def listed() -> list[ContainerState]:
            async with DockerRuntime(self.docker_url) as runtime:
                return await runtime.list({LABEL_MACHINE: self.machine_id})

        return anyio.run(listed)

    def inspect(self, name: str) -> ContainerState | None:
        async def inspected() -> ContainerState | None:
            async with DockerRuntime(self.docker_url) as runtime:
                try:
                    return await runtime.inspect(name)
                except NoSuchContainer:
                    return None

        return anyio.run(inspected)

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

        async def remove() -> None:
            async with DockerRuntime(self.docker_url) as runtime:
                for state in await runtime.list({LABEL_MACHINE: self.machine_id}):
                    try:
                        await runtime.remove(state.id, force=True, volumes=True)
                    except NoSuchContainer:
                        pass

        anyio.run(remove)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.docker_url}


@pytest.fixture
def agents(docker_url: str) -> Iterator[Agents]:
    # Short: a unix socket path may not exceed 108 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="fa-", dir="/tmp"))
    agents = Agents(docker_url, state_dir)
    try:
        yield agents
    finally:
        try:
            agents.cleanup()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _until(condition: Callable[[], object], bound: float = BOUND) -> None:
    """Poll ``condition`` with short retries until it holds; fail after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, f"not within {bound}s"
        time.sleep(0.2)


def _unit_file(directory: Path, container: str) -> Path:
    path = directory / f"{container}.service"
    path.write_text(
        "[Unit]\nDescription=agent e2e\n\n[Service]\n"
        f"ExecStart=/usr/bin/docker run --rm --name {container} busybox "
        "sh -c \"trap 'exit 0' TERM; while true; do echo hi; sleep 1; done\"\n"
        f"ExecStop=/usr/bin/docker stop {container}\n"
    )
    return path


def _cells(agents: Agents, *command: str) -> list[list[str]]:
    """The rows of a list command without its legend, each split into its non-empty tab-separated cells."""
    out = agents.fleetlet(*command, "--no-legend").stdout
    return [[cell for cell in line.split("\t") if cell] for line in out.splitlines()]


def _running(agents: Agents, container: str) -> ContainerState | None:
    state = agents.inspect(container)
    return state if state is not None and state.running else None


def test_submit_start_stop_destroy(agents: Agents, tmp_path: Path) -> None:
    agents.start()
    container = f"fa-{agents.machine_id[:12]}"
    unit = _unit_file(tmp_path, container)

    agents.fleetlet("submit", str(unit))
    agents.fleetlet("start", unit.name)
    _until(lambda: _running(agents, container))
    assert agents.inspect(container) is not None
    _until(
        lambda: (
            _cells(agents, "list-units", "-l") == [[unit.name, f"{agents.machine_id}/{PUBLIC_IP}", "active", "running"]]
        )
    )
    assert agents.fleetlet("list-units").stdout == (
        f"UNIT\t\t\tMACHINE\t\t\tACTIVE\tSUB\n{unit.name}\t{agents.machine_id[:8]}.../{PUBLIC_IP}\tactive\trunning\n"
    )
    assert _cells(agents, "list-machines", "--full") == [
        [agents.machine_id, PUBLIC_IP, "group=hw_webservers,region=lab"]
    ]

    agents.fleetlet("stop", unit.name)
    _until(lambda: _running(agents, container) is None)

    agents.fleetlet("destroy", unit.name)
    assert "start:" in agents.log.read_text()


def test_sigterm_leaves_the_container_and_the_next_agent_adopts_it(agents: Agents, tmp_path: Path) -> None:
    first = agents.start()
    container = f"fa-{agents.machine_id[:12]}"
    unit = _unit_file(tmp_path, container)
    agents.fleetlet("start", str(unit))
    _until(lambda: _running(agents, container))
    before = agents.inspect(container)
    assert before is not None

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=BOUND) == 0, agents.log.read_text()
    still = _running(agents, container)
    assert still is not None
    assert still.id == before.id

    mark = len(agents.log.read_text())
    agents.start()
    # The second agent plans load and start for the unit; its actor adopts the container while loading.
    _until(lambda: f"start: {unit.name}" in agents.log.read_text()[mark:])
    after = _running(agents, container)
    assert after is not None
    assert after.id == before.id
    assert [c.id for c in agents.containers()] == [before.id]

    # And it controls it: a stop reaches the adopted container.
    agents.fleetlet("stop", unit.name)
    _until(lambda: _running(agents, container) is None)
