"""The container runtime port: the Docker Engine API operations a unit needs, nothing more.

:class:`~fleetlet.exec.docker_runtime.DockerRuntime` carries them out on a real engine through aiodocker;
:class:`~fleetlet.exec.fake_runtime.FakeRuntime` beside it simulates an engine in memory for fast logic tests.
Both pass the same contract tests. Request bodies use the Engine API's own JSON shapes (``POST
/containers/create``), so what fleetlet sends can be read against Docker's documentation.

Streams (logs, pull progress, events) are delivered to a sink callback rather than returned as async iterators:
the caller's task group owns the task that runs them, and cancellation needs no generator cleanup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fleetlet.errors import FleetletError

# Labels on every container fleetlet creates: who owns it, for which version of the unit, and its role.
LABEL_UNIT = "fleetlet.unit"
LABEL_HASH = "fleetlet.hash"
LABEL_MACHINE = "fleetlet.machine"
LABEL_ROLE = "fleetlet.role"  # "main" for the unit's main container, "command" for any other
LABEL_REMOVE = "fleetlet.rm"  # "1" when the container was run with --rm: whoever sees it end removes it

Stream = Literal["stdout", "stderr"]

# How long cleanup that runs shielded from cancellation may spend on engine requests (killing, removing): a hung
# engine must not hold up a stop, a cancellation or a shutdown for ever.
CLEANUP_SECONDS = 15.0


class RuntimeFailure(FleetletError):
    """The engine refused or failed an operation. ``status`` is the HTTP status (0: no answer at all)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class EngineUnavailable(RuntimeFailure):
    """The engine did not answer (not running, restarting, socket gone)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=0)


class NoSuchContainer(RuntimeFailure):
    def __init__(self, container: str) -> None:
        super().__init__(f"No such container: {container}", status=404)
        self.container = container


class NoSuchImage(RuntimeFailure):
    def __init__(self, image: str, detail: str = "") -> None:
        super().__init__(f"No such image: {image}" + (f" ({detail})" if detail else ""), status=404)
        self.image = image


class NameConflict(RuntimeFailure):
    def __init__(self, name: str) -> None:
        super().__init__(f'Conflict. The container name "/{name}" is already in use', status=409)
        self.name = name


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What ``GET /containers/{id}/json`` says about a container, reduced to what supervision needs."""

    id: str
    name: str  # without the leading "/"
    image: str
    labels: Mapping[str, str] = field(default_factory=dict)
    status: str = "created"  # created, running, paused, restarting, removing, exited, dead
    exit_code: int = 0
    oom_killed: bool = False
    pid: int = 0

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """One container event from ``GET /events`` (``die``, ``oom``, ``destroy``, ``start``, ...)."""

    action: str
    container_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    exit_code: int | None = None  # set on "die"
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class LogLine:
    stream: Stream
    text: str  # one line, without its newline


LogSink = Callable[[LogLine], None]
ProgressSink = Callable[[str], None]
EventSink = Callable[[ContainerEvent], None]


class ContainerRuntime(Protocol):
    """Engine API operations. Every method raises :class:`RuntimeFailure` (or a subclass) on failure."""

    async def ping(self) -> None:
        """Return when the engine answers; EngineUnavailable when it does not."""

    async def create(self, body: Mapping[str, Any], name: str | None = None) -> str:
        """``POST /containers/create``; returns the new container's id. NameConflict if ``name`` is taken."""

    async def start(self, container: str) -> None:
        """``POST /containers/{id}/start``; starting a running container is not an error."""

    async def wait(self, container: str) -> int:
        """Wait until the container is not running; its exit status."""

    # ``timeout`` is the engine's grace period before SIGKILL, not a deadline on the call.
    async def stop(self, container: str, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """``POST /containers/{id}/stop?t=``: its stop signal, then SIGKILL after ``timeout``.

        False when it was not running (the engine's 304).
        """

    async def kill(self, container: str, signal: str = "SIGKILL") -> None:
        """Send a signal (``SIGTERM``, ``TERM`` or a number as text). RuntimeFailure(409) if not running."""

    async def remove(self, container: str, *, force: bool = False, volumes: bool = False) -> None:
        """``DELETE /containers/{id}``. NoSuchContainer if it does not exist."""

    async def inspect(self, container: str) -> ContainerState:
        """The container's state, by id or name. NoSuchContainer if it does not exist."""

    async def inspect_raw(self, container: str) -> dict[str, Any]:
        """The engine's full JSON for a container, as ``docker inspect`` prints it."""

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ContainerState]:
        """All containers (running or not) carrying every given label."""

    async def image_present(self, image: str) -> bool:
        """Whether ``image`` (``name[:tag]``, tag defaulting to latest) is present locally."""

    async def pull(self, image: str, tag: str, progress: ProgressSink) -> None:
        """``POST /images/create?fromImage=&tag=``: pull one tag, reporting progress lines. NoSuchImage on failure."""

    async def follow_logs(self, container: str, sink: LogSink, *, since: float = 0.0, follow: bool = True) -> None:
        """Deliver the container's output lines from ``since`` (epoch seconds); with ``follow``, until it stops."""

    async def exec(
        self,
        container: str,
        argv: Sequence[str],
        sink: LogSink,
        *,
        env: Sequence[str] = (),
        user: str | None = None,
        workdir: str | None = None,
    ) -> int:
        """Run a command inside a running container, delivering its output; its exit status."""

    async def watch_events(self, sink: EventSink, *, since: float | None = None) -> None:
        """Deliver container events, from ``since`` when given, until the connection breaks (EngineUnavailable)."""
