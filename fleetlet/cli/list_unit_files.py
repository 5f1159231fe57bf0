"""``fleetlet list-unit-files``: every unit in the cluster, fleetctl's columns, or JSON for programs."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Final

from fleetlet.cli import endpoint
from fleetlet.cli.columns import Field, add_options, machine_id_legend, parse_fields, print_rows
from fleetlet.cli.endpoint import run_with_client
from fleetlet.client import Client, Unit
from fleetlet.diagnostics import Report
from fleetlet.units.names import parse_name
from fleetlet.units.xfleet import requirements

DEFAULT_FIELDS: Final = "unit,hash,dstate,state,target"
SHORT_HASH: Final = 7


@dataclass(frozen=True, slots=True)
class _Row:
    unit: Unit
    is_global: bool


def _target(row: _Row) -> object:
    return "global" if row.is_global else row.unit.machine_id


def _target_text(value: object, full: bool) -> str:
    if value is None or value == "":
        return "-"
    return str(value) if value == "global" else machine_id_legend(str(value), full)


def _description(row: _Row) -> object:
    entry = row.unit.unit_file.last("Unit", "Description")
    return entry.value if entry is not None and entry.value else None


def _hash_text(value: object, full: bool) -> str:
    return "-" if not value else str(value) if full else str(value)[:SHORT_HASH]


def _bool_text(value: object, full: bool) -> str:
    return "true" if value else "false"


FIELDS: Final[dict[str, Field[_Row]]] = {
    "desc": Field(_description),
    "dstate": Field(lambda row: row.unit.desired_state),
    "global": Field(lambda row: row.is_global, _bool_text),
    "hash": Field(lambda row: row.unit.hash, _hash_text),
    "state": Field(lambda row: None if row.is_global else row.unit.current_state),
    "target": Field(_target, _target_text),
    "tmachine": Field(_target, _target_text),  # fleetctl's old name for target
    "unit": Field(lambda row: row.unit.name),
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "list-unit-files",
        help="list the units in the cluster",
        description="List every unit in the cluster, whether or not it is scheduled to a machine. "
        "TARGET is the machine's ID (without its IP address for now).",
    )
    add_options(parser, DEFAULT_FIELDS, FIELDS)
    endpoint.add_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = parse_fields(args.fields, FIELDS)
    if names is None:
        return 1
    if "tmachine" in names:
        print('WARNING: The "tmachine" field is deprecated. Use "target" instead', file=sys.stderr)

    async def list_units(fleet: Client) -> int:
        rows = [_Row(unit, _is_global(unit)) for unit in await fleet.units()]
        print_rows(args, rows, names, FIELDS)
        return 0

    return run_with_client(args, list_units)


def _is_global(unit: Unit) -> bool:
    return requirements(unit.unit_file, parse_name(unit.name), Report(unit.name)).is_global
