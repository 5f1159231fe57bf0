"""The etcd backend: the Registry port on an etcd v3 cluster, through its JSON gateway (no gRPC dependency).

The parts, one module each: the wire (:mod:`~fleetlet.registry.etcd_gateway`; its TLS context in
:mod:`~fleetlet.registry.etcd_tls`, its authentication tokens in :mod:`~fleetlet.registry.etcd_auth`), where records
live and how revisions map (:mod:`~fleetlet.registry.etcd_layout`), reads and txns on those keys
(:mod:`~fleetlet.registry.etcd_keyspace`), unit texts stored once by hash and collected when unreferenced
(:mod:`~fleetlet.registry.etcd_texts`), the leader's terms on etcd leases (:mod:`~fleetlet.registry.etcd_leader`),
and watches (:mod:`~fleetlet.registry.etcd_watch`). This module holds units and the schedule, and the history.

Every write is one etcd txn, so one fleetlet revision however many keys it changes; and every write that depends on
what it read compares the mod revisions it read (optimistic concurrency): a conditional write whose expectation
fails raises :class:`RegistryConflict`, an unconditional one that lost a race reads again and retries.

History: with ``history`` set, the registry compacts etcd to keep that many revisions (in batches, after writes)
and refuses a watch from an older revision with :class:`RevisionCompacted`, as every backend does. On an etcd
shared with others, or compacted by its own ``--auto-compaction``, pass ``history=None``: etcd's compaction then
rules, and a watch that etcd refuses as compacted raises RevisionCompacted too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import Clock, SystemClock
from fleetlet.registry.errors import LeadershipLost, RegistryClosed, RegistryError, UnitNotFound
from fleetlet.registry.etcd_directory import DIRECTORY_TTL, MemberDirectory
from fleetlet.registry.etcd_gateway import CALL_TIMEOUT, CompactedError, Gateway, Json, KeyValue, header_revision
from fleetlet.registry.etcd_keyspace import Keyspace, first_kv, fleetlet_revision, kvs
from fleetlet.registry.etcd_layout import DEFAULT_PREFIX, PLACEMENT_PREFIX, Layout, from_etcd, text_key, to_etcd
from fleetlet.registry.etcd_leader import LeaderTerms
from fleetlet.registry.etcd_texts import Texts
from fleetlet.registry.etcd_watch import PROBE_SECONDS, follow
from fleetlet.registry.model import (
    LEADER_KEY,
    SCHEDULE_PREFIX,
    UNITS_PREFIX,
    Change,
    DesiredState,
    LeaderRecord,
    ScheduleView,
    UnitPage,
    UnitRecord,
    check_conflict,
    check_desired_state,
    page_token,
    schedule_key,
    schedule_prefix,
    text_hash,
    token_name,
    unit_key,
)
from fleetlet.registry.protocol import DEFAULT_HISTORY, DEFAULT_PAGE
from fleetlet.registry.watch import Position
from fleetlet.units.model import UnitFile

log = logging.getLogger(__name__)


def _placement_key(unit: str) -> str:
    return f"{PLACEMENT_PREFIX}{unit}"


class EtcdRegistry:
    """The :class:`~fleetlet.registry.protocol.Registry` on etcd at ``endpoints`` (``http://host:port`` or
    ``https://host:port`` each).

    ``prefix`` is where the registry's keys live (default ``/fleetlet/``); ``history`` how many revisions it keeps
    for watches (None: leave compaction to etcd); ``clock`` times the leader's terms; ``watch_probe`` is how often
    a watch checks that its member still answers. Use it as ``async with``.

    TLS, for https endpoints: ``ca_file`` is the CA to trust (default: the system's trust store); ``cert_file`` and
    ``key_file`` a client certificate, for etcd's ``--client-cert-auth``. Authentication: ``username`` and
    ``password`` (a wrong one raises :class:`~fleetlet.registry.errors.RegistryAuthError` at the first call). A TLS
    file that cannot be used, or half the credentials, raise :class:`ValueError` here.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
        history: int | None = DEFAULT_HISTORY,
        timeout: float = CALL_TIMEOUT,
        watch_probe: float = PROBE_SECONDS,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if history is not None and history < 1:
            raise ValueError("history must keep at least one change")
        self._gateway = Gateway(
            [endpoints] if isinstance(endpoints, str) else endpoints,
            timeout=timeout,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            username=username,
            password=password,
        )
        self._keys = Keyspace(self._gateway, Layout(prefix))
        self._texts = Texts(self._keys)
        self._clock = clock or SystemClock()
        self._leader = LeaderTerms(self._keys, self._clock, self._after_write)
        self._history = history
        # Compact in batches: a compaction per write would double the calls.
        self._compact_every = max(1, (history or 0) // 10)
        self._compacted = 0  # the etcd revision this object last compacted at
        self._watches: set[anyio.CancelScope] = set()
        self._watch_probe = watch_probe

    @property
    def url(self) -> str:
        return self._gateway.url

    async def __aenter__(self) -> Self:
        await self._gateway.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for scope in self._watches:
            scope.cancel()
        with anyio.CancelScope(shield=True):  # a cancelled caller still releases the connections
            await self._gateway.close()

    # --- reads ---------------------------------------------------------------------------------------------------

    async def revision(self) -> int:
        return from_etcd(await self._keys.revision())

    async def get_unit(self, name: str) -> UnitRecord | None:
        layout = self._keys.layout
        while True:
            kv, revision = await self._keys.get(unit_key(name))
            if kv is None:
                return None
            hash_ = layout.unit_hash(kv)
            try:
                texts = await self._texts.read({hash_: revision})
            except CompactedError:
                continue  # compacted since the unit was read: read the unit again, as of now
            return layout.unit(name, kv, texts[hash_])

    async def list_units(self, *, limit: int = DEFAULT_PAGE, after: str | None = None) -> UnitPage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        start_after = token_name(after)
        layout = self._keys.layout
        start = layout.key(unit_key(start_after)) + b"\0" if start_after is not None else None
        while True:
            answer = await self._keys.range_prefix(UNITS_PREFIX, limit=limit, start=start)
            found, revision = kvs(answer), header_revision(answer)
            hashes = [layout.unit_hash(kv) for kv in found]
            try:  # the page's texts in one txn (or a few, for a large page), as of the page's revision
                texts = await self._texts.read(dict.fromkeys(hashes, revision))
            except CompactedError:
                continue
            break
        units = tuple(
            layout.unit((layout.name(kv.key) or "")[len(UNITS_PREFIX) :], kv, texts[hash_])
            for kv, hash_ in zip(found, hashes, strict=True)
        )
        more = bool(answer.get("more")) and bool(units)
        return UnitPage(units, page_token(units[-1].name) if more else None, from_etcd(revision))

    async def schedule(self) -> ScheduleView:
        return await self._schedule_under(SCHEDULE_PREFIX)

    async def machine_schedule(self, machine_id: str) -> ScheduleView:
        return await self._schedule_under(schedule_prefix(machine_id))

    async def _schedule_under(self, prefix: str) -> ScheduleView:
        answer = await self._keys.range_prefix(prefix)
        entries = [self._keys.layout.entry(kv) for kv in kvs(answer)]
        return ScheduleView({e.unit: e for e in entries}, from_etcd(header_revision(answer)))

    # --- units ---------------------------------------------------------------------------------------------------

    async def put_unit(
        self, name: str, unit: UnitFile, *, desired_state: DesiredState = "inactive", expect_revision: int | None = None
    ) -> int:
        check_desired_state(desired_state)
        text = unit.serialize()
        hash_, key, keys = text_hash(text), unit_key(name), self._keys
        value = keys.layout.unit_value(hash_, desired_state)
        while True:
            # Read even when unconditional: the old record names the text to release.
            old, stored = await keys.read(key, text_key(hash_))
            check_conflict(key, expect_revision, fleetlet_revision(old))
            old_hash = keys.layout.unit_hash(old) if old is not None else None
            compare = [keys.mod_is(key, old.mod_revision if old else 0)]
            ops: list[Json] = []
            if old_hash != hash_:  # the same text again: the unit's reference, hence the text, stays as it is
                text_compare, ops = self._texts.reference(name, hash_, text, stored=stored is not None)
                compare += text_compare
                if old_hash is not None:
                    ops += self._texts.release(name, old_hash)
            answer = await keys.txn(compare, [*ops, keys.put_op(key, value)])
            if answer.get("succeeded"):
                self._texts.remember(hash_, text)
                return await self._written(answer)

    async def set_desired_state(self, name: str, state: DesiredState, *, expect_revision: int | None = None) -> int:
        check_desired_state(state)
        key, keys = unit_key(name), self._keys
        while True:
            kv, _ = await keys.get(key)
            check_conflict(key, expect_revision, fleetlet_revision(kv))
            if kv is None:
                raise UnitNotFound(name)
            value = keys.layout.unit_value(keys.layout.unit_hash(kv), state)  # the same text, hence reference
            answer = await keys.txn([keys.mod_is(key, kv.mod_revision)], [keys.put_op(key, value)])
            if answer.get("succeeded"):
                return await self._written(answer)

    async def delete_unit(self, name: str, *, expect_revision: int | None = None) -> int:
        key, keys = unit_key(name), self._keys
        while True:
            kv, placed = await keys.read(key, _placement_key(name))
            check_conflict(key, expect_revision, fleetlet_revision(kv))
            if kv is None:
                raise UnitNotFound(name)
            # The unit first, then its entry: the order a watch reports them in, as on every backend.
            ops = [keys.delete_op(key)]
            if placed is not None:
                ops += [keys.delete_op(schedule_key(_machine(placed), name)), keys.delete_op(_placement_key(name))]
            ops += self._texts.release(name, keys.layout.unit_hash(kv))
            compare = [
                keys.mod_is(key, kv.mod_revision),
                keys.mod_is(_placement_key(name), placed.mod_revision if placed else 0),
            ]
            answer = await keys.txn(compare, ops)
            if answer.get("succeeded"):
                return await self._written(answer)

    # --- the schedule --------------------------------------------------------------------------------------------

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        keys = self._keys
        if expect_revision == 0:
            # The leader placing a unit that is on no machine, most of its writes: the caller's expectation is
            # the compare, and there is no old entry to delete, so one txn does without the read. Should it fail,
            # the read below tells a conflict from a unit that is gone or a term that is over.
            compare = [keys.exists(unit_key(unit)), keys.mod_is(_placement_key(unit), 0), *self._fence(term)]
            answer = await keys.txn(compare, self._placed(unit, machine_id))
            if answer.get("succeeded"):
                return await self._written(answer)
        while True:
            record, placed, leader = await keys.read(unit_key(unit), _placement_key(unit), LEADER_KEY)
            _check_fence(term, leader)
            old = _machine(placed) if placed is not None else None
            check_conflict(schedule_key(old or machine_id, unit), expect_revision, fleetlet_revision(placed))
            if record is None:
                raise UnitNotFound(unit)
            ops = []
            if old is not None and old != machine_id:
                ops.append(keys.delete_op(schedule_key(old, unit)))  # first: a move reads as delete, then put
            ops += self._placed(unit, machine_id)
            compare = [
                keys.created_at(unit_key(unit), record.create_revision),  # the unit as read, still there
                keys.mod_is(_placement_key(unit), placed.mod_revision if placed else 0),
                *self._fence(term),
            ]
            answer = await keys.txn(compare, ops)
            if answer.get("succeeded"):
                return await self._written(answer)

    def _placed(self, unit: str, machine_id: str) -> list[Json]:
        """The puts that place ``unit`` on ``machine_id``: its schedule entry, and the placement index."""
        keys = self._keys
        return [
            keys.put_op(schedule_key(machine_id, unit), keys.layout.entry_value(unit, machine_id)),
            keys.put_op(_placement_key(unit), machine_id.encode("utf-8")),
        ]

    def _fence(self, term: int | None) -> list[Json]:
        """The compare that holds a write to a leader's term: the leader key as that campaign wrote it. The key goes
        with its lease, and only a campaign writes it, so the compare fails once the term is over."""
        return [] if term is None else [self._keys.mod_is(LEADER_KEY, to_etcd(term))]

    async def clear_machine(self, unit: str, *, expect_revision: int | None = None, term: int | None = None) -> int:
        keys = self._keys
        while True:
            answer = await keys.txn([], [keys.get_op(_placement_key(unit)), keys.get_op(LEADER_KEY)])
            placed, revision = first_kv(answer, 0), header_revision(answer)
            _check_fence(term, first_kv(answer, 1))
            old = _machine(placed) if placed is not None else "-"
            check_conflict(schedule_key(old, unit), expect_revision, fleetlet_revision(placed))
            if placed is None:
                return from_etcd(revision)  # not placed: nothing written
            ops = [keys.delete_op(schedule_key(old, unit)), keys.delete_op(_placement_key(unit))]
            compare = [keys.mod_is(_placement_key(unit), placed.mod_revision), *self._fence(term)]
            answer = await keys.txn(compare, ops)
            if answer.get("succeeded"):
                return await self._written(answer)

    # --- the leader record (etcd_leader) -------------------------------------------------------------------------

    async def leader(self) -> LeaderRecord | None:
        return await self._leader.leader()

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        return await self._leader.campaign(machine_id, ttl)

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        return await self._leader.renew(record, ttl)

    async def resign(self, record: LeaderRecord) -> None:
        await self._leader.resign(record)

    # --- members (etcd_directory) ----------------------------------------------------------------------------------

    def member_directory(self, *, ttl: float = DIRECTORY_TTL) -> MemberDirectory:
        """Where agents on this etcd list their addresses, to find each other without ``--join``."""
        return MemberDirectory(self._keys, self._clock, ttl=ttl)

    # --- watching (etcd_watch) -----------------------------------------------------------------------------------

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        if from_revision < 0:
            raise ValueError("from_revision must be >= 0")
        async with sink:
            with anyio.CancelScope() as scope:
                self._watches.add(scope)
                try:
                    if self._gateway.closed:
                        scope.cancel()
                    position = Position(from_revision)
                    await follow(
                        self._keys, self._texts, position, prefix, sink, history=self._history, probe=self._watch_probe
                    )
                finally:
                    self._watches.discard(scope)
            if self._gateway.closed:
                raise RegistryClosed("the registry was closed")

    # --- history -------------------------------------------------------------------------------------------------

    async def _written(self, answer: Json) -> int:
        """A write's fleetlet revision, after compacting etcd when a batch of history has gone by."""
        revision = header_revision(answer)
        await self._after_write(revision)
        return from_etcd(revision)

    async def _after_write(self, revision: int) -> None:
        if self._history is None:
            return
        # Keep ``history`` fleetlet revisions, and the one before: etcd may drop a deletion at the very revision it
        # compacts at.
        target = revision - self._history
        if target - self._compacted < self._compact_every or target < 2:
            return
        self._compacted = target
        try:
            await self._gateway.post("/v3/kv/compaction", {"revision": str(target)})
        except CompactedError:
            pass  # another registry object compacted further already
        except RegistryClosed:
            raise
        except RegistryError as exc:
            # The write succeeded: a compaction that failed is only history kept longer.
            log.warning("etcd not compacted at revision %d (%s); trying again after later writes", target, exc)
            self._compacted = 0


def _check_fence(term: int | None, leader: KeyValue | None) -> None:
    """LeadershipLost when a fenced write's term is not the one the leader key holds (or there is none)."""
    actual = fleetlet_revision(leader)
    if term is not None and actual != term:
        raise LeadershipLost(LEADER_KEY, term, actual, f"term {term} is over")


def _machine(placement: KeyValue) -> str:
    return placement.value.decode("utf-8")
