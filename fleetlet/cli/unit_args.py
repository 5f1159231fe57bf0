"""What the unit arguments of ``submit``, ``start``, ``stop``... name, and creating units from local files.

An argument is a unit name or a path (``./units/hello.service``, ``hello`` meaning ``hello.service``), or a glob
(``'hello_world@*'``) that stands for every *submitted* unit it matches, as ``path.Match`` matched it. Before
``submit``, ``load`` and ``start`` act, each named unit that is not in the cluster yet is created as fleetctl did:
from the local file of that name, else, for an instance ``foo@3.service``, from the template ``foo@.service`` in
the cluster or beside it on disk. Local files are checked exactly as ``fleetlet verify`` checks them.

A unit already in the cluster whose local file says otherwise is replaced with ``--replace``, keeping its desired
state, in the states fleetctl allowed: ``submit`` replaces an inactive unit, ``load`` an inactive or loaded one,
``start`` any (a launched unit restarts with its new contents).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias

from fleetlet.cli.endpoint import CommandError
from fleetlet.client import Client, Unit
from fleetlet.errors import UnitNameError
from fleetlet.registry.model import DESIRED_STATES, DesiredState
from fleetlet.units.check import check_path
from fleetlet.units.globs import compile_glob
from fleetlet.units.model import UnitFile
from fleetlet.units.names import DEFAULT_SUFFIX, has_known_suffix, name_from_argument

GLOB_CHARACTERS = frozenset("*?[")
Creator: TypeAlias = Literal["submit", "load", "start"]
# The desired states in which each command may replace a unit: what it leaves the unit in cannot surprise its user.
REPLACEABLE: Final[Mapping[Creator, frozenset[DesiredState]]] = {
    "submit": frozenset({"inactive"}),
    "load": frozenset({"inactive", "loaded"}),
    "start": frozenset(DESIRED_STATES),
}


@dataclass(frozen=True, slots=True)
class UnitArgument:
    """One argument that names one unit: its name and the local file that would define it."""

    name: str
    path: Path


def is_glob(argument: str) -> bool:
    return not GLOB_CHARACTERS.isdisjoint(argument)


def unit_argument(argument: str, doing: str) -> UnitArgument:
    """``hello`` is ``hello.service`` both in the cluster and on disk, as fleetctl's maybeAppendDefaultUnitType."""
    path = argument if has_known_suffix(argument.rstrip("/").rsplit("/", 1)[-1]) else argument + DEFAULT_SUFFIX
    try:
        name = name_from_argument(argument).full
    except UnitNameError as e:
        raise CommandError(f"Error {doing} units: {e}") from None
    return UnitArgument(name, Path(path))


async def create_missing(
    fleet: Client, arguments: Sequence[str], command: Creator, *, replace: bool = False
) -> set[str]:
    """Create each named unit the cluster lacks, printing ``Unit NAME inactive`` as fleetctl did.

    A unit already in the cluster with other contents than its local file is replaced when ``replace`` and
    :data:`REPLACEABLE` allow it (``Unit NAME replaced``). Otherwise it is an error for ``submit`` (which must not
    leave the user believing their file was submitted), a warning for ``start`` and ``load`` (which act on what
    the cluster has, as fleetctl did). Returns the names of the units replaced.
    """
    strict = command == "submit"
    replaced: set[str] = set()
    for argument in arguments:
        if is_glob(argument):
            continue  # a glob selects submitted units; there is nothing to create from it
        wanted = unit_argument(argument, "creating")
        existing = await fleet.unit(wanted.name)
        if existing is None:
            await fleet.submit(wanted.name, await _unit_file(fleet, wanted))
            print(f"Unit {wanted.name} inactive")
            continue
        local = _differing_local(existing, wanted.path)
        if local is None:
            continue
        if not replace:
            _refuse_difference(existing, wanted.path, strict=strict)
        elif existing.desired_state not in REPLACEABLE[command]:
            _refuse_replacing(existing, command, strict=strict)
        else:
            await fleet.create_unit(existing.name, local, existing.desired_state)
            print(f"Unit {existing.name} replaced")
            replaced.add(existing.name)
    return replaced


async def existing_units(fleet: Client, arguments: Sequence[str], doing: str) -> list[Unit]:
    """The submitted units the arguments name, each once, in argument order; an unknown name is an error."""
    everything: dict[str, Unit] | None = None
    if any(is_glob(a) for a in arguments):
        everything = {unit.name: unit for unit in await fleet.units()}
    found: dict[str, Unit] = {}
    for argument in arguments:
        if everything is not None and is_glob(argument):
            pattern = argument.rstrip("/").rsplit("/", 1)[-1]
            try:
                glob = compile_glob(pattern)
            except ValueError as e:
                raise CommandError(f"Error {doing} units: {e}") from None
            matches = [unit for name, unit in everything.items() if glob.matches(name)]
            if not matches:
                raise CommandError(f"Error {doing} units: no submitted unit matches {pattern}")
            found.update((unit.name, unit) for unit in matches)
            continue
        name = unit_argument(argument, doing).name
        unit = everything.get(name) if everything is not None else await fleet.unit(name)
        if unit is None:
            raise CommandError(f"Error {doing} units: unable to find unit {name}")
        found[name] = unit
    return list(found.values())


async def _unit_file(fleet: Client, wanted: UnitArgument) -> UnitFile:
    if wanted.path.exists():
        return _checked_file(wanted.path)
    name = name_from_argument(wanted.name)
    if not name.is_instance or name.template is None:
        raise CommandError(f"Error creating units: unable to find Unit({wanted.name}) in Registry or on filesystem")
    template = await fleet.unit(name.template)
    if template is not None:
        return template.unit_file
    local = wanted.path.parent / name.template
    if not local.exists():
        raise CommandError(
            f"Error creating units: unable to find template Unit({name.template}) in Registry or on filesystem"
        )
    return _checked_file(local)


def _checked_file(path: Path) -> UnitFile:
    """The file's unit if it passes ``verify``'s checks; its warnings go to stderr, its errors end the command."""
    report, checked = check_path(path)
    if checked is None:
        raise CommandError("\n".join(str(d) for d in report.in_file_order()))
    for warning in report.in_file_order():
        print(warning, file=sys.stderr)
    return checked.file


def _differing_local(existing: Unit, path: Path) -> UnitFile | None:
    """The local file's unit when there is one and its contents differ from the cluster's."""
    if not path.is_file():
        return None
    local = _checked_file(path)
    return None if local.hash == existing.hash else local


def _refuse_replacing(existing: Unit, command: Creator, *, strict: bool) -> None:
    message = (
        f"cannot replace unit {existing.name} in state {existing.desired_state} with {command}; use start --replace"
    )
    if strict:
        raise CommandError(f"Error creating units: {message}")
    print(f"WARNING: {message}", file=sys.stderr)


def _refuse_difference(existing: Unit, path: Path, *, strict: bool) -> None:
    if strict:
        raise CommandError(
            f"Error creating units: unit {existing.name} in the registry differs from local unit file {path}; "
            "destroy it first to submit the new contents"
        )
    print(f"WARNING: Unit {existing.name} in registry differs from local unit file {path}.", file=sys.stderr)
