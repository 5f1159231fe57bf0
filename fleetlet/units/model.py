"""A unit file as fleet models it: an ordered list of ``(section, name, value)`` options.

The options are the unit's identity. Its normalized text (what ``fleetctl cat`` prints) groups options by section,
sections in order of first appearance and options in file order, and its hash is the SHA1 of that text, exactly as
fleet computes it. Comments, blank lines, whitespace around ``=`` and line continuations do not survive parsing, so
they never change the hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class UnitOption(NamedTuple):
    section: str
    name: str
    value: str


class Entry(NamedTuple):
    """One assignment of a setting, with the line it came from (0 when the unit was not parsed from a file)."""

    value: str
    line: int


@dataclass(frozen=True, slots=True)
class UnitFile:
    """The parsed contents of a unit file.

    Options are kept grouped by section (sections in order of first appearance, options in file order), as
    systemd merges a section that appears twice; build with :meth:`from_options` to get that order.
    ``lines[i]`` is the line where ``options[i]`` started; it and ``source`` help error messages and take no part
    in equality, serialization or the hash.
    """

    options: tuple[UnitOption, ...]
    lines: tuple[int, ...] = field(default=(), compare=False, repr=False)
    source: str = field(default="<unit>", compare=False)

    @classmethod
    def from_options(
        cls,
        options: Iterable[tuple[str, str, str]],
        lines: Sequence[int] | None = None,
        source: str = "<unit>",
    ) -> UnitFile:
        """Build from options in any order; an interleaved section is merged into its first appearance."""
        opts = [UnitOption(*o) for o in options]
        numbers = list(lines) if lines is not None else [0] * len(opts)
        if len(numbers) != len(opts):
            raise ValueError("options and lines differ in length")
        rank = {section: i for i, section in enumerate(dict.fromkeys(o.section for o in opts))}
        order = sorted(range(len(opts)), key=lambda i: rank[opts[i].section])  # stable: file order kept within
        return cls(tuple(opts[i] for i in order), tuple(numbers[i] for i in order), source)

    def serialize(self) -> str:
        """The normalized text: ``[Section]`` headers, ``Name=Value`` lines, one blank line between sections."""
        by_section: dict[str, list[str]] = {}
        for section, name, value in self.options:
            lines = by_section.get(section)
            if lines is None:
                lines = by_section[section] = [f"[{section}]\n"]
            lines.append(f"{name}={value}\n")
        return "\n".join("".join(lines) for lines in by_section.values())

    @property
    def hash(self) -> str:
        """SHA1 of the normalized text, as 40 hex digits (fleet shows the first 7)."""
        return hashlib.sha1(self.serialize().encode("utf-8"), usedforsecurity=False).hexdigest()

    def sections(self) -> list[str]:
        """Section names in order of first appearance."""
        return list(dict.fromkeys(o.section for o in self.options))

    def entries(self, section: str, name: str) -> list[Entry]:
        """Every assignment of ``name`` in ``section``, in file order, empty assignments included."""
        lines = self.lines or (0,) * len(self.options)
        return [
            Entry(o.value, line)
            for o, line in zip(self.options, lines, strict=True)
            if o.section == section and o.name == name
        ]

    def last(self, section: str, name: str) -> Entry | None:
        """The assignment that counts for a single-valued setting: the last one (systemd's rule)."""
        found = self.entries(section, name)
        return found[-1] if found else None

    def list_entries(self, section: str, name: str) -> list[Entry]:
        """The assignments that count for a list setting: an empty assignment resets the list (systemd's rule)."""
        found = self.entries(section, name)
        for i in range(len(found) - 1, -1, -1):
            if found[i].value == "":
                return found[i + 1 :]
        return found

    def line_of(self, section: str) -> int:
        """The line of the first option in ``section`` (0 if none), for errors about a section as a whole."""
        for o, line in zip(self.options, self.lines or (0,) * len(self.options), strict=True):
            if o.section == section:
                return line
        return 0

    def __str__(self) -> str:
        return self.serialize()
