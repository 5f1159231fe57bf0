"""``fleetlet list-units``: the state of every unit loaded on a machine, as fleetctl listed it.

One row per unit state the machines report; a unit that is not loaded anywhere has none (``list-unit-files``
shows it). MACHINE is ``1a2b3c4d.../IP``, or the shortened ID alone when the machine has no known IP; with
``--json``, the full ID.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from fleetlet.cli import endpoint
from fleetlet.cli.columns import Field, add_options, machine_legend, parse_fields, plain, print_rows
from fleetlet.cli.endpoint import run_with_client
from fleetlet.client import Client, UnitState

DEFAULT_FIELDS: Final = "unit,machine,active,sub"
SHORT_HASH: Final = 7


def _hash_text(value: object, full: bool) -> str:
    return plain(value, full) if full or not value else str(value)[:SHORT_HASH]


def _or_none(value: str) -> str | None:
    return value or None


def fields(ips: dict[str, str]) -> dict[str, Field[UnitState]]:
    """The columns; ``ips`` maps a machine's ID to its IP, for MACHINE."""

    def machine_text(value: object, full: bool) -> str:
        if not value:
            return "-"
        return machine_legend(str(value), ips.get(str(value), ""), full)

    return {
        "active": Field(lambda s: _or_none(s.active_state)),
        "hash": Field(lambda s: _or_none(s.hash), _hash_text),
        "load": Field(lambda s: _or_none(s.load_state)),
        "machine": Field(lambda s: _or_none(s.machine_id), machine_text),
        "sub": Field(lambda s: _or_none(s.sub_state)),
        "unit": Field(lambda s: _or_none(s.name)),
    }


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "list-units",
        help="list the current state of units in the cluster",
        description="List the state of every unit in the cluster that is loaded onto a machine.",
    )
    add_options(parser, DEFAULT_FIELDS, fields({}))
    endpoint.add_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = parse_fields(args, fields({}))
    if names is None:
        return 1

    async def list_units(fleet: Client) -> int:
        states = await fleet.states()
        wants_ips = "machine" in names and not args.json  # JSON has the full ID, without the IP
        ips = {m.id: m.primary_ip for m in await fleet.machines()} if wants_ips else {}
        print_rows(args, states, names, fields(ips))
        return 0

    return run_with_client(args, list_units)
