"""``fleetlet journal [--lines N] [-f|--follow] UNIT``: a unit's journal from its machine, as fleetctl printed it.

Lines come in journalctl's short format (``Nov 26 12:01:03 hello.service[stdout]: Hello World``). Following
prints each new line as it is written, until the journal ends (the unit left its machine) or Ctrl-C.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from fleetlet.cli import endpoint
from fleetlet.cli.endpoint import CommandError, run_with_client
from fleetlet.cli.status import does_not_exist, non_negative_lines
from fleetlet.cli.unit_args import unit_argument
from fleetlet.client import JOURNAL_LINES, APIRequestFailed, Client


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "journal",
        help="print the journal of a unit",
        description="Print the last lines of a unit's journal from the machine it runs on, and with --follow "
        "each new line as it comes.",
    )
    parser.add_argument("unit", metavar="UNIT")
    parser.add_argument(
        "--lines",
        type=non_negative_lines,
        default=JOURNAL_LINES,
        metavar="N",
        help=f"number of recent lines to print (default: {JOURNAL_LINES})",
    )
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they come")
    endpoint.add_options(parser)
    parser.set_defaults(
        run=lambda args: run_with_client(args, lambda fleet: _journal(fleet, args.unit, args.lines, args.follow))
    )


async def _journal(fleet: Client, argument: str, lines: int, follow: bool) -> int:
    name = unit_argument(argument, "retrieving").name
    try:
        async with aclosing(fleet.journal(name, lines, follow=follow)) as journal:
            async for line in journal:
                # Flushed one by one when following: a pipe would otherwise hold them back.
                print(line, flush=follow)
    except APIRequestFailed as e:
        if e.status == 404:
            raise CommandError(does_not_exist(name)) from None
        raise
    return 0
