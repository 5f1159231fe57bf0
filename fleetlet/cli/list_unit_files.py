"""``fleetlet list-unit-files``: every unit in the cluster, fleetctl's columns, or JSON for programs.

TARGET is where a unit is scheduled, shown as fleetctl showed it (``1a2b3c4d.../10.0.0.5``), ``global`` for a
global unit, ``-`` for none; JSON has the machine's full ID.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Final

from fleetlet.cli import endpoint
from fleetlet.cli.columns import Field, add_options, machine_legend, parse_fields, print_rows
from fleetlet.cli.endpoint import run_with_client
from fleetlet.client import Client, Unit

DEFAULT_FIELDS: Final = "unit,hash,dstate,state,target"
SHORT_HASH: Final = 7


@dataclass(frozen=True, slots=True)
class _Row:
    unit: Unit
    is_global: bool


def _target(row: _Row) -> object:
    return "global" if row.is_global else row.unit.machine_id


def _description(row: _Row) -> object:
    entry = row.unit.unit_file.last("Unit", "Description")
    return entry.value if entry is not None and entry.value else None


def _hash_text(value: object, full: bool) -> str:
    return "-" if not value else str(value) if full else str(value)[:SHORT_HASH]


def _bool_text(value: object, full: bool) -> str:
    return "true" if value else "false"


def fields(ips: dict[str, str]) -> dict[str, Field[_Row]]:
    """The columns; ``ips`` maps a machine's ID to its IP, for TARGET."""

    def target_text(value: object, full: bool) -> str:
        if value is None or value == "":
            return "-"
        return str(value) if value == "global" else machine_legend(str(value), ips.get(str(value), ""), full)

    return {
        "desc": Field(_description),
        "dstate": Field(lambda row: row.unit.desired_state),
        "global": Field(lambda row: row.is_global, _bool_text),
        "hash": Field(lambda row: row.unit.hash, _hash_text),
        "state": Field(lambda row: None if row.is_global else row.unit.current_state),
        "target": Field(_target, target_text),
        "tmachine": Field(_target, target_text, deprecated=True),  # fleetctl's old name for target
        "unit": Field(lambda row: row.unit.name),
    }


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "list-unit-files",
        help="list the units in the cluster",
        description="List every unit in the cluster, whether or not it is scheduled to a machine.",
    )
    add_options(parser, DEFAULT_FIELDS, fields({}))
    endpoint.add_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = parse_fields(args, fields({}))
    if names is None:
        return 1
    if "tmachine" in names:
        print('WARNING: The "tmachine" field is deprecated. Use "target" instead', file=sys.stderr)

    async def list_units(fleet: Client) -> int:
        rows = [_Row(unit, unit.is_global) for unit in await fleet.units()]
        scheduled = any(row.unit.machine_id for row in rows)
        wants_ips = scheduled and not args.json and not {"target", "tmachine"}.isdisjoint(names)
        ips = {m.id: m.primary_ip for m in await fleet.machines()} if wants_ips else {}
        print_rows(args, rows, names, fields(ips))
        return 0

    return run_with_client(args, list_units)
