"""Where a unit is and why, or why it is on no machine: :class:`Explanation`, a pure function of its report and
its ``[X-Fleet]`` options (:func:`explanation`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from fleetlet.client.records import UnitReport
from fleetlet.units.model import UnitOption
from fleetlet.units.xfleet import SECTION

# scheduled: on a machine, to stay; unloading: on a machine, to leave it (desired state inactive);
# unplaceable: no machine can take it (``reasons`` says why); inactive: not wanted on any machine;
# pending: wanted on one, but the leader has not placed it yet.
Placement: TypeAlias = Literal["scheduled", "unloading", "unplaceable", "inactive", "pending"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """What ``fleetlet explain`` says of a unit: its ``placement``, its ``report`` (machine and states), the
    reasons no machine can take it (one per machine) and the ``[X-Fleet]`` options it asks of machines."""

    placement: Placement
    report: UnitReport
    requirements: tuple[UnitOption, ...] = ()

    @property
    def name(self) -> str:
        return self.report.name

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.report.reasons


def explanation(report: UnitReport, options: Sequence[UnitOption]) -> Explanation:
    """The explanation of the unit ``report`` describes; of ``options``, the ``[X-Fleet]`` ones count."""
    requirements = tuple(o for o in options if o.section == SECTION)
    return Explanation(_placement(report), report, requirements)


def _placement(report: UnitReport) -> Placement:
    if report.machine_id is not None:
        return "unloading" if report.desired_state == "inactive" else "scheduled"
    if report.reasons:
        return "unplaceable"
    return "inactive" if report.desired_state == "inactive" else "pending"
