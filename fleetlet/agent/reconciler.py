"""The reconciler loop: when to compare this machine's part of the schedule with what its actors run.

What to do about a difference is :func:`fleetlet.agent.reconcile.plan`'s business; this module reads the
registry, wakes on its changes, and hands the plan to the supervisor.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.agent.reconcile import DesiredUnit, plan
from fleetlet.agent.supervisor import Supervisor
from fleetlet.clock import Clock
from fleetlet.errors import FleetletError
from fleetlet.registry.errors import RevisionCompacted
from fleetlet.registry.model import Change
from fleetlet.registry.protocol import Registry
from fleetlet.units.check import CheckedUnit, load_unit

log = logging.getLogger("fleetlet.agent")

# A reconcile pass also runs this often without any registry change: it restarts units that ended on their own.
RECONCILE_INTERVAL = 10.0
WATCH_BUFFER = 256


class Reconciler:
    """Keeps the supervisor in line with this machine's part of the schedule.

    A pass runs at start, after every registry change and every ``interval`` seconds; changes that arrive during a
    pass coalesce into one more pass.
    """

    def __init__(
        self,
        registry: Registry,
        supervisor: Supervisor,
        machine_id: str,
        clock: Clock,
        *,
        interval: float = RECONCILE_INTERVAL,
    ) -> None:
        self._registry = registry
        self._supervisor = supervisor
        self._machine_id = machine_id
        self._clock = clock
        self._interval = interval
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Run a pass soon: something besides the registry changed (this machine's metadata)."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started after the first pass."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow)
            tg.start_soon(self._tick)
            await self.reconcile()
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self.reconcile()

    async def reconcile(self) -> None:
        """One pass: what the registry wants here against what the actors report."""
        view = await self._registry.machine_schedule(self._machine_id)
        desired: dict[str, DesiredUnit] = {}
        units: dict[str, CheckedUnit] = {}
        for name in sorted(view.entries):
            record = await self._registry.get_unit(name)
            if record is None or record.desired_state == "inactive":
                continue
            try:
                checked = load_unit(record.text, name)
            except FleetletError as exc:  # accepted by an older fleetlet, perhaps: nothing to run
                log.warning("%s: cannot load the unit: %s", name, exc)
                continue
            desired[name] = DesiredUnit(name, checked.hash, record.desired_state, record.revision)
            units[name] = checked
        await self._supervisor.apply(plan(desired, self._supervisor.current()), units)

    async def _tick(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            self._wake.set()

    async def _follow(self) -> None:
        """Wake a pass on every change; a watch that fell behind starts again from the current revision."""
        while True:
            revision = await self._registry.revision()
            send, receive = anyio.create_memory_object_stream[Change](WATCH_BUFFER)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, revision, send)
                async with receive:
                    async for _ in receive:
                        self._wake.set()
            self._wake.set()

    async def _watch(self, revision: int, sink: MemoryObjectSendStream[Change]) -> None:
        try:
            await self._registry.watch(revision, sink)
        except RevisionCompacted as exc:
            log.info("registry watch fell behind (%s); watching again", exc)
