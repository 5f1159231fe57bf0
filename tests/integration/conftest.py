"""Fixtures for tests against real services. ``make services`` (scripts/services.sh) starts them.

A missing engine fails these tests rather than skipping them: CI must never pass without having run them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from fleetlet.exec.docker_runtime import DEFAULT_HOST, DockerRuntime
from fleetlet.exec.runtime import NoSuchContainer, RuntimeFailure
from tests.integration.agent_rig import Agents
from tests.integration.cluster_rig import Cluster
from tests.integration.etcd_rig import EtcdMember, etcd_binary
from tests.runtime_contract import Harness

ROOT = Path(__file__).resolve().parents[2]
# The label every test container carries, so `docker ps -a --filter label=fleetlet.test` finds strays.
TEST_LABEL = "fleetlet.test"


def docker_host() -> str:
    """``DOCKER_HOST`` from the environment, else from the .services.env that scripts/services.sh writes."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    env_file = ROOT / ".services.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "DOCKER_HOST" and value.strip():
                return value.strip()
    return DEFAULT_HOST


@pytest.fixture(scope="session")
def docker_url() -> str:
    url = docker_host()

    async def ping() -> None:
        with anyio.fail_after(10):
            async with DockerRuntime(url) as runtime:
                await runtime.ping()

    try:
        anyio.run(ping)
    except (RuntimeFailure, TimeoutError) as exc:
        problem = exc
    else:
        return url
    pytest.fail(f"no Docker engine answers at {url}: {problem or 'no answer in 10 s'}. Start one with `make services`.")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def etcd_members() -> Iterator[list[EtcdMember]]:
    """Every member a test starts; killed at teardown, whatever happened."""
    members: list[EtcdMember] = []
    try:
        yield members
    finally:
        for member in members:
            member.kill()


@pytest.fixture
async def member(etcd_members: list[EtcdMember]) -> EtcdMember:
    """One etcd member of the test's own, serving."""
    started = EtcdMember(etcd_binary())
    etcd_members.append(started)
    await started.start()
    return started


@pytest.fixture
async def docker(docker_url: str) -> AsyncIterator[DockerRuntime]:
    async with DockerRuntime(docker_url) as runtime:
        yield runtime


@pytest.fixture
async def container_labels(docker_url: str) -> AsyncIterator[dict[str, str]]:
    """Labels for the containers a test creates; every container carrying them is removed afterwards."""
    labels = {TEST_LABEL: "1", f"{TEST_LABEL}.id": uuid.uuid4().hex[:12]}
    try:
        yield labels
    finally:
        with anyio.fail_after(60, shield=True):
            async with DockerRuntime(docker_url) as cleaner:
                for state in await cleaner.list(labels):
                    try:
                        await cleaner.remove(state.id, force=True, volumes=True)
                    except NoSuchContainer:
                        pass


@pytest.fixture
async def harness(docker: DockerRuntime, container_labels: dict[str, str]) -> Harness:
    async def real_time(seconds: float) -> None:
        """Nothing to do: the engine's time passes by itself."""

    return Harness(docker, advance=real_time, now=time.time, labels=container_labels)


# --- a private engine, for tests that restart or break it --------------------------------------------------------

# In a network namespace of its own: a dockerd started with --bridge=none deletes the host's docker0 bridge, and any
# other networking setup would fight the shared engine's bridge and iptables rules. It needs none: the Engine API is a
# Unix socket, which reaches across network namespaces, and the containers run without networking.
_PRIVATE_DOCKERD = ("unshare", "--net", "dockerd", "--storage-driver", "vfs", "--bridge=none", "--iptables=false")


class PrivateDockerd:
    """A dockerd of a test's own, in a directory of its own, that the test may restart or stop.

    Its containers die with it (no live-restore), which is the point: a restart is the outage a unit must survive.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        # Unix socket paths are limited to 108 bytes: ``root`` is a short directory under /tmp.
        self.url = f"unix://{root}/docker.sock"
        self._process: anyio.abc.Process | None = None
        (root / "daemon.json").write_text("{}")  # not /etc/docker/daemon.json: nothing of the host's setup

    def _argv(self) -> list[str]:
        return [
            *_PRIVATE_DOCKERD,  # unshare execs dockerd: the process is dockerd itself, to signal and wait for
            *("--config-file", str(self.root / "daemon.json")),
            *("--data-root", str(self.root / "data")),
            *("--exec-root", str(self.root / "exec")),
            *("--host", self.url),
            *("--pidfile", str(self.root / "dockerd.pid")),
        ]

    async def start(self, *, within: float = 30) -> None:
        """Start dockerd and return once it answers."""
        assert self._process is None, "already running"
        with (self.root / "dockerd.log").open("ab") as log:
            self._process = await anyio.open_process(self._argv(), stdin=None, stdout=log, stderr=log)
        await self._until_answers(within)

    async def stop(self, *, crash: bool = False, within: float = 30) -> None:
        """Stop dockerd and wait for it to exit.

        SIGTERM by default: dockerd stops its containers, then its containerd. ``crash`` SIGKILLs it instead, as
        the OOM killer would: containerd dies with it (dockerd asks for that), the containers' shims live on, and
        the next dockerd (without live-restore) stops what it finds of them.
        """
        process, self._process = self._process, None
        if process is None:
            return
        containerd = self._containerd_pid()
        try:
            if process.returncode is None and crash:
                process.kill()
            elif process.returncode is None:
                process.terminate()
            with anyio.fail_after(within):
                await process.wait()
                if crash and containerd is not None:
                    await self._until_gone(containerd)
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.move_on_after(5, shield=True):
                    await process.wait()
            await process.aclose()

    async def restart(self, *, crash: bool = False) -> None:
        await self.stop(crash=crash)
        await self.start()

    def _containerd_pid(self) -> int | None:
        try:
            return int((self.root / "exec" / "containerd" / "containerd.pid").read_text())
        except (OSError, ValueError):
            return None

    async def _until_gone(self, pid: int) -> None:
        """Wait for a process that is not our child to end. A zombie nobody reaped yet has ended, but dockerd would
        take its pid file for a live containerd and wait for it to answer: the stale pid file goes."""
        # A poll: no event tells of the end of a process that is not our child.
        while (state := _process_state(pid)) not in (None, "Z", "X"):  # noqa: ASYNC110
            await anyio.sleep(0.05)
        if state is not None:
            (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)

    async def copy_image(self, image: str, source: str) -> None:
        """Copy ``image`` from the engine at ``source``: no registry is reachable from the engine's namespace."""
        archive = self.root / "image.tar"
        await anyio.run_process(["docker", "--host", source, "save", "--output", str(archive), image])
        await anyio.run_process(["docker", "--host", self.url, "load", "--quiet", "--input", str(archive)])
        archive.unlink()

    def log_tail(self, lines: int = 20) -> str:
        log = self.root / "dockerd.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    async def _until_answers(self, within: float) -> None:
        with anyio.fail_after(within):
            async with DockerRuntime(self.url) as runtime:
                while True:
                    if self._process is not None and self._process.returncode is not None:
                        raise RuntimeFailure(f"dockerd exited with {self._process.returncode}:\n{self.log_tail()}")
                    try:
                        await runtime.ping()
                        return
                    except RuntimeFailure:
                        await anyio.sleep(0.05)  # a poll interval, not a wait for something to happen

    def leftovers(self) -> list[int]:
        """Processes still running from this engine's directory (containerd, shims) and what they started (the
        containers' processes), should dockerd have died without stopping them."""
        parents: dict[int, int] = {}
        roots = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                # The parent pid is the second field after the command name, which may hold spaces and parens.
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if str(self.root).encode() in cmdline:
                roots.append(int(entry.name))
        found = set(roots)
        while True:
            more = {pid for pid, parent in parents.items() if parent in found} - found
            if not more:
                return sorted(found)
            found |= more

    def mounts(self) -> list[str]:
        """Mount points left under the engine's directory, deepest first: dockerd bind-mounts its data root onto
        itself and unmounts it on a clean exit only."""
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(self.root) or point.startswith(f"{self.root}/"):
                points.append(point)
        return sorted(points, key=len, reverse=True)


def _process_state(pid: int) -> str | None:
    """The state letter of a process (R, S, Z, ...), None once it is gone."""
    try:
        # Fields after the command name, which is in parentheses and may hold spaces and parentheses itself.
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


@pytest.fixture
async def private_dockerd(docker_url: str) -> AsyncIterator[PrivateDockerd]:
    """A running dockerd of the test's own, holding the shared engine's busybox; stopped and its directory removed
    afterwards, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="fleetlet-dockerd-", dir="/tmp"))
    engine = PrivateDockerd(root)
    try:
        await engine.start()
        await engine.copy_image("busybox:latest", docker_url)
        yield engine
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await engine.stop()
            finally:
                # Only if dockerd could not shut down cleanly: what it started, found by this test's directory.
                for pid in engine.leftovers():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                for point in engine.mounts():
                    await anyio.run_process(["umount", "-l", point], check=False)
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(root, ignore_errors=True))


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


@pytest.fixture
def cluster(docker_url: str) -> Iterator[Cluster]:
    """Agent processes of one cluster (none started yet); killed, and their containers removed, at teardown."""
    rig = Cluster(docker_url)
    try:
        yield rig
    finally:
        rig.cleanup()
