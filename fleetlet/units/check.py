"""Everything fleetlet checks about a unit before accepting it, in one place.

``check_unit`` is what ``fleetlet verify`` runs offline, and what the API will run before a unit reaches the
registry: syntax, the name, ``[X-Fleet]`` requirements, the ``[Service]`` settings and the docker commands in its
Exec lines, every problem reported with its file and line, warnings beside errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleetlet.diagnostics import Diagnostic, Report
from fleetlet.errors import UnitNameError
from fleetlet.exec.quadlet import container_spec
from fleetlet.exec.verify_exec import check_docker_commands
from fleetlet.units.model import UnitFile
from fleetlet.units.names import UnitName, parse_name
from fleetlet.units.service import ServiceConfig, service_config
from fleetlet.units.syntax import MAX_UNIT_FILE_BYTES, parse_into
from fleetlet.units.xfleet import Requirements, requirements


@dataclass(frozen=True, slots=True)
class CheckedUnit:
    """A unit that passed every check, with what the checks worked out."""

    name: UnitName
    file: UnitFile
    requirements: Requirements
    service: ServiceConfig | None  # None for unit types other than .service
    warnings: tuple[Diagnostic, ...]

    @property
    def hash(self) -> str:
        return self.file.hash


def check_unit(data: str | bytes, name: str, report: Report) -> CheckedUnit | None:
    """Check unit-file text submitted as ``name``; problems go to ``report``; None when there are errors."""
    unit_name = _check_name(name, report)
    unit_file = parse_into(data, report)
    if unit_file is None:
        return None
    reqs = requirements(unit_file, unit_name, report)
    service = service_config(unit_file, report) if unit_name.unit_type == "service" else None
    if service is not None:
        container_spec(unit_file, unit_name, report)  # reports a [Container] section's problems, if it has one
        check_docker_commands(unit_file, unit_name, service, report)  # docker commands fleetlet cannot carry out
    if unit_name.unit_type != "service":
        report.warning(0, f"fleetlet runs .service units only; this .{unit_name.unit_type} unit will never start")
    if not report.ok:
        return None
    return CheckedUnit(unit_name, unit_file, reqs, service, tuple(report.warnings))


def load_unit(data: str | bytes, name: str, source: str | None = None) -> CheckedUnit:
    """Strict form of :func:`check_unit`: raise UnitFileError listing every error."""
    report = Report(source or name)
    checked = check_unit(data, name, report)
    report.raise_for_errors()
    assert checked is not None
    return checked


def check_path(path: Path) -> tuple[Report, CheckedUnit | None]:
    """Check a unit file on disk, named after its file name as ``fleetctl submit`` names it."""
    report = Report(str(path))
    try:
        with path.open("rb") as f:
            data = f.read(MAX_UNIT_FILE_BYTES + 1)  # never more: a huge file must not fill memory
    except OSError as e:
        report.error(0, f"cannot read: {e.strerror or e}")
        return report, None
    if len(data) > MAX_UNIT_FILE_BYTES:
        report.error(0, f"unit file too large: over {MAX_UNIT_FILE_BYTES} bytes")
        return report, None
    return report, check_unit(data, path.name, report)


def _check_name(name: str, report: Report) -> UnitName:
    try:
        return parse_name(name)
    except UnitNameError as e:
        report.error(0, f"invalid unit name {name!r}: {e.reason}")
    # Keep checking the contents under a stand-in name, so one run reports every problem.
    stem = name.rpartition(".")[0] or name
    return UnitName(full=name, name=stem, prefix=stem.partition("@")[0], instance="", unit_type="service")
