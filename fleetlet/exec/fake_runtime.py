"""An engine in memory: :class:`FakeRuntime` behaves as :class:`~fleetlet.exec.docker_runtime.DockerRuntime` does.

The same contract tests run against both, so logic tested on the fake holds on Docker: the same errors in the same
situations (name conflicts, 304 on stop, 409 on kill or exec of a stopped container, 404s), label filtering, the
event stream with ``die`` and its exit code, logs that follow until the container stops.

A container is a simulated process. By default it runs until signalled and dies of any signal with 128+signal, as
``sleep`` under an init does. Tests script it per container with a :data:`BehaviourHook` that turns the create
body into a :class:`Behaviour`, and drive it with :meth:`FakeRuntime.exit`, :meth:`FakeRuntime.emit`,
:meth:`FakeRuntime.restart_engine` and :attr:`FakeRuntime.unavailable`. ``stop`` waits on the injected
:class:`~fleetlet.clock.Clock`, never in real time. Every call is recorded in :attr:`FakeRuntime.calls`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import signal as signals
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel

from fleetlet.clock import Clock, ManualClock, move_on_after
from fleetlet.exec.runtime import (
    ContainerEvent,
    ContainerState,
    EngineUnavailable,
    EventSink,
    LogLine,
    LogSink,
    NameConflict,
    NoSuchContainer,
    NoSuchImage,
    ProgressSink,
    RuntimeFailure,
    Stream,
)

Output = Sequence[str | LogLine]  # a plain string is a line on stdout


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """What ``exec`` was asked to run, as a :class:`Behaviour`'s ``exec`` hook sees it."""

    argv: Sequence[str]
    env: Sequence[str] = ()
    user: str | None = None
    workdir: str | None = None


@dataclass(frozen=True, slots=True)
class ExecResult:
    """How a simulated exec ends: its output, then its exit code."""

    exit_code: int = 0
    output: Output = ()


def _succeed_silently(request: ExecRequest) -> ExecResult:
    return ExecResult()


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a simulated container's main process behaves each time it is started.

    It prints ``output``, then exits with ``exit_code`` at once, or, when that is None, runs until a signal (or
    :meth:`FakeRuntime.exit`) ends it. A signal in ``ignore_signals`` does nothing; one in ``trap`` makes it exit
    with the given code; any other kills it with 128+signal. SIGKILL always kills. Signals are named as the engine
    accepts them: ``SIGTERM``, ``TERM`` or ``15``. ``start_error`` makes every start fail as when the command
    cannot be run. ``exec`` answers each exec.
    """

    output: Output = ()
    exit_code: int | None = None
    ignore_signals: Collection[str] = frozenset()
    trap: Mapping[str, int] = field(default_factory=dict)
    start_error: str | None = None
    exec: Callable[[ExecRequest], ExecResult] = _succeed_silently

    def __post_init__(self) -> None:
        for name in (*self.ignore_signals, *self.trap):
            _signal_number(name)  # a misspelt signal fails here, not silently at the first stop


BehaviourHook = Callable[[Mapping[str, Any]], Behaviour]


def _default_behaviour(body: Mapping[str, Any]) -> Behaviour:
    return Behaviour()


@dataclass(frozen=True, slots=True)
class Call:
    """One call made to the fake: its required arguments in order, and its options with their effective values."""

    method: str
    args: tuple[Any, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


# Docker's rule for container names.
_VALID_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_SIGKILL = int(signals.SIGKILL)
_DEFAULT_STOP_TIMEOUT = 10
_NEVER = "0001-01-01T00:00:00Z"  # how the engine writes a time that has not happened


@dataclass(eq=False, slots=True)
class _Container:
    id: str
    name: str
    body: dict[str, Any]
    behaviour: Behaviour
    created: float
    status: str = "created"
    exit_code: int = 0
    oom_killed: bool = False
    pid: int = 0
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    output: list[tuple[float, LogLine]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def image(self) -> str:
        return str(self.body.get("Image", ""))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.body.get("Labels") or {})

    def state(self) -> ContainerState:
        return ContainerState(
            id=self.id,
            name=self.name,
            image=self.image,
            labels=self.labels,
            status=self.status,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            pid=self.pid,
        )


class FakeRuntime:
    """:class:`~fleetlet.exec.runtime.ContainerRuntime` in memory, for tests. See the module docstring.

    ``images`` are present locally; ``pull`` succeeds for references in ``registry``. Both hold references as
    written (``busybox``, ``busybox:latest`` and ``docker.io/library/busybox:latest`` are the same image).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        behaviour: BehaviourHook = _default_behaviour,
        images: Collection[str] = ("busybox:latest",),
        registry: Collection[str] = ("busybox:latest",),
    ) -> None:
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.behaviour = behaviour
        self.images: set[str] = set(images)
        self.registry: set[str] = set(registry)
        self.calls: list[Call] = []
        self._containers: dict[str, _Container] = {}  # by id, in creation order
        self._events: list[ContainerEvent] = []
        self._serial = itertools.count(1)
        self._pids = itertools.count(1000)
        self._unavailable = False
        self._epoch = 0  # bumped when the engine restarts or goes away: every pending call then fails
        self._changed: anyio.Event | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release; here so that tests hold the fake as they hold the real runtime."""

    # -- what tests drive ---------------------------------------------------------------------------------------

    @property
    def unavailable(self) -> bool:
        """While true, every call raises EngineUnavailable; setting it breaks the calls in progress too."""
        return self._unavailable

    @unavailable.setter
    def unavailable(self, value: bool) -> None:
        self._unavailable = value
        if value:
            self._break_connections()

    def restart_engine(self) -> None:
        """Restart the daemon at once, without live-restore.

        Pending calls and event subscribers fail with EngineUnavailable. Every running container gets its stop
        signal, as dockerd's shutdown sends it, and is killed without a grace period if it ignores that signal: it
        exits 143 (SIGTERM), its trapped code, or 137. The event history is lost, as the daemon keeps it in memory.
        """
        self._break_connections()
        for container in self._containers.values():
            if container.running:
                self._signal(container, self._stop_signal(container))
                if container.running:
                    self._exit(container, 128 + _SIGKILL)
        self._events.clear()

    def exit(self, container: str, code: int, *, oom: bool = False, oom_reported_late: bool = False) -> None:
        """End a running container's process with ``code``; ``oom`` as if the kernel's OOM killer did it.

        ``oom_reported_late``: the engine's ``oom`` event comes after the ``die``, as a busy engine may send them.
        """
        found = self._resolve(container)
        if not found.running:
            raise RuntimeError(f"container {container} is not running")
        self._exit(found, code, oom=oom, oom_reported_late=oom_reported_late)

    def emit(self, container: str, stream: Stream, line: str) -> None:
        """Make a container print one line."""
        self._print(self._resolve(container), LogLine(stream, line))

    def called(self, method: str) -> list[Call]:
        """The calls made to one method, in order."""
        return [call for call in self.calls if call.method == method]

    # -- the ContainerRuntime protocol --------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._enter("ping")

    async def create(self, body: Mapping[str, Any], name: str | None = None) -> str:
        await self._enter("create", body, name=name)
        # The engine's order: the image first, then the name.
        image = str(body.get("Image") or "")
        if not image:
            raise RuntimeFailure("No image specified", 400)
        if not self._present(image):
            raise NoSuchImage(image)
        if name is not None and not _VALID_NAME.match(name):
            raise RuntimeFailure(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", 400)
        serial = next(self._serial)
        name = name.lstrip("/") if name else f"fake_container_{serial}"
        if any(c.name == name for c in self._containers.values()):
            raise NameConflict(name)
        container_id = hashlib.sha256(f"fleetlet-fake-{serial}".encode()).hexdigest()
        created = _Container(container_id, name, dict(body), self.behaviour(body), self.clock.time())
        self._containers[container_id] = created
        self._event(created, "create")
        return container_id

    async def start(self, container: str) -> None:
        await self._enter("start", container)
        found = self._resolve(container)
        if found.running:
            return  # the engine's 304
        behaviour = found.behaviour
        if behaviour.start_error is not None:
            found.exit_code, found.error = 127, behaviour.start_error
            self._notify()
            raise RuntimeFailure(behaviour.start_error, 400)
        found.status, found.pid, found.error = "running", next(self._pids), ""
        found.exit_code, found.oom_killed = 0, False
        found.started_at, found.finished_at = self.clock.time(), None
        self._event(found, "start")
        for line in behaviour.output:
            self._print(found, _line(line))
        if behaviour.exit_code is not None:
            self._exit(found, behaviour.exit_code)

    async def wait(self, container: str) -> int:
        epoch = await self._enter("wait", container)
        found = self._resolve(container)
        await self._until(lambda: not found.running, epoch)
        return found.exit_code

    async def stop(self, container: str, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (grace period)
        epoch = await self._enter("stop", container, timeout=timeout)
        found = self._resolve(container)
        if not found.running:
            return False  # the engine's 304
        if timeout is None:
            timeout = float(found.body.get("StopTimeout", _DEFAULT_STOP_TIMEOUT))
        grace = math.inf if timeout < 0 else math.ceil(timeout)  # the engine counts whole seconds
        self._signal(found, self._stop_signal(found))
        if found.running:
            async with move_on_after(self.clock, grace):
                await self._until(lambda: not found.running, epoch)
        if found.running:
            self._signal(found, _SIGKILL)
        self._event(found, "stop")
        return True

    async def kill(self, container: str, signal: str = "SIGKILL") -> None:
        await self._enter("kill", container, signal=signal)
        try:
            number = _signal_number(signal)  # the engine parses the signal before it looks for the container
        except ValueError:
            raise RuntimeFailure(f"Invalid signal: {signal}", status=400) from None
        found = self._resolve(container)
        if not found.running:
            raise RuntimeFailure(f"Cannot kill container: {container}: Container {found.id} is not running", status=409)
        self._signal(found, number)

    async def remove(self, container: str, *, force: bool = False, volumes: bool = False) -> None:
        await self._enter("remove", container, force=force, volumes=volumes)
        found = self._resolve(container)
        if found.running and not force:
            raise RuntimeFailure(
                f"You cannot remove a running container {found.id}. "
                "Stop the container before attempting removal or force remove",
                status=409,
            )
        if found.running:
            self._signal(found, _SIGKILL)
        del self._containers[found.id]
        self._event(found, "destroy")

    async def inspect(self, container: str) -> ContainerState:
        await self._enter("inspect", container)
        return self._resolve(container).state()

    async def inspect_raw(self, container: str) -> dict[str, Any]:
        await self._enter("inspect_raw", container)
        return self._raw(self._resolve(container))

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ContainerState]:
        await self._enter("list", labels=labels)
        wanted = dict(labels or {}).items()
        # Newest first, as the engine lists them.
        return [c.state() for c in reversed(self._containers.values()) if wanted <= c.labels.items()]

    async def image_present(self, image: str) -> bool:
        await self._enter("image_present", image)
        return self._present(image)

    async def pull(self, image: str, tag: str, progress: ProgressSink) -> None:
        await self._enter("pull", image, tag)
        reference = f"{image}:{tag}" if tag else image
        canonical = _canonical(reference)
        if canonical not in {_canonical(known) for known in self.registry}:
            raise NoSuchImage(reference, "not in the fake registry")
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        progress(f"{tag or 'latest'}: Pulling from {canonical.split('/', 1)[1].rsplit(':', 1)[0]}")
        if self._present(reference):
            verdict = "Image is up to date for"
        else:
            layer = digest[:12]
            for step in ("Pulling fs layer", "Downloading", "Download complete", "Extracting", "Pull complete"):
                progress(f"{layer}: {step}")
            self.images.add(reference)
            verdict = "Downloaded newer image for"
        progress(f"Digest: sha256:{digest}")
        progress(f"Status: {verdict} {reference}")

    async def follow_logs(self, container: str, sink: LogSink, *, since: float = 0.0, follow: bool = True) -> None:
        epoch = await self._enter("follow_logs", container, since=since, follow=follow)
        found = self._resolve(container)
        delivered = 0
        while True:
            for at, line in found.output[delivered:]:
                if at >= since:
                    sink(line)
            delivered = len(found.output)
            if not follow or not found.running or found.id not in self._containers:
                return
            await self._until(_printed_or_ended(found, delivered), epoch)

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
        await self._enter("exec", container, tuple(argv), env=tuple(env), user=user, workdir=workdir)
        found = self._resolve(container)
        if not found.running:
            raise RuntimeFailure(f"Container {found.id} is not running", status=409)
        command = " ".join(argv)
        self._event(found, f"exec_create: {command}")
        self._event(found, f"exec_start: {command}")
        result = found.behaviour.exec(ExecRequest(tuple(argv), tuple(env), user, workdir))
        for line in result.output:
            sink(_line(line))
        self._event(found, "exec_die")
        return result.exit_code

    async def watch_events(self, sink: EventSink, *, since: float | None = None) -> None:
        epoch = await self._enter("watch_events", since=since)
        if since is None:
            delivered = len(self._events)
        else:
            delivered = next((i for i, e in enumerate(self._events) if e.time >= since), len(self._events))
        while True:
            for event in self._events[delivered:]:
                sink(event)
            delivered = len(self._events)
            await self._until(_longer(self._events, delivered), epoch)

    # -- the simulation -----------------------------------------------------------------------------------------

    async def _enter(self, method: str, *args: Any, **options: Any) -> int:
        """Record a call and connect to the engine; the connection's epoch, which a restart ends."""
        self.calls.append(Call(method, args, options))
        await anyio.lowlevel.checkpoint()  # a real call always yields to the event loop
        if self._unavailable:
            raise EngineUnavailable("Cannot connect to the Docker daemon (the fake engine is unavailable)")
        return self._epoch

    async def _until(self, condition: Callable[[], bool], epoch: int) -> None:
        """Block until ``condition`` holds; EngineUnavailable if the connection of ``epoch`` broke meanwhile."""
        while True:
            if self._epoch != epoch:
                raise EngineUnavailable("the connection to the Docker daemon broke (the fake engine restarted)")
            if condition():
                return
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _break_connections(self) -> None:
        self._epoch += 1
        self._notify()

    def _resolve(self, reference: str) -> _Container:
        """Find a container as the engine does: by full id, then by name, then by a unique id prefix."""
        if reference in self._containers:
            return self._containers[reference]
        name = reference.lstrip("/")
        for container in self._containers.values():
            if container.name == name:
                return container
        matches = [c for c in self._containers.values() if reference and c.id.startswith(reference)]
        if len(matches) == 1:
            return matches[0]
        raise NoSuchContainer(reference)

    def _present(self, image: str) -> bool:
        return _canonical(image) in {_canonical(known) for known in self.images}

    def _stop_signal(self, container: _Container) -> int:
        return _signal_number(str(container.body.get("StopSignal") or "SIGTERM"))

    def _signal(self, container: _Container, number: int) -> None:
        self._event(container, "kill", signal=str(number))
        behaviour = container.behaviour
        if number != _SIGKILL and number in {_signal_number(s) for s in behaviour.ignore_signals}:
            return
        trapped = {_signal_number(s): code for s, code in behaviour.trap.items()}
        if number != _SIGKILL and number in trapped:
            self._exit(container, trapped[number])
        else:
            self._exit(container, 128 + number)

    def _exit(self, container: _Container, code: int, *, oom: bool = False, oom_reported_late: bool = False) -> None:
        container.status, container.exit_code, container.oom_killed = "exited", code, oom
        container.pid, container.finished_at = 0, self.clock.time()
        if oom and not oom_reported_late:
            self._event(container, "oom")
        self._event(container, "die", exitCode=str(code))
        if oom and oom_reported_late:
            self._event(container, "oom")
        self._notify()

    def _print(self, container: _Container, line: LogLine) -> None:
        if container.body.get("Tty"):
            line = LogLine("stdout", line.text)  # a terminal merges both streams, as the engine's logs then show
        container.output.append((self.clock.time(), line))
        self._notify()

    def _event(self, container: _Container, action: str, **attributes: str) -> None:
        exit_code = attributes.get("exitCode")
        self._events.append(
            ContainerEvent(
                action=action,
                container_id=container.id,
                labels=container.labels,
                exit_code=int(exit_code) if action == "die" and exit_code is not None else None,
                time=self.clock.time(),
            )
        )
        self._notify()

    def _raw(self, container: _Container) -> dict[str, Any]:
        """The container as ``docker inspect`` shows it, as far as the fake knows it."""
        body = container.body
        config = {key: value for key, value in body.items() if key not in ("HostConfig", "NetworkingConfig")}
        config.update(Image=container.image, Labels=container.labels, Tty=bool(body.get("Tty")))
        return {
            "Id": container.id,
            "Created": _iso(container.created),
            "Name": f"/{container.name}",
            "Image": "sha256:" + hashlib.sha256(_canonical(container.image).encode()).hexdigest(),
            "RestartCount": 0,
            "State": {
                "Status": container.status,
                "Running": container.running,
                "Paused": False,
                "Restarting": False,
                "OOMKilled": container.oom_killed,
                "Dead": False,
                "Pid": container.pid,
                "ExitCode": container.exit_code,
                "Error": container.error,
                "StartedAt": _iso(container.started_at),
                "FinishedAt": _iso(container.finished_at),
            },
            "Config": config,
            "HostConfig": dict(body.get("HostConfig") or {}),
        }


def _printed_or_ended(container: _Container, seen: int) -> Callable[[], bool]:
    return lambda: len(container.output) > seen or not container.running


def _longer(items: Sequence[object], seen: int) -> Callable[[], bool]:
    return lambda: len(items) > seen


def _line(line: str | LogLine) -> LogLine:
    return line if isinstance(line, LogLine) else LogLine("stdout", line)


def _signal_number(signal: str) -> int:
    """A signal as the engine parses it: a number, or a name with or without ``SIG``, in any case."""
    if signal.isdigit() and int(signal) > 0:
        return int(signal)
    name = signal.upper()
    try:
        return int(signals.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise ValueError(f"invalid signal: {signal!r}") from None


def _canonical(reference: str) -> str:
    """An image reference in full: ``busybox`` is ``docker.io/library/busybox:latest``."""
    name, at, digest = reference.partition("@")
    first, slash, rest = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", name
    if first == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    if not at and ":" not in rest.rsplit("/", 1)[-1]:
        rest = f"{rest}:latest"
    return f"{first}/{rest}{at}{digest}"


def _iso(moment: float | None) -> str:
    if moment is None:
        return _NEVER
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")
