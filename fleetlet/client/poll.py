"""What the API says of the units a wait is for: one :class:`~fleetlet.client.waiting.UnitProgress` each.

A few units are asked for one by one (``GET /units/NAME``, ``GET /state?unitName=NAME``); many, as whole lists,
so a glob over thousands of units costs a few pages a poll rather than thousands of requests. Machines' IPs, for
fleetctl's ``1a2b3c4d.../10.0.0.5``, are fetched when a machine not seen yet shows up. A unit's status
(``GET /v1/units/NAME/status``) is asked for only when it says more than the lists: when and why a unit failed,
and, when the poll is of a few units, why an unscheduled one has no machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from fleetlet.client.errors import APIRequestFailed
from fleetlet.client.records import Unit, UnitReport, UnitState
from fleetlet.client.waiting import Goal, UnitProgress

if TYPE_CHECKING:
    from fleetlet.client.client import Client

# Up to this many units, a poll asks for each; beyond, for the lists.
PER_UNIT_LIMIT: Final = 10
# fleetctl showed a machine by the first 8 characters of its ID.
SHORT_MACHINE: Final = 8


async def unplaceable_reasons(fleet: Client, unit: Unit) -> tuple[str, ...]:
    """Why no machine can take ``unit``, as the engine last decided; () when one can, or when nothing says."""
    report = await _report(fleet, unit.name)
    return report.reasons if report is not None else ()


async def _report(fleet: Client, name: str) -> UnitReport | None:
    """The unit's status; None when it is gone, or when the API is fleet's own, which has no status resource."""
    try:
        return await fleet.status(name)
    except APIRequestFailed as e:  # UnitNotFound, or a 404 of an API without the resource
        if e.status == 404:
            return None
        raise


class ClusterPoll:
    """A :data:`~fleetlet.client.waiting.Poll` over ``fleet``, asking for what ``goal`` needs to be judged."""

    def __init__(self, fleet: Client, goal: Goal, *, per_unit_limit: int = PER_UNIT_LIMIT) -> None:
        self._fleet = fleet
        self._with_states = goal in ("launched", "loaded")  # judged by the machine's state too
        self._with_reasons = goal in ("launched", "loaded")
        self._per_unit_limit = per_unit_limit
        self._ips: dict[str, str] = {}
        self._looked_up: set[str] = set()  # machine IDs already looked for, found or not

    async def __call__(self, names: Sequence[str]) -> dict[str, UnitProgress]:
        few = len(names) <= self._per_unit_limit
        units, states = await (self._one_by_one(names) if few else self._lists(names))
        await self._learn_machines(unit.machine_id for unit in units if unit.machine_id)
        # Reasons are one request per unscheduled unit: for a few units only, or a poll would be thousands of them.
        seen = {unit.name: await self._seen(unit, states, with_reasons=few and self._with_reasons) for unit in units}
        return {name: seen.get(name, UnitProgress(name)) for name in names}

    async def _one_by_one(self, names: Sequence[str]) -> tuple[list[Unit], list[UnitState]]:
        units: list[Unit] = []
        states: list[UnitState] = []
        for name in names:
            unit = await self._fleet.unit(name)
            if unit is None:
                continue
            units.append(unit)
            if self._with_states and unit.machine_id:
                states.extend(await self._fleet.states(unit_name=name))
        return units, states

    async def _lists(self, names: Sequence[str]) -> tuple[list[Unit], list[UnitState]]:
        wanted = set(names)
        units = [unit for unit in await self._fleet.units() if unit.name in wanted]
        states = [s for s in await self._fleet.states() if s.name in wanted] if self._with_states else []
        return units, states

    async def _learn_machines(self, machine_ids: Iterable[str]) -> None:
        new = set(machine_ids) - self._looked_up
        if new:
            self._ips = {machine.id: machine.primary_ip for machine in await self._fleet.machines()}
            self._looked_up |= new | self._ips.keys()

    async def _seen(self, unit: Unit, states: Sequence[UnitState], *, with_reasons: bool) -> UnitProgress:
        machine = _legend(unit.machine_id, self._ips.get(unit.machine_id, "")) if unit.machine_id else ""
        reasons = await unplaceable_reasons(self._fleet, unit) if with_reasons and not machine else ()
        state = _state_of(unit, states)
        seen = UnitProgress(
            unit.name,
            unit.current_state,
            machine,
            active=state.active_state if state is not None else "",
            sub=state.sub_state if state is not None else "",
            reasons=reasons,
            machine_id=unit.machine_id,
        )
        if seen.failed:
            # Why it failed, and when: the status has them, and a failure with a new ``since`` is a new failure.
            report = await _report(self._fleet, unit.name)
            if report is not None and report.machine_id == unit.machine_id and report.active_state == "failed":
                seen = replace(seen, result=report.result, since=report.since)
        return seen


def _legend(machine_id: str, ip: str) -> str:
    """fleetctl's machine with its address, ``1a2b3c4d.../10.0.0.5``; the short ID alone when the IP is unknown."""
    legend = f"{machine_id[:SHORT_MACHINE]}..."
    return f"{legend}/{ip}" if ip else legend


def _state_of(unit: Unit, states: Sequence[UnitState]) -> UnitState | None:
    """The unit's state on the machine it is scheduled to, if that machine runs its current contents.

    A state of other contents is of the unit before ``--replace``: its ``active`` or ``failed`` says nothing of
    the new one. A state without a hash is taken as current.
    """
    current = unit.hash
    for state in states:
        if state.name == unit.name and state.machine_id == unit.machine_id and state.hash in ("", current):
            return state
    return None
