"""The ``[Service]`` settings fleetlet executes, read and checked once, with systemd's defaults.

Single-valued settings follow systemd: the last assignment wins and an empty one resets to the default.
Every assignment is checked, not only the last: where systemd logs a bad line and keeps going, fleetlet
reports an error, so that a unit never runs with a setting silently dropped. A bad value falls back to the
default so that checking continues and one pass reports every problem.
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from fleetlet.diagnostics import Report
from fleetlet.units.execline import EXEC_SETTINGS, ExecCommand, parse_exec_line
from fleetlet.units.model import Entry, UnitFile
from fleetlet.units.specifiers import specifier_problems
from fleetlet.units.values import (
    parse_bool,
    parse_exit_statuses,
    parse_signal,
    parse_timespan,
    parse_unsigned,
)
from fleetlet.units.words import split_words

ServiceType = Literal["simple", "exec", "forking", "oneshot", "idle"]
RestartPolicy = Literal["no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog"]
KillMode = Literal["control-group", "mixed", "process", "none"]

SERVICE_TYPES: tuple[ServiceType, ...] = ("simple", "exec", "forking", "oneshot", "idle")
RESTART_POLICIES: tuple[RestartPolicy, ...] = (
    "no",
    "always",
    "on-success",
    "on-failure",
    "on-abnormal",
    "on-abort",
    "on-watchdog",
)
KILL_MODES: tuple[KillMode, ...] = ("control-group", "mixed", "process", "none")
# Readiness is announced over a socket or the bus, neither of which reaches fleetlet from inside a container.
_READINESS_TYPES = frozenset({"notify", "notify-reload", "dbus"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Where systemd reads the start rate limit: [Unit] now, [Service] under the old names, kept for compatibility.
_START_LIMIT_INTERVAL = [
    ("Unit", "StartLimitIntervalSec"),
    ("Unit", "StartLimitInterval"),
    ("Service", "StartLimitInterval"),
]
_START_LIMIT_BURST = [("Unit", "StartLimitBurst"), ("Service", "StartLimitBurst")]

_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What to run for a service and how to supervise it. Times are seconds; math.inf means no limit."""

    type: ServiceType = "simple"
    restart: RestartPolicy = "no"
    restart_sec: float = 0.1
    timeout_start_sec: float = 90.0  # math.inf by default for Type=oneshot, as in systemd
    timeout_stop_sec: float = 90.0
    remain_after_exit: bool = False
    kill_mode: KillMode = "control-group"
    kill_signal: int = int(signal.SIGTERM)
    # (exit codes, signals) that also count as success, besides systemd's built-in clean exits
    success_exit_status: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())
    environment: tuple[tuple[str, str], ...] = ()  # in file order; a later assignment of a name wins
    environment_files: tuple[tuple[str, bool], ...] = ()  # (absolute path, optional)
    exec_start_pre: tuple[ExecCommand, ...] = ()
    exec_start: tuple[ExecCommand, ...] = ()
    exec_start_post: tuple[ExecCommand, ...] = ()
    exec_reload: tuple[ExecCommand, ...] = ()
    exec_stop: tuple[ExecCommand, ...] = ()
    exec_stop_post: tuple[ExecCommand, ...] = ()
    start_limit_interval_sec: float = 10.0  # 0 turns start rate limiting off
    start_limit_burst: int = 5


def service_config(unit: UnitFile, report: Report) -> ServiceConfig:
    """Read ``[Service]`` (and the start limits in ``[Unit]``), adding every problem found to ``report``."""
    default = ServiceConfig()
    service_type = _single(unit, report, _service("Type"), _parse_type)
    restart = _single(unit, report, _service("Restart"), _one_of(RESTART_POLICIES))
    restart_sec = _single(unit, report, _service("RestartSec"), _finite_timespan)
    timeout_start, timeout_stop = _timeouts(unit, report)
    remain = _single(unit, report, _service("RemainAfterExit"), parse_bool)
    kill_mode = _single(unit, report, _service("KillMode"), _one_of(KILL_MODES))
    kill_signal = _single(unit, report, _service("KillSignal"), parse_signal)
    interval = _single(unit, report, _START_LIMIT_INTERVAL, parse_timespan)
    burst = _single(unit, report, _START_LIMIT_BURST, parse_unsigned)
    for entry in unit.entries("Service", "StartLimitIntervalSec"):
        report.warning(entry.line, "StartLimitIntervalSec= belongs in [Unit]; systemd ignores it here")
    execs = _exec_commands(unit, report)
    oneshot = service_type == "oneshot"  # systemd turns the start timeout off by default for these

    config = ServiceConfig(
        type=service_type or default.type,
        restart=restart or default.restart,
        restart_sec=_or(restart_sec, default.restart_sec),
        timeout_start_sec=_or(timeout_start, math.inf if oneshot else default.timeout_start_sec),
        timeout_stop_sec=_or(timeout_stop, default.timeout_stop_sec),
        remain_after_exit=_or(remain, default.remain_after_exit),
        kill_mode=kill_mode or default.kill_mode,
        kill_signal=_or(kill_signal, default.kill_signal),
        success_exit_status=_exit_statuses(unit, report),
        environment=_environment(unit, report),
        environment_files=_environment_files(unit, report),
        start_limit_interval_sec=_or(interval, default.start_limit_interval_sec),
        start_limit_burst=_or(burst, default.start_limit_burst),
        exec_start_pre=_only_commands(execs["ExecStartPre"]),
        exec_start=_only_commands(execs["ExecStart"]),
        exec_start_post=_only_commands(execs["ExecStartPost"]),
        exec_reload=_only_commands(execs["ExecReload"]),
        exec_stop=_only_commands(execs["ExecStop"]),
        exec_stop_post=_only_commands(execs["ExecStopPost"]),
    )
    _check_combination(unit, config, [line for _, line in execs["ExecStart"]], report)
    return config


def _check_combination(unit: UnitFile, config: ServiceConfig, start_lines: list[int], report: Report) -> None:
    """systemd's load-time rules about settings together; it refuses to load a unit that breaks them.

    ``start_lines`` holds the line of each ExecStart= command that parsed.
    """
    oneshot = config.type == "oneshot"
    starts = unit.list_entries("Service", "ExecStart")
    if not starts and "Container" not in unit.sections():  # a [Container] unit gets its command elsewhere
        where = unit.line_of("Service")
        if not oneshot:
            report.error(where, "ExecStart= is required (only Type=oneshot may leave it out)")
        elif not config.remain_after_exit:
            report.error(where, "Type=oneshot without ExecStart= needs RemainAfterExit=yes")
    if starts and "Container" in unit.sections():
        report.error(starts[0].line, "ExecStart= and a [Container] section cannot be combined: choose one")
    if not oneshot and len(start_lines) > 1:
        report.error(start_lines[1], f"ExecStart=: more than one command needs Type=oneshot (Type={config.type})")
    restart = unit.last("Service", "Restart")
    if oneshot and restart is not None and config.restart in ("always", "on-success"):
        report.error(
            restart.line,
            f"Restart=: {config.restart} is not allowed with Type=oneshot (use on-failure, or Type=simple)",
        )


def _exec_commands(unit: UnitFile, report: Report) -> dict[str, list[tuple[ExecCommand, int]]]:
    """Each Exec setting's commands, with the line each came from."""
    found: dict[str, list[tuple[ExecCommand, int]]] = {}
    for name in EXEC_SETTINGS:
        commands = found[name] = []
        for entry in unit.list_entries("Service", name):
            _check_specifiers(name, entry, report)
            try:
                commands.extend((command, entry.line) for command in parse_exec_line(entry.value))
            except ValueError as e:
                report.error(entry.line, f"{name}=: {e}")
    return found


def _only_commands(found: list[tuple[ExecCommand, int]]) -> tuple[ExecCommand, ...]:
    return tuple(command for command, _ in found)


def _environment(unit: UnitFile, report: Report) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for entry in unit.list_entries("Service", "Environment"):
        _check_specifiers("Environment", entry, report)
        try:
            words = split_words(entry.value)
        except ValueError as e:
            report.error(entry.line, f"Environment=: {e}")
            continue
        for word in words:
            name, sep, value = word.partition("=")
            if not sep:
                report.error(entry.line, f"Environment=: {word!r} is not a VAR=value assignment")
            elif not _ENV_NAME.fullmatch(name):
                report.error(entry.line, f"Environment=: invalid variable name {name!r} in {word!r}")
            else:
                pairs.append((name, value))
    return tuple(pairs)


def _environment_files(unit: UnitFile, report: Report) -> tuple[tuple[str, bool], ...]:
    files: list[tuple[str, bool]] = []
    for entry in unit.list_entries("Service", "EnvironmentFile"):
        _check_specifiers("EnvironmentFile", entry, report)
        optional = entry.value.startswith("-")
        path = entry.value[1:] if optional else entry.value
        if not path.startswith(("/", "%f")):  # %f expands to an absolute path
            report.error(entry.line, f"EnvironmentFile=: path {path!r} is not absolute")
        else:
            files.append((path, optional))
    return tuple(files)


def _exit_statuses(unit: UnitFile, report: Report) -> tuple[frozenset[int], frozenset[int]]:
    """SuccessExitStatus= is a list in systemd: assignments add up, and an empty one resets."""
    codes: frozenset[int] = frozenset()
    signals: frozenset[int] = frozenset()
    for entry in unit.list_entries("Service", "SuccessExitStatus"):
        try:
            more_codes, more_signals = parse_exit_statuses(entry.value)
        except ValueError as e:
            report.error(entry.line, f"SuccessExitStatus=: {e}")
            continue
        codes |= more_codes
        signals |= more_signals
    return codes, signals


def _timeouts(unit: UnitFile, report: Report) -> tuple[float | None, float | None]:
    """TimeoutStartSec= and TimeoutStopSec=, with TimeoutSec= setting both wherever it comes in file order."""
    start: float | None = None
    stop: float | None = None
    for name, entry in _assignments(unit, _service("TimeoutStartSec", "TimeoutStopSec", "TimeoutSec")):
        value = _parse(name, entry, _timeout, report)
        if name != "TimeoutStopSec":
            start = value
        if name != "TimeoutStartSec":
            stop = value
    return start, stop


def _single(unit: UnitFile, report: Report, keys: list[tuple[str, str]], parse: Callable[[str], _T]) -> _T | None:
    """The value of the last assignment of a single-valued setting; None for unset, reset or invalid."""
    value: _T | None = None
    for name, entry in _assignments(unit, keys):
        value = _parse(name, entry, parse, report)
    return value


def _parse(name: str, entry: Entry, parse: Callable[[str], _T], report: Report) -> _T | None:
    if entry.value == "":
        return None
    try:
        return parse(entry.value)
    except ValueError as e:
        report.error(entry.line, f"{name}=: {e}")
        return None


def _assignments(unit: UnitFile, keys: Iterable[tuple[str, str]]) -> list[tuple[str, Entry]]:
    """Assignments of any of a setting's spellings (and sections), in file order."""
    wanted = set(keys)
    lines = unit.lines or (0,) * len(unit.options)
    found = [
        (option.name, Entry(option.value, line))
        for option, line in zip(unit.options, lines, strict=True)
        if (option.section, option.name) in wanted
    ]
    found.sort(key=lambda assignment: assignment[1].line)  # stable: option order among equal lines
    return found


def _service(*names: str) -> list[tuple[str, str]]:
    return [("Service", name) for name in names]


def _check_specifiers(name: str, entry: Entry, report: Report) -> None:
    for problem in specifier_problems(entry.value):
        report.error(entry.line, f"{name}=: {problem}")


def _parse_type(text: str) -> ServiceType:
    if text in _READINESS_TYPES:
        raise ValueError(
            f"{text!r} is not supported: fleetlet cannot receive sd_notify or D-Bus readiness from a "
            "container; use Type=simple"
        )
    return _one_of(SERVICE_TYPES)(text)


def _one_of(choices: tuple[_S, ...]) -> Callable[[str], _S]:
    def parse(text: str) -> _S:
        for choice in choices:
            if choice == text:
                return choice
        raise ValueError(f"invalid value {text!r} (valid: {', '.join(sorted(choices))})")

    return parse


def _finite_timespan(text: str) -> float:
    seconds = parse_timespan(text)
    if math.isinf(seconds):
        raise ValueError(f"{text!r}: a restart delay must be finite")
    return seconds


def _timeout(text: str) -> float:
    """A timeout of 0 means none, as in systemd."""
    seconds = parse_timespan(text)
    return math.inf if seconds == 0 else seconds


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value
