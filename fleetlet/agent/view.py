"""The agent's answer to what the API asks beyond the registry (:class:`fleetlet.api.view.NodeView`).

The API starts answering before the supervisor and the engine exist, so both are attached once they do; until
then there are no states and no placement reasons to report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from fleetlet.agent.gossip import AgentGossip
from fleetlet.agent.machine import LocalMachine
from fleetlet.agent.supervisor import Supervisor
from fleetlet.api.view import UnitState, UnknownMachine
from fleetlet.clock import Clock
from fleetlet.engine.engine import Engine
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.service.journal import FileJournal, Journal, journal_file_name
from fleetlet.service.states import UnitStatus

_NO_REASONS: Mapping[str, tuple[str, ...]] = MappingProxyType({})


class AgentView:
    def __init__(
        self, machine: LocalMachine, journal_dir: Path, clock: Clock, gossip: AgentGossip | None = None
    ) -> None:
        self._machine = machine
        self._gossip = gossip
        self._journal_dir = journal_dir
        self._clock = clock
        self.supervisor: Supervisor | None = None
        self.engine: Engine | None = None
        self.leader_url = ""  # a joined agent's server, which leads; empty on the server itself and on etcd

    def machines(self) -> Sequence[MachineSpec]:
        """The live members of the cluster (alive or suspect), or this machine alone when it does not gossip."""
        return self._gossip.machines() if self._gossip is not None else [self._machine.spec]

    def states(self) -> Sequence[UnitState]:
        """This machine's units as its actors say, the others' as their machines gossip."""
        machine_id = self._machine.id
        local = [] if self.supervisor is None else self.supervisor.statuses()
        states = [UnitState(s.name, s.hash, machine_id, s.load, s.active, s.sub) for s in local]
        if self._gossip is not None:
            states.extend(self._gossip.peer_states())
        return states

    def status(self, unit: str) -> UnitStatus | None:
        return self.supervisor.status(unit) if self.supervisor is not None else None

    def journal(self, unit: str) -> Journal | None:
        """The live journal of a loaded unit; else what an earlier run left on disk, to read but not to follow."""
        live = self.supervisor.journal(unit) if self.supervisor is not None else None
        if live is not None:
            return live
        if (self._journal_dir / journal_file_name(unit)).exists():
            return FileJournal(self._journal_dir, unit, self._clock)  # opens its file only on a write: none comes
        return None

    def journal_units(self) -> Sequence[str]:
        """The loaded units: a journal an earlier run left on disk gets no new entries to follow."""
        return [s.name for s in self.supervisor.statuses()] if self.supervisor is not None else []

    def unplaceable(self) -> Mapping[str, tuple[str, ...]]:
        return self.engine.unplaceable if self.engine is not None else _NO_REASONS

    def set_metadata(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        if machine_id != self._machine.id:
            raise UnknownMachine(machine_id)
        self._machine.set_metadata(metadata)

    def answered_by(self, machine_id: str | None) -> str | None:
        """Another live member's URL: the unit's machine's, or the leader's for a unit on no machine."""
        if machine_id is None:
            if self.leader_url or self.engine is None:
                return self.leader_url or None
            machine_id = self.engine.leader  # on etcd, any agent may be the one that leads now
            if machine_id is None:
                return None
        if machine_id == self._machine.id or self._gossip is None:
            return None
        return next((r.address for r in self._gossip.gossiper.placeable() if r.id == machine_id and r.address), None)
