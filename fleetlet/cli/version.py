"""``fleetlet version``: the version, worded as ``fleetctl version`` worded it (``fleetlet --version`` also works)."""

from __future__ import annotations

import argparse
from typing import Any

from fleetlet import __version__


def line() -> str:
    return f"fleetlet version {__version__}"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "version", help="print the version and exit", description="Print fleetlet's version and exit."
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(line())
    return 0
