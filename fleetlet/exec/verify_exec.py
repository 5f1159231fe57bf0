"""``docker ...`` commands in a unit's Exec lines, read as fleetlet will read them when it runs them.

fleetlet carries out docker commands itself (:mod:`fleetlet.exec.docker_argv`), so a flag it cannot carry out fails
the command only when it runs, on whichever machine the unit landed. ``fleetlet verify`` reads each command now and
reports the problem at its line, before the unit reaches a cluster.

Specifiers are resolved first; ``%H``, ``%m`` and ``%b`` get stand-ins, as for ``[Container]``. A template's
commands are read for two stand-in instances, and what they say only when both readings agree: what depends on the
instance is only known when an instance runs. So is what depends on ``$VAR``: such a command is left alone, unless
the ``:`` prefix keeps ``$`` literal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from fleetlet.diagnostics import Report
from fleetlet.exec.docker_argv import DockerArgvError, Run, is_docker, parse_docker_argv
from fleetlet.units.execline import EXEC_SETTINGS, ExecCommand, parse_exec_line
from fleetlet.units.model import UnitFile
from fleetlet.units.names import UnitName
from fleetlet.units.service import ServiceConfig
from fleetlet.units.specifiers import MachineFacts, expand

# Stand-ins for the machine-dependent specifiers: a unit is checked before it is placed on a machine.
_ANY_MACHINE = MachineFacts(hostname="localhost", machine_id="0" * 32, boot_id="0" * 32)
# Stand-ins for a template's instance: a number and a word, so that a value fit for either kind passes one of them.
_ANY_INSTANCES = ("1", "instance")
# Types under which ExecStart='s command is the main process and its end the service's end.
_FOREGROUND_TYPES = frozenset({"simple", "exec", "idle"})


@dataclasses.dataclass(frozen=True, slots=True)
class _Reading:
    """What reading one docker command line found."""

    error: str | None = None
    warnings: tuple[str, ...] = ()
    detached_run: bool = False


def check_docker_commands(unit: UnitFile, name: UnitName, service: ServiceConfig, report: Report) -> None:
    """Report, at its line, every docker command in an Exec setting that fleetlet would not carry out as written:
    an error for what it cannot do, a warning for what it does but the author likely did not mean."""
    for setting in EXEC_SETTINGS:
        for entry in unit.list_entries("Service", setting):
            try:
                commands = parse_exec_line(entry.value)
            except ValueError:
                continue  # the [Service] checks report it
            for command in commands:
                _check(setting, command, entry.line, name, service, report)


def _check(
    setting: str, command: ExecCommand, line: int, name: UnitName, service: ServiceConfig, report: Report
) -> None:
    # With '@' the second word is only argv[0], which docker never reads: the runner drops it too.
    words = (command.argv[0], *command.argv[2:]) if command.argv0_override else command.argv
    if not is_docker(words[0]):
        return
    if not command.no_env_expansion and any("$" in word for word in words):
        return
    try:
        readings = {_read(words, stand_in) for stand_in in _stand_ins(name)}
    except ValueError:
        return  # an unknown specifier: the [Service] checks report it
    if len(readings) != 1:
        return  # what the command says depends on the instance
    reading = readings.pop()
    if reading.error is not None:
        report.error(line, f"{setting}=: {reading.error}")
    for warning in reading.warnings:
        report.warning(line, f"{setting}=: {warning}")
    if setting == "ExecStart" and reading.detached_run and service.type in _FOREGROUND_TYPES:
        report.warning(
            line,
            f"{setting}=: docker run -d under Type={service.type} ends as soon as the container starts, so the unit "
            "stops at once (use Type=forking to follow the container, or drop -d)",
        )


def _read(words: Sequence[str], name: UnitName) -> _Reading:
    """One reading of a command line as ``name`` would run it; ValueError for an unknown specifier."""
    try:
        parsed = parse_docker_argv([expand(word, name, _ANY_MACHINE) for word in words])
    except DockerArgvError as e:
        return _Reading(error=str(e))
    if not isinstance(parsed, Run):
        return _Reading()
    return _Reading(warnings=parsed.warnings, detached_run=parsed.detach)


def _stand_ins(name: UnitName) -> list[UnitName]:
    """The names to read a unit's commands as: its own, or for a template, those of stand-in instances."""
    if not name.is_template:
        return [name]
    return [
        dataclasses.replace(
            name, full=f"{name.prefix}@{instance}.{name.unit_type}", name=f"{name.prefix}@{instance}", instance=instance
        )
        for instance in _ANY_INSTANCES
    ]
