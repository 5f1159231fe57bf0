"""What every unit actor on one machine shares, and how an actor is put together from it.

``fleetlet run``, the tests and the benchmarks all build actors here, so there is one wiring to keep right; the
agent's supervisor will be the next user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fleetlet.clock import Clock
from fleetlet.diagnostics import Report
from fleetlet.exec.engine_events import EngineEvents
from fleetlet.exec.executor import Executor
from fleetlet.exec.quadlet import container_spec
from fleetlet.exec.runtime import ContainerRuntime
from fleetlet.exec.subprocess_runner import ProcessRunner
from fleetlet.service.actor import UnitActor
from fleetlet.service.journal import Journal
from fleetlet.service.states import UnitStatus
from fleetlet.units.check import CheckedUnit
from fleetlet.units.specifiers import MachineFacts


def _ignore(status: UnitStatus) -> None:
    """Publish nowhere."""


@dataclass(frozen=True, slots=True)
class Node:
    """The engine, process runner, clock, engine-event hub and facts of one machine."""

    runtime: ContainerRuntime
    processes: ProcessRunner
    clock: Clock
    machine: MachineFacts
    events: EngineEvents | None = None  # one /events subscription for every unit; None: a wait call per container
    # Whose containers these are (their fleetlet.machine label): the agent's machine ID by default. ``fleetlet run``
    # labels its own apart, so that the agent's sweep of orphans never takes a foreground run's container.
    owner: str = ""

    def actor(
        self, unit: CheckedUnit, journal: Journal, *, publish: Callable[[UnitStatus], None] = _ignore
    ) -> UnitActor:
        """An actor for ``unit`` on this machine; run it with ``await tg.start(actor.run)``."""
        container = None
        if "Container" in unit.file.sections():
            # Checked when the unit was accepted; resolved again here with this machine's %H, %m and %b.
            container = container_spec(unit.file, unit.name, Report(unit.name.full), machine=self.machine)
        executor = Executor(
            unit=unit.name.full,
            unit_hash=unit.hash,
            machine_id=self.owner or self.machine.machine_id,
            runtime=self.runtime,
            processes=self.processes,
            journal=journal,
            clock=self.clock,
            container=container,
            events=self.events,
        )
        return UnitActor(
            unit, runner=executor, clock=self.clock, journal=journal, publish=publish, machine=self.machine
        )
