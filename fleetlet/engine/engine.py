"""The engine: the one leader that turns the registry's desired state into the schedule.

Every agent runs an engine; each campaigns for the registry's leader record and only the holder decides. On one
machine that is always this machine, and with many the same code elects one: nothing here knows how many there are.

While it leads, the engine mirrors the registry (see :mod:`fleetlet.engine.mirror`), runs the pure
:func:`~fleetlet.engine.scheduler.schedule` after each settled burst of changes or membership change, and writes
each decision as a conditional write against the schedule entry's revision as last seen. A write that conflicts
means another writer got there first: the engine re-reads the schedule and decides again, and never overwrites.

Leadership is checked on the injected clock before every write, renewed at a third of the TTL, and dropped at once
when the watch shows the record changing hands, so a deposed engine stops deciding before its successor starts.
Every write is also fenced by the term (the leader record's revision) in the registry itself, in the same atomic
step: a write sent just before the term ended, and delayed past it, is refused rather than landing after the
successor has decided.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import Clock, move_on_after
from fleetlet.engine.mirror import RegistryMirror
from fleetlet.engine.scheduler import Decision, schedule
from fleetlet.engine.snapshot import MachineSpec, UnitSpec
from fleetlet.errors import sole
from fleetlet.registry.errors import (
    LeadershipLost,
    RegistryClosed,
    RegistryConflict,
    RegistryUnavailable,
    RevisionCompacted,
    UnitNotFound,
)
from fleetlet.registry.model import LEADER_KEY, Change, LeaderRecord
from fleetlet.registry.protocol import Registry
from fleetlet.units.xfleet import SHORT_ID_LENGTH

log = logging.getLogger("fleetlet.engine")

DEFAULT_LEASE_TTL = 10.0
DEFAULT_SETTLE = 0.05
DEFAULT_SETTLE_MAX = 1.0
RESIGN_TIMEOUT = 5.0
WATCH_BUFFER = 1024
PARALLEL_WRITES = 16  # placements a pass writes at once

# on_leadership(machine_id, term, leading): a term (the leader record's revision) started or ended.
LeadershipListener = Callable[[str, int, bool], None]
# on_unplaceable(reasons): why each unit that should run has no machine, when that changed.
UnplaceableListener = Callable[[Mapping[str, tuple[str, ...]]], None]


def _ignore_leadership(machine_id: str, term: int, leading: bool) -> None:
    """Tell nobody."""


def _ignore_unplaceable(reasons: Mapping[str, tuple[str, ...]]) -> None:
    """Tell nobody."""


class Engine:
    """Campaigns for leadership and, while leading, keeps the schedule in line with the units and machines.

    ``machines`` returns the current membership view (on one machine: this machine); call
    :meth:`machines_changed` when it changes. Start with ``await tg.start(engine.run)``. ``on_leadership`` and
    ``on_unplaceable`` hear of terms and of units no machine can take (the event stream's leader and placement
    feeds); they are called from the engine's tasks and must not block or raise.
    """

    def __init__(
        self,
        registry: Registry,
        machines: Callable[[], Sequence[MachineSpec]],
        clock: Clock,
        *,
        machine_id: str,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        settle: float = DEFAULT_SETTLE,
        settle_max: float = DEFAULT_SETTLE_MAX,
        on_leadership: LeadershipListener = _ignore_leadership,
        on_unplaceable: UnplaceableListener = _ignore_unplaceable,
        membership_grace: float = 0.0,
    ) -> None:
        if lease_ttl <= 0 or settle < 0 or settle_max < settle:
            raise ValueError("lease_ttl must be positive and 0 <= settle <= settle_max")
        self._registry = registry
        self._machines = machines
        self._clock = clock
        self._machine_id = machine_id
        self._ttl = lease_ttl
        self._settle = settle
        self._settle_max = settle_max
        self._on_leadership = on_leadership
        self._on_unplaceable = on_unplaceable
        self._membership_grace = membership_grace
        self._grace_ends = 0.0  # monotonic: until then a pass waits to hear of the machines its schedule names
        self._lease: LeaderRecord | None = None
        self._holder: str | None = None  # the machine another engine's record named when this one last campaigned
        self._term: anyio.CancelScope | None = None
        self._wake = anyio.Event()
        self._unplaceable: Mapping[str, tuple[str, ...]] = MappingProxyType({})
        self.mirror = RegistryMirror()
        self.passes = 0  # scheduling passes run: how tests and diagnostics see coalescing

    # --- what the API shows ----------------------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this engine holds an unexpired leader record, by its own clock."""
        lease = self._lease
        return lease is not None and lease.expires_at > self._clock.time()

    @property
    def leader(self) -> str | None:
        """The machine that leads as far as this engine knows: itself while it leads, else the holder its latest
        campaign met (None: nobody, or not heard yet). Where to ask why a unit has no machine."""
        return self._machine_id if self.leading else self._holder

    @property
    def unplaceable(self) -> Mapping[str, tuple[str, ...]]:
        """Why each unit that should run has no machine, as of the latest pass (one reason per machine)."""
        return self._unplaceable

    def machines_changed(self) -> None:
        """Tell the engine the membership view changed: it schedules again after the settle time."""
        self._wake.set()

    # --- leadership ------------------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Campaign, lead until deposed, campaign again; until cancelled, resigning on the way out.

        Reports started after the first campaign, so ``leading`` already says whether it won.
        """
        started = False
        # The grace runs from the engine's start, not its term's: an engine that has gossiped for a while before it
        # takes over (another agent's on etcd died) has heard of every live machine, and must not hold the moves
        # of the dead leader's units.
        self._grace_ends = self._clock.monotonic() + self._membership_grace
        while True:
            lease = await self._campaign()
            if not started:
                task_status.started()
                started = True
            if not isinstance(lease, LeaderRecord):
                await self._clock.sleep(lease)
                continue
            log.info("machine %s leads the cluster (term %d)", _short(self._machine_id), lease.revision)
            self._lease = lease
            self._on_leadership(self._machine_id, lease.revision, True)
            deposed = failed = False
            try:
                deposed = await self._lead()
            except Exception as exc:
                if _closed(exc):
                    raise
                _log_failure("engine failed while leading; resigning and campaigning again", exc)
                failed = True
            finally:
                current, self._lease = self._lease, None
                if not deposed and current is not None:
                    await self._resign(current)
                self._on_leadership(self._machine_id, lease.revision, False)
            if failed:
                await self._clock.sleep(self._ttl / 3)  # a registry that keeps failing is not hammered

    async def _campaign(self) -> LeaderRecord | float:
        """Try once for the record; when another machine holds it, how long to wait before trying again.

        That is until the holder's term ends, at most a third of our TTL (it may resign sooner); an unreachable
        registry is a lost campaign, tried again a third of the TTL later.
        """
        retry = self._ttl / 3
        try:
            lease = await self._registry.campaign(self._machine_id, self._ttl)
            if lease is not None:
                return lease
            holder = await self._registry.leader()
        except RegistryClosed:
            raise
        except Exception as exc:
            _log_failure("could not campaign for the leader record", exc)
            return retry
        self._holder = holder.machine_id if holder is not None else None
        if holder is None:
            return 0.0  # the holder left between the two reads: try again at once
        return max(0.0, min(retry, holder.expires_at - self._clock.time()))

    async def _resign(self, lease: LeaderRecord) -> None:
        """Give up the record so a successor need not wait out the TTL; shielded, since this runs on cancellation."""
        with anyio.CancelScope(shield=True):
            async with move_on_after(self._clock, RESIGN_TIMEOUT) as deadline:
                try:
                    await self._registry.resign(lease)
                except Exception as exc:
                    _log_failure("could not resign the leader record; it expires by itself", exc)
            if deadline.expired:
                log.warning("resigning the leader record timed out; it expires by itself")
        log.info("machine %s stopped leading", _short(self._machine_id))

    def _depose(self, why: str) -> None:
        """Stop deciding at once: forget the lease (every write checks it) and end the term's tasks."""
        if self._lease is None:
            return
        log.warning("machine %s lost leadership: %s", _short(self._machine_id), why)
        self._lease = None
        if self._term is not None:
            self._term.cancel()

    async def _lead(self) -> bool:
        """One term: keep the lease and the schedule until deposed (returns True) or cancelled."""
        async with anyio.create_task_group() as tg:
            self._term = tg.cancel_scope
            tg.start_soon(self._keep_lease)
            tg.start_soon(self._follow)
        self._term = None
        return self._lease is None

    async def _keep_lease(self) -> None:
        while True:
            await self._clock.sleep(self._ttl / 3)
            lease = self._lease
            if lease is None:
                return
            try:
                self._lease = await self._registry.renew(lease, self._ttl)
            except LeadershipLost as exc:
                self._depose(str(exc))
                return
            except RegistryClosed:
                raise
            except Exception as exc:
                _log_failure("could not renew the leader record", exc)
                if lease.expires_at <= self._clock.time():
                    self._depose("the lease expired while the registry was unreachable")
                    return

    # --- following the registry ----------------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Mirror the registry and schedule from it; read everything again when the watch falls behind."""
        while True:
            revision = await self.mirror.load(self._registry)
            send, receive = anyio.create_memory_object_stream[Change](WATCH_BUFFER)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, revision, send)
                tg.start_soon(self._decide_loop)
                async with receive:
                    async for change in receive:
                        self._apply(change)
                tg.cancel_scope.cancel()

    async def _watch(self, revision: int, sink: MemoryObjectSendStream[Change]) -> None:
        try:
            await self._registry.watch(revision, sink)
        except RevisionCompacted as exc:
            log.info("registry watch fell behind (%s); reading everything again", exc)

    def _apply(self, change: Change) -> None:
        if change.key == LEADER_KEY:
            lease, record = self._lease, change.value
            if lease is not None and not (isinstance(record, LeaderRecord) and record.revision == lease.revision):
                self._depose(f"the leader record changed at revision {change.revision}")
            return
        if self.mirror.apply(change):
            self._wake.set()

    async def _decide_loop(self) -> None:
        """A pass at once on taking over, then one after each settled burst of changes (or when a hold ends)."""
        self._wake = anyio.Event()
        held = await self._decide()
        while True:
            if held:
                async with move_on_after(self._clock, held):
                    await self._wake.wait()
            else:
                await self._wake.wait()
            await self._quiet()
            held = await self._decide()

    async def _quiet(self) -> None:
        """Wait until no change has come for ``settle`` seconds, or ``settle_max`` after the first: one pass a burst.

        Leaves ``_wake`` cleared, so a change that arrives while deciding causes the next pass.
        """
        if self._settle <= 0:
            self._wake = anyio.Event()
            return
        deadline = self._clock.monotonic() + self._settle_max
        while True:
            self._wake = anyio.Event()
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            async with move_on_after(self._clock, min(self._settle, remaining)) as quiet:
                await self._wake.wait()
            if quiet.expired:
                return

    async def _decide(self) -> float:
        """One scheduling pass: plan from the mirror, write each decision until leadership or a conflict stops it.

        Returns how long the pass is held back (0: it ran). Up to ``membership_grace`` after the engine started,
        a pass is held while the schedule names machines the membership has not heard of yet: a leader that just
        (re)started knows only itself, and would otherwise move every unit of the machines still running them,
        stopping units that never needed to stop. Any membership change ends the hold early.
        """
        if not self.leading:
            return 0.0
        snapshot, broken = self.mirror.snapshot(self._machines())
        held = self._grace_ends - self._clock.monotonic()
        if held > 0:
            known = {machine.id for machine in snapshot.machines}
            unheard = sorted({m for m in snapshot.schedule.values() if m not in known})
            if unheard:
                log.info(
                    "waiting up to %.1fs to hear from %s before deciding: units run there",
                    held,
                    ", ".join(_short(m) for m in unheard),
                )
                return held
        plan = schedule(snapshot)
        self.passes += 1
        self._report_unplaceable({**plan.unplaceable, **broken})
        ordered = sorted(plan.decisions, key=_down_before_up)
        # What takes units off machines goes one write at a time, in order; then the placements, which touch one
        # unit each and wait for no other, several at a time: a pass after a takeover or a burst of submissions
        # is mostly placements, and each write is a round trip to etcd (or a commit that the SQLite registry
        # groups with the others in flight).
        down = [decision for decision in ordered if decision.kind != "place"]
        up = [decision for decision in ordered if decision.kind == "place"]
        written = True
        for decision in down:
            written = await self._write(decision)
            if not written:
                break
        if written and up:
            written = await self._write_placements(up, {unit.name: unit for unit in snapshot.units})
        if not written and self.leading:
            # Another writer got there first: read the schedule as it is, and decide again from it.
            self.mirror.reload_schedule(await self._registry.schedule())
            self._wake.set()
        return 0.0

    async def _write_placements(self, decisions: Sequence[Decision], units: Mapping[str, UnitSpec]) -> bool:
        """Placements, several at a time, each after those of the units it must share a machine with
        (``MachineOf``) in this pass: a follower never lands on a machine where its peer's write failed."""
        placing = {decision.unit for decision in decisions}
        pending = list(decisions)
        done: set[str] = set()
        while pending:
            wave = [
                decision
                for decision in pending
                if all(peer in done or peer not in placing for peer in units[decision.unit].requirements.machine_of)
            ]
            wave = wave or pending  # a cycle, which the scheduler never places: no order to keep
            if not await self._write_concurrently(wave):
                return False
            done.update(decision.unit for decision in wave)
            pending = [decision for decision in pending if decision.unit not in done]
        return True

    async def _write_concurrently(self, decisions: Sequence[Decision]) -> bool:
        """Write ``decisions`` with up to ``PARALLEL_WRITES`` in flight; the first that fails stops the rest."""
        pending = iter(decisions)
        failed = False

        async def writer() -> None:
            nonlocal failed
            for decision in pending:  # one iterator shared by the writers: each decision is taken once
                if failed or not await self._write(decision):
                    failed = True
                    return

        async with anyio.create_task_group() as tg:
            for _ in range(min(PARALLEL_WRITES, len(decisions))):
                tg.start_soon(writer)
        return not failed

    async def _write(self, decision: Decision) -> bool:
        """Write one decision against the entry's revision as last seen; False if it was not (no longer leading,
        or a conflict)."""
        lease = self._lease
        if lease is None or not self.leading:
            return False
        expect = self.mirror.entry_revision(decision.unit)
        unit, machine, term = decision.unit, decision.machine, lease.revision  # fenced: lands only in this term
        try:
            if machine is None:
                revision = await self._registry.clear_machine(unit, expect_revision=expect, term=term)
            else:
                revision = await self._registry.set_machine(unit, machine, expect_revision=expect, term=term)
        except LeadershipLost as exc:
            self._depose(f"a write found the term over ({exc})")
            return False
        except (RegistryConflict, UnitNotFound) as exc:
            log.info(
                "not applying %s %s: %s; reading the schedule and deciding again", decision.kind, decision.unit, exc
            )
            return False
        self.mirror.record_write(decision.unit, decision.machine, revision)
        log.info("%s", describe(decision))
        return True

    def _report_unplaceable(self, reasons: Mapping[str, tuple[str, ...]]) -> None:
        """Keep the latest reasons for the API, and log and tell a unit's reasons when they change (not every pass)."""
        previous = self._unplaceable
        for name, why in sorted(reasons.items()):
            if previous.get(name) != why:
                log.info("cannot place %s: %s", name, "; ".join(why))
        self._unplaceable = MappingProxyType(dict(reasons))
        if self._unplaceable != previous:
            self._on_unplaceable(self._unplaceable)


def describe(decision: Decision) -> str:
    """A decision as the log says it: ``placed hello.service on 1a2b3c4d: least loaded of 3 eligible machines``."""
    if decision.kind == "place":
        where = f"on {_short(decision.machine)}"
    elif decision.kind == "move":
        where = f"from {_short(decision.previous)} to {_short(decision.machine)}"
    else:
        where = f"from {_short(decision.previous)}"
    verb = {"place": "placed", "move": "moved", "unplace": "unplaced"}[decision.kind]
    return f"{verb} {decision.unit} {where}: {decision.reason}"


def _log_failure(what: str, exc: Exception) -> None:
    """A registry that cannot be reached is weather, not a bug (etcd restarting, the server down): one line each
    time. Anything else gets its traceback."""
    unreachable = sole(exc, RegistryUnavailable)
    if unreachable is not None:
        log.warning("%s: %s", what, unreachable)
    else:
        log.warning("%s", what, exc_info=exc)


def _closed(exc: BaseException) -> bool:
    """Whether the registry was closed: the agent is shutting down, not a failure to retry."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(RegistryClosed) is not None
    return isinstance(exc, RegistryClosed)


def _short(machine_id: str | None) -> str:
    return "-" if machine_id is None else machine_id[:SHORT_ID_LENGTH]


_WRITE_ORDER = {"unplace": 0, "move": 1, "place": 2}


def _down_before_up(decision: Decision) -> int:
    """Write what takes units off machines before what puts units on them (stable within each kind).

    Each write wakes the agents it concerns: written the other way round, a unit placed by ``Replaces=`` would
    start beside the unit it evicts, which its agent hears of only from the next write.
    """
    return _WRITE_ORDER[decision.kind]
