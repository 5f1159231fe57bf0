"""A throwaway etcd member for a benchmark: the integration tests' rig (``tests/integration/etcd_rig.py``), so one
piece of code starts every etcd the project runs for itself: fresh data on tmpfs, free loopback ports, SIGKILLed if
this process dies (``PR_SET_PDEATHSIG``), killed and removed when the ``async with`` ends, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator

from tests.integration.etcd_rig import EtcdMember


def etcd_version(binary: str) -> str:
    """``3.4.23``, or ``unknown``."""
    try:
        answer = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in answer.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.partition(":")[2].strip()
    return "unknown"


@contextlib.asynccontextmanager
async def etcd_member(binary: str, *, within: float = 20) -> AsyncIterator[EtcdMember]:
    """A single-member etcd cluster of its own, serving when the block starts, killed and removed when it ends."""
    member = EtcdMember(binary, "bench")
    try:
        await member.start(within=within)
        yield member
    finally:
        member.kill()
