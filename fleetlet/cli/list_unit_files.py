"""``fleetlet list-unit-files``: every unit in the cluster, fleetctl's columns, or JSON for programs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, Final

import orjson

from fleetlet.cli import endpoint
from fleetlet.cli.endpoint import run_with_client
from fleetlet.cli.tabwriter import format_table
from fleetlet.client import Client, Unit
from fleetlet.diagnostics import Report
from fleetlet.units.names import parse_name
from fleetlet.units.xfleet import requirements

DEFAULT_FIELDS: Final = "unit,hash,dstate,state,target"
SHORT_HASH: Final = 7
SHORT_MACHINE: Final = 8

# Each field's value for JSON: the full value, None where fleetctl printed "-".
_Field = Callable[[Unit, bool], object]


def _target(unit: Unit, is_global: bool) -> object:
    return "global" if is_global else unit.machine_id


def _description(unit: Unit, is_global: bool) -> object:
    entry = unit.unit_file.last("Unit", "Description")
    return entry.value if entry is not None and entry.value else None


FIELDS: Final[dict[str, _Field]] = {
    "desc": _description,
    "dstate": lambda unit, is_global: unit.desired_state,
    "global": lambda unit, is_global: is_global,
    "hash": lambda unit, is_global: unit.hash,
    "state": lambda unit, is_global: None if is_global else unit.current_state,
    "target": _target,
    "tmachine": _target,  # fleetctl's old name for target
    "unit": lambda unit, is_global: unit.name,
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "list-unit-files",
        help="list the units in the cluster",
        description="List every unit in the cluster, whether or not it is scheduled to a machine. "
        "TARGET is the machine's ID (without its IP address for now).",
    )
    parser.add_argument("-l", "--full", action="store_true", help="do not shorten hashes and machine IDs")
    parser.add_argument("--no-legend", action="store_true", help="do not print the column headers")
    parser.add_argument(
        "--fields",
        default=DEFAULT_FIELDS,
        help=f"comma-separated columns to print, of {','.join(sorted(FIELDS))} (default: {DEFAULT_FIELDS})",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array of objects, values in full")
    endpoint.add_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fields = _fields(args.fields)
    if fields is None:
        return 1

    async def list_units(fleet: Client) -> int:
        rows = [_values(unit, fields) for unit in await fleet.units()]
        if args.json:
            sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
            return 0
        table = [[_text(field, row[field], args.full) for field in fields] for row in rows]
        if not args.no_legend:
            table.insert(0, [field.upper() for field in fields])
        sys.stdout.write(format_table(table))
        return 0

    return run_with_client(args, list_units)


def _fields(spec: str) -> list[str] | None:
    """The columns asked for, with fleetctl's messages for a bad ``--fields``."""
    if not spec:
        print("Must define output format", file=sys.stderr)
        return None
    fields = spec.split(",")
    for field in fields:
        if field not in FIELDS:
            print(f"Invalid key in output format: {orjson.dumps(field).decode()}", file=sys.stderr)
            return None
        if field == "tmachine":
            print('WARNING: The "tmachine" field is deprecated. Use "target" instead', file=sys.stderr)
    return fields


def _values(unit: Unit, fields: list[str]) -> dict[str, object]:
    is_global = requirements(unit.unit_file, parse_name(unit.name), Report(unit.name)).is_global
    return {field: FIELDS[field](unit, is_global) for field in fields}


def _text(field: str, value: object, full: bool) -> str:
    """A value as fleetctl printed it: "-" when missing, hashes and machine IDs shortened unless ``full``."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if full:
        return text
    if field == "hash":
        return text[:SHORT_HASH]
    if field in ("target", "tmachine") and text != "global":
        return f"{text[:SHORT_MACHINE]}..."
    return text
