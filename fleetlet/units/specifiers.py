"""systemd specifiers (``%n``, ``%i``, ...) and fleet's narrower use of them in ``[X-Fleet]``.

In ``[Service]`` settings fleetlet resolves ``%n %N %p %i %I %f %H %m %b %%`` on the machine that runs the unit
(``%H``, ``%m`` and ``%b`` are that machine's). Any other specifier is an error, as it is for systemd when it cannot
resolve one. In ``[X-Fleet]`` fleet replaced only ``%n %N %p %i`` and left every other ``%`` as it was; fleetlet
does the same so that requirements mean what they meant under fleet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleetlet.units.names import UnitName

SERVICE_SPECIFIERS = frozenset("nNpiIfHmb%")
XFLEET_SPECIFIERS = frozenset("nNpi")
_SPECIFIER = re.compile(r"%(.?)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class MachineFacts:
    """What the machine-dependent specifiers expand to on the machine that runs the unit."""

    hostname: str = ""
    machine_id: str = ""
    boot_id: str = ""


def specifier_problems(text: str) -> list[str]:
    """Why ``text`` cannot be expanded in a ``[Service]`` setting; empty when it can."""
    problems = []
    for match in _SPECIFIER.finditer(text):
        char = match.group(1)
        if not char:
            problems.append("'%' at the end of the value starts no specifier (write %% for a literal %)")
        elif char not in SERVICE_SPECIFIERS:
            problems.append(
                f"unsupported specifier %{char} (fleetlet knows %n %N %p %i %I %f %H %m %b %%; "
                "write %% for a literal %)"
            )
    return problems


def expand(text: str, unit: UnitName, machine: MachineFacts) -> str:
    """Resolve every specifier in ``text`` for ``unit`` running on ``machine``; ValueError on an unknown one."""
    if "%" not in text:
        return text

    def resolve(match: re.Match[str]) -> str:
        char = match.group(1)
        if char == "%":
            return "%"
        if char == "n":
            return unit.full
        if char == "N":
            return unit.name
        if char == "p":
            return unit.prefix
        if char == "i":
            return unit.instance
        if char == "I":
            return unescape(unit.instance)
        if char == "f":
            return "/" + unescape(unit.instance or unit.prefix).lstrip("/")
        if char == "H":
            return machine.hostname
        if char == "m":
            return machine.machine_id
        if char == "b":
            return machine.boot_id
        raise ValueError(specifier_problems(match.group(0))[0])

    return _SPECIFIER.sub(resolve, text)


def expand_xfleet(text: str, unit: UnitName) -> str:
    """fleet's substitution in ``[X-Fleet]``: ``%n %N %p %i`` only; any other ``%`` stays as written.

    fleet replaced the four one after another over the whole value, so a replacement can complete a later
    specifier (``%%n`` in ``prod.service`` gives ``prodrod.service``); doing the same keeps its results.
    """
    for specifier, value in ("%n", unit.full), ("%N", unit.name), ("%p", unit.prefix), ("%i", unit.instance):
        text = text.replace(specifier, value)
    return text


def unescape(escaped: str) -> str:
    """systemd's unit-name unescaping: ``-`` stands for ``/``.

    systemd also decodes ``\\xNN``; fleet's name rules forbid backslashes, so no valid name carries one.
    """
    return escaped.replace("-", "/")
