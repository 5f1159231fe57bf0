"""A throwaway etcd member for a benchmark: fresh data on tmpfs, free loopback ports, always killed.

The same ideas as the integration tests' rig (``tests/integration/etcd_rig.py``), which bench/ does not import:
the binary is ``FLEETLET_ETCD_BIN`` (written to .services.env by ``make services``), else ``etcd`` on the PATH;
the child is SIGKILLed if this process dies without cleaning up (``PR_SET_PDEATHSIG``), and :func:`etcd_member`
kills it and removes its data on the way out of its ``async with``, whatever ended the block (Ctrl-C included);
data left by a benchmark process killed outright is removed by the next one.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio

ROOT = Path(__file__).resolve().parent.parent
# Data on tmpfs when there is one: etcd fsyncs every write, and a benchmark of the registry is not one of the disk.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
_PREFIX = "fleetlet-bench-etcd-"  # then the owning process's ID


def etcd_binary() -> str | None:
    """The etcd binary to run, or None when there is none (the caller prints a skip line)."""
    found = os.environ.get("FLEETLET_ETCD_BIN")
    if not found:
        env_file = ROOT / ".services.env"
        if env_file.exists():
            for line in env_file.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "FLEETLET_ETCD_BIN" and value.strip():
                    found = value.strip()
    found = found or shutil.which("etcd")
    return found if found and os.access(found, os.X_OK) else None


def etcd_version(binary: str) -> str:
    """``3.4.23``, or ``unknown``."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.partition(":")[2].strip()
    return "unknown"


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when this process dies, even by SIGKILL, which runs no finalizer."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Member:
    """A running member: its client URL and process ID (for its CPU time in /proc)."""

    url: str
    pid: int


@contextlib.asynccontextmanager
async def etcd_member(binary: str, *, within: float = 20) -> AsyncIterator[Member]:
    """A single-member etcd cluster of its own, serving when the block starts, killed and removed when it ends."""
    _remove_orphans()
    root = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=SCRATCH))
    url, peer_url = f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
    argv = [
        binary,
        *("--name", "bench", "--data-dir", str(root / "data")),
        *("--listen-client-urls", url, "--advertise-client-urls", url),
        *("--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url),
        *("--initial-cluster", f"bench={peer_url}"),
        *("--logger", "zap", "--log-level", "warn"),
    ]
    process: subprocess.Popen[bytes] | None = None
    try:
        process = _spawn(argv, root / "etcd.log")
        await _until_serving(url, process, root / "etcd.log", within)
        yield Member(url, process.pid)
    finally:
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def _remove_orphans() -> None:
    """Remove the data of members whose benchmark process died without cleaning up (SIGKILL: PR_SET_PDEATHSIG
    killed etcd, but nothing removed its directory). Each directory is named after the process that made it."""
    scratch = Path(SCRATCH or tempfile.gettempdir())
    for stale in scratch.glob(f"{_PREFIX}*-*"):
        owner = stale.name.removeprefix(_PREFIX).partition("-")[0]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start etcd, its output to ``log_path``. Synchronous: a Popen that cannot be awaited halfway."""
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent)


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


async def _until_serving(url: str, process: subprocess.Popen[bytes], log: Path, within: float) -> None:
    """Return once a linearizable read succeeds: the member is up and has elected itself."""
    with anyio.fail_after(within):
        async with aiohttp.ClientSession() as session:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"etcd exited with {process.returncode}:\n{_tail(log)}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.post(f"{url}/v3/kv/range", json={"key": "AA=="}) as response:
                        if response.status == 200:
                            return
                await anyio.sleep(0.02)  # a poll interval, not a wait for something to happen
