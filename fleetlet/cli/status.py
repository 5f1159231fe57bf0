"""``fleetlet status UNIT...``: each unit as ``systemctl status`` shows a service, then its last journal lines.

::

    ● hello.service - Hello World
       Loaded: loaded (hash 1a2b3c4)
       Active: active (running) since Thu 2026-11-26 23:10:01 UTC; 5s ago
    Container: 4f3a2b1c0d9e
      Machine: 1a2b3c4d.../192.0.2.7

    Nov 26 23:10:01 fleetlet: Starting Hello World...

The block is a pure function of the unit's report, its journal lines and the time (:func:`format_status`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any, Final

from fleetlet.cli import endpoint
from fleetlet.cli.columns import machine_id_legend
from fleetlet.cli.endpoint import run_with_client
from fleetlet.cli.unit_args import unit_argument
from fleetlet.client import JOURNAL_LINES, APIRequestFailed, Client, UnitReport

SHORT_HASH: Final = 7
SHORT_CONTAINER: Final = 12  # as `docker ps` shows container IDs
_RUNNING_STATES: Final = frozenset({"active", "reloading"})
_MINUTE, _HOUR, _DAY = 60, 3600, 86400


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "status",
        help="show the status of units, as systemctl status does",
        description="Show each unit's state on its machine (or why it has none) and its last journal lines.",
    )
    parser.add_argument("units", nargs="+", metavar="UNIT")
    parser.add_argument(
        "-n",
        "--lines",
        type=non_negative_lines,
        default=JOURNAL_LINES,
        metavar="N",
        help=f"journal lines to show (default: {JOURNAL_LINES})",
    )
    endpoint.add_options(parser)
    parser.set_defaults(run=lambda args: run_with_client(args, lambda fleet: _status(fleet, args.units, args.lines)))


def non_negative_lines(text: str) -> int:
    """``--lines``: a whole number of lines, 0 or more (also for ``journal``)."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a non-negative number of lines: {text!r}")
    return int(text)


def does_not_exist(name: str) -> str:
    """fleetctl's words for a unit the cluster does not have."""
    return f"Unit {name} does not exist."


async def _status(fleet: Client, arguments: Sequence[str], lines: int) -> int:
    names = [unit_argument(argument, "retrieving").name for argument in arguments]
    missing = False
    shown = 0
    for name in names:
        try:
            report = await fleet.status(name)
        except APIRequestFailed as e:
            if e.status != 404:
                raise
            print(does_not_exist(name), file=sys.stderr)
            missing = True
            continue
        journal = [line async for line in fleet.journal(name, lines)] if lines > 0 else []
        if shown:
            print()
        print(format_status(report, journal, now=time.time()), end="")
        shown += 1
    return 1 if missing else 0


def format_status(report: UnitReport, journal: Sequence[str], *, now: float, tz: tzinfo | None = None) -> str:
    """The block for one unit; times in ``tz`` (None: the local zone), ``now`` for "5s ago"."""
    title = f"● {report.name} - {report.description}" if report.description else f"● {report.name}"
    fields = [("Loaded", _loaded(report)), ("Active", _active(report, now, tz)), *_process(report)]
    if report.restarts:
        fields.append(("Restarts", str(report.restarts)))
    fields.append(("Machine", where(report)))
    if report.machine_id is None and report.reasons:
        fields.append(("Not placed", "; ".join(report.reasons)))
    width = max(len(label) for label, _ in fields)
    lines = [title, *(f"{label.rjust(width)}: {value}" for label, value in fields)]
    if journal:
        lines += ["", *journal]
    return "".join(f"{line}\n" for line in lines)


def where(report: UnitReport) -> str:
    """``1a2b3c4d.../192.0.2.7`` as list-units shows a machine, or ``-`` when the unit has none."""
    if report.machine_id is None:
        return "-"
    legend = machine_id_legend(report.machine_id, full=False)
    return f"{legend}/{report.primary_ip}" if report.primary_ip else legend


def _loaded(report: UnitReport) -> str:
    load = report.load_state or "not loaded"
    return f"{load} (hash {report.hash[:SHORT_HASH]})" if report.hash else load


def _active(report: UnitReport, now: float, tz: tzinfo | None) -> str:
    """``active (running) since ...``; systemd leaves out a sub-state equal to the active state and adds the
    result of a unit that ended badly: ``failed (Result: exit-code)``."""
    active = report.active_state or "inactive"
    sub = report.sub_state or ("dead" if not report.active_state else "")
    text = f"{active} ({sub})" if sub and sub != active else active
    if report.result and report.result != "success" and active not in _RUNNING_STATES:
        text += f" (Result: {report.result})"
    if report.since is not None:
        text += f" since {timestamp(report.since, tz)}; {ago(now - report.since)}"
    return text


def _process(report: UnitReport) -> list[tuple[str, str]]:
    """The container, else the main process, with how it last ended when known."""
    ended = f" ({report.exit_status})" if report.exit_status else ""
    if report.container_id:
        return [("Container", report.container_id[:SHORT_CONTAINER] + ended)]
    if report.main_pid is not None:
        return [("Main PID", f"{report.main_pid}{ended}")]
    if report.exit_status:
        return [("Last exit", report.exit_status)]
    return []


def timestamp(seconds: float, tz: tzinfo | None = None) -> str:
    """systemd's timestamp: ``Thu 2026-11-26 23:10:01 UTC``."""
    moment = datetime.fromtimestamp(seconds, tz) if tz is not None else datetime.fromtimestamp(seconds).astimezone()
    return moment.strftime("%a %Y-%m-%d %H:%M:%S %Z")


def ago(seconds: float) -> str:
    """How long ago, in systemd's words and precision: ``5s ago``, ``3min 2s ago``, ``2h 5min ago``, ``3 days ago``.

    A time in the future (clocks of two machines disagree) reads as now.
    """
    s = max(int(seconds), 0)
    if s < _MINUTE:
        return f"{s}s ago"
    if s < 5 * _MINUTE:
        return f"{s // _MINUTE}min {s % _MINUTE}s ago"
    if s < _HOUR:
        return f"{s // _MINUTE}min ago"
    if s < 6 * _HOUR:
        return f"{s // _HOUR}h {s % _HOUR // _MINUTE}min ago"
    if s < _DAY:
        return f"{s // _HOUR}h ago"
    if s < 2 * _DAY:
        return f"1 day {(s - _DAY) // _HOUR}h ago"
    return f"{s // _DAY} days ago"
