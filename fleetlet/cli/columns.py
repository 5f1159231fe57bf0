"""What fleetctl's list commands share: ``--fields``, ``-l/--full``, ``--no-legend``, ``--json``, and printing.

A command gives each field a function from its record to the full value (None where fleetctl printed ``-``) and
one from the value to the text of a cell; JSON carries the full values, the table the texts.
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
    """One column: its value for JSON, and its text (given the value and ``--full``) for the table."""

    def __init__(self, value: Callable[[R], object], text: Callable[[object, bool], str] | None = None) -> None:
        self.value = value
        self.text = text or plain


def plain(value: object, full: bool) -> str:
    return "-" if value is None or value == "" else str(value)


def machine_id_legend(machine_id: str, full: bool) -> str:
    """fleetctl's machine: the whole ID with ``--full``, else its first 8 characters and an ellipsis."""
    return machine_id if full else f"{machine_id[:SHORT_MACHINE]}..."


def add_options(parser: argparse.ArgumentParser, default: str, fields: Mapping[str, Field[Any]]) -> None:
    parser.add_argument("-l", "--full", action="store_true", help="do not ellipsize fields on output")
    parser.add_argument("--no-legend", action="store_true", help="do not print a legend (column headers)")
    parser.add_argument(
        "--fields",
        default=default,
        help=f"comma-separated columns to print, of {','.join(sorted(fields))} (default: {default})",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array of objects, values in full")


def parse_fields(spec: str, fields: Mapping[str, Field[Any]]) -> list[str] | None:
    """The columns asked for; None after fleetctl's message for a bad ``--fields``."""
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
    values = [{name: fields[name].value(record) for name in names} for record in records]
    if args.json:
        sys.stdout.write(orjson.dumps(values, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = [[fields[name].text(row[name], args.full) for name in names] for row in values]
    if not args.no_legend:
        table.insert(0, [name.upper() for name in names])
    sys.stdout.write(format_table(table))
