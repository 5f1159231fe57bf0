"""Unit names as fleet validates them, and what a name says about templates and instances.

``foo@.service`` is a template; ``foo@1.service`` is an instance of it, whose unit file is the template's when no
file of its own is given. Only instances run: a template is a pattern, not a unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleetlet.errors import UnitNameError

MAX_NAME_LENGTH = 256
UNIT_TYPES = frozenset({"service", "socket", "device", "mount", "automount", "timer", "path"})
DEFAULT_SUFFIX = ".service"
_BODY = re.compile(r"[A-Za-z0-9:_.@-]*")


@dataclass(frozen=True, slots=True)
class UnitName:
    """A valid unit name, taken apart: ``foo@bar.service`` → name ``foo@bar``, prefix ``foo``, instance ``bar``."""

    full: str
    name: str  # without the type suffix
    prefix: str  # before the first @ (the whole name when there is none)
    instance: str  # after the first @; empty for a template or a plain unit
    unit_type: str  # "service", "socket", ...

    @property
    def is_template(self) -> bool:
        return "@" in self.name and not self.instance

    @property
    def is_instance(self) -> bool:
        return bool(self.instance)

    @property
    def template(self) -> str | None:
        """The template an instance or template belongs to (``foo@.service``); None for plain units."""
        if "@" not in self.name:
            return None
        return f"{self.prefix}@.{self.unit_type}"

    def __str__(self) -> str:
        return self.full


def parse_name(full: str) -> UnitName:
    """Validate ``full`` with fleet's rules and take it apart; raise UnitNameError saying what is wrong."""
    if not full:
        raise UnitNameError(full, "it is empty")
    if len(full) > MAX_NAME_LENGTH:
        raise UnitNameError(full[:40] + "...", f"it is longer than {MAX_NAME_LENGTH} characters")
    dot = full.rfind(".")
    if dot == -1:
        raise UnitNameError(full, 'it must end in a type suffix such as ".service"')
    if dot == len(full) - 1:
        raise UnitNameError(full, 'it cannot end in "."')
    name, unit_type = full[:dot], full[dot + 1 :]
    if unit_type not in UNIT_TYPES:
        known = ", ".join(sorted(UNIT_TYPES))
        raise UnitNameError(full, f"unknown unit type {unit_type!r} (known: {known})")
    if not name:
        raise UnitNameError(full, "nothing comes before the type suffix")
    if _BODY.fullmatch(name) is None:
        char = next(c for c in name if not _BODY.fullmatch(c))
        raise UnitNameError(full, f"invalid character {char!r} (allowed: A-Z a-z 0-9 : _ . @ -)")
    if name.startswith("@"):
        raise UnitNameError(full, 'it cannot start with "@"')
    prefix, _, instance = name.partition("@")
    return UnitName(full=full, name=name, prefix=prefix, instance=instance, unit_type=unit_type)


def name_from_argument(argument: str) -> UnitName:
    """A name typed on the command line: a path's base name, with ``.service`` added when no known type ends it."""
    base = argument.rstrip("/").rsplit("/", 1)[-1]
    if not has_known_suffix(base):
        base += DEFAULT_SUFFIX
    return parse_name(base)


def has_known_suffix(name: str) -> bool:
    return name.rpartition(".")[2] in UNIT_TYPES and "." in name


def instance_of(template: UnitName, instance: str) -> UnitName:
    """The instance ``instance`` of a template unit."""
    if not template.is_template:
        raise UnitNameError(template.full, "it is not a template unit (foo@.service)")
    if not instance:
        raise UnitNameError(template.full, "an instance needs a non-empty instance name")
    return parse_name(f"{template.prefix}@{instance}.{template.unit_type}")
