"""What the API reports beyond the registry: machines, unit states, journals, placement reasons.

The API does not know the agent. It asks a :class:`NodeView` on every request, so the agent gives its live
supervisor, engine and machine record, and a test gives a :class:`StaticView` with plain lists. When machines
join a cluster (a later issue), the view is where answers about other machines come from; the handlers stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fleetlet.engine.snapshot import MachineSpec
from fleetlet.service.journal import Journal
from fleetlet.service.states import UnitStatus


@dataclass(frozen=True, slots=True)
class UnitState:
    """One unit's systemd-like state on one machine, as fleet's ``schema.UnitState``."""

    name: str
    hash: str
    machine_id: str
    load: str
    active: str
    sub: str


class UnknownMachine(LookupError):
    """A request named a machine the view does not know."""


class NodeView(Protocol):
    def machines(self) -> Sequence[MachineSpec]:
        """Every live machine."""
        ...

    def states(self) -> Sequence[UnitState]:
        """The latest state of every unit on every machine that reports one."""
        ...

    def status(self, unit: str) -> UnitStatus | None:
        """The full status of ``unit`` from the machine that runs it; None when no machine reports it."""
        ...

    def journal(self, unit: str) -> Journal | None:
        """The journal of ``unit`` on the machine that runs it; None when no machine has one."""
        ...

    def journal_units(self) -> Sequence[str]:
        """The units whose journal is being written now, which a follower can follow: the units loaded here."""
        ...

    def unplaceable(self) -> Mapping[str, tuple[str, ...]]:
        """Why each unit that should run has no machine, one reason per machine, as of the latest decision."""
        ...

    def set_metadata(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        """Replace a machine's metadata; :class:`UnknownMachine` when there is no such machine."""
        ...

    def answered_by(self, machine_id: str | None) -> str | None:
        """The URL of the member that answers for a unit on ``machine_id`` (None: on no machine, the leader's
        business), when that is another member; None when this one answers for it."""
        ...


@dataclass
class StaticView:
    """A :class:`NodeView` over plain data, for tests and for an API with no agent behind it."""

    machine_list: list[MachineSpec] = field(default_factory=list)
    state_list: list[UnitState] = field(default_factory=list)
    statuses: dict[str, UnitStatus] = field(default_factory=dict)
    journals: dict[str, Journal] = field(default_factory=dict)
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    members: dict[str | None, str] = field(default_factory=dict)  # machine (None: the leader) -> URL, if not here

    def machines(self) -> Sequence[MachineSpec]:
        return self.machine_list

    def states(self) -> Sequence[UnitState]:
        return self.state_list

    def status(self, unit: str) -> UnitStatus | None:
        return self.statuses.get(unit)

    def journal(self, unit: str) -> Journal | None:
        return self.journals.get(unit)

    def journal_units(self) -> Sequence[str]:
        return sorted(self.journals)

    def unplaceable(self) -> Mapping[str, tuple[str, ...]]:
        return self.reasons

    def set_metadata(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        for i, machine in enumerate(self.machine_list):
            if machine.id == machine_id:
                self.machine_list[i] = MachineSpec(machine.id, metadata, machine.public_ip)
                return
        raise UnknownMachine(machine_id)

    def answered_by(self, machine_id: str | None) -> str | None:
        return self.members.get(machine_id)
