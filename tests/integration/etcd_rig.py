"""A real etcd member of a test's own: a fresh data directory, free loopback ports, killed when the test ends.

A fresh member starts at revision 1 in well under a second, so each registry under test gets an etcd of its own
and fleetlet's revisions start at 1 as the registry contract expects. The binary is ``FLEETLET_ETCD_BIN`` (written
to .services.env by ``make services``), else ``etcd`` on the PATH.

Data left by a process killed outright (etcd dies with it, by ``PR_SET_PDEATHSIG``, but nothing removes its
directory) is removed by the next process that starts a member: each directory is named after its process. The
benchmarks (``bench/bench_etcd.py``) start their members with this rig too.

A member may serve its clients over TLS (certificates from :mod:`tests.integration.etcd_pki`), and may require
client certificates; :func:`enable_auth` turns on etcd's user/password authentication through the gateway.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from fleetlet.registry.etcd_gateway import b64, prefix_end
from tests.integration.etcd_pki import Pki

ROOT = Path(__file__).resolve().parents[2]
# Data on tmpfs when there is one: etcd fsyncs every write, and the contract suite writes thousands.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
_PREFIX = "fleetlet-etcd-"  # then the owning process's ID


def find_etcd_binary() -> str | None:
    """``FLEETLET_ETCD_BIN``, else the one .services.env names, else ``etcd`` on the PATH; None if none runs."""
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


def etcd_binary() -> str:
    """The etcd binary, or the test fails saying how to install one."""
    found = find_etcd_binary()
    if found is None:
        pytest.fail("no etcd binary (FLEETLET_ETCD_BIN, or etcd on the PATH): install it with `make services`")
    return found


def _remove_orphans() -> None:
    """Remove the data of members whose process died without cleaning up (see the module's docstring)."""
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
    synchronous. Members of a larger cluster come from :func:`etcd_cluster`.

    With ``pki``, clients connect over TLS (``https://``), and with ``client_cert_auth`` they must present a
    certificate signed by the test CA. Peers speak plain http either way: only the client side is under test."""

    def __init__(
        self, binary: str, name: str = "test", *, pki: Pki | None = None, client_cert_auth: bool = False
    ) -> None:
        self.binary = binary
        self.name = name
        self.pki = pki
        self.client_cert_auth = client_cert_auth
        _remove_orphans()
        self.root = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=SCRATCH))
        self.url = f"{'https' if pki else 'http'}://127.0.0.1:{_free_port()}"
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
            *self._tls_argv(),
        ]

    def _tls_argv(self) -> list[str]:
        if self.pki is None:
            return []
        argv = ["--cert-file", str(self.pki.server_cert), "--key-file", str(self.pki.server_key)]
        if self.client_cert_auth:
            argv += ["--trusted-ca-file", str(self.pki.ca), "--client-cert-auth"]
        return argv

    def client_ssl(self) -> ssl.SSLContext | None:
        """What the rig itself connects with: the test CA, and the client certificate."""
        if self.pki is None:
            return None
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return context

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.client_ssl() or True))

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
        """Return once a linearizable read succeeds: the member is up and its cluster has a leader. (With
        authentication on, the read is refused for want of a user, which etcd checks after the read's wait for the
        leader: that answer does too.)"""
        process = self._process
        assert process is not None, "not started"
        with anyio.fail_after(within):
            async with self.session() as session:
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"etcd exited with {process.returncode}:\n{self.log_tail()}")
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with session.post(f"{self.url}/v3/kv/range", json={"key": "AA=="}) as response:
                            if response.status == 200 or b"user name is empty" in await response.read():
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
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

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


async def gateway_call(member: EtcdMember, path: str, body: dict[str, Any], *, token: str | None = None) -> Any:
    """One call to the member's gateway, as an administrator would make it; RuntimeError if etcd refuses."""
    headers = {"Authorization": token} if token is not None else {}
    async with member.session() as session, session.post(f"{member.url}{path}", json=body, headers=headers) as answer:
        data = await answer.json(content_type=None)
        if answer.status != 200 or "error" in data:
            raise RuntimeError(f"etcd refused {path}: {data}")
        return data


async def enable_auth(
    member: EtcdMember, root_password: str, users: dict[str, str], prefix: str = "/fleetlet/"
) -> None:
    """Authentication on: a ``root`` user, and each of ``users`` (name: password) with read and write on ``prefix``
    only, as an operator would give an agent."""
    await gateway_call(member, "/v3/auth/user/add", {"name": "root", "password": root_password})
    await gateway_call(member, "/v3/auth/user/grant", {"user": "root", "role": "root"})
    key = prefix.encode()
    permission = {"permType": "READWRITE", "key": b64(key), "range_end": b64(prefix_end(key))}
    await gateway_call(member, "/v3/auth/role/add", {"name": "fleetlet"})
    await gateway_call(member, "/v3/auth/role/grant", {"name": "fleetlet", "perm": permission})
    for name, password in users.items():
        await gateway_call(member, "/v3/auth/user/add", {"name": name, "password": password})
        await gateway_call(member, "/v3/auth/user/grant", {"user": name, "role": "fleetlet"})
    await gateway_call(member, "/v3/auth/enable", {})


async def drop_tokens(member: EtcdMember, root_password: str) -> None:
    """Make etcd forget every token it issued: authentication off and on again, as root."""
    answer = await gateway_call(member, "/v3/auth/authenticate", {"name": "root", "password": root_password})
    await gateway_call(member, "/v3/auth/disable", {}, token=answer["token"])
    await gateway_call(member, "/v3/auth/enable", {})


def registry_args(members: list[EtcdMember], *, leader_ttl: float = 3.0) -> tuple[str, ...]:
    """``fleetlet agent``'s flags for a registry on ``members`` (plain etcd://), with a short leader term."""
    hosts = ",".join(member.url.removeprefix("http://") for member in members)
    return ("--registry", f"etcd://{hosts}", "--leader-ttl", str(leader_ttl))
