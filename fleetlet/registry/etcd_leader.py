"""The leader record on etcd: a term is a key kept alive by an etcd lease.

A campaign grants a lease and puts the ``leader`` key with it, compared on the key's mod revision so that one
campaign wins; the key's mod revision names the term (the fencing token), since only campaigns write the key. A
renewal is a lease keep-alive, which writes nothing: renewals are no change, as the Registry port says.

When a term ends:

- for every agent, when its lease expires: etcd deletes the key (a ``delete`` a watcher of ``leader`` sees, where
  the other backends make no change), and :meth:`LeaderTerms.leader` asks etcd how long a lease has left;
- for the registry object that holds the term, also when ``expires_at`` passes on *its* clock. The holder must not
  count on a term its own clock says is over (it computes ``expires_at`` before asking, and never past the lease's
  TTL, so its term ends no later than the lease); and that is how a ManualClock's ``advance`` ends a term in tests,
  where etcd's own time hardly moves. Another campaign through that object may then take the key over, lease or no.

A lease's TTL is whole seconds, and etcd raises short ones to its minimum (2 s by default): the lease then outlives
the term, never the other way round. A keep-alive restarts the TTL granted at the campaign, so a renewal with a
longer ``ttl`` does not lengthen a term past its lease.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fleetlet.clock import Clock
from fleetlet.registry.errors import LeadershipLost, RegistryClosed, RegistryError
from fleetlet.registry.etcd_gateway import header_revision, number
from fleetlet.registry.etcd_keyspace import Keyspace
from fleetlet.registry.etcd_layout import LeaderValue, from_etcd
from fleetlet.registry.model import LEADER_KEY, LeaderRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Term:
    """A term this object campaigned for: its lease, the TTL etcd granted it, its end on our clock."""

    machine_id: str
    lease: int
    ttl: int
    expires_at: float


class LeaderTerms:
    """Campaign, renew, resign and read the leader record; ``written`` is told the etcd revision of each write."""

    def __init__(self, keys: Keyspace, clock: Clock, written: Callable[[int], Awaitable[None]]) -> None:
        self._keys = keys
        self._clock = clock
        self._written = written
        self._terms: dict[int, _Term] = {}  # by term (fleetlet revision): the ones this object holds or held

    async def leader(self) -> LeaderRecord | None:
        now = self._clock.time()
        _, current = await self._read()
        return await self._live(current, now) if current is not None else None

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        _check_ttl(ttl)
        while True:
            now = self._clock.time()  # before the calls: the term ends on our clock no later than its lease
            kv_revision, current = await self._read()
            live = await self._live(current, now) if current is not None else None
            if live is not None and live.machine_id != machine_id:
                return None
            if live is not None and current is not None:  # ours already (perhaps a previous process's): renew
                renewed = await self._keep_alive(current, ttl, now)
                if renewed is not None:
                    return renewed
                continue  # the lease ran out meanwhile: campaign anew
            lease, granted = await self._grant(ttl)
            expires_at = now + min(ttl, granted)
            value = self._keys.layout.leader_value(machine_id, expires_at, lease, granted)
            answer = await self._keys.txn(
                [self._keys.mod_is(LEADER_KEY, kv_revision)], [self._keys.put_op(LEADER_KEY, value, lease=lease)]
            )
            if not answer.get("succeeded"):
                await self._revoke(lease)  # another campaign won: read again, and most likely lose
                continue
            term = from_etcd(header_revision(answer))
            ended, self._terms = self._terms, {term: _Term(machine_id, lease, granted, expires_at)}
            for old in ended.values():
                await self._revoke(old.lease)  # the key is on the new lease: our older ones hold nothing
            await self._written(header_revision(answer))
            return LeaderRecord(machine_id, term, expires_at)

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        _check_ttl(ttl)
        now = self._clock.time()
        _, current = await self._read()
        live = await self._live(current, now) if current is not None else None
        if live is not None and current is not None and live.revision == record.revision:
            renewed = await self._keep_alive(current, ttl, now)
            if renewed is not None:
                return renewed
            live = None
        raise LeadershipLost(
            LEADER_KEY, record.revision, live.revision if live else 0, f"{record.machine_id} no longer leads"
        )

    async def resign(self, record: LeaderRecord) -> None:
        kv_revision, current = await self._read()
        self._terms.pop(record.revision, None)
        if current is None or current.record.revision != record.revision:
            return  # not its term any more: nothing to do
        answer = await self._keys.txn([self._keys.mod_is(LEADER_KEY, kv_revision)], [self._keys.delete_op(LEADER_KEY)])
        if answer.get("succeeded"):
            await self._revoke(current.lease)  # it holds no key any more: releasing it changes nothing
            await self._written(header_revision(answer))

    # --- etcd ----------------------------------------------------------------------------------------------------

    async def _read(self) -> tuple[int, LeaderValue | None]:
        """The leader key's etcd mod revision (0: none) and value."""
        kv, _ = await self._keys.get(LEADER_KEY)
        if kv is None:
            return 0, None
        return kv.mod_revision, self._keys.layout.leader(kv)

    async def _live(self, current: LeaderValue, now: float) -> LeaderRecord | None:
        """The leader record if its term is on: by our clock for a term we hold, by its lease for anyone else's."""
        record = current.record
        own = self._terms.get(record.revision)
        if own is not None:
            return LeaderRecord(record.machine_id, record.revision, own.expires_at) if own.expires_at > now else None
        answer = await self._keys.gateway.post("/v3/lease/timetolive", {"ID": str(current.lease)})
        remaining = number(answer, "TTL")  # whole seconds left; -1 once the lease is gone
        return LeaderRecord(record.machine_id, record.revision, now + remaining) if remaining > 0 else None

    async def _keep_alive(self, current: LeaderValue, ttl: float, now: float) -> LeaderRecord | None:
        """Renew the term's lease; None if etcd no longer has it."""
        answer = await self._keys.gateway.post("/v3/lease/keepalive", {"ID": str(current.lease)})
        result = answer.get("result", answer)  # a streaming call's answer: its one message
        granted = number(result, "TTL") if isinstance(result, dict) else 0
        record = current.record
        if granted <= 0:
            self._terms.pop(record.revision, None)
            return None
        expires_at = now + min(ttl, granted)
        self._terms[record.revision] = _Term(record.machine_id, current.lease, granted, expires_at)
        return LeaderRecord(record.machine_id, record.revision, expires_at)

    async def _grant(self, ttl: float) -> tuple[int, int]:
        answer = await self._keys.gateway.post("/v3/lease/grant", {"TTL": str(math.ceil(ttl))})
        if answer.get("error"):
            raise RegistryError(f"etcd granted no lease: {answer['error']}")
        return number(answer, "ID"), number(answer, "TTL")

    async def _revoke(self, lease: int) -> None:
        """Release a lease that holds no key of ours; a failure only leaves it to expire by itself."""
        try:
            await self._keys.gateway.post("/v3/lease/revoke", {"ID": str(lease)})
        except RegistryClosed:
            raise
        except RegistryError as exc:
            log.debug("lease %x not revoked (%s); it expires by itself", lease, exc)


def _check_ttl(ttl: float) -> None:
    if ttl <= 0:
        raise ValueError("ttl must be positive")
