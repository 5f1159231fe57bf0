"""``fleetlet explain UNIT``: where a unit is and why, or why it is on no machine.

::

    hello.service cannot be placed:
      machine 1a2b3c4d: metadata group=hw_webservers not satisfied

The client finds where the unit is and why (:meth:`fleetlet.client.Client.explain`, an
:class:`~fleetlet.client.Explanation`); the words are a pure function of that (:func:`explanation_lines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleetlet.cli import endpoint
from fleetlet.cli.endpoint import CommandError, run_with_client
from fleetlet.cli.status import does_not_exist, where
from fleetlet.cli.unit_args import unit_argument
from fleetlet.client import Client, Explanation, UnitNotFound, UnitReport
from fleetlet.client.explanation import explanation
from fleetlet.units.model import UnitOption


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
        found = await fleet.explain(name)
    except UnitNotFound:
        raise CommandError(does_not_exist(name)) from None
    for line in explanation_lines(found):
        print(line)
    return 0


def explain(report: UnitReport, options: Sequence[UnitOption]) -> list[str]:
    """The explanation, one line per item; ``options`` are the unit's, of which the ``[X-Fleet]`` ones count."""
    return explanation_lines(explanation(report, options))


def explanation_lines(found: Explanation) -> list[str]:
    """The words for the client's :class:`~fleetlet.client.Explanation`, one line per item."""
    report, name = found.report, found.name
    if found.placement == "unplaceable":
        return [f"{name} cannot be placed:", *(f"  {reason}" for reason in found.reasons)]
    if found.placement == "inactive":
        return [f"{name} is not scheduled: its desired state is inactive"]
    if found.placement == "pending":
        return [
            f"{name} is not scheduled yet: its desired state is {report.desired_state}, "
            "and the leader has not placed it (is there a leader?)"
        ]
    lines = [f"{name} is scheduled on machine {where(report)}"]
    if found.placement == "unloading":
        lines.append("  its desired state is inactive: it is being unloaded from there")
    else:
        lines.append(f"  desired state {report.desired_state}, current state {_current(report)}")
    if found.requirements:
        lines.append(f"  it requires: {', '.join(f'{o.name}={o.value}' for o in found.requirements)}")
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
