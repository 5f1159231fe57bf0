"""Members find each other through etcd: each agent on an etcd registry lists its API address under ``members/``.

With the embedded registry, the server is every member's way in (``--join``). On etcd there is no server, and any
agent may lead: one that gossiped with nobody would take itself for the whole cluster and, leading, move every
other machine's units onto itself. So each agent writes ``members/<machine id>`` = its address, on a lease it keeps
alive, and seeds its gossip with the addresses it finds there. It writes before it reads: of two agents starting
at once, the later reader sees the earlier writer, so no two members can miss each other both ways.

The directory only introduces members; it says nothing about who is alive, which stays gossip's business (an entry
outlives its agent by up to a lease's TTL, and an address that no longer answers costs a failed dial). Entries are
not registry records: watches do not report them.
"""

from __future__ import annotations

import logging
import math

import anyio
import orjson
from anyio.abc import TaskStatus

from fleetlet.clock import Clock
from fleetlet.registry.errors import RegistryClosed, RegistryError
from fleetlet.registry.etcd_gateway import number
from fleetlet.registry.etcd_keyspace import Keyspace, kvs

log = logging.getLogger(__name__)

MEMBERS_PREFIX = "members/"
DIRECTORY_TTL = 30.0  # seconds an entry outlives an agent that stopped renewing it


class MemberDirectory:
    """This agent's entry under ``members/`` (kept by :meth:`run`), and everybody's addresses."""

    def __init__(self, keys: Keyspace, clock: Clock, *, ttl: float = DIRECTORY_TTL) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._keys = keys
        self._clock = clock
        self._ttl = ttl

    async def addresses(self) -> dict[str, str]:
        """Machine ID -> API address of every listed member."""
        found: dict[str, str] = {}
        for kv in kvs(await self._keys.range_prefix(MEMBERS_PREFIX)):
            name = self._keys.layout.name(kv.key) or ""
            try:
                address = orjson.loads(kv.value)["address"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("ignoring a malformed member entry %r in etcd", name)
                continue
            if isinstance(address, str) and address:
                found[name[len(MEMBERS_PREFIX) :]] = address
        return found

    async def announce(self, machine_id: str, address: str) -> int:
        """List this member under a new lease; returns the lease."""
        answer = await self._keys.gateway.post("/v3/lease/grant", {"TTL": str(math.ceil(self._ttl))})
        lease = number(answer, "ID")
        if not lease:
            raise RegistryError(f"etcd granted no lease for the member directory: {answer.get('error', answer)}")
        value = orjson.dumps({"address": address})
        try:
            await self._keys.put(_key(machine_id), value, lease=lease)
        except BaseException:
            await self._revoke(lease)  # holding nothing: not left to expire a TTL later
            raise
        return lease

    async def run(
        self, machine_id: str, address: str, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep this member listed until cancelled (then remove the entry); reports started once it is listed.

        etcd unreachable is no reason to stop the agent: the entry is written again when etcd answers.
        """
        lease = 0
        started = False
        try:
            while True:
                try:
                    if lease == 0 or not await self._keep_alive(lease):
                        lease = await self.announce(machine_id, address)
                except RegistryClosed:
                    raise
                except RegistryError as exc:
                    log.warning("cannot list this member in etcd (%s); trying again", exc)
                if not started:
                    started = True
                    task_status.started()
                await self._clock.sleep(self._ttl / 3)
        finally:
            if lease:
                await self._revoke(lease)

    async def _keep_alive(self, lease: int) -> bool:
        """Renew the lease; False when etcd no longer has it (it expired while etcd was away)."""
        answer = await self._keys.gateway.post("/v3/lease/keepalive", {"ID": str(lease)})
        result = answer.get("result", answer)
        return isinstance(result, dict) and number(result, "TTL") > 0

    async def _revoke(self, lease: int) -> None:
        """Leave the directory on the way out, bounded: a stopped agent's entry would otherwise last a TTL."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await self._keys.gateway.post("/v3/lease/revoke", {"ID": str(lease)})
            except RegistryError as exc:
                log.debug("member entry not removed (%s); it expires by itself", exc)


def _key(machine_id: str) -> str:
    return f"{MEMBERS_PREFIX}{machine_id}"
