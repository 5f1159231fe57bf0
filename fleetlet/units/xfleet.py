"""The ``[X-Fleet]`` section: where a unit may run, with fleet's semantics.

fleet read each value after replacing ``%n %N %p %i`` (nothing else), split a value that starts and ends with
``"`` into its quoted items, and took the keys below. Where fleet silently ignored a mistake (a malformed
``MachineMetadata`` entry, a broken glob, an unknown boolean, requirements that can never all hold), fleetlet
reports an error at the line: such a unit would sit unscheduled, or run where it must not, without a word.

=================================  ====================================================================
``MachineID``                      run only on this machine: 32 hex digits, or the first 8 of them
``MachineOf``                      run on the machine that runs each of these units
``MachineMetadata``                run only on machines whose metadata has ``key=value``; all keys must
                                   match, any of the values given for one key will do
``Conflicts``                      never run beside a unit whose name matches one of these globs
``Replaces``                       run in place of units matching these globs, which move elsewhere
``Global``                         run on every machine (that the other requirements allow)
=================================  ====================================================================

``X-ConditionMachineID``, ``X-ConditionMachineOf``, ``X-ConditionMachineMetadata`` and ``X-Conflicts`` are old
spellings, still honoured; ``X-ConditionMachineBootID`` is honoured as fleet did, as a machine ID.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from fleetlet.diagnostics import Report
from fleetlet.errors import UnitNameError
from fleetlet.units.globs import compile_glob, glob_matches
from fleetlet.units.model import UnitFile
from fleetlet.units.names import UnitName, parse_name
from fleetlet.units.specifiers import XFLEET_SPECIFIERS, expand_xfleet

SECTION = "X-Fleet"

MACHINE_ID = "MachineID"
MACHINE_OF = "MachineOf"
MACHINE_METADATA = "MachineMetadata"
CONFLICTS = "Conflicts"
REPLACES = "Replaces"
GLOBAL = "Global"
BOOT_ID = "X-ConditionMachineBootID"

# Old spelling -> the key it stands for. fleet honoured them all.
DEPRECATED = MappingProxyType(
    {
        "X-ConditionMachineID": MACHINE_ID,
        BOOT_ID: MACHINE_ID,
        "X-ConditionMachineOf": MACHINE_OF,
        "X-ConditionMachineMetadata": MACHINE_METADATA,
        "X-Conflicts": CONFLICTS,
    }
)
KNOWN_KEYS = frozenset({MACHINE_ID, MACHINE_OF, MACHINE_METADATA, CONFLICTS, REPLACES, GLOBAL, *DEPRECATED})

_TRUE = frozenset({"true", "yes", "1", "on", "t"})
_FALSE = frozenset({"false", "no", "0", "off", "f"})
_MACHINE_ID = re.compile(r"[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}")
SHORT_ID_LENGTH = 8
_SPECIFIER = re.compile(r"%(.)", re.DOTALL)
_QUOTED_ITEM = re.compile(r'(?:[^" \t]|"[^"]*"?)+')  # runs of non-blanks, blanks allowed inside quotes


def _no_metadata() -> Mapping[str, frozenset[str]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Requirements:
    """Where a unit may be scheduled. A unit without ``[X-Fleet]`` has none of these, and may run anywhere.

    ``machine_metadata`` is read-only and takes no part in the hash (equality still compares it), so
    requirements can be dict keys. Globs are validated on construction.
    """

    machine_id: str | None = None
    machine_of: tuple[str, ...] = ()
    machine_metadata: Mapping[str, frozenset[str]] = field(default_factory=_no_metadata, hash=False)
    conflicts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    is_global: bool = False

    def __post_init__(self) -> None:
        frozen = {key: frozenset(values) for key, values in self.machine_metadata.items()}
        object.__setattr__(self, "machine_metadata", MappingProxyType(frozen))
        for pattern in (*self.conflicts, *self.replaces):
            compile_glob(pattern)

    def conflicts_with(self, other_name: str) -> bool:
        """Whether a unit named ``other_name`` may not share a machine with this one.

        Only this unit's globs decide. fleet also checked the other way round (the other unit's globs against
        this name) and never counted a unit as conflicting with itself; both are the scheduler's to do.
        """
        return any(glob_matches(pattern, other_name) for pattern in self.conflicts)

    def replaces_unit(self, other_name: str) -> bool:
        """Whether this unit takes the place of a unit named ``other_name``."""
        return any(glob_matches(pattern, other_name) for pattern in self.replaces)

    def machine_id_matches(self, machine_id: str) -> bool:
        """Whether a machine with this ID may run the unit (True when no machine is required).

        A short ID matches the first 8 characters of the machine's. Case is ignored: IDs are hex numbers.
        """
        if self.machine_id is None:
            return True
        wanted, actual = self.machine_id.lower(), machine_id.lower()
        return wanted == actual or (len(wanted) == SHORT_ID_LENGTH and wanted == actual[:SHORT_ID_LENGTH])

    def metadata_matches(self, metadata: Mapping[str, str | Set[str]]) -> bool:
        """Whether a machine's metadata has every required key, each with one of the values allowed for it."""
        for key, allowed in self.machine_metadata.items():
            have = metadata.get(key)
            if have is None:
                return False
            if isinstance(have, str):
                if have not in allowed:
                    return False
            elif allowed.isdisjoint(have):
                return False
        return True


class _Item(NamedTuple):
    """One value of one requirement, after substitution, with the key as written and the line."""

    key: str
    value: str
    line: int


def requirements(unit: UnitFile, name: UnitName, report: Report) -> Requirements:
    """Read ``[X-Fleet]`` of ``unit`` named ``name``, adding every problem to ``report``.

    Values with an error are left out of the result, so its helpers never fail; a report with errors means
    the unit must be refused anyway.
    """
    by_key = _read_section(unit, name, report)

    def items(*keys: str) -> list[_Item]:
        return [item for key in keys for item in by_key.get(key, [])]

    machine_id = _machine_id(items(MACHINE_ID, "X-ConditionMachineID", BOOT_ID), report)
    peers = _peers(items("X-ConditionMachineOf", MACHINE_OF), report)
    metadata = _metadata(items("X-ConditionMachineMetadata", MACHINE_METADATA), report)
    conflicts = _globs(items("X-Conflicts", CONFLICTS), report)
    replaces = _globs(items(REPLACES), report)
    global_item = _global(items(GLOBAL), report)

    _check_combinations(
        {
            MACHINE_ID: machine_id,
            MACHINE_OF: _first(peers),
            CONFLICTS: _first(conflicts),
            REPLACES: _first(replaces),
            GLOBAL: global_item,
        },
        report,
    )
    _check_peers(peers, conflicts + replaces, report)
    return Requirements(
        machine_id=machine_id.value if machine_id else None,
        machine_of=tuple(item.value for item in peers),
        machine_metadata=metadata,
        conflicts=tuple(item.value for item in conflicts),
        replaces=tuple(item.value for item in replaces),
        is_global=global_item is not None,
    )


def _read_section(unit: UnitFile, name: UnitName, report: Report) -> dict[str, list[_Item]]:
    """Every [X-Fleet] value split into items and substituted, by key; unknown and old keys reported."""
    by_key: dict[str, list[_Item]] = {}
    lines = unit.lines or (0,) * len(unit.options)
    for option, line in zip(unit.options, lines, strict=True):
        if option.section != SECTION:
            continue
        key, value = option.name, option.value
        if key not in KNOWN_KEYS:
            report.error(line, f"unrecognized requirement in [X-Fleet]: {key!r}{_did_you_mean(key)}")
            continue
        if key == BOOT_ID:
            report.warning(
                line,
                f"{key}= is deprecated; fleet compared its value with machine IDs, not boot IDs, and so does "
                f"fleetlet: write {MACHINE_ID}= instead",
            )
        elif key in DEPRECATED:
            report.warning(line, f"{key}= is deprecated; write {DEPRECATED[key]}= instead")
        _warn_literal_specifiers(key, value, line, report)
        values = split_values(value)
        if len(values) == 1 and '"' in values[0]:
            report.warning(
                line,
                f"{key}=: the '\"' characters in {value!r} are kept as part of the value "
                "(only a value that starts and ends with '\"' is a list of quoted items)",
            )
        by_key.setdefault(key, []).extend(_Item(key, expand_xfleet(v, name), line) for v in values)
    return by_key


def split_values(value: str) -> list[str]:
    """fleet's reading of one ``[X-Fleet]`` value: ``"a=b" "c=d"`` is two items, anything else is one.

    Quotes are dropped wherever they fall in a quoted list, and empty items are dropped, as fleet did.
    """
    if not (value.startswith('"') and value.endswith('"')):
        return [value]
    found = (match.group(0).replace('"', "") for match in _QUOTED_ITEM.finditer(value))
    return [item for item in found if item]


def _warn_literal_specifiers(key: str, value: str, line: int, report: Report) -> None:
    found = (m for m in _SPECIFIER.finditer(value) if m.group(1) not in XFLEET_SPECIFIERS)
    unknown = dict.fromkeys(m.group(0) for m in found)
    if unknown:
        written = " ".join(unknown)
        report.warning(
            line,
            f"{key}=: {written} is left as written: fleet and fleetlet replace only %n %N %p %i in [X-Fleet]",
        )


def _names(items: list[_Item]) -> list[_Item]:
    """Split on blanks, which no unit name holds: ``a* b*`` is two globs (fleet kept one matching nothing)."""
    return [_Item(item.key, word, item.line) for item in items for word in item.value.split()]


def _machine_id(items: list[_Item], report: Report) -> _Item | None:
    """The first valid value, modern spelling first, as fleet took it; later values are reported as unused."""
    chosen: _Item | None = None
    for item in items:
        if _MACHINE_ID.fullmatch(item.value) is None:
            report.error(
                item.line,
                f"{item.key}=: {item.value!r} is not a machine ID (expected 32 hex digits, or the first 8 of them)",
            )
        elif chosen is None:
            chosen = item
        elif item.value != chosen.value:
            report.warning(
                item.line,
                f"{item.key}=: {item.value!r} is ignored: the unit is already bound to machine "
                f"{chosen.value!r} (line {chosen.line})",
            )
    return chosen


def _peers(items: list[_Item], report: Report) -> list[_Item]:
    peers = []
    for item in _names(items):
        try:
            parse_name(item.value)
        except UnitNameError as e:
            report.error(item.line, f"{item.key}=: invalid unit name {item.value!r}: {e.reason}")
        else:
            peers.append(item)
    return peers


def _globs(items: list[_Item], report: Report) -> list[_Item]:
    globs = []
    for item in _names(items):
        try:
            compile_glob(item.value)
        except ValueError as e:
            report.error(item.line, f"{item.key}=: {e}")
        else:
            globs.append(item)
    return globs


def _metadata(items: list[_Item], report: Report) -> dict[str, frozenset[str]]:
    merged: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.value.partition("=")
        if not sep or not key or not value or "=" in value:
            report.error(item.line, f"{item.key}=: malformed entry {item.value!r} (expected key=value)")
            continue
        merged.setdefault(key, set()).add(value)
    return {key: frozenset(values) for key, values in merged.items()}


def _global(items: list[_Item], report: Report) -> _Item | None:
    """The item that makes the unit global, if the last valid value is true (fleet: the last value wins)."""
    last: tuple[bool, _Item] | None = None
    for item in items:
        word = item.value.lower()
        if word in _TRUE or word in _FALSE:
            last = (word in _TRUE, item)
        else:
            report.error(
                item.line,
                f"{item.key}=: {item.value!r} is not a boolean (expected true, yes, 1, on, t or false, no, 0, off, f)",
            )
    return last[1] if last is not None and last[0] else None


# Pairs of requirements that can never hold together, and why.
_EXCLUSIVE = (
    (MACHINE_ID, MACHINE_OF, "a unit bound to one machine cannot follow its peers"),
    (MACHINE_ID, CONFLICTS, "a unit bound to one machine cannot move away from a conflict"),
    (MACHINE_ID, GLOBAL, "a global unit runs on every machine, not on one"),
    (MACHINE_ID, REPLACES, "a unit bound to one machine cannot move to replace another unit"),
    (GLOBAL, MACHINE_OF, "a global unit runs on every machine, not beside its peers"),
    (GLOBAL, REPLACES, "a global unit runs on every machine and cannot replace anything"),
    (CONFLICTS, REPLACES, "a unit cannot both avoid and replace other units"),
)


def _check_combinations(present: dict[str, _Item | None], report: Report) -> None:
    for first, second, why in _EXCLUSIVE:
        a, b = present[first], present[second]
        if a is None or b is None:
            continue
        earlier, later = sorted((a, b), key=lambda item: item.line)
        report.error(later.line, f"{_shown(later)} cannot be combined with {_shown(earlier)}: {why}")


def _first(items: list[_Item]) -> _Item | None:
    """The item written first, whatever its spelling: where a requirement starts to apply."""
    return min(items, key=lambda item: item.line, default=None)


def _shown(item: _Item) -> str:
    return f"{item.key}={item.value}" if item.key == GLOBAL else f"{item.key}="


def _check_peers(peers: list[_Item], globs: list[_Item], report: Report) -> None:
    """A peer that the unit must avoid or replace can never be beside it."""
    for peer in peers:
        for glob in globs:
            if glob_matches(glob.value, peer.value):
                report.error(
                    max(peer.line, glob.line),
                    f"unresolvable requirements: peer {peer.value!r} matches {glob.key}={glob.value}",
                )


def _did_you_mean(key: str) -> str:
    for known in sorted(KNOWN_KEYS):
        if known.lower() == key.lower():
            return f" (did you mean {known!r}?)"
    return ""
