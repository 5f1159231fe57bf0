"""``fleetlet`` / ``fleetctl``: the command line.

Each subcommand lives in its own module, which registers its parser and returns an exit status. Errors the user
can fix are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fleetlet.cli import (
    agent,
    endpoint,
    events,
    explain,
    journal,
    list_machines,
    list_unit_files,
    list_units,
    run_unit,
    status,
    units,
    verify,
    version,
)


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
    parser.add_argument("--version", action="version", version=version.line())
    endpoint.add_global_options(parser)  # fleetctl took them before the command: `fleetctl --endpoint URL start`
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    verify.register(commands)
    agent.register(commands)
    run_unit.register(commands)
    units.register(commands)
    list_units.register(commands)
    list_unit_files.register(commands)
    list_machines.register(commands)
    status.register(commands)
    journal.register(commands)
    events.register(commands)
    explain.register(commands)
    version.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
