"""fleetctl's unit commands: ``submit``, ``cat``, ``destroy``, ``load``, ``start``, ``stop``, ``unload``, ``restart``.

Like fleetctl, the commands that change a unit's state wait until it gets there, as the client waits
(:mod:`fleetlet.client.waiting`), and print where it is (``Unit hello.service launched on 1a2b3c4d.../10.0.0.5``;
see :mod:`fleetlet.cli.blocking`). ``--no-block`` prints
what fleetctl printed then (``Triggered unit hello.service start``) and returns once the desired state is set.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fleetlet.cli import endpoint
from fleetlet.cli.blocking import problem_line, reached_line, timeout_message
from fleetlet.cli.endpoint import CommandError, run_with_client
from fleetlet.cli.unit_args import Creator, create_missing, existing_units, unit_argument
from fleetlet.client import Client, Unit, UnitNotFound
from fleetlet.client.poll import ClusterPoll
from fleetlet.client.waiting import Goal, Sleep, UnitProgress, Verdict, wait_for
from fleetlet.clock import SystemClock
from fleetlet.registry.model import DesiredState


@dataclass(frozen=True, slots=True)
class Blocking:
    """How a command waits for its units: not at all (``--no-block``), or ``attempts`` polls (0: no limit)."""

    block: bool = True
    attempts: int = 0
    sleep: Sleep = field(default_factory=lambda: SystemClock().sleep)


@dataclass(frozen=True, slots=True)
class _Transition:
    """One of fleetctl's desired-state commands: the state it sets and how it words what it does."""

    command: str  # "start": printed in ``Triggered unit NAME start``
    state: DesiredState
    doing: str  # "starting": printed in ``Error starting units: ...``
    creates: Creator | None  # lazily submits local units first, as this command
    help: str

    def skip(self, unit: Unit) -> bool:
        """Already where the command would put it: nothing to do."""
        return unit.desired_state == self.state

    @property
    def goal(self) -> Goal:
        return self.state


_TRANSITIONS: Final[Mapping[str, _Transition]] = {
    t.command: t
    for t in (
        _Transition(
            "load",
            "loaded",
            "loading",
            "load",
            "schedule units to machines without starting them, first submitting them if necessary",
        ),
        _Transition(
            "start", "launched", "starting", "start", "start units in the cluster, first submitting them if necessary"
        ),
        _Transition("stop", "loaded", "stopping", None, "stop units in the cluster, leaving them loaded"),
        _Transition(
            "unload", "inactive", "unloading", None, "unschedule units from their machines, leaving them submitted"
        ),
    )
}
_REPLACE_HELP = (
    "replace a unit in the cluster whose local file differs, keeping its desired state (submit: inactive units "
    "only; load: inactive or loaded ones; start: any, restarting it)"
)


def register(commands: Any) -> None:
    submit = commands.add_parser(
        "submit",
        help="upload unit files to the cluster without starting them",
        description="Upload unit files to the cluster without starting them, each named after its file, checked "
        "as `verify` checks it (problems as FILE:LINE: message). Submitting a unit again with the same contents "
        "does nothing; with other contents it is an error, unless --replace. An instance foo@1.service may be "
        "submitted from the template foo@.service in the cluster or in the file's directory.",
    )
    submit.add_argument("units", nargs="+", metavar="FILE")
    submit.add_argument("--replace", action="store_true", help=_REPLACE_HELP)
    endpoint.add_options(submit)
    submit.set_defaults(run=lambda args: run_with_client(args, lambda fleet: _submit(fleet, args.units, args.replace)))

    cat = commands.add_parser(
        "cat", help="print a submitted unit", description="Print the unit file as the cluster holds it."
    )
    cat.add_argument("unit", metavar="UNIT")
    endpoint.add_options(cat)
    cat.set_defaults(run=lambda args: run_with_client(args, lambda fleet: _cat(fleet, args.unit)))

    destroy = commands.add_parser(
        "destroy",
        help="remove units from the cluster",
        description="Stop units and remove them from the cluster, waiting until they are gone. A glob "
        "('hello_world@*') names every submitted unit it matches.",
    )
    destroy.add_argument("units", nargs="+", metavar="UNIT")
    _add_blocking_options(destroy)
    endpoint.add_options(destroy)
    destroy.set_defaults(
        run=lambda args: run_with_client(args, lambda fleet: destroy_units(fleet, args.units, _blocking(args)))
    )

    for transition in _TRANSITIONS.values():
        _register_transition(commands, transition)

    restart = commands.add_parser(
        "restart",
        help="stop units, then start them again",
        description="Stop the launched units named, wait until they are stopped, then start every unit named. "
        "A glob ('hello_world@*') names every submitted unit it matches. With --no-block, the command still "
        "waits for the stop, which the start must follow, but not for the start.",
    )
    restart.add_argument("units", nargs="+", metavar="UNIT")
    _add_blocking_options(restart)
    endpoint.add_options(restart)
    restart.set_defaults(
        run=lambda args: run_with_client(args, lambda fleet: restart_units(fleet, args.units, _blocking(args)))
    )


def _register_transition(commands: Any, transition: _Transition) -> None:
    lazily = (
        " A unit not yet submitted is submitted first from the local file of that name, or, for an instance "
        "foo@1.service, from the template foo@.service in the cluster or in the current directory."
        if transition.creates
        else ""
    )
    parser = commands.add_parser(
        transition.command,
        help=transition.help,
        description=f"{transition.help.capitalize()}, and wait until they are {transition.state}. A glob "
        f"('hello_world@*') names every submitted unit it matches.{lazily}",
    )
    parser.add_argument("units", nargs="+", metavar="UNIT")
    if transition.creates:
        parser.add_argument("--replace", action="store_true", help=_REPLACE_HELP)
    _add_blocking_options(parser)
    endpoint.add_options(parser)

    def run(args: argparse.Namespace) -> int:
        replace = bool(getattr(args, "replace", False))
        return run_with_client(
            args, lambda fleet: transition_units(fleet, transition.command, args.units, _blocking(args), replace)
        )

    parser.set_defaults(run=run)


def _add_blocking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-block",
        action="store_true",
        help="do not wait for the units to get there: print `Triggered unit NAME COMMAND` and return",
    )
    parser.add_argument(
        "--block-attempts",
        metavar="N",
        type=_attempts,
        default=0,
        help="give up waiting after N polls, half a second apart (default: 0, never)",
    )


def _blocking(args: argparse.Namespace) -> Blocking:
    return Blocking(block=not args.no_block, attempts=args.block_attempts)


def _attempts(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more: {text!r}")
    return value


# --- the commands ------------------------------------------------------------------------------------------------


async def _submit(fleet: Client, arguments: Sequence[str], replace: bool) -> int:
    await create_missing(fleet, arguments, "submit", replace=replace)
    return 0


async def _cat(fleet: Client, argument: str) -> int:
    name = unit_argument(argument, "retrieving").name
    try:
        text = await fleet.cat(name)
    except UnitNotFound:
        raise CommandError(f"Unit {name} not found") from None
    print(text, end="")
    return 0


async def destroy_units(fleet: Client, arguments: Sequence[str], blocking: Blocking) -> int:
    """fleetctl's ``destroy``: ``Destroyed NAME`` once each unit is gone (at once with ``--no-block``)."""
    units = await existing_units(fleet, arguments, "destroying")
    for unit in units:
        await fleet.destroy(unit.name)
        if not blocking.block:
            print(f"Destroyed {unit.name}")
    if not blocking.block:
        return 0
    return await _wait(fleet, [unit.name for unit in units], "destroyed", blocking)


async def transition_units(
    fleet: Client, command: str, arguments: Sequence[str], blocking: Blocking, replace: bool = False
) -> int:
    """fleetctl's ``load``, ``start``, ``stop`` and ``unload``."""
    transition = _TRANSITIONS[command]
    replaced = (
        await create_missing(fleet, arguments, transition.creates, replace=replace) if transition.creates else set()
    )
    units = await existing_units(fleet, arguments, transition.doing)
    if command == "stop":
        # fleetctl refused before acting; checking every unit first leaves none half-stopped
        for unit in units:
            if unit.desired_state == "inactive" and not _is_global(unit):
                raise CommandError(f"Unable to stop unit {unit.name} in state inactive")
    # A replaced unit already in the state is waited for: its machine restarts it with the new contents.
    acting = [unit for unit in units if not transition.skip(unit) or unit.name in replaced]
    return await _act(fleet, transition, acting, blocking)


async def restart_units(fleet: Client, arguments: Sequence[str], blocking: Blocking) -> int:
    """Stop the launched units, wait until they are, then start them all.

    The stop is waited for even with ``--no-block``: an agent that saw ``loaded`` and ``launched`` in quick
    succession would only see the unit launched, as it already is, and restart nothing. Global units are not
    waited for (no one machine reports them), so for them that can still happen.
    """
    units = await existing_units(fleet, arguments, "restarting")
    launched = [unit for unit in units if unit.desired_state == "launched"]
    stopped = await _act(fleet, _TRANSITIONS["stop"], launched, Blocking(True, blocking.attempts, blocking.sleep))
    if stopped != 0:
        return stopped
    return await _act(fleet, _TRANSITIONS["start"], units, blocking)


async def _act(fleet: Client, transition: _Transition, units: Sequence[Unit], blocking: Blocking) -> int:
    """Set the transition's state on ``units``, then wait for them, or print fleetctl's ``Triggered`` lines.

    Global units are not waited for, as fleetctl did not: they have no one machine to report them.
    """
    global_ = {unit.name for unit in units if _is_global(unit)}
    waited = [unit.name for unit in units if unit.name not in global_]
    # A start's outcome is judged against what the machines reported before it: see waiting.wait_for.
    before = (
        await ClusterPoll(fleet, transition.goal)(waited) if blocking.block and transition.goal == "launched" else {}
    )
    for unit in units:
        await fleet.set_desired_state(unit.name, transition.state)
        if unit.name in global_:
            print(f"Triggered global unit {unit.name} {transition.command}")
    if not blocking.block:
        for name in waited:
            print(f"Triggered unit {name} {transition.command}")
        return 0
    return await _wait(fleet, waited, transition.goal, blocking, before)


async def _wait(
    fleet: Client,
    names: Sequence[str],
    goal: Goal,
    blocking: Blocking,
    before: Mapping[str, UnitProgress] | None = None,
) -> int:
    """Wait for ``names`` to reach ``goal``, printing each as it settles; 1 if any cannot get there."""
    if not names:
        return 0
    stuck: list[str] = []

    def settled(seen: UnitProgress, verdict: Verdict) -> None:
        if verdict == "reached":
            print(reached_line(goal, seen), flush=True)
        else:
            print(problem_line(verdict, seen), file=sys.stderr, flush=True)
            stuck.append(seen.name)

    poll = ClusterPoll(fleet, goal)
    still = await wait_for(
        names, goal, poll, attempts=blocking.attempts, sleep=blocking.sleep, settled=settled, before=before
    )
    if still:
        raise CommandError(timeout_message(goal, still, blocking.attempts))
    return 1 if stuck else 0


def _is_global(unit: Unit) -> bool:
    return unit.is_global
