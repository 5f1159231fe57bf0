"""Who is in the cluster, as this member sees it: each member alive, suspect, dead or left, and the changes as events.

- A member *joins* the view once its machine record is known (a member heard of only by its heartbeat is not
  yet placeable: nobody knows its address or metadata).
- *alive → suspect* when the phi accrual detector (:mod:`fleetlet.cluster.detector`) finds its silence unlikely;
  *suspect → dead* when the silence lasts ``suspect_timeout`` more. A suspect member is still placeable: a short
  stall must not move its units. A dead one is not, and its units are placed elsewhere.
- The member itself refutes a suspicion, or a verdict of death, by gossiping on: any newer heartbeat, however it
  is relayed, makes it alive again (``alive`` after a suspicion, ``joined`` after death), and a restarted agent
  comes back with a new generation.
- A member that shuts down on purpose says so (``left``): no detector needs to wait for it.
- Dead and left members are removed from the view ``forget_after`` later (``removed``), and forgotten.

Pure: times are passed in; the gossiper calls :meth:`Membership.observe` with what a message changed and
:meth:`Membership.tick` every round.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from fleetlet.cluster.detector import DetectorSettings, PhiAccrual
from fleetlet.cluster.errors import ProtocolError
from fleetlet.cluster.records import LEFT_KEY, MACHINE_KEY, MachineRecord
from fleetlet.cluster.state import ClusterState, Reset, Update

log = logging.getLogger("fleetlet.cluster")

EventType: TypeAlias = Literal["joined", "metadata-changed", "suspect", "alive", "dead", "left", "removed"]
DEFAULT_PHI_SUSPECT: Final = 8.0


class Status(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


PLACEABLE: Final = frozenset({Status.ALIVE, Status.SUSPECT})


@dataclass(frozen=True, slots=True)
class MembershipSettings:
    detector: DetectorSettings
    phi_suspect: float = DEFAULT_PHI_SUSPECT
    suspect_timeout: float = 1.0
    forget_after: float = 60.0

    def __post_init__(self) -> None:
        if self.phi_suspect <= 0 or self.suspect_timeout < 0 or self.forget_after < 0:
            raise ValueError("phi_suspect must be positive, the timeouts not negative")


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """A change of the view; ``record`` is the member's latest record, ``reason`` says why in words."""

    type: EventType
    member: str
    record: MachineRecord
    reason: str = ""


@dataclass(slots=True)
class _Member:
    status: Status
    since: float  # monotonic time of the latest status change
    detector: PhiAccrual
    record: MachineRecord | None = None


class Membership:
    """The statuses of the members of ``state``; the local member is always alive."""

    def __init__(self, state: ClusterState, local: MachineRecord, settings: MembershipSettings, now: float) -> None:
        self._state = state
        self._settings = settings
        self._local = local
        self._members: dict[str, _Member] = {}
        self._now = now

    @property
    def local(self) -> MachineRecord:
        return self._local

    def set_local(self, record: MachineRecord) -> None:
        self._local = record

    def status(self, member: str) -> Status | None:
        if member == self._local.id:
            return Status.ALIVE
        known = self._members.get(member)
        return None if known is None or known.record is None else known.status

    def record(self, member: str) -> MachineRecord | None:
        if member == self._local.id:
            return self._local
        known = self._members.get(member)
        return None if known is None else known.record

    def members(self) -> Iterator[tuple[MachineRecord, Status]]:
        """Every member in the view with a record, this one first."""
        yield self._local, Status.ALIVE
        for member in self._members.values():
            if member.record is not None:
                yield member.record, member.status

    def placeable(self) -> list[MachineRecord]:
        """The members units may be placed on: alive or only suspect."""
        return [record for record, status in self.members() if status in PLACEABLE]

    def phi(self, member: str, now: float) -> float:
        known = self._members.get(member)
        return 0.0 if known is None else known.detector.phi(now)

    # --- what the gossiper tells ---------------------------------------------------------------------------------

    def heartbeats(self, members: Iterable[str], now: float) -> list[MembershipEvent]:
        """Newer heartbeats of these members arrived: alive, and a suspicion or a verdict of death refuted."""
        events: list[MembershipEvent] = []
        known_members = self._members
        for member in members:
            known = known_members.get(member) or self._known(member, now)
            known.detector.heartbeat(now)
            if known.status is not Status.ALIVE:  # the rare case, out of the way of every heartbeat
                events.extend(self._refuted(known, member, now))
        return events

    def _known(self, member: str, now: float) -> _Member:
        known = self._members.get(member)
        if known is None:
            known = self._members[member] = _Member(Status.ALIVE, now, PhiAccrual(self._settings.detector, now))
        return known

    def observe(self, resets: Iterable[Reset], updates: Iterable[Update], now: float) -> list[MembershipEvent]:
        """Take in the changes one message made to the state; return the events they amount to."""
        events: list[MembershipEvent] = []
        for reset in resets:
            known = self._members.get(reset.member)
            if known is not None and known.record is not None and known.status is not Status.ALIVE:
                # It restarted: everything it will say comes again under the new generation.
                known.status, known.since = Status.ALIVE, now
                events.append(MembershipEvent("joined", reset.member, known.record, "restarted"))
        for update in updates:
            events.extend(self._observe(update, now))
        return events

    def _observe(self, update: Update, now: float) -> list[MembershipEvent]:
        member = update.member
        known = self._known(member, now)
        if update.key == LEFT_KEY:
            if update.value is True and known.status is not Status.LEFT and known.record is not None:
                known.status, known.since = Status.LEFT, now
                return [MembershipEvent("left", member, known.record, "left the cluster")]
            return []
        if update.key != MACHINE_KEY:
            return []
        try:
            record = MachineRecord.from_value(member, update.value)
        except ProtocolError as exc:
            log.warning("ignoring a machine record: %s", exc)
            return []
        previous, known.record = known.record, record
        if previous is None:
            known.since = now
            return [MembershipEvent("joined", member, record, "joined the cluster")]
        if dict(previous.metadata) != dict(record.metadata):
            return [MembershipEvent("metadata-changed", member, record, "metadata changed")]
        return []

    def _refuted(self, known: _Member, member: str, now: float) -> list[MembershipEvent]:
        """A newer heartbeat of a suspect or dead member: it is alive after all."""
        if known.record is None or known.status in (Status.ALIVE, Status.LEFT):
            return []
        was, known.status, known.since = known.status, Status.ALIVE, now
        if was is Status.SUSPECT:
            return [MembershipEvent("alive", member, known.record, "suspicion refuted by a newer heartbeat")]
        return [MembershipEvent("joined", member, known.record, "came back after it was declared dead")]

    def tick(self, now: float) -> list[MembershipEvent]:
        """Judge every member's silence as of ``now``; forget members gone long enough."""
        settings = self._settings
        events: list[MembershipEvent] = []
        for member, known in list(self._members.items()):
            record = known.record
            if record is None:
                continue
            if known.status is Status.ALIVE:
                if known.detector.suspicious(now, settings.phi_suspect):
                    known.status, known.since = Status.SUSPECT, now
                    silent = now - known.detector.last_heartbeat
                    events.append(MembershipEvent("suspect", member, record, f"no heartbeat for {silent:.1f}s"))
            elif known.status is Status.SUSPECT:
                if now - known.since >= settings.suspect_timeout:
                    known.status, known.since = Status.DEAD, now
                    silent = now - known.detector.last_heartbeat
                    events.append(MembershipEvent("dead", member, record, f"no heartbeat for {silent:.1f}s"))
            elif now - known.since >= settings.forget_after:
                del self._members[member]
                self._state.forget(member)
                why = f"{known.status} for {settings.forget_after:g}s"
                events.append(MembershipEvent("removed", member, record, why))
        return events
