"""Problems found in a unit file, each pinned to a file and line.

Checks never stop at the first problem: they add to a :class:`Report` so that `fleetlet verify` can list every
problem at once, and strict callers turn a report with errors into one :class:`~fleetlet.errors.UnitFileError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fleetlet.errors import UnitFileError

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem. ``line`` is 1-based; 0 means the problem concerns the whole file (or a bare name)."""

    file: str
    line: int
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.severity == "warning":
            return f"{where}: warning: {self.message}"
        return f"{where}: {self.message}"


@dataclass(slots=True)
class Report:
    """Collects diagnostics for one file while the checks run."""

    file: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, line: int, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.file, line, message, "error"))

    def warning(self, line: int, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.file, line, message, "warning"))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def in_file_order(self) -> list[Diagnostic]:
        """Every diagnostic sorted by line (stable: checks of one line keep their order)."""
        return sorted(self.diagnostics, key=lambda d: d.line)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    def raise_for_errors(self) -> None:
        """Raise one UnitFileError carrying every error, if there are any."""
        errors = [d for d in self.in_file_order() if d.severity == "error"]
        if errors:
            raise UnitFileError(errors)
