"""What a unit actor needs from the machine, as ports: run commands, start and adopt its main process.

:class:`~fleetlet.exec.executor.Executor` is the real implementation: it sends ``docker ...`` commands to the
Engine API and runs everything else as a subprocess. Tests drive the same Executor over the in-memory
FakeRuntime and FakeProcessRunner, so the actor is always tested with the code that runs in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from anyio.abc import TaskGroup

from fleetlet.exec.status import ExitStatus


@dataclass(frozen=True, slots=True)
class PreparedCommand:
    """An Exec command ready to run: specifiers and ``$VAR`` resolved, environment assembled."""

    argv: tuple[str, ...]  # argv[0] is the program
    env: Mapping[str, str]
    ignore_failure: bool = False
    argv0: str | None = None  # what the process sees as argv[0], when the ``@`` prefix gave one
    raw: str = ""


class MainProcess(Protocol):
    """The service's main process: a container (``docker run``) or a subprocess."""

    @property
    def description(self) -> str:
        """``container 3f2a...`` or ``process 1234``, for the journal."""

    @property
    def container_id(self) -> str | None: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def oom_killed(self) -> bool:
        """Once it ended: whether the kernel's OOM killer ended it (systemd's result ``oom-kill``)."""

    async def wait(self) -> ExitStatus:
        """Until it ends; may be called again after a cancelled call."""

    async def signal(self, signum: int) -> None:
        """Send a signal; nothing happens if it has already ended."""

    async def release(self) -> None:
        """After it ended: remove what it leaves behind (a ``--rm`` container)."""


class UnitRunner(Protocol):
    """Runs one unit's commands on this machine."""

    def attach(self, task_group: TaskGroup) -> None:
        """The actor's task group, where the runner keeps what must follow a main process (its output)."""

    async def run_control(self, command: PreparedCommand) -> ExitStatus:
        """Run a command to completion (ExecStartPre, ExecStop, ...).

        Cancelling it (a timeout, a stop request) kills and cleans up what it started.
        """

    async def start_main(
        self, command: PreparedCommand, *, forking: bool
    ) -> tuple[ExitStatus | None, MainProcess | None]:
        """Start the ExecStart command.

        Type=simple: returns ``(None, main)``, or ``(status, None)`` when the command completed at once (a docker
        command that is not a foreground ``run``). Type=forking: waits for the command, returns its status and
        the process it left running (the container of ``docker run -d``), if any.
        """

    async def start_container(self) -> tuple[ExitStatus | None, MainProcess | None]:
        """Start the container of a ``[Container]`` section: ``(None, main)``, or ``(status, None)`` on failure."""

    async def wait_for_engine(self) -> None:
        """Return once the container engine answers (at once, usually)."""

    async def adopt(self) -> MainProcess | None:
        """The unit's main container if it is already running with this unit's hash (after an agent restart)."""
