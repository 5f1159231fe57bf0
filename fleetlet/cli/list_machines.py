"""``fleetlet list-machines``: the machines of the cluster, their IPs and metadata, as fleetctl listed them."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, Final

from fleetlet.cli import endpoint
from fleetlet.cli.columns import Field, add_options, machine_id_legend, parse_fields, print_rows
from fleetlet.cli.endpoint import run_with_client
from fleetlet.client import Client, Machine

DEFAULT_FIELDS: Final = "machine,ip,metadata"
# fleetctl printed a value that starts with a comparison as is after its key: `memory>=2048`, not `memory=>=2048`.
_OPERATORS: Final = ("<=", ">=", "!=", "==", "<", ">")


def format_metadata(metadata: Mapping[str, str]) -> str:
    """``k=v,k=v`` in key order, as fleetctl printed it."""
    return ",".join(
        f"{key}{value}" if value.startswith(_OPERATORS) else f"{key}={value}" for key, value in sorted(metadata.items())
    )


def _metadata_text(value: object, full: bool) -> str:
    return format_metadata(value) if isinstance(value, dict) and value else "-"


FIELDS: Final[dict[str, Field[Machine]]] = {
    "ip": Field(lambda m: m.primary_ip or None),
    "machine": Field(lambda m: m.id, lambda value, full: machine_id_legend(str(value), full)),
    "metadata": Field(lambda m: m.metadata, _metadata_text),
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "list-machines",
        help="enumerate the current machines in the cluster",
        description="List every active machine of the cluster.",
    )
    add_options(parser, DEFAULT_FIELDS, FIELDS)
    endpoint.add_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = parse_fields(args, FIELDS)
    if names is None:
        return 1

    async def list_machines(fleet: Client) -> int:
        print_rows(args, await fleet.machines(), names, FIELDS)
        return 0

    return run_with_client(args, list_machines)
