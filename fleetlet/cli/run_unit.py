"""``fleetlet run FILE``: run one unit in the foreground on this machine, its journal on the terminal.

The unit runs exactly as an agent will run it: the same actor, the same Docker Engine API calls, the same
journal. Ctrl-C (or SIGTERM) stops it with its ExecStop= and KillSignal=, unless ``--keep`` leaves its container
running for the next ``fleetlet run`` (or agent) to adopt.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from fleetlet.clock import SystemClock
from fleetlet.errors import UnitNameError
from fleetlet.units.check import CheckedUnit, check_path, load_unit
from fleetlet.units.names import parse_name
from fleetlet.units.specifiers import MachineFacts

# What runs the unit (the actor, the Docker client, the journal: about 50 ms to import) is imported when it runs,
# so that no other command pays for it at start.
if TYPE_CHECKING:
    from fleetlet.service.journal import JournalEntry
    from fleetlet.service.states import UnitStatus


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run one unit in the foreground on this machine",
        description="Run one unit in the foreground, as an agent would, printing its journal. "
        "Ctrl-C stops it. Exits 0 if the unit ended cleanly, 1 if it failed.",
    )
    run.add_argument("file", metavar="FILE", type=Path, help="the unit file")
    run.add_argument("--name", help="run it under this name, e.g. an instance hello_world@1.service of a template")
    run.add_argument("--docker-host", help="the Docker engine (default: $DOCKER_HOST, else the local socket)")
    run.add_argument("--state-dir", type=Path, help="where the journal is kept (default: ~/.local/state/fleetlet)")
    run.add_argument("--keep", action="store_true", help="on Ctrl-C, leave the container running to be adopted")
    run.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from fleetlet.exec.docker_runtime import docker_host

    unit = _load(args.file, args.name)
    if unit is None:
        return 1
    state_dir: Path = (
        args.state_dir or Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "fleetlet"
    )
    return anyio.run(_serve, unit, args.file, docker_host(args.docker_host), state_dir, args.keep)


def _load(path: Path, name: str | None) -> CheckedUnit | None:
    report, checked = check_path(path)
    for diagnostic in report.in_file_order():
        print(diagnostic, file=sys.stderr)
    if checked is None:
        return None
    if name is None:
        if checked.name.is_template:
            example = f"{checked.name.prefix}@1.{checked.name.unit_type}"
            print(f"fleetlet run: {checked.name} is a template; run an instance: --name {example}", file=sys.stderr)
            return None
        return checked
    try:
        wanted = parse_name(name)
    except UnitNameError as e:
        print(f"fleetlet run: {e}", file=sys.stderr)
        return None
    if wanted.is_template:
        print(f"fleetlet run: {name} is a template; only its instances run", file=sys.stderr)
        return None
    try:
        return load_unit(path.read_bytes(), wanted.full, str(path))
    except Exception as e:  # the file checked out under its own name; a different name can still break it
        print(f"fleetlet run: {e}", file=sys.stderr)
        return None


# The fleetlet.machine label of a foreground run's containers: not the machine ID, which is the agent's.
RUN_OWNER_PREFIX = "run/"


async def _serve(unit: CheckedUnit, path: Path, url: str, state_dir: Path, keep: bool) -> int:
    from fleetlet.agent.node import Node
    from fleetlet.exec.docker_runtime import DockerRuntime
    from fleetlet.exec.engine_events import EngineEvents
    from fleetlet.exec.subprocess_runner import SubprocessRunner
    from fleetlet.service.actor import Start, Stop
    from fleetlet.service.journal import FileJournal

    clock = SystemClock()
    name = unit.name.full
    machine = MachineFacts(hostname=os.uname().nodename, machine_id=_machine_id(), boot_id=_boot_id())
    journal = FileJournal(state_dir / "journal", name, clock)
    settled = _Settled()

    async with DockerRuntime(url) as runtime, anyio.create_task_group() as tg:
        tg.start_soon(lambda: journal.follow(_print_entry(name), last=0))
        events = EngineEvents(runtime, clock)  # one unit here, but the agent's wiring: deaths from the event stream
        await tg.start(events.run)
        node = Node(runtime, SubprocessRunner(), clock, machine, events, owner=RUN_OWNER_PREFIX + machine.machine_id)
        actor = node.actor(unit, journal, publish=settled.publish)
        mailbox = await tg.start(actor.run)
        start = Start()
        await mailbox.send(start)
        interrupted = await _until_signal_or(settled)
        if interrupted and keep:
            final = actor.status
            print(f"fleetlet run: leaving {name} running ({final.describe()})", file=sys.stderr)
        elif interrupted:
            stop = Stop()
            await mailbox.send(stop)
            final = await stop.reply.wait()
        else:
            final = actor.status
        await mailbox.aclose()
        tg.cancel_scope.cancel()
    print(f"fleetlet run: {name}: {final.describe()} (result: {final.result})", file=sys.stderr)
    return 0 if final.result == "success" else 1


class _Settled:
    """Notices when a unit has come to rest: dead or failed, with no automatic restart following."""

    def __init__(self) -> None:
        self.status: UnitStatus | None = None
        self.changed = anyio.Event()

    def publish(self, status: UnitStatus) -> None:
        self.status = status
        self.changed.set()
        self.changed = anyio.Event()

    async def wait(self) -> None:
        while True:
            changed = self.changed
            await changed.wait()
            await anyio.lowlevel.checkpoint()  # a failure may be followed at once by auto-restart
            if self.status is not None and self.status.sub in ("dead", "failed"):
                return


async def _until_signal_or(settled: _Settled) -> bool:
    """True when SIGINT or SIGTERM came first; False when the unit came to rest on its own."""
    interrupted = False
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()

        async def on_rest() -> None:
            await settled.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(on_signal)
        tg.start_soon(on_rest)
    return interrupted


def _print_entry(unit: str) -> Any:
    from fleetlet.service.journal import format_entry

    def show(entry: JournalEntry) -> None:
        print(format_entry(entry, unit), flush=True)

    return show


def _machine_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip()
    except OSError:
        return "0" * 32


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return ""
