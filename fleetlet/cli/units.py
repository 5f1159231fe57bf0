"""fleetctl's unit commands: ``submit``, ``cat``, ``destroy``, ``load``, ``start``, ``stop``, ``unload``.

Each prints what fleetctl printed in ``--no-block`` mode (``Triggered unit hello.service start``), so scripts
written for fleetctl keep working. Blocking until units are launched, loaded or stopped is not implemented yet:
the commands return once the desired state is set.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fleetlet.cli import endpoint
from fleetlet.cli.endpoint import CommandError, run_with_client
from fleetlet.cli.unit_args import create_missing, existing_units, unit_argument
from fleetlet.client import Client, Unit
from fleetlet.diagnostics import Report
from fleetlet.registry.model import DesiredState
from fleetlet.units.names import parse_name
from fleetlet.units.xfleet import requirements

_NO_BLOCK_HELP = (
    "do not wait for the units to reach the state; accepted for fleetctl's scripts, and the only behaviour "
    "for now: waiting (fleetctl's default) is not implemented yet"
)


@dataclass(frozen=True, slots=True)
class _Transition:
    """One of fleetctl's desired-state commands: the state it sets and how it words what it does."""

    command: str  # "start": printed in ``Triggered unit NAME start``
    state: DesiredState
    doing: str  # "starting": printed in ``Error starting units: ...``
    creates: bool  # lazily submits local units first
    skip: Callable[[Unit], bool]  # already where the command would put it: nothing to do


_TRANSITIONS = {
    t.command: t
    for t in (
        _Transition("load", "loaded", "loading", creates=True, skip=lambda u: u.desired_state == "loaded"),
        _Transition("start", "launched", "starting", creates=True, skip=lambda u: u.desired_state == "launched"),
        _Transition("stop", "loaded", "stopping", creates=False, skip=lambda u: u.desired_state == "loaded"),
        _Transition("unload", "inactive", "unloading", creates=False, skip=lambda u: u.desired_state == "inactive"),
    )
}
_HELP = {
    "load": "schedule units to machines without starting them, first submitting them if necessary",
    "start": "start units in the cluster, first submitting them if necessary",
    "stop": "stop units in the cluster, leaving them loaded",
    "unload": "unschedule units from their machines, leaving them submitted",
}


def register(commands: Any) -> None:
    submit = commands.add_parser(
        "submit",
        help="upload unit files to the cluster without starting them",
        description="Upload unit files to the cluster without starting them, each named after its file, checked "
        "as `verify` checks it (problems as FILE:LINE: message). Submitting a unit again with the same contents "
        "does nothing; with other contents it is an error. An instance foo@1.service may be submitted from the "
        "template foo@.service in the cluster or in the file's directory.",
    )
    submit.add_argument("units", nargs="+", metavar="FILE")
    endpoint.add_options(submit)
    submit.set_defaults(run=lambda args: run_with_client(args, lambda fleet: _submit(fleet, args.units)))

    cat = commands.add_parser(
        "cat", help="print a submitted unit", description="Print the unit file as the cluster holds it."
    )
    cat.add_argument("unit", metavar="UNIT")
    endpoint.add_options(cat)
    cat.set_defaults(run=lambda args: run_with_client(args, lambda fleet: _cat(fleet, args.unit)))

    destroy = commands.add_parser(
        "destroy",
        help="remove units from the cluster",
        description="Stop units and remove them from the cluster. A glob ('hello_world@*') names every "
        "submitted unit it matches.",
    )
    destroy.add_argument("units", nargs="+", metavar="UNIT")
    endpoint.add_options(destroy)
    destroy.set_defaults(run=lambda args: run_with_client(args, lambda fleet: _destroy(fleet, args.units)))

    for transition in _TRANSITIONS.values():
        _register_transition(commands, transition)


def _register_transition(commands: Any, transition: _Transition) -> None:
    lazily = (
        " A unit not yet submitted is submitted first from the local file of that name, or, for an instance "
        "foo@1.service, from the template foo@.service in the cluster or in the current directory."
        if transition.creates
        else ""
    )
    parser = commands.add_parser(
        transition.command,
        help=_HELP[transition.command],
        description=f"{_HELP[transition.command].capitalize()}. A glob ('hello_world@*') names every submitted "
        f"unit it matches.{lazily} Returns once the desired state is set: waiting until the units reach it is "
        "not implemented yet.",
    )
    parser.add_argument("units", nargs="+", metavar="UNIT")
    parser.add_argument("--no-block", action="store_true", help=_NO_BLOCK_HELP)
    endpoint.add_options(parser)

    def run(args: argparse.Namespace) -> int:
        return run_with_client(args, lambda fleet: _transition(fleet, transition, args.units))

    parser.set_defaults(run=run)


async def _submit(fleet: Client, arguments: Sequence[str]) -> int:
    await create_missing(fleet, arguments, strict=True)
    return 0


async def _cat(fleet: Client, argument: str) -> int:
    name = unit_argument(argument, "retrieving").name
    unit = await fleet.unit(name)
    if unit is None:
        raise CommandError(f"Unit {name} not found")
    print(unit.unit_file.serialize(), end="")
    return 0


async def _destroy(fleet: Client, arguments: Sequence[str]) -> int:
    for unit in await existing_units(fleet, arguments, "destroying"):
        await fleet.destroy(unit.name)
        print(f"Destroyed {unit.name}")
    return 0


async def _transition(fleet: Client, transition: _Transition, arguments: Sequence[str]) -> int:
    if transition.creates:
        await create_missing(fleet, arguments, strict=False)
    units = await existing_units(fleet, arguments, transition.doing)
    if transition.command == "stop":
        # fleetctl refused before acting; checking every unit first leaves none half-stopped
        for unit in units:
            if unit.desired_state == "inactive" and not _is_global(unit):
                raise CommandError(f"Unable to stop unit {unit.name} in state inactive")
    triggered: list[str] = []
    for unit in units:
        if transition.skip(unit):
            continue
        await fleet.set_desired_state(unit.name, transition.state)
        if _is_global(unit):
            print(f"Triggered global unit {unit.name} {transition.command}")
        else:
            triggered.append(unit.name)
    for name in triggered:
        print(f"Triggered unit {name} {transition.command}")
    return 0


def _is_global(unit: Unit) -> bool:
    return requirements(unit.unit_file, parse_name(unit.name), Report(unit.name)).is_global
