"""``fleetlet verify FILE...``: check unit files offline, every problem as ``FILE:LINE: message``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fleetlet.units.check import check_path


def register(commands: Any) -> None:
    verify = commands.add_parser(
        "verify",
        help="check unit files offline",
        description="Check unit files offline: syntax, name, [X-Fleet] requirements and [Service] settings. "
        "Prints each problem as FILE:LINE: message; exits 1 if any file has an error.",
    )
    verify.add_argument("files", nargs="+", metavar="FILE", type=Path)
    verify.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    verify.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        report, checked = check_path(path)
        for diagnostic in report.in_file_order():
            print(diagnostic)
        if checked is None:
            failed += 1
        elif not args.quiet:
            print(f"{path}: ok (hash {checked.hash[:7]})")
    if len(args.files) > 1 and not args.quiet:
        print(f"{len(args.files) - failed} of {len(args.files)} unit files valid")
    return 1 if failed else 0
