"""The Registry port: desired state shared by the cluster, with revisions, conditional writes and watches.

Backends: :class:`~fleetlet.registry.memory.MemoryRegistry` (tests, beside this port),
:class:`~fleetlet.registry.sqlite.SqliteRegistry` (the embedded default), :mod:`~fleetlet.registry.remote` and
:mod:`~fleetlet.registry.etcd`; it speaks in etcd's terms (global revision, mod revisions compared in conditional
writes, key prefixes to watch, a leader record with a TTL).
"""

from __future__ import annotations

from typing import Protocol

from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.registry.model import Change, DesiredState, LeaderRecord, ScheduleView, UnitPage, UnitRecord
from fleetlet.units.model import UnitFile

DEFAULT_PAGE = 1000
DEFAULT_HISTORY = 10_000  # writes a backend keeps for watches to replay


class Registry(Protocol):
    """Desired state: units, the schedule, the leader record; every write returns its new global revision.

    ``expect_revision`` on a mutating call makes it conditional: the key's mod revision must equal it (0: the key
    must not exist), otherwise :class:`RegistryConflict` is raised and nothing changes. For the schedule the key is
    the unit's entry, whatever machine it names.
    """

    async def revision(self) -> int:
        """The revision of the latest write (0 for an empty registry)."""

    # --- units -------------------------------------------------------------------------------------------------

    async def get_unit(self, name: str) -> UnitRecord | None: ...

    async def list_units(self, *, limit: int = DEFAULT_PAGE, after: str | None = None) -> UnitPage:
        """Units sorted by name, at most ``limit``; ``after`` is a page's ``next_token``."""

    async def put_unit(
        self, name: str, unit: UnitFile, *, desired_state: DesiredState = "inactive", expect_revision: int | None = None
    ) -> int:
        """Create the unit, or replace its text (hence hash) and desired state."""

    async def set_desired_state(self, name: str, state: DesiredState, *, expect_revision: int | None = None) -> int:
        """Change what the user wants of an existing unit; UnitNotFound if there is none."""

    async def delete_unit(self, name: str, *, expect_revision: int | None = None) -> int:
        """Destroy the unit and its schedule entry, in one write; UnitNotFound if there is none."""

    # --- the schedule ------------------------------------------------------------------------------------------

    async def schedule(self) -> ScheduleView:
        """Every unit's placement."""

    async def machine_schedule(self, machine_id: str) -> ScheduleView:
        """The units placed on one machine: what its agent runs."""

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        """Place an existing unit on ``machine_id`` (moving it if placed elsewhere); UnitNotFound if no such unit.

        ``term`` fences the write: it applies only while the leader record's revision is ``term`` and unexpired,
        in the same atomic step, else LeadershipLost. A leader passes its own, so that a write it sent before it
        was deposed cannot land after its successor has decided.
        """

    async def clear_machine(self, unit: str, *, expect_revision: int | None = None, term: int | None = None) -> int:
        """Unplace the unit; the revision unchanged when it was not placed (nothing written). ``term`` as above."""

    # --- the leader record -------------------------------------------------------------------------------------

    async def leader(self) -> LeaderRecord | None:
        """The current leader, None when nobody holds an unexpired record."""

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        """Become leader for ``ttl`` seconds if nobody else holds an unexpired record; None if somebody does.

        A machine that already leads gets its record back, renewed.
        """

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        """Extend the caller's term by ``ttl`` from now; LeadershipLost if it has expired or is someone else's.

        The record keeps its revision, and renewals are not changes a watch sees (an etcd lease keep-alive neither).
        """

    async def resign(self, record: LeaderRecord) -> None:
        """End the caller's term at once, if it still holds it; nothing happens otherwise."""

    # --- watching ----------------------------------------------------------------------------------------------

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        """Send every change after ``from_revision`` whose key starts with ``prefix``, then live ones, until cancelled.

        Run it in the caller's task group (see :mod:`fleetlet.registry.watch` for why not an async iterator); it
        closes ``sink`` when it ends. ``prefix=schedule_prefix(machine)`` follows one machine's schedule only.
        Raises RevisionCompacted when changes after ``from_revision`` are no longer kept: re-read, then watch again.
        A leader record that expires makes no change; a watcher of ``leader`` also sleeps until ``expires_at``.
        """

    async def aclose(self) -> None:
        """Release the backend; running watches end with RegistryClosed."""
