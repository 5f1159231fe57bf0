"""Real `fleetlet agent` processes for end-to-end tests: start, drive with the CLI as a user types it, clean up.

Every agent of a test shares one state directory and machine ID (a restart is the same machine); the ``agents``
fixture (in conftest.py) kills whatever is left and removes every container labelled with the machine, even when
the test fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.runtime import LABEL_MACHINE, ContainerState, NoSuchContainer

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

    def start(
        self, flags: Mapping[str, str | None] | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start an agent and wait until its API answers.

        ``flags`` add to or replace the rig's flags (``{"--metadata": None}`` leaves one out); ``env`` adds variables.
        """
        chosen: dict[str, str | None] = {
            "--state-dir": str(self.state_dir),
            "--listen": f"127.0.0.1:{free_port()}",
            "--machine-id": self.machine_id,
            "--metadata": "group=hw_webservers,region=lab",
            "--public-ip": PUBLIC_IP,
            **(flags or {}),
        }
        argv = [
            str(FLEETLET),
            "agent",
            *(arg for flag, value in chosen.items() if value is not None for arg in (flag, value)),
        ]
        with self.log.open("ab") as log:
            process = subprocess.Popen(argv, env={**self._env(), **(env or {})}, stdout=log, stderr=log)
        self.processes.append(process)
        until(lambda: process.poll() is not None or self.fleetlet("list-unit-files", check=False).returncode == 0)
        assert process.poll() is None, self.log.read_text()
        return process

    def fleetlet(self, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the CLI against these agents; ``cwd`` is where it looks for local unit files and templates."""
        return cli(self.endpoint, self._env(), *args, check=check, cwd=cwd)

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


def cli(
    endpoint: str, env: Mapping[str, str], *args: str, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``fleetlet ARGS --endpoint ENDPOINT`` as a user types it; asserts success unless ``check`` is False."""
    result = subprocess.run(
        [str(FLEETLET), *args, "--endpoint", endpoint],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def until(condition: Callable[[], object], bound: float = BOUND) -> None:
    """Poll ``condition`` with short retries until it holds; fail after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, f"not within {bound}s"
        time.sleep(0.2)


def inspect_raw(agents: Agents, name: str) -> dict[str, Any] | None:
    """The engine's whole answer to ``GET /containers/{name}/json`` (``State.StartedAt`` among it), None if absent."""

    async def inspected() -> dict[str, Any] | None:
        async with DockerRuntime(agents.docker_url) as runtime:
            try:
                return await runtime.inspect_raw(name)
            except NoSuchContainer:
                return None

    return anyio.run(inspected)


def processes_naming(path: Path) -> list[int]:
    """Live processes (zombies excluded) whose command line holds ``path``: what a rig started on that directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state not in ("Z", "X") and str(path).encode() in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)
