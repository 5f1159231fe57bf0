"""``fleetlet explain UNIT``: where a unit is and why, or why it is on no machine.

::

    hello.service cannot be placed:
      machine 1a2b3c4d: metadata group=hw_webservers not satisfied

The words are a pure function of the unit's report and its ``[X-Fleet]`` options (:func:`explain`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleetlet.cli import endpoint
from fleetlet.cli.endpoint import CommandError, run_with_client
from fleetlet.cli.status import does_not_exist, where
from fleetlet.cli.unit_args import unit_argument
from fleetlet.client import APIRequestFailed, Client, UnitReport
from fleetlet.units.model import UnitOption
from fleetlet.units.xfleet import SECTION


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "explain",
        help="say where a unit is scheduled and why, or why it cannot be placed",
        description="Say which machine a unit is scheduled on and what it asks of machines, or why no machine "
        "can take it: one reason per machine, as the leader found them.",
    )
    parser.add_argument("unit", metavar="UNIT")
    endpoint.add_options(parser)
    parser.set_defaults(run=lambda args: run_with_client(args, lambda fleet: _explain(fleet, args.unit)))


async def _explain(fleet: Client, argument: str) -> int:
    name = unit_argument(argument, "retrieving").name
    try:
        report = await fleet.status(name)
    except APIRequestFailed as e:
        if e.status == 404:
            raise CommandError(does_not_exist(name)) from None
        raise
    unit = await fleet.unit(name)
    for line in explain(report, unit.options if unit is not None else ()):
        print(line)
    return 0


def explain(report: UnitReport, options: Sequence[UnitOption]) -> list[str]:
    """The explanation, one line per item; ``options`` are the unit's, of which the ``[X-Fleet]`` ones count."""
    name = report.name
    if report.machine_id is None:
        if report.reasons:
            return [f"{name} cannot be placed:", *(f"  {reason}" for reason in report.reasons)]
        if report.desired_state == "inactive":
            return [f"{name} is not scheduled: its desired state is inactive"]
        return [
            f"{name} is not scheduled yet: its desired state is {report.desired_state}, "
            "and the leader has not placed it (is there a leader?)"
        ]
    lines = [f"{name} is scheduled on machine {where(report)}"]
    if report.desired_state == "inactive":
        lines.append("  its desired state is inactive: it is being unloaded from there")
    else:
        lines.append(f"  desired state {report.desired_state}, current state {_current(report)}")
    requirements = [f"{o.name}={o.value}" for o in options if o.section == SECTION]
    if requirements:
        lines.append(f"  it requires: {', '.join(requirements)}")
    else:
        lines.append("  it has no [X-Fleet] requirements: any machine would do")
    return lines


def _current(report: UnitReport) -> str:
    if not report.active_state:
        if report.current_state == "inactive":
            return "inactive (the machine has not reported it yet)"
        return report.current_state
    states = " ".join(s for s in (report.load_state, report.active_state, report.sub_state) if s)
    return f"{report.current_state} ({states})"
