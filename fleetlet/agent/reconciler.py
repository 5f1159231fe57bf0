"""The reconciler loop: when to compare what this machine should run with what its actors run.

What it should run and what to do about a difference are :mod:`fleetlet.agent.reconcile`'s pure functions; this
module keeps the registry's mirror, wakes on its changes, and hands the plan to the supervisor.

The mirror holds every unit (global units run wherever their requirements allow, so each agent judges them all)
but only this machine's part of the schedule, from two watches: ``units/`` and ``schedule/<machine>/``. A decision
the leader makes for another machine never reaches this one.

The registry may be another agent's (a joined agent's remote registry): while it cannot be reached, the units
here keep running as they are, and the reconciler reads the registry again until it answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.agent.reconcile import DesiredUnit, desired_here, plan
from fleetlet.agent.supervisor import Supervisor
from fleetlet.clock import Clock
from fleetlet.engine.mirror import RegistryMirror
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.errors import FleetletError
from fleetlet.registry.errors import RegistryUnavailable, RevisionCompacted
from fleetlet.registry.model import UNITS_PREFIX, Change, UnitRecord, schedule_prefix
from fleetlet.registry.protocol import Registry
from fleetlet.units.check import CheckedUnit, load_unit

log = logging.getLogger("fleetlet.agent")

# A reconcile pass also runs this often without any registry change: it restarts units that ended on their own.
RECONCILE_INTERVAL = 10.0
WATCH_BUFFER = 256
RETRY_SECONDS = 1.0  # how often to try again to read a registry that cannot be reached


class Reconciler:
    """Keeps the supervisor in line with what this machine should run.

    It mirrors the registry (units and schedule, from one watch) so a pass reads nothing: a pass runs at start,
    after every change of the registry or of this machine's metadata, and every ``interval`` seconds; changes that
    arrive during a pass coalesce into one more pass. Unit files are checked once per name and hash, not once per pass.
    """

    def __init__(
        self,
        registry: Registry,
        supervisor: Supervisor,
        machine: Callable[[], MachineSpec],
        clock: Clock,
        *,
        interval: float = RECONCILE_INTERVAL,
    ) -> None:
        self._registry = registry
        self._supervisor = supervisor
        self._machine = machine
        self._clock = clock
        self._interval = interval
        self._wake = anyio.Event()
        self._mirror = RegistryMirror()
        # (unit name, hash) -> checked unit (None: cannot be loaded). The name is part of the key: two units with
        # one text are two units (specifiers such as %n and %p expand to each one's name).
        self._checked: dict[tuple[str, str], CheckedUnit | None] = {}

    def wake(self) -> None:
        """Run a pass soon: something besides the registry changed (this machine's metadata)."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started after the first pass."""
        revision = await self._mirror.load(self._registry, machine_id=self._machine().id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow, revision)
            tg.start_soon(self._tick)
            await self.reconcile()
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self.reconcile()

    async def reconcile(self) -> None:
        """One pass: what this machine should have against what the actors report."""
        snapshot, _ = self._mirror.snapshot([])
        desired: dict[str, DesiredUnit] = {}
        units: dict[str, CheckedUnit] = {}
        for name, state in desired_here(snapshot, self._machine()).items():
            record = self._mirror.units[name]
            checked = self._check(record)
            if checked is not None:
                desired[name] = DesiredUnit(name, checked.hash, state, record.revision)
                units[name] = checked
        await self._supervisor.apply(plan(desired, self._supervisor.current()), units)

    def _check(self, record: UnitRecord) -> CheckedUnit | None:
        key = (record.name, record.hash)
        if key not in self._checked:
            try:
                self._checked[key] = load_unit(record.text, record.name)
            except FleetletError as exc:  # accepted by an older fleetlet, perhaps: nothing to run
                log.warning("%s: cannot load the unit: %s", record.name, exc)
                self._checked[key] = None
        return self._checked[key]

    async def _tick(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            self._wake.set()

    async def _follow(self, revision: int) -> None:
        """Apply every change to the mirror and wake a pass; a watch that fell behind reads everything again."""
        machine_id = self._machine().id
        while True:
            send, receive = anyio.create_memory_object_stream[Change](WATCH_BUFFER)
            async with anyio.create_task_group() as tg:
                # Two watches into one stream: each key's changes stay in order, which is all the mirror needs.
                for prefix in (UNITS_PREFIX, schedule_prefix(machine_id)):
                    tg.start_soon(self._watch, revision, send.clone(), prefix, tg.cancel_scope)
                send.close()
                async with receive:
                    async for change in receive:
                        if self._mirror.apply(change):
                            self._wake.set()
            revision = await self._reload(machine_id)
            self._checked.clear()
            self._wake.set()

    async def _reload(self, machine_id: str) -> int:
        while True:
            try:
                return await self._mirror.load(self._registry, machine_id=machine_id)
            except RegistryUnavailable as exc:
                log.warning("%s; units here keep running, trying again", exc)
                await self._clock.sleep(RETRY_SECONDS)

    async def _watch(
        self, revision: int, sink: MemoryObjectSendStream[Change], prefix: str, both: anyio.CancelScope
    ) -> None:
        """One of the two watches; when it fails, the other stops too, and everything is read again."""
        try:
            await self._registry.watch(revision, sink, prefix=prefix)
        except RevisionCompacted as exc:
            log.info("registry watch fell behind (%s); reading everything again", exc)
        both.cancel()
