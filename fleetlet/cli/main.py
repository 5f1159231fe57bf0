"""``fleetlet`` / ``fleetctl``: the command line.

Each subcommand is a function taking parsed arguments and returning an exit status. Errors the user can fix are
one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fleetlet import __version__
from fleetlet.units.check import check_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fleetlet verify ... | head` closed the pipe early
        return 0
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "fleetlet",
        description="A cluster init system for containers (fleet's model, in asyncio Python).",
    )
    parser.add_argument("--version", action="version", version=f"fleetlet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    verify = commands.add_parser(
        "verify",
        help="check unit files offline",
        description="Check unit files offline: syntax, name, [X-Fleet] requirements and [Service] settings. "
        "Prints each problem as FILE:LINE: message; exits 1 if any file has an error.",
    )
    verify.add_argument("files", nargs="+", metavar="FILE", type=Path)
    verify.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    verify.set_defaults(run=_verify)
    return parser


def _verify(args: argparse.Namespace) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
