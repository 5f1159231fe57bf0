"""A ``docker ...`` command line from an Exec line, read into a typed command that fleetlet carries out itself.

fleet's units drive containers through the docker CLI; fleetlet makes the same Engine API calls directly, so it
has to read each command line exactly as the CLI would. Flags follow the CLI's syntax: ``--name x``,
``--name=x``, ``-e A=1``, ``-eA=1``, combined short booleans (``-dit``), ``--rm=false``, ``--`` ending the flags.
``run`` and ``exec`` stop reading flags at their first argument (everything after the image is the command);
the other commands accept flags anywhere, as the CLI does. The last value of a single-valued flag wins.

A flag fleetlet cannot carry out is an error naming it, never dropped: a unit must not quietly run a container
that differs from the one its author asked for. The values' syntax lives in :mod:`fleetlet.exec.docker_values`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from fleetlet.exec.docker_values import (
    PortMapping,
    PullPolicy,
    RestartSetting,
    Ulimit,
    VolumeMount,
    checked_container_name,
    checked_env,
    checked_image,
    checked_ip,
    checked_path,
    checked_signal,
    parse_bytes,
    parse_cpus,
    parse_exposed,
    parse_extra_host,
    parse_image_ref,
    parse_integer,
    parse_key_value,
    parse_ports,
    parse_pull_policy,
    parse_restart,
    parse_tmpfs,
    parse_ulimit,
    parse_volume,
)

_T = TypeVar("_T")


class DockerArgvError(ValueError):
    """A docker command line fleetlet cannot carry out; the message names the offending flag or argument."""


@dataclass(frozen=True, slots=True)
class RunSpec:
    """The container a ``docker run`` (or a ``[Container]`` section) asks for; ``None`` and empty mean unset."""

    image: str
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None  # () clears the image's entrypoint (``--entrypoint ""``)
    name: str | None = None
    env: tuple[str, ...] = ()  # ``NAME=value``, or a bare ``NAME`` taken from the unit's environment
    env_files: tuple[str, ...] = ()  # docker --env-file format, read when the container is created
    publish: tuple[PortMapping, ...] = ()
    publish_all: bool = False
    expose: tuple[str, ...] = ()  # ``80/tcp``
    volumes: tuple[VolumeMount, ...] = ()
    network: str | None = None
    hostname: str | None = None
    user: str | None = None
    workdir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    memory: int | None = None  # bytes
    nano_cpus: int | None = None
    shm_size: int | None = None  # bytes
    privileged: bool = False
    read_only: bool = False
    init: bool | None = None  # None leaves the engine's default
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    log_driver: str | None = None
    log_opts: Mapping[str, str] = field(default_factory=dict)
    tty: bool = False
    interactive: bool = False
    restart: RestartSetting | None = None
    stop_signal: str | None = None
    stop_timeout: int | None = None
    extra_hosts: tuple[str, ...] = ()  # ``host:ip``
    dns: tuple[str, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # container path → mount options
    ulimits: tuple[Ulimit, ...] = ()
    pull: PullPolicy = "missing"


@dataclass(frozen=True, slots=True)
class Run:
    spec: RunSpec
    detach: bool = False
    remove: bool = False
    warnings: tuple[str, ...] = ()  # accepted, but worth telling the unit's author about


@dataclass(frozen=True, slots=True)
class Stop:
    containers: tuple[str, ...]
    timeout: int | None = None  # seconds; -1 waits forever


@dataclass(frozen=True, slots=True)
class Kill:
    containers: tuple[str, ...]
    signal: str = "KILL"


@dataclass(frozen=True, slots=True)
class Remove:
    containers: tuple[str, ...]
    force: bool = False
    volumes: bool = False


@dataclass(frozen=True, slots=True)
class Pull:
    """``image`` keeps registry and path; ``tag`` is "" when a digest pins the image."""

    image: str
    tag: str = "latest"


@dataclass(frozen=True, slots=True)
class Start:
    containers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Restart:
    containers: tuple[str, ...]
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class Exec:
    container: str
    command: tuple[str, ...]
    env: tuple[str, ...] = ()
    user: str | None = None
    workdir: str | None = None
    detach: bool = False
    tty: bool = False
    interactive: bool = False


@dataclass(frozen=True, slots=True)
class Inspect:
    targets: tuple[str, ...]
    format: str | None = None


DockerCommand = Run | Stop | Kill | Remove | Pull | Start | Restart | Exec | Inspect


def is_docker(argv0: str) -> bool:
    """Whether a command's program is the docker CLI (``docker``, ``/usr/bin/docker``, ...)."""
    return posixpath.basename(argv0) == "docker"


def parse_docker_argv(argv: Sequence[str]) -> DockerCommand:
    """Read a whole docker command line, argv[0] included; DockerArgvError naming the first problem."""
    if not argv or not is_docker(argv[0]):
        raise DockerArgvError(f"not a docker command line: {list(argv[:1])!r}")
    words = list(argv[1:])
    if not words:
        raise DockerArgvError("docker: no command given")
    if words[0].startswith("-"):
        raise DockerArgvError(
            f"docker: unsupported global flag {words[0].partition('=')[0]} (fleetlet talks to its own engine "
            "through the Engine API; give the command first, as in docker run ...)"
        )
    group = _GROUPS.get(words[0])
    if group is None:
        command, prog, rest = words[0], f"docker {words[0]}", words[1:]
        if command not in _COMMANDS:
            known = ", ".join(sorted(_COMMANDS))
            raise DockerArgvError(f"docker: unsupported command {command!r} (fleetlet carries out: {known})")
    else:
        if len(words) < 2:
            raise DockerArgvError(f"docker {words[0]}: no command given")
        if words[1] not in group:
            known = ", ".join(sorted(group))
            raise DockerArgvError(
                f"docker {words[0]}: unsupported command {words[1]!r} (fleetlet carries out: {known})"
            )
        command, prog, rest = group[words[1]], f"docker {words[0]} {words[1]}", words[2:]
    table, build = _COMMANDS[command]
    return build(_scan(prog, rest, table, interspersed=command not in ("run", "exec")))


# --- flags -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Flag:
    name: str  # the canonical long name
    short: str
    boolean: bool


class _Table:
    """A command's flags from compact specs: ``"name"``, ``"detach/d!"`` (short -d, boolean), ``"network|net"``."""

    def __init__(self, *specs: str) -> None:
        self.long: dict[str, _Flag] = {}
        self.short: dict[str, _Flag] = {}
        for spec in specs:
            names, _, short = spec.rstrip("!").partition("/")
            canonical, *aliases = names.split("|")
            flag = _Flag(canonical, short, spec.endswith("!"))
            for name in (canonical, *aliases):
                self.long[name] = flag
            if short:
                self.short[short] = flag


_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


class _Args:
    """The flags given to one command (each value with the flag as written) and its other arguments."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.values: dict[str, list[tuple[str, str]]] = {}
        self.args: list[str] = []

    def error(self, message: str) -> DockerArgvError:
        return DockerArgvError(f"{self.prog}: {message}")

    def add(self, flag: _Flag, spelling: str, value: str | None) -> None:
        if flag.boolean:
            if value is None:
                value = "true"
            elif value not in _TRUE and value not in _FALSE:
                raise self.error(f"invalid value {value!r} for {spelling}: use true or false")
        elif value is None:
            raise self.error(f"flag {spelling} needs a value")
        self.values.setdefault(flag.name, []).append((spelling, value))

    def on(self, name: str) -> bool:
        given = self.values.get(name)
        return given is not None and given[-1][1] in _TRUE

    def given(self, name: str) -> bool:
        return name in self.values

    def last(self, name: str, convert: Callable[[str], _T]) -> _T | None:
        """The last value of a single-valued flag, converted (the CLI's rule: the last one wins)."""
        given = self.values.get(name)
        return self._convert(*given[-1], convert) if given else None

    def all(self, name: str, convert: Callable[[str], _T]) -> list[_T]:
        return [self._convert(spelling, value, convert) for spelling, value in self.values.get(name, ())]

    def spelling(self, name: str) -> str:
        return self.values[name][-1][0]

    def value(self, argument: str, convert: Callable[[str], _T]) -> _T:
        """An argument (not a flag's value), converted."""
        try:
            return convert(argument)
        except ValueError as e:
            raise self.error(str(e)) from None

    def _convert(self, spelling: str, value: str, convert: Callable[[str], _T]) -> _T:
        try:
            return convert(value)
        except ValueError as e:
            raise self.error(f"{spelling}: {e}") from None


def _unsupported(prog: str, spelling: str) -> DockerArgvError:
    return DockerArgvError(
        f"{prog}: unsupported flag {spelling} (fleetlet cannot carry it out; it is never silently dropped)"
    )


def _scan(prog: str, argv: list[str], table: _Table, *, interspersed: bool) -> _Args:
    """Flags as the docker CLI reads them; the other arguments in order."""
    parsed = _Args(prog)
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            parsed.args.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            flag = table.long.get(name)
            if flag is None:
                raise _unsupported(prog, f"--{name}")
            value: str | None = inline if eq else None
            if value is None and not flag.boolean and i < len(argv):
                value = argv[i]
                i += 1
            parsed.add(flag, f"--{name}", value)
        elif arg.startswith("-") and len(arg) > 1:
            i = _scan_shorts(parsed, arg, argv, i, table)
        else:
            parsed.args.append(arg)
            if not interspersed:
                parsed.args.extend(argv[i:])
                break
    return parsed


def _scan_shorts(parsed: _Args, arg: str, argv: list[str], i: int, table: _Table) -> int:
    """``-dit``, ``-p80:80``, ``-e=A=1``, ``-p 80:80``: returns the index of the next unread argument."""
    at = 1
    while at < len(arg):
        letter = arg[at]
        flag = table.short.get(letter)
        if flag is None:
            raise _unsupported(parsed.prog, f"-{letter}")
        rest = arg[at + 1 :]
        value: str | None = None
        if rest.startswith("="):
            value, at = rest[1:], len(arg)
        elif flag.boolean:
            at += 1
        elif rest:
            value, at = rest, len(arg)
        elif i < len(argv):
            value, at, i = argv[i], len(arg), i + 1
        else:
            at = len(arg)
        parsed.add(flag, f"-{letter}", value)
    return i


# --- commands --------------------------------------------------------------------------------------------------


def _run(a: _Args) -> Run:
    if not a.args:
        raise a.error("needs an image (docker run [OPTIONS] IMAGE [COMMAND] [ARG...])")
    image, *command = a.args
    a.value(image, checked_image)
    remove = a.on("rm")
    restart = a.last("restart", parse_restart)
    warnings: list[str] = []
    if restart is not None and restart.name != "no":
        if remove:
            raise a.error("--restart and --rm conflict: a container removed when it exits cannot be restarted")
        warnings.append(
            f"{a.prog}: {a.spelling('restart')} {restart.name} fights fleetlet's supervision: the engine restarts "
            "the container behind the unit's back (use Restart= in [Service] instead)"
        )
    if a.on("interactive"):
        warnings.append(
            f"{a.prog}: {a.spelling('interactive')} keeps the container's stdin open with nothing attached: a "
            "process that reads stdin waits instead of reading end of file"
        )
    entrypoint = a.last("entrypoint", str)
    spec = RunSpec(
        image=image,
        command=tuple(command),
        entrypoint=None if entrypoint is None else (entrypoint,) if entrypoint else (),
        name=a.last("name", checked_container_name),
        env=tuple(a.all("env", checked_env)),
        env_files=tuple(a.all("env-file", checked_path)),
        publish=tuple(mapping for mappings in a.all("publish", parse_ports) for mapping in mappings),
        publish_all=a.on("publish-all"),
        expose=tuple(dict.fromkeys(port for ports in a.all("expose", parse_exposed) for port in ports)),
        volumes=tuple(a.all("volume", parse_volume)),
        network=a.last("network", _nonempty),
        hostname=a.last("hostname", _nonempty),
        user=a.last("user", _nonempty),
        workdir=a.last("workdir", checked_path),
        labels=dict(a.all("label", _label)),
        memory=a.last("memory", parse_bytes),
        nano_cpus=a.last("cpus", parse_cpus),
        shm_size=a.last("shm-size", parse_bytes),
        privileged=a.on("privileged"),
        read_only=a.on("read-only"),
        init=a.on("init") if a.given("init") else None,
        cap_add=tuple(a.all("cap-add", _nonempty)),
        cap_drop=tuple(a.all("cap-drop", _nonempty)),
        log_driver=a.last("log-driver", _nonempty),
        log_opts=dict(a.all("log-opt", _log_opt)),
        tty=a.on("tty"),
        interactive=a.on("interactive"),
        restart=restart,
        stop_signal=a.last("stop-signal", checked_signal),
        stop_timeout=a.last("stop-timeout", parse_integer),
        extra_hosts=tuple(a.all("add-host", parse_extra_host)),
        dns=tuple(a.all("dns", checked_ip)),
        tmpfs=dict(a.all("tmpfs", parse_tmpfs)),
        ulimits=tuple({limit.name: limit for limit in a.all("ulimit", parse_ulimit)}.values()),
        pull=a.last("pull", parse_pull_policy) or "missing",
    )
    return Run(spec, detach=a.on("detach"), remove=remove, warnings=tuple(warnings))


def _exec(a: _Args) -> Exec:
    if len(a.args) < 2:
        raise a.error("needs a container and a command (docker exec [OPTIONS] CONTAINER COMMAND [ARG...])")
    if not a.args[0]:
        raise a.error("empty container name")
    return Exec(
        container=a.args[0],
        command=tuple(a.args[1:]),
        env=tuple(a.all("env", checked_env)),
        user=a.last("user", _nonempty),
        workdir=a.last("workdir", checked_path),
        detach=a.on("detach"),
        tty=a.on("tty"),
        interactive=a.on("interactive"),
    )


def _stop(a: _Args) -> Stop:
    return Stop(_containers(a), a.last("time", _timeout))


def _restart(a: _Args) -> Restart:
    return Restart(_containers(a), a.last("time", _timeout))


def _kill(a: _Args) -> Kill:
    return Kill(_containers(a), a.last("signal", checked_signal) or "KILL")


def _remove(a: _Args) -> Remove:
    return Remove(_containers(a), force=a.on("force"), volumes=a.on("volumes"))


def _start(a: _Args) -> Start:
    for name in ("attach", "interactive"):
        if a.on(name):
            raise a.error(
                f"{a.spelling(name)} is not supported: fleetlet does not attach to a container it starts "
                "(use docker run for a container the unit runs in the foreground)"
            )
    return Start(_containers(a))


def _pull(a: _Args) -> Pull:
    if a.on("all-tags"):
        raise a.error(f"{a.spelling('all-tags')} is not supported: fleetlet pulls one tag, never all tags")
    if len(a.args) != 1:
        raise a.error("needs exactly one image (docker pull [OPTIONS] NAME[:TAG|@DIGEST])")
    ref = a.value(a.args[0], parse_image_ref)
    if ref.digest:
        return Pull(a.args[0], "")  # the digest pins the image; a tag beside it changes nothing
    return Pull(ref.name, ref.tag or "latest")


def _inspect(a: _Args) -> Inspect:
    a.last("type", _inspect_type)
    return Inspect(_containers(a), a.last("format", str))


def _containers(a: _Args) -> tuple[str, ...]:
    if not a.args:
        raise a.error("needs at least one container")
    if "" in a.args:
        raise a.error("empty container name")
    return tuple(a.args)


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError("it is empty")
    return text


def _label(text: str) -> tuple[str, str]:
    return parse_key_value(text, "label", value_required=False)


def _log_opt(text: str) -> tuple[str, str]:
    return parse_key_value(text, "log option", value_required=True)


def _timeout(text: str) -> int:
    seconds = parse_integer(text)
    if seconds < -1:
        raise ValueError("use seconds, or -1 to wait without limit")
    return seconds


def _inspect_type(text: str) -> str:
    if text != "container":
        raise ValueError("fleetlet inspects containers only")
    return text


_RUN = _Table(
    *("detach/d!", "rm!", "name", "entrypoint", "env/e", "env-file", "publish/p", "publish-all/P!", "expose"),
    *("volume/v", "network|net", "hostname/h", "user/u", "workdir/w", "label/l", "memory/m", "cpus", "shm-size"),
    *("privileged!", "read-only!", "init!", "cap-add", "cap-drop", "log-driver", "log-opt", "tty/t!"),
    *("interactive/i!", "restart", "stop-signal", "stop-timeout", "add-host", "dns", "tmpfs", "ulimit", "pull"),
)
_COMMANDS: dict[str, tuple[_Table, Callable[[_Args], DockerCommand]]] = {
    "run": (_RUN, _run),
    "exec": (_Table("detach/d!", "env/e", "user/u", "workdir/w", "tty/t!", "interactive/i!"), _exec),
    "stop": (_Table("time|timeout/t"), _stop),
    "restart": (_Table("time|timeout/t"), _restart),
    "kill": (_Table("signal/s"), _kill),
    "rm": (_Table("force/f!", "volumes/v!"), _remove),
    "start": (_Table("attach/a!", "interactive/i!"), _start),  # known, so that the error can say why
    "pull": (_Table("quiet/q!", "all-tags/a!"), _pull),
    "inspect": (_Table("format/f", "type"), _inspect),
}
_GROUPS: dict[str, dict[str, str]] = {
    "container": {
        **{name: name for name in ("run", "exec", "stop", "restart", "kill", "rm", "start", "inspect")},
        "remove": "rm",
    },
    "image": {"pull": "pull"},
}
