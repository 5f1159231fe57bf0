"""The checks a unit submitted through the API passes before it reaches the registry: pure, testable alone.

A unit arrives as a list of options; it is checked as the text it will be stored as (its normalized
serialization), by the same :func:`~fleetlet.units.check.check_unit` that ``fleetlet verify`` runs, so the
``file:line`` of a problem points into what ``fleetctl cat`` will show.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from fleetlet.api.errors import APIError
from fleetlet.diagnostics import Report
from fleetlet.errors import UnitNameError
from fleetlet.registry.model import DESIRED_STATES, DesiredState
from fleetlet.units.check import check_unit
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.names import parse_name


def check_body_name(path_name: str, body_name: str) -> str:
    """The unit's name: the path's, which a non-empty body name must equal (fleet's messages)."""
    if body_name and body_name != path_name:
        raise APIError(
            400, f"name in URL {_quote(path_name)} differs from unit name in request body {_quote(body_name)}"
        )
    try:
        parse_name(path_name)
    except UnitNameError as e:
        raise APIError(400, str(e)) from e
    return path_name


def check_desired(state: str) -> DesiredState:
    for known in DESIRED_STATES:
        if state == known:
            return known
    raise APIError(400, f"invalid desiredState {_quote(state)}: must be one of {', '.join(DESIRED_STATES)}")


def check_runnable(name: str, desired: DesiredState | None) -> None:
    """A template may be submitted (its instances are made from it) but not loaded or started: as in systemd, only
    its instances run. 400 naming an instance to start instead."""
    if desired in ("loaded", "launched") and parse_name(name).is_template:
        example = name.replace("@.", "@1.", 1)
        raise APIError(400, f"{name} is a template: only its instances run (start one, such as {example})")


def check_options(name: str, options: Sequence[UnitOption]) -> UnitFile:
    """The unit file the options make, if it passes every check; APIError 400 listing every error otherwise."""
    unit = UnitFile.from_options(options, source=name)
    report = Report(name)
    checked = check_unit(unit.serialize(), name, report)
    if checked is None:
        raise APIError(400, "\n".join(str(d) for d in report.in_file_order() if d.severity == "error"))
    if checked.file.options != unit.options:
        # A newline, a trailing backslash or stray whitespace in an option would store a different unit than the
        # one submitted; refuse it rather than store a surprise.
        for sent, kept in zip(unit.options, (*checked.file.options, None), strict=False):
            if sent != kept:
                raise APIError(
                    400, f"{name}: option {sent.section}.{sent.name}={sent.value!r} cannot be stored as sent"
                )
    return checked.file


def _quote(value: str) -> str:
    """Go's %q for the strings fleet put in its messages (close enough: JSON string syntax)."""
    return orjson.dumps(value).decode()
