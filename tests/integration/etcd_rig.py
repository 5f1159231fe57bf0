"""A real etcd member of a test's own: a fresh data directory, free loopback ports, killed when the test ends.

A fresh member starts at revision 1 in well under a second, so each registry under test gets an etcd of its own
and fleetlet's revisions start at 1 as the registry contract expects. The binary is ``FLEETLET_ETCD_BIN`` (written
to .services.env by ``make services``), else ``etcd`` on the PATH.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import anyio
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Data on tmpfs when there is one: etcd fsyncs every write, and the contract suite writes thousands.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def etcd_binary() -> str:
    found = os.environ.get("FLEETLET_ETCD_BIN")
    if not found:
        env_file = ROOT / ".services.env"
        if env_file.exists():
            for line in env_file.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "FLEETLET_ETCD_BIN" and value.strip():
                    found = value.strip()
    found = found or shutil.which("etcd")
    if not found or not os.access(found, os.X_OK):
        pytest.fail("no etcd binary (FLEETLET_ETCD_BIN, or etcd on the PATH): install it with `make services`")
    return found


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, even by SIGKILL, which runs no finalizer.
    (PR_SET_PDEATHSIG follows the thread that started it: the main thread, where the tests' event loop runs.)"""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class EtcdMember:
    """One etcd member, by default a cluster of its own; :meth:`start` returns once it serves, :meth:`kill` is
    synchronous. Members of a larger cluster come from :func:`etcd_cluster`."""

    def __init__(self, binary: str, name: str = "test") -> None:
        self.binary = binary
        self.name = name
        self.root = Path(tempfile.mkdtemp(prefix="fleetlet-etcd-", dir=_SCRATCH))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.peer_url = f"http://127.0.0.1:{_free_port()}"
        self.initial_cluster = f"{name}={self.peer_url}"
        self._process: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        return [
            self.binary,
            *("--name", self.name, "--data-dir", str(self.root / "data")),
            *("--listen-client-urls", self.url, "--advertise-client-urls", self.url),
            *("--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url),
            *("--initial-cluster", self.initial_cluster),
            *("--logger", "zap", "--log-level", "warn"),
        ]

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start etcd (on the same data and ports as before, after a :meth:`stop`). Popen rather than anyio's
        process: :meth:`kill` must work from a synchronous finalizer too."""
        assert self._process is None, "already running"
        with (self.root / "etcd.log").open("ab") as log:
            self._process = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent
            )
        return self._process

    async def start(self, *, within: float = 20) -> None:
        """Start etcd and return once it serves."""
        self.spawn()
        await self.until_serving(within=within)

    async def until_serving(self, *, within: float = 20) -> None:
        """Return once a linearizable read succeeds: the member is up and its cluster has a leader."""
        process = self._process
        assert process is not None, "not started"
        with anyio.fail_after(within):
            async with aiohttp.ClientSession() as session:
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"etcd exited with {process.returncode}:\n{self.log_tail()}")
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with session.post(f"{self.url}/v3/kv/range", json={"key": "AA=="}) as response:
                            if response.status == 200:
                                return
                    await anyio.sleep(0.02)  # a poll interval, not a wait for something to happen

    def stop(self) -> None:
        """Kill etcd (SIGKILL, as a crash would) and wait for it; its data stays for the next :meth:`start`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def kill(self) -> None:
        """Kill etcd and remove its directory: the end of the member."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def pause(self) -> None:
        """SIGSTOP: the member keeps its connections open and answers nothing, as one cut off by the network."""
        assert self._process is not None, "not started"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None, "not started"
        self._process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        log = self.root / "etcd.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


async def etcd_cluster(binary: str, size: int, into: list[EtcdMember]) -> list[EtcdMember]:
    """A cluster of ``size`` members on loopback, started and serving; each is appended to ``into`` (the caller's
    list of members to kill) before it starts, so that none outlives a failed start."""
    members = [EtcdMember(binary, f"m{i}") for i in range(size)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for member in members:
        member.initial_cluster = initial
        into.append(member)
        member.spawn()  # all at once: none serves before a quorum is up
    for member in members:
        await member.until_serving()
    return members
