"""What fleetctl's list commands share: ``--fields``, ``-l/--full``, ``--no-legend``, ``--json``, and printing.

A command gives each field a function from its record to the full value (None where fleetctl printed ``-``) and
one from the value to the text of a cell; JSON carries the full values, the table the texts. ``--json`` without
``--fields`` gives every field, so a program sees all there is; with ``--fields``, those it asked for.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar

import orjson

from fleetlet.cli.tabwriter import format_table

SHORT_MACHINE: Final = 8
R = TypeVar("R")


class Field(Generic[R]):
    """One column: its value for JSON, and its text (given the value and ``--full``) for the table.

    A ``deprecated`` field (an old name of another) is printed when asked for, but is not part of every field.
    """

    def __init__(
        self,
        value: Callable[[R], object],
        text: Callable[[object, bool], str] | None = None,
        *,
        deprecated: bool = False,
    ) -> None:
        self.value = value
        self.text = text or plain
        self.deprecated = deprecated


def plain(value: object, full: bool) -> str:
    return "-" if value is None or value == "" else str(value)


def machine_id_legend(machine_id: str, full: bool) -> str:
    """fleetctl's machine: the whole ID with ``--full``, else its first 8 characters and an ellipsis."""
    return machine_id if full else f"{machine_id[:SHORT_MACHINE]}..."


def machine_legend(machine_id: str, ip: str, full: bool = False) -> str:
    """fleetctl's machine with its address, ``1a2b3c4d.../10.0.0.5``; the ID alone when the IP is not known.

    ``list-units``, ``list-unit-files`` and the lines of the blocking commands all show a machine this way.
    """
    legend = machine_id_legend(machine_id, full)
    return f"{legend}/{ip}" if ip else legend


def add_options(parser: argparse.ArgumentParser, default: str, fields: Mapping[str, Field[Any]]) -> None:
    parser.add_argument("-l", "--full", action="store_true", help="do not ellipsize fields on output")
    parser.add_argument("--no-legend", action="store_true", help="do not print a legend (column headers)")
    parser.add_argument(
        "--fields",
        help=f"comma-separated columns to print, of {','.join(sorted(fields))} (default: {default}; "
        "with --json, every field)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON array of objects, one a row, with every field (or those of --fields) in full",
    )
    parser.set_defaults(default_fields=default)


def parse_fields(args: argparse.Namespace, fields: Mapping[str, Field[Any]]) -> list[str] | None:
    """The columns asked for; None after fleetctl's message for a bad ``--fields``.

    Without ``--fields``: the command's default columns for a table, every field for ``--json`` (the defaults
    first, in their order, then the others by name).
    """
    spec: str | None = args.fields
    if spec is None:
        default: list[str] = args.default_fields.split(",")
        if not args.json:
            return default
        return default + sorted(name for name, f in fields.items() if name not in default and not f.deprecated)
    if not spec:
        print("Must define output format", file=sys.stderr)
        return None
    names = spec.split(",")
    for name in names:
        if name not in fields:
            print(f"Invalid key in output format: {orjson.dumps(name).decode()}", file=sys.stderr)
            return None
    return names


def print_rows(
    args: argparse.Namespace, records: Sequence[R], names: Sequence[str], fields: Mapping[str, Field[R]]
) -> None:
    chosen = [(name, fields[name]) for name in names]
    if args.json:
        # One document on one line: what `jq`, `json.loads` of a line, and log collectors all take.
        values = [{name: field.value(record) for name, field in chosen} for record in records]
        sys.stdout.write(orjson.dumps(values).decode() + "\n")
        return
    full = args.full
    table = [[field.text(field.value(record), full) for _, field in chosen] for record in records]
    if not args.no_legend:
        table.insert(0, [name.upper() for name in names])
    sys.stdout.write(format_table(table))
