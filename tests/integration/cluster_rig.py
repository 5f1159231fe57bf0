"""Several real `fleetlet agent` processes on loopback, one cluster: the first holds the registry, the rest join.

Each member has its own state directory, machine ID and port; all share the real Docker engine, where a unit's
containers carry its machine's label, so what runs where is read off the engine itself (:meth:`Cluster.running`),
not off what the agents say. The ``cluster`` fixture (conftest.py) kills every member and removes every container
labelled with any of their machines, even when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.runtime import LABEL_MACHINE, LABEL_ROLE, LABEL_UNIT, NoSuchContainer
from tests.integration.agent_rig import BOUND, FLEETLET, cli, free_port, until

_TERM = re.compile(r"leads the cluster \(term (?P<term>\d+)\)")


# A container named after its unit and machine: the machines share one engine, and names are engine-wide.
SLEEPER = """[Service]
ExecStart=/usr/bin/docker run --rm --init --name %p-%i-%m busybox sleep 1000
"""


def unit(xfleet: str = "") -> str:
    return SLEEPER + (f"\n[X-Fleet]\n{xfleet}\n" if xfleet else "")


@dataclass
class Member:
    """One agent of the cluster: a machine with its own directory, port and process."""

    machine_id: str
    state_dir: Path
    port: int
    metadata: str
    process: subprocess.Popen[bytes] | None = None
    registry_args: tuple[str, ...] | None = None  # None: the cluster's

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.state_dir}/fleetlet.sock"

    @property
    def log(self) -> Path:
        return self.state_dir / "agent.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    docker_url: str
    # Given to every member: ``--registry etcd://...`` puts the cluster on etcd, where each member may lead and
    # ``--join`` only names a gossip peer.
    registry_args: tuple[str, ...] = ()
    # Whether a new member joins through the server (``--join``); on etcd, members find each other there instead.
    join_server: bool = True
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fk-", dir="/tmp")))
    members: list[Member] = field(default_factory=list)

    @property
    def server(self) -> Member:
        return self.members[0]

    def add(
        self,
        metadata: str,
        *,
        key: Path | None = None,
        join: Member | None = None,
        registry_args: tuple[str, ...] | None = None,
    ) -> Member:
        """Start a new machine with ``metadata``: the server if it is the first, else joined (through ``join``);
        ``registry_args`` instead of the cluster's."""
        n = len(self.members)
        member = Member(uuid.uuid4().hex, self.root / f"m{n}", free_port(), metadata, registry_args=registry_args)
        member.state_dir.mkdir()
        self.members.append(member)
        via = join or (self.server if n and self.join_server else None)
        self.start(member, key=key, join=via)
        return member

    def start(self, member: Member, *, key: Path | None = None, join: Member | None = None) -> None:
        """Start (or restart) ``member``'s agent and wait until its API answers."""
        argv = [
            str(FLEETLET),
            "agent",
            "--state-dir",
            str(member.state_dir),
            "--listen",
            f"127.0.0.1:{member.port}",
            "--machine-id",
            member.machine_id,
            "--metadata",
            member.metadata,
            *(self.registry_args if member.registry_args is None else member.registry_args),
        ]
        if join is not None:
            argv += ["--join", join.url]
        if key is not None:
            argv += ["--cluster-key", str(key)]
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(argv, env=self._env(), stdout=log, stderr=log)
        process = member.process
        until(
            lambda: (
                process.poll() is not None or self.fleetlet("list-machines", via=member, check=False).returncode == 0
            )
        )
        assert process.poll() is None, member.log.read_text()

    def start_failing(self, member_args: list[str]) -> subprocess.CompletedProcess[str]:
        """Run an agent that is expected to refuse to start: its exit and its one line on stderr."""
        return subprocess.run(
            [str(FLEETLET), "agent", *member_args], env=self._env(), capture_output=True, text=True, timeout=BOUND
        )

    def kill(self, member: Member) -> None:
        """``kill -9``: no leave, no detach; its containers keep running on the engine."""
        assert member.process is not None
        member.process.send_signal(signal.SIGKILL)
        member.process.wait(timeout=10)

    def fleetlet(
        self, *args: str, via: Member | None = None, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The CLI against one member (the server by default), as a user types it."""
        return cli((via or self.server).endpoint, self._env(), *args, check=check, cwd=cwd)

    def submit(self, files: Mapping[str, str], *args: str, via: Member | None = None) -> None:
        """Write unit files to a directory and ``fleetlet start`` (or what ``args`` say) them from there."""
        units = self.root / "units"
        units.mkdir(exist_ok=True)
        for name, text in files.items():
            (units / name).write_text(text)
        self.fleetlet(*args, via=via, cwd=units)

    def list_units(self, via: Member | None = None) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = json.loads(self.fleetlet("list-units", "--json", via=via).stdout)
        return rows

    def running(self) -> dict[str, set[str]]:
        """Machine ID -> the units whose main container runs there, read off the Docker engine."""

        async def listed() -> dict[str, set[str]]:
            found: dict[str, set[str]] = {m.machine_id: set() for m in self.members}
            async with DockerRuntime(self.docker_url) as runtime:
                for member in self.members:
                    for state in await runtime.list({LABEL_MACHINE: member.machine_id}):
                        if state.running and state.labels.get(LABEL_ROLE) == "main":
                            found[member.machine_id].add(state.labels.get(LABEL_UNIT, "?"))
            return found

        return anyio.run(listed)

    def placed(self, unit: str) -> list[str]:
        """The machines where ``unit`` runs now."""
        return sorted(machine for machine, units in self.running().items() if unit in units)

    def cleanup(self) -> None:
        for member in self.members:
            if member.alive:
                assert member.process is not None
                member.process.kill()
                member.process.wait(timeout=10)

        async def remove() -> None:
            async with DockerRuntime(self.docker_url) as runtime:
                for member in self.members:
                    for state in await runtime.list({LABEL_MACHINE: member.machine_id}):
                        try:
                            await runtime.remove(state.id, force=True, volumes=True)
                        except NoSuchContainer:
                            pass

        anyio.run(remove)
        shutil.rmtree(self.root, ignore_errors=True)

    def leader(self) -> Member:
        """The member whose engine took the latest term, by the members' logs (``... leads the cluster (term N)``)."""
        terms: list[tuple[int, Member]] = []
        for member in self.members:
            for line in member.log.read_text(errors="replace").splitlines():
                found = _TERM.search(line)
                if found is not None:
                    terms.append((int(found["term"]), member))
        assert terms, f"no member leads\n{self.logs()}"
        return max(terms, key=lambda term: term[0])[1]

    def logs(self) -> str:
        """Every member's log, for a failing assertion's message."""
        return "\n".join(f"--- {m.machine_id[:8]} ---\n{m.log.read_text()[-3000:]}" for m in self.members)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.docker_url}


def three(cluster: Cluster) -> None:
    cluster.add("zone=a,disk=ssd")
    cluster.add("zone=b,disk=hdd")
    cluster.add("zone=c,disk=ssd")
