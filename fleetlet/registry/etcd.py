"""The etcd backend: the Registry port on an etcd v3 cluster, through its JSON gateway (no gRPC dependency).

Keys, values and the revision mapping are :mod:`fleetlet.registry.etcd_layout`'s; the wire is
:mod:`fleetlet.registry.etcd_gateway`'s. Every write is one etcd txn, so one fleetlet revision, however many keys
it changes; and every write that depends on what it read compares the mod revisions it read (optimistic
concurrency): a conditional write whose expectation fails raises :class:`RegistryConflict`, an unconditional one
that lost a race reads again and retries.

The leader record is kept alive by an etcd lease: a campaign grants one and puts the key with it (compared on the
key's mod revision, so one campaign wins), a renewal is a lease keep-alive, which writes nothing, so a renewal is
no change, as the port says. Every agent sees a term end when its lease expires and etcd deletes the key. The
registry object that holds a term also ends it when ``expires_at`` passes on *its* clock: the holder must not count
on a term its own clock says is over, and that makes a ManualClock's ``advance`` expire a term in tests.

History: with ``history`` set, the registry compacts etcd to keep that many revisions (in batches, after writes)
and refuses a watch from an older revision with :class:`RevisionCompacted`, as every backend does. On an etcd
shared with others, or compacted by its own ``--auto-compaction``, pass ``history=None``: etcd's compaction then
rules, and a watch that etcd cancels as compacted raises RevisionCompacted too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import Clock, SystemClock
from fleetlet.registry.errors import (
    LeadershipLost,
    RegistryClosed,
    RegistryConflict,
    RegistryError,
    RegistryUnavailable,
    RevisionCompacted,
    UnitNotFound,
)
from fleetlet.registry.etcd_gateway import (
    CALL_TIMEOUT,
    CompactedError,
    Gateway,
    Json,
    KeyValue,
    b64,
    header_revision,
    key_value,
    number,
)
from fleetlet.registry.etcd_layout import DEFAULT_PREFIX, PLACEMENT_PREFIX, Layout, LeaderValue, from_etcd, to_etcd
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

# Pauses between a broken watch's reconnections (real time: this is etcd's network, not the registry's clock).
RECONNECT_PAUSES = (0.1, 0.2, 0.5, 1.0, 2.0)
# A watch stream says nothing while nothing changes, so silence cannot tell a quiet registry from a member that is
# gone or cut off from its cluster: a watch asks etcd for its revision this often, and reconnects (to the next
# member) when that fails.
WATCH_PROBE_SECONDS = 5.0


def _placement_key(unit: str) -> str:
    return f"{PLACEMENT_PREFIX}{unit}"


def _revision(kv: KeyValue | None) -> int:
    """A record's fleetlet revision; 0 when there is none, as conditional writes expect."""
    return from_etcd(kv.mod_revision) if kv is not None else 0


def _etcd_mod(revision: int) -> int:
    """The etcd mod revision a conditional write compares with (0: the key must not exist)."""
    return to_etcd(revision) if revision else 0


@dataclass(frozen=True, slots=True)
class _Term:
    """A term this registry object campaigned for: its lease, the TTL etcd granted, its end on our clock."""

    machine_id: str
    lease: int
    ttl: int
    expires_at: float


class EtcdRegistry:
    """The :class:`~fleetlet.registry.protocol.Registry` on etcd at ``endpoints`` (``http://host:port`` each).

    ``prefix`` is where the registry's keys live (default ``/fleetlet/``); ``history`` how many revisions it keeps
    for watches (None: leave compaction to etcd). ``clock`` times the leader's terms. Use it as ``async with``.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
        history: int | None = DEFAULT_HISTORY,
        timeout: float = CALL_TIMEOUT,
        watch_probe: float = WATCH_PROBE_SECONDS,
    ) -> None:
        if history is not None and history < 1:
            raise ValueError("history must keep at least one change")
        self._gateway = Gateway([endpoints] if isinstance(endpoints, str) else endpoints, timeout=timeout)
        self._layout = Layout(prefix)
        self._clock = clock or SystemClock()
        self._history = history
        # Compact in batches: a compaction per write would double the calls.
        self._compact_every = max(1, (history or 0) // 10)
        self._compacted = 0  # the etcd revision this object last compacted at
        self._terms: dict[int, _Term] = {}
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
        answer = await self._gateway.post("/v3/kv/range", {"key": b64(self._layout.key(LEADER_KEY)), "keys_only": True})
        return from_etcd(header_revision(answer))

    async def get_unit(self, name: str) -> UnitRecord | None:
        kv, _ = await self._get(unit_key(name))
        return self._layout.unit(name, kv) if kv is not None else None

    async def list_units(self, *, limit: int = DEFAULT_PAGE, after: str | None = None) -> UnitPage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        start_after = token_name(after)
        start = self._layout.key(unit_key(start_after)) + b"\0" if start_after is not None else None
        answer = await self._range_prefix(UNITS_PREFIX, limit=limit, start=start)
        units = tuple(self._layout.unit(_unit_name(self._layout, kv), kv) for kv in _kvs(answer))
        more = bool(answer.get("more")) and bool(units)
        return UnitPage(units, page_token(units[-1].name) if more else None, from_etcd(header_revision(answer)))

    async def schedule(self) -> ScheduleView:
        return await self._schedule_under(SCHEDULE_PREFIX)

    async def machine_schedule(self, machine_id: str) -> ScheduleView:
        return await self._schedule_under(schedule_prefix(machine_id))

    async def _schedule_under(self, prefix: str) -> ScheduleView:
        answer = await self._range_prefix(prefix)
        entries = [self._layout.entry(kv) for kv in _kvs(answer)]
        return ScheduleView({e.unit: e for e in entries}, from_etcd(header_revision(answer)))

    # --- units ---------------------------------------------------------------------------------------------------

    async def put_unit(
        self, name: str, unit: UnitFile, *, desired_state: DesiredState = "inactive", expect_revision: int | None = None
    ) -> int:
        check_desired_state(desired_state)
        text = unit.serialize()
        value = self._layout.unit_value(text, text_hash(text), desired_state)
        if expect_revision is None:  # the new record does not depend on the old: no read, no compare
            answer = await self._gateway.post(
                "/v3/kv/put", {"key": b64(self._layout.key(unit_key(name))), "value": b64(value)}
            )
            return await self._written(answer)
        compare = [self._mod_is(unit_key(name), _etcd_mod(expect_revision))]
        answer = await self._txn(compare, [self._put(unit_key(name), value)], [self._get_op(unit_key(name))])
        if not answer.get("succeeded"):
            raise RegistryConflict(unit_key(name), expect_revision, _revision(_first_kv(answer, 0)))
        return await self._written(answer)

    async def set_desired_state(self, name: str, state: DesiredState, *, expect_revision: int | None = None) -> int:
        check_desired_state(state)
        while True:
            kv, _ = await self._get(unit_key(name))
            check_conflict(unit_key(name), expect_revision, _revision(kv))
            if kv is None:
                raise UnitNotFound(name)
            record = self._layout.unit(name, kv)
            value = self._layout.unit_value(record.text, record.hash, state)
            answer = await self._txn(
                [self._mod_is(unit_key(name), kv.mod_revision)], [self._put(unit_key(name), value)]
            )
            if answer.get("succeeded"):
                return await self._written(answer)

    async def delete_unit(self, name: str, *, expect_revision: int | None = None) -> int:
        while True:
            (kv, placed), _ = await self._read(unit_key(name), _placement_key(name))
            check_conflict(unit_key(name), expect_revision, _revision(kv))
            if kv is None:
                raise UnitNotFound(name)
            # The unit first, then its entry: the order a watch reports them in, as on every backend.
            ops = [self._delete(unit_key(name))]
            if placed is not None:
                ops += [self._delete(schedule_key(placed.value.decode(), name)), self._delete(_placement_key(name))]
            compare = [
                self._mod_is(unit_key(name), kv.mod_revision),
                self._mod_is(_placement_key(name), placed.mod_revision if placed else 0),
            ]
            answer = await self._txn(compare, ops)
            if answer.get("succeeded"):
                return await self._written(answer)

    # --- the schedule --------------------------------------------------------------------------------------------

    async def set_machine(self, unit: str, machine_id: str, *, expect_revision: int | None = None) -> int:
        while True:
            (record, placed), _ = await self._read(unit_key(unit), _placement_key(unit))
            old = placed.value.decode() if placed is not None else None
            check_conflict(schedule_key(old or machine_id, unit), expect_revision, _revision(placed))
            if record is None:
                raise UnitNotFound(unit)
            ops = []
            if old is not None and old != machine_id:
                ops.append(self._delete(schedule_key(old, unit)))
            ops += [
                self._put(schedule_key(machine_id, unit), self._layout.entry_value(unit, machine_id)),
                self._put(_placement_key(unit), machine_id.encode()),
            ]
            compare = [
                # The same unit (not one deleted and submitted again since), and the placement as read.
                {**self._key(unit_key(unit)), "target": "CREATE", "result": "EQUAL",
                 "create_revision": str(record.create_revision)},
                self._mod_is(_placement_key(unit), placed.mod_revision if placed else 0),
            ]  # fmt: skip
            answer = await self._txn(compare, ops)
            if answer.get("succeeded"):
                return await self._written(answer)

    async def clear_machine(self, unit: str, *, expect_revision: int | None = None) -> int:
        while True:
            placed, revision = await self._get(_placement_key(unit))
            old = placed.value.decode() if placed is not None else "-"
            check_conflict(schedule_key(old, unit), expect_revision, _revision(placed))
            if placed is None:
                return from_etcd(revision)
            ops = [self._delete(schedule_key(old, unit)), self._delete(_placement_key(unit))]
            answer = await self._txn([self._mod_is(_placement_key(unit), placed.mod_revision)], ops)
            if answer.get("succeeded"):
                return await self._written(answer)

    # --- the leader record ---------------------------------------------------------------------------------------

    async def leader(self) -> LeaderRecord | None:
        now = self._clock.time()
        _, current = await self._leader_key()
        return await self._live(current, now) if current is not None else None

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        _check_ttl(ttl)
        while True:
            now = self._clock.time()  # before the calls: a term ends on our clock no later than its lease does
            kv, current = await self._leader_key()
            live = await self._live(current, now) if current is not None else None
            if live is not None and live.machine_id != machine_id:
                return None
            if live is not None and current is not None:
                renewed = await self._keep_alive(current, ttl, now)
                if renewed is not None:
                    return renewed
                continue  # the lease ran out meanwhile: campaign anew
            lease, granted = await self._grant(ttl)
            expires_at = now + min(ttl, granted)
            value = self._layout.leader_value(machine_id, expires_at, lease, granted)
            compare = [self._mod_is(LEADER_KEY, kv.mod_revision if kv is not None else 0)]
            answer = await self._txn(compare, [self._put(LEADER_KEY, value, lease=lease)])
            if not answer.get("succeeded"):
                await self._revoke(lease)  # somebody else's campaign won: read again, and most likely lose
                continue
            term = from_etcd(header_revision(answer))
            ended, self._terms = self._terms, {term: _Term(machine_id, lease, granted, expires_at)}
            for old in ended.values():
                await self._revoke(old.lease)  # the key is on the new lease: our older ones hold nothing
            await self._after_write(header_revision(answer))
            return LeaderRecord(machine_id, term, expires_at)

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        _check_ttl(ttl)
        now = self._clock.time()
        _, current = await self._leader_key()
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
        kv, current = await self._leader_key()
        self._terms.pop(record.revision, None)
        if kv is None or current is None or current.record.revision != record.revision:
            return
        answer = await self._txn([self._mod_is(LEADER_KEY, kv.mod_revision)], [self._delete(LEADER_KEY)])
        if answer.get("succeeded"):
            await self._revoke(current.lease)  # it holds no key any more: releasing it changes nothing
            await self._after_write(header_revision(answer))

    async def _leader_key(self) -> tuple[KeyValue | None, LeaderValue | None]:
        kv, _ = await self._get(LEADER_KEY)
        return kv, (self._layout.leader(kv) if kv is not None else None)

    async def _live(self, current: LeaderValue, now: float) -> LeaderRecord | None:
        """The leader record if its term is on: by our clock for a term we hold, by its lease for anyone else's."""
        record = current.record
        own = self._terms.get(record.revision)
        if own is not None:
            return LeaderRecord(record.machine_id, record.revision, own.expires_at) if own.expires_at > now else None
        answer = await self._gateway.post("/v3/lease/timetolive", {"ID": str(current.lease)})
        remaining = number(answer, "TTL")  # whole seconds left; -1 once the lease is gone
        return LeaderRecord(record.machine_id, record.revision, now + remaining) if remaining > 0 else None

    async def _keep_alive(self, current: LeaderValue, ttl: float, now: float) -> LeaderRecord | None:
        """Renew the term's lease; None if etcd no longer has it.

        A keep-alive restarts the lease's TTL as granted at the campaign, so the term runs until the shorter of
        that and ``ttl``: never past the lease, which is what every other agent goes by.
        """
        answer = await self._gateway.post("/v3/lease/keepalive", {"ID": str(current.lease)})
        result = answer.get("result", answer)
        granted = number(result, "TTL") if isinstance(result, dict) else 0
        record = current.record
        if granted <= 0:
            self._terms.pop(record.revision, None)
            return None
        expires_at = now + min(ttl, granted)
        self._terms[record.revision] = _Term(record.machine_id, current.lease, granted, expires_at)
        return LeaderRecord(record.machine_id, record.revision, expires_at)

    async def _grant(self, ttl: float) -> tuple[int, int]:
        # Whole seconds, rounded up (etcd may raise it to its minimum): the lease outlives the term, never less.
        answer = await self._gateway.post("/v3/lease/grant", {"TTL": str(math.ceil(ttl))})
        if answer.get("error"):
            raise RegistryError(f"etcd granted no lease: {answer['error']}")
        return number(answer, "ID"), number(answer, "TTL")

    async def _revoke(self, lease: int) -> None:
        """Release a lease that holds no key of ours; a failure only leaves it to expire by itself."""
        try:
            await self._gateway.post("/v3/lease/revoke", {"ID": str(lease)})
        except RegistryClosed:
            raise
        except RegistryError as exc:
            log.debug("lease %x not revoked (%s); it expires by itself", lease, exc)

    # --- watching ------------------------------------------------------------------------------------------------

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        if from_revision < 0:
            raise ValueError("from_revision must be >= 0")
        async with sink:
            with anyio.CancelScope() as scope:
                self._watches.add(scope)
                try:
                    if self._gateway.closed:
                        scope.cancel()
                    await self._follow(Position(from_revision), prefix, sink)
                finally:
                    self._watches.discard(scope)
            if self._gateway.closed:
                raise RegistryClosed("the registry was closed")

    async def _follow(self, position: Position, prefix: str, sink: MemoryObjectSendStream[Change]) -> None:
        """Stream changes into ``sink`` across broken connections until the receiver goes away."""
        failures = 0
        while True:
            try:
                await self._stream(position, prefix, sink)
                failures = 0  # etcd ended the stream (a member shutting down): reconnect at once
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the receiver closed its end
            except RegistryUnavailable as exc:
                if failures == 0:
                    log.warning("etcd watch broken (%s); reconnecting", exc.reason)
                await anyio.sleep(RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)])
                failures += 1

    async def _stream(self, position: Position, prefix: str, sink: MemoryObjectSendStream[Change]) -> None:
        after = position.resume_after
        if self._history is not None:
            compacted = await self.revision() - self._history
            if after < compacted:
                raise RevisionCompacted(after, compacted)
        # The changes of an interrupted write that were delivered already: etcd sends them again first.
        interrupted, to_skip = position.revision, position.delivered
        request = {
            "create_request": {
                "key": b64(self._layout.key(prefix)),
                "range_end": b64(self._layout.range_end(prefix)),
                "start_revision": str(to_etcd(after) + 1),
            }
        }

        async def deliver(message: Json) -> None:
            nonlocal to_skip
            if message.get("canceled"):
                compact = number(message, "compact_revision")
                if compact:
                    # etcd may have dropped deletions at the compaction revision itself: count it as gone.
                    raise RevisionCompacted(after, from_etcd(compact))
                raise RegistryUnavailable(self.url, f"etcd cancelled the watch: {message.get('cancel_reason', '')}")
            for event in message.get("events", ()):
                change = self._layout.change(key_value(event.get("kv", {})), event.get("type") == "DELETE")
                if change is None:
                    continue
                if to_skip and change.revision == interrupted:
                    to_skip -= 1
                    continue
                await sink.send(change)
                position.delivered_one(change.revision)

        # The stream and its probe: whichever ends first ends the other; its error, if any, is the stream's.
        failures: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def follow() -> None:
                try:
                    await self._gateway.stream("/v3/watch", request, deliver)
                except CompactedError as exc:  # sent as an error rather than as a cancelled watch
                    failures.append(RevisionCompacted(after, from_etcd(exc.compact_revision)))
                except Exception as exc:
                    failures.append(exc)
                tg.cancel_scope.cancel()

            async def probe() -> None:
                while True:
                    await anyio.sleep(self._watch_probe)
                    try:
                        await self.revision()
                    except RegistryError as exc:  # unavailable (reconnect), or closed (end)
                        failures.append(exc)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(follow)
            tg.start_soon(probe)
        if failures:
            raise failures[0]

    # --- history -------------------------------------------------------------------------------------------------

    async def _written(self, answer: Json) -> int:
        """A write's fleetlet revision, after compacting etcd when a batch of history has gone by."""
        revision = header_revision(answer)
        await self._after_write(revision)
        return from_etcd(revision)

    async def _after_write(self, revision: int) -> None:
        if self._history is None:
            return
        # Keep ``history`` fleetlet revisions, and the one before, since etcd may drop a deletion at the very
        # revision it compacts at.
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
            log.warning("etcd not compacted at revision %d (%s); trying again after later writes", target, exc)
            self._compacted = 0

    # --- the wire, in the layout's keys --------------------------------------------------------------------------

    async def _get(self, name: str) -> tuple[KeyValue | None, int]:
        """One key, and the etcd revision it was read at."""
        answer = await self._gateway.post("/v3/kv/range", self._key(name))
        kvs = _kvs(answer)
        return (kvs[0] if kvs else None), header_revision(answer)

    async def _read(self, *names: str) -> tuple[list[KeyValue | None], int]:
        """Several keys at one revision: a txn of ranges only."""
        answer = await self._txn([], [self._get_op(name) for name in names])
        return [_first_kv(answer, i) for i in range(len(names))], header_revision(answer)

    async def _range_prefix(self, prefix: str, *, limit: int = 0, start: bytes | None = None) -> Json:
        body: Json = {
            "key": b64(start if start is not None else self._layout.key(prefix)),
            "range_end": b64(self._layout.range_end(prefix)),
        }
        if limit:
            body["limit"] = str(limit)
        return await self._gateway.post("/v3/kv/range", body)

    async def _txn(self, compare: list[Json], success: list[Json], failure: list[Json] | None = None) -> Json:
        body: Json = {"compare": compare, "success": success}
        if failure:
            body["failure"] = failure
        return await self._gateway.post("/v3/kv/txn", body)

    def _key(self, name: str) -> Json:
        return {"key": b64(self._layout.key(name))}

    def _mod_is(self, name: str, etcd_revision: int) -> Json:
        return {**self._key(name), "target": "MOD", "result": "EQUAL", "mod_revision": str(etcd_revision)}

    def _put(self, name: str, value: bytes, *, lease: int = 0) -> Json:
        put: Json = {**self._key(name), "value": b64(value)}
        if lease:
            put["lease"] = str(lease)
        return {"request_put": put}

    def _delete(self, name: str) -> Json:
        return {"request_delete_range": self._key(name)}

    def _get_op(self, name: str) -> Json:
        return {"request_range": self._key(name)}


def _check_ttl(ttl: float) -> None:
    if ttl <= 0:
        raise ValueError("ttl must be positive")


def _kvs(answer: Json) -> list[KeyValue]:
    return [key_value(kv) for kv in answer.get("kvs", ())]


def _first_kv(answer: Json, index: int) -> KeyValue | None:
    """The key a txn's ``index``-th range found, if any."""
    responses = answer.get("responses", ())
    if index >= len(responses):
        return None
    kvs = _kvs(responses[index].get("response_range", {}))
    return kvs[0] if kvs else None


def _unit_name(layout: Layout, kv: KeyValue) -> str:
    name = layout.name(kv.key) or ""
    return name[len(UNITS_PREFIX) :]
