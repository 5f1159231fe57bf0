"""Carrying out ``docker ...`` Exec lines as Engine API calls, with the docker CLI's exit codes and messages.

A unit written for fleet says ``ExecStartPre=-/usr/bin/docker rm busybox1``; fleetlet does not run the docker
CLI but makes the same request of the engine and answers as the CLI would: ``run`` exits with the container's
status, or 125 when the daemon refuses (126/127 when the command cannot be run inside the container); ``stop``
of a stopped container and ``rm -f`` of a missing one succeed; other failures exit 1 with the daemon's message
on stderr, in the unit's journal.
"""

from __future__ import annotations

import json
import re
import signal as signals
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson

from fleetlet.exec.create_body import create_body
from fleetlet.exec.docker_argv import (
    DockerCommand,
    Exec,
    Inspect,
    Kill,
    Pull,
    Remove,
    Restart,
    Run,
    RunSpec,
    Start,
    Stop,
)
from fleetlet.exec.docker_values import parse_image_ref
from fleetlet.exec.environment import resolve_docker_env
from fleetlet.exec.runtime import (
    CLEANUP_SECONDS,
    LABEL_HASH,
    LABEL_REMOVE,
    LABEL_ROLE,
    ContainerRuntime,
    LogLine,
    LogSink,
    NameConflict,
    NoSuchContainer,
    RuntimeFailure,
)

EXIT_DAEMON_ERROR = 125  # `docker run`: the daemon refused (bad image, name in use, ...)
EXIT_CANNOT_INVOKE = 126  # the container's command exists but cannot be run
EXIT_NOT_FOUND = 127  # the container's command does not exist
EXIT_FAILED = 1  # any other docker command that failed
# How long a container's last output may take to reach the journal after it exits.
_LOG_DRAIN_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class DockerContext:
    """What a docker command runs with: the engine, ownership labels, the unit's environment, its journal."""

    runtime: ContainerRuntime
    labels: Mapping[str, str]  # fleetlet's ownership labels, put on every container it creates
    env: Mapping[str, str]  # the unit's environment, for `-e NAME` without a value
    sink: LogSink

    def say(self, text: str, stream: str = "stdout") -> None:
        self.sink(LogLine("stderr" if stream == "stderr" else "stdout", text))


class DockerCommandFailed(Exception):
    """A docker command ended before doing its work; ``exit_code`` is what the CLI would have exited with."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


async def run_docker(command: DockerCommand, ctx: DockerContext) -> int:
    """Carry out one docker command to its end (a foreground ``run`` waits for its container); the exit code."""
    try:
        match command:
            case Run():
                return await _run(command, ctx)
            case Stop(containers, timeout):
                return await _each(ctx, containers, lambda c: _stop(ctx, c, timeout))
            case Restart(containers, timeout):
                return await _each(ctx, containers, lambda c: _restart(ctx, c, timeout))
            case Kill(containers, signal):
                return await _each(ctx, containers, lambda c: ctx.runtime.kill(c, _signal_name(signal)))
            case Remove(containers, force, volumes):
                return await _each(ctx, containers, lambda c: _remove(ctx, c, force=force, volumes=volumes))
            case Start(containers):
                return await _each(ctx, containers, ctx.runtime.start)
            case Pull(image, tag):
                return await _pull(ctx, image, tag)
            case Exec():
                return await _exec(command, ctx)
            case Inspect(targets, format):
                return await _inspect(ctx, targets, format)
    except DockerCommandFailed as e:
        ctx.say(e.message, "stderr")
        return e.exit_code
    except RuntimeFailure as e:  # the engine failed mid-command (went away, answered oddly)
        prefix = "docker: " if isinstance(command, Run) else ""
        ctx.say(f"{prefix}Error response from daemon: {e.message}", "stderr")
        return EXIT_DAEMON_ERROR if isinstance(command, Run) else EXIT_FAILED
    raise AssertionError(f"unhandled docker command {command!r}")


async def start_container(run: Run, ctx: DockerContext, *, role: str) -> str:
    """Create and start ``run``'s container (pulling its image when missing); its id.

    Raises DockerCommandFailed with the CLI's exit code. If cancelled half-way, the container it created is
    removed again, so a cancelled start leaves nothing behind.
    """
    spec = run.spec
    for warning in run.warnings:
        ctx.say(f"WARNING: {warning}", "stderr")
    await _ensure_image(ctx, spec)
    env = _container_env(spec, ctx)
    labels = {**ctx.labels, LABEL_ROLE: role, **({LABEL_REMOVE: "1"} if run.remove else {})}
    body = create_body(spec, env=env, labels=labels)
    container = ""
    try:
        try:
            container = await ctx.runtime.create(body, spec.name)
        except NameConflict:
            if spec.name is None or not await _remove_own_leftover(ctx, spec.name):
                raise
            container = await ctx.runtime.create(body, spec.name)
    except RuntimeFailure as e:
        raise DockerCommandFailed(EXIT_DAEMON_ERROR, f"docker: Error response from daemon: {e.message}.") from e
    finally:
        if not container:
            # Cancelled while the engine was creating it: it may exist without our knowing its id.
            await _remove_unstarted(ctx, labels)
    started = False
    try:
        await ctx.runtime.start(container)
        started = True
    except RuntimeFailure as e:
        raise DockerCommandFailed(
            _start_failure_code(e.message), f"docker: Error response from daemon: {e.message}."
        ) from e
    finally:
        if not started:
            # Cancelled, or the start failed: a created container nobody will run is removed, as `--rm` would.
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
                await _quietly(ctx.runtime.remove(container, force=True))
    return container


async def _remove_own_leftover(ctx: DockerContext, name: str) -> bool:
    """Remove a stopped container of this unit on this machine that holds ``name``; True if there was one.

    A ``--rm`` container can outlive its removal (the engine stopped it while going down, the agent was killed):
    the docker CLI would fail on the name for ever after, until someone removed it by hand. A stopped container
    with our own unit and machine labels is ours to clear; anything else keeps the CLI's behaviour.
    """
    try:
        state = await ctx.runtime.inspect(name)
    except RuntimeFailure:
        return False
    ours = all(state.labels.get(key) == value for key, value in ctx.labels.items() if key != LABEL_HASH)
    if not ours or state.running:
        return False
    ctx.say(f"Removing leftover container {name} ({state.id[:12]}, {state.status}) of this unit", "stderr")
    try:
        await ctx.runtime.remove(state.id, force=True)
    except NoSuchContainer:
        pass
    return True


async def _remove_unstarted(ctx: DockerContext, labels: Mapping[str, str]) -> None:
    """Remove containers with ``labels`` that were created and never started: nobody will ever run them."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
        try:
            states = await ctx.runtime.list(labels)
        except RuntimeFailure:
            return
        for state in states:
            if state.status == "created":
                await _quietly(ctx.runtime.remove(state.id, force=True))


async def stop_and_remove(ctx: DockerContext, container: str, *, remove: bool) -> None:
    """Cleanup for a container whose command was cancelled: kill it and, for ``--rm``, remove it. Never raises."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
        await _quietly(ctx.runtime.kill(container, "SIGKILL"))
        if remove:
            await _quietly(ctx.runtime.remove(container, force=True))


async def wait_with_logs(ctx: DockerContext, container: str) -> int:
    """Wait for a container to exit while its output goes to the journal; its exit status."""
    logs_done = anyio.Event()

    async def follow() -> None:
        try:
            await ctx.runtime.follow_logs(container, ctx.sink)
        except RuntimeFailure:
            pass  # the exit status matters; lost output is not worth failing the command over
        finally:
            logs_done.set()

    failure: RuntimeFailure | None = None
    status = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        try:
            status = await ctx.runtime.wait(container)
        except RuntimeFailure as e:  # kept out of the task group, which would wrap it in an ExceptionGroup
            failure = e
        else:
            with anyio.move_on_after(_LOG_DRAIN_SECONDS):
                await logs_done.wait()
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return status


async def _run(run: Run, ctx: DockerContext) -> int:
    container = await start_container(run, ctx, role="command")
    if run.detach:
        ctx.say(container)
        return 0
    status: int | None = None
    try:
        status = await wait_with_logs(ctx, container)
    finally:
        if status is None:  # cancelled (a timeout, a stop) or the engine failed: the command's container goes
            await stop_and_remove(ctx, container, remove=run.remove)
    if run.remove:
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
            await _quietly(ctx.runtime.remove(container, force=True))
    return status


async def _ensure_image(ctx: DockerContext, spec: RunSpec) -> None:
    """Pull the image the way `docker run` does: when missing (``--pull missing``), always, or never."""
    if spec.pull == "never":
        return
    if spec.pull == "missing" and await _image_present(ctx, spec.image):
        return
    ref = parse_image_ref(spec.image)
    tag = ref.tag or ("" if ref.digest else "latest")
    if spec.pull == "missing":
        ctx.say(f"Unable to find image '{spec.image}' locally", "stderr")
    try:
        await ctx.runtime.pull(ref.name + (f"@{ref.digest}" if ref.digest else ""), tag, lambda line: ctx.say(line))
    except RuntimeFailure as e:
        raise DockerCommandFailed(EXIT_DAEMON_ERROR, f"docker: Error response from daemon: {e.message}.") from e


async def _image_present(ctx: DockerContext, image: str) -> bool:
    try:
        return await ctx.runtime.image_present(image)
    except RuntimeFailure as e:
        raise DockerCommandFailed(EXIT_DAEMON_ERROR, f"docker: Error response from daemon: {e.message}.") from e


def _container_env(spec: RunSpec, ctx: DockerContext) -> list[str]:
    files = []
    for path in spec.env_files:
        try:
            files.append((path, Path(path).read_text()))
        except OSError as e:
            raise DockerCommandFailed(EXIT_DAEMON_ERROR, f"docker: open {path}: {e.strerror or e}.") from e
    try:
        return resolve_docker_env(spec.env, files, ctx.env)
    except ValueError as e:
        raise DockerCommandFailed(EXIT_DAEMON_ERROR, f"docker: {e}.") from e


def _start_failure_code(message: str) -> int:
    """The CLI's 126/127 when the engine could start the container but not its command."""
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return EXIT_NOT_FOUND
    if "permission denied" in lowered:
        return EXIT_CANNOT_INVOKE
    return EXIT_DAEMON_ERROR


async def _each(ctx: DockerContext, containers: tuple[str, ...], act: Any) -> int:
    """Apply ``act`` to each container like the CLI: print each name acted on, report each failure, exit 1 if any.

    ``act`` returns False when there was nothing to do and nothing to print (``rm -f`` of a missing container).
    """
    failed = False
    for container in containers:
        try:
            done = await act(container)
        except RuntimeFailure as e:
            ctx.say(f"Error response from daemon: {e.message}", "stderr")
            failed = True
        else:
            if done is not False:
                ctx.say(container)
    return EXIT_FAILED if failed else 0


async def _stop(ctx: DockerContext, container: str, grace: int | None) -> None:
    # A container already stopped is not an error (the engine's 304), as with the CLI.
    await ctx.runtime.stop(container, None if grace is None or grace < 0 else float(grace))


async def _restart(ctx: DockerContext, container: str, grace: int | None) -> None:
    await _stop(ctx, container, grace)
    await ctx.runtime.start(container)


async def _remove(ctx: DockerContext, container: str, *, force: bool, volumes: bool) -> bool:
    try:
        await ctx.runtime.remove(container, force=force, volumes=volumes)
    except NoSuchContainer:
        if not force:
            raise
        return False  # `rm -f` of a missing container succeeds silently
    return True


async def _pull(ctx: DockerContext, image: str, tag: str) -> int:
    try:
        await ctx.runtime.pull(image, tag, lambda line: ctx.say(line))
    except RuntimeFailure as e:
        raise DockerCommandFailed(EXIT_FAILED, f"Error response from daemon: {e.message}") from e
    return 0


async def _exec(command: Exec, ctx: DockerContext) -> int:
    if command.detach:
        raise DockerCommandFailed(
            EXIT_FAILED, "docker exec -d is not supported by fleetlet: the command's end would go unseen"
        )
    env = resolve_docker_env(command.env, (), ctx.env)
    try:
        return await ctx.runtime.exec(
            command.container, command.command, ctx.sink, env=env, user=command.user, workdir=command.workdir
        )
    except RuntimeFailure as e:
        raise DockerCommandFailed(
            EXIT_DAEMON_ERROR if e.status != 404 else EXIT_FAILED, f"Error response from daemon: {e.message}"
        ) from e


async def _inspect(ctx: DockerContext, targets: tuple[str, ...], format: str | None) -> int:
    found: list[dict[str, Any]] = []
    failed = False
    for target in targets:
        try:
            found.append(await ctx.runtime.inspect_raw(target))
        except RuntimeFailure as e:
            ctx.say(f"Error: {e.message}", "stderr")
            failed = True
    if format is None:
        for line in orjson.dumps(found, option=orjson.OPT_INDENT_2).decode().splitlines():
            ctx.say(line)
    else:
        for document in found:
            ctx.say(render_format(format, document))
    return EXIT_FAILED if failed else 0


_FIELD = re.compile(r"\{\{\s*(json\s+)?\.((?:[A-Za-z0-9_]+)(?:\.[A-Za-z0-9_]+)*)?\s*\}\}")


def render_format(template: str, document: Mapping[str, Any]) -> str:
    """The part of Go templates that ``docker inspect -f`` is used with in unit files: ``{{.State.Running}}``,
    ``{{json .Config.Labels}}``. Anything else raises DockerCommandFailed rather than printing something wrong."""

    def value(match: re.Match[str]) -> str:
        current: Any = document
        for part in (match.group(2) or "").split(".") if match.group(2) else []:
            if not isinstance(current, Mapping) or part not in current:
                raise DockerCommandFailed(EXIT_FAILED, f"template: {match.group(0)}: map has no entry for key {part!r}")
            current = current[part]
        if match.group(1):
            return json.dumps(current, separators=(",", ":"))
        return _go_text(current)

    rendered = _FIELD.sub(value, template)
    if "{{" in rendered:
        raise DockerCommandFailed(EXIT_FAILED, f"docker inspect: unsupported --format template {template!r}")
    return rendered


def _go_text(value: Any) -> str:
    """How Go's text/template prints a JSON value."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "<no value>"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_text(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_text(v) for v in value) + "]"
    return str(value)


def _signal_name(signal: str) -> str:
    """The signal as the engine takes it: ``KILL`` and ``9`` become ``SIGKILL``."""
    if signal.isdigit():
        try:
            return signals.Signals(int(signal)).name
        except ValueError:
            return signal
    upper = signal.upper()
    return upper if upper.startswith("SIG") else f"SIG{upper}"


async def _quietly(request: Any) -> None:
    """Await an engine request during cleanup, where a failure changes nothing (already gone, engine down)."""
    try:
        await request
    except RuntimeFailure:
        pass
