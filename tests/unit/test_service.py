"""[Service] settings: values, systemd's defaults and rules, and every error at its file and line."""

from __future__ import annotations

import math
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlet.diagnostics import Report
from fleetlet.units.execline import ExecCommand
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.service import ServiceConfig, service_config
from fleetlet.units.syntax import parse
from tests.fleet_units import HELLO_WORLD

# fleet's documentation example. The backslash-newline wraps this source line only: one ExecStart line.

# Settings in the tables below start on line 3, after the header and this line.
BASE = "[Service]\nExecStart=/bin/true\n"
TRUE = ExecCommand(("/bin/true",), raw="/bin/true")
SPECIFIERS = "(fleetlet knows %n %N %p %i %I %f %H %m %b %%; write %% for a literal %)"
UNITS = "(use us, ms, s, min, h, d, w, M or y)"
NOT_ABSOLUTE = "give an absolute path, or a plain name to search PATH for"


def check(text: str) -> tuple[ServiceConfig, list[str]]:
    """The config and every diagnostic as ``file:line: message``, in line order."""
    report = Report("test.service")
    config = service_config(parse(text, "test.service"), report)
    return config, [str(d) for d in sorted(report.diagnostics, key=lambda d: d.line)]


def test_fleet_hello_world() -> None:
    config, diagnostics = check(HELLO_WORLD)
    assert diagnostics == []
    assert config == ServiceConfig(
        timeout_start_sec=math.inf,
        exec_start_pre=(
            ExecCommand(("/usr/bin/docker", "rm", "busybox1"), ignore_failure=True, raw="-/usr/bin/docker rm busybox1"),
            ExecCommand(("/usr/bin/docker", "pull", "busybox"), raw="/usr/bin/docker pull busybox"),
        ),
        exec_start=(
            ExecCommand(
                (
                    "/usr/bin/docker",
                    "run",
                    "--rm",
                    "--name",
                    "busybox1",
                    "busybox",
                    "/bin/sh",
                    "-c",
                    "while true; do echo Hello World; sleep 1; done",
                ),
                raw="/usr/bin/docker run --rm --name busybox1 busybox /bin/sh -c "
                '"while true; do echo Hello World; sleep 1; done"',
            ),
        ),
        exec_stop=(ExecCommand(("/usr/bin/docker", "stop", "busybox1"), raw="/usr/bin/docker stop busybox1"),),
    )


def test_defaults() -> None:
    config, diagnostics = check(BASE)
    assert diagnostics == []
    assert config == ServiceConfig(exec_start=(TRUE,))
    assert (config.type, config.restart, config.restart_sec) == ("simple", "no", 0.1)
    assert (config.timeout_start_sec, config.timeout_stop_sec) == (90.0, 90.0)
    assert (config.remain_after_exit, config.kill_mode, config.kill_signal) == (False, "control-group", 15)
    assert config.success_exit_status == (frozenset(), frozenset())
    assert (config.environment, config.environment_files) == ((), ())
    assert (config.start_limit_interval_sec, config.start_limit_burst) == (10.0, 5)


@pytest.mark.parametrize(
    ("settings", "field", "value"),
    [
        *((f"Type={t}", "type", t) for t in ("simple", "exec", "forking", "idle")),
        *(
            (f"Restart={r}", "restart", r)
            for r in ("no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog")
        ),
        ("RestartSec=5", "restart_sec", 5.0),
        ("RestartSec=100ms", "restart_sec", 0.1),
        ("RestartSec=2min 30s", "restart_sec", 150.0),
        ("RestartSec=0", "restart_sec", 0.0),
        ("RestartSec=5\nRestartSec=7", "restart_sec", 7.0),  # the last assignment wins
        ("RestartSec=5\nRestartSec=", "restart_sec", 0.1),  # an empty one resets to the default
        ("TimeoutStartSec=5min", "timeout_start_sec", 300.0),
        ("TimeoutStartSec=0", "timeout_start_sec", math.inf),  # 0 means no timeout
        ("TimeoutStartSec=infinity", "timeout_start_sec", math.inf),
        ("TimeoutStopSec=30", "timeout_stop_sec", 30.0),
        ("TimeoutStopSec=0", "timeout_stop_sec", math.inf),
        ("TimeoutStopSec=infinity", "timeout_stop_sec", math.inf),
        ("TimeoutSec=10", "timeout_start_sec", 10.0),
        ("TimeoutSec=10", "timeout_stop_sec", 10.0),
        ("TimeoutSec=0", "timeout_stop_sec", math.inf),
        ("TimeoutSec=10\nTimeoutStartSec=20", "timeout_start_sec", 20.0),  # file order decides
        ("TimeoutSec=10\nTimeoutStartSec=20", "timeout_stop_sec", 10.0),
        ("TimeoutStartSec=20\nTimeoutSec=10", "timeout_start_sec", 10.0),
        ("TimeoutStopSec=20\nTimeoutSec=10\nTimeoutSec=", "timeout_stop_sec", 90.0),
        ("RemainAfterExit=yes", "remain_after_exit", True),
        ("RemainAfterExit=true\nRemainAfterExit=off", "remain_after_exit", False),
        *((f"KillMode={m}", "kill_mode", m) for m in ("control-group", "mixed", "process", "none")),
        ("KillSignal=SIGKILL", "kill_signal", signal.SIGKILL),
        ("KillSignal=INT", "kill_signal", signal.SIGINT),
        ("KillSignal=1", "kill_signal", signal.SIGHUP),
        ("KillSignal=SIGINT\nKillSignal=", "kill_signal", signal.SIGTERM),
        ("SuccessExitStatus=1 2 SIGKILL", "success_exit_status", (frozenset({1, 2}), frozenset({9}))),
        # a list in systemd: assignments add up, and an empty one resets
        (
            "SuccessExitStatus=1\nSuccessExitStatus=2 TERM",
            "success_exit_status",
            (frozenset({1, 2}), frozenset({15})),
        ),
        (
            "SuccessExitStatus=1\nSuccessExitStatus=\nSuccessExitStatus=3",
            "success_exit_status",
            (frozenset({3}), frozenset()),
        ),
        ("StartLimitInterval=30", "start_limit_interval_sec", 30.0),  # the old spelling, in [Service]
        ("StartLimitBurst=2", "start_limit_burst", 2),  # the old place
        ("StartLimitBurst=0", "start_limit_burst", 0),
        ("Environment=A=1 B=2", "environment", (("A", "1"), ("B", "2"))),
        (
            'Environment="A=with space" \'B=x"y\' C=',
            "environment",
            (("A", "with space"), ("B", 'x"y'), ("C", "")),
        ),
        ("Environment=A=1=2 _x=${PATH}:/opt", "environment", (("A", "1=2"), ("_x", "${PATH}:/opt"))),
        ("Environment=A=1\nEnvironment=A=2", "environment", (("A", "1"), ("A", "2"))),  # kept in order
        ("Environment=A=1\nEnvironment=\nEnvironment=B=2", "environment", (("B", "2"),)),
        (r"Environment=MSG=a\sb\tc NAME=%n", "environment", (("MSG", "a b\tc"), ("NAME", "%n"))),
        ("EnvironmentFile=/etc/app.env", "environment_files", (("/etc/app.env", False),)),
        ("EnvironmentFile=-/etc/app.env", "environment_files", (("/etc/app.env", True),)),
        ("EnvironmentFile=/a\nEnvironmentFile=-/b", "environment_files", (("/a", False), ("/b", True))),
        ("EnvironmentFile=-%f.env", "environment_files", (("%f.env", True),)),  # %f is absolute
        ("EnvironmentFile=/a\nEnvironmentFile=\nEnvironmentFile=/b", "environment_files", (("/b", False),)),
    ],
)
def test_setting(settings: str, field: str, value: object) -> None:
    config, diagnostics = check(f"{BASE}{settings}\n")
    assert diagnostics == []
    assert getattr(config, field) == value


@pytest.mark.parametrize(
    ("unit", "interval", "burst"),
    [
        ("[Unit]\nStartLimitIntervalSec=60\nStartLimitBurst=3\n", 60.0, 3),
        ("[Unit]\nStartLimitInterval=1min\n", 60.0, 5),
        ("[Unit]\nStartLimitIntervalSec=0\n", 0.0, 5),  # 0 turns rate limiting off
        ("[Unit]\nStartLimitIntervalSec=infinity\n", math.inf, 5),
        ("[Unit]\nStartLimitIntervalSec=60\nStartLimitIntervalSec=\n", 10.0, 5),
        # several spellings and sections: the last in the file wins
        ("[Unit]\nStartLimitBurst=3\n[Service]\nStartLimitBurst=4\n", 10.0, 4),
        ("[Service]\nStartLimitBurst=4\n[Unit]\nStartLimitBurst=3\n", 10.0, 3),
        ("[Unit]\nStartLimitIntervalSec=20\n[Service]\nStartLimitInterval=30\n", 30.0, 5),
        (
            "[Service]\nStartLimitInterval=30\n[Unit]\nStartLimitInterval=20\nStartLimitIntervalSec=40\n",
            40.0,
            5,
        ),
    ],
)
def test_start_limits(unit: str, interval: float, burst: int) -> None:
    config, diagnostics = check(f"{unit}[Service]\nExecStart=/bin/true\n")
    assert diagnostics == []
    assert (config.start_limit_interval_sec, config.start_limit_burst) == (interval, burst)


def test_start_limit_interval_sec_in_service_is_ignored_with_a_warning() -> None:
    config, diagnostics = check(f"{BASE}StartLimitIntervalSec=60\n")
    assert diagnostics == ["test.service:3: warning: StartLimitIntervalSec= belongs in [Unit]; systemd ignores it here"]
    assert config.start_limit_interval_sec == 10.0


@pytest.mark.parametrize(
    ("settings", "diagnostics"),
    [
        (
            "RestartSec=10 parsecs",
            [f"3: RestartSec=: invalid time span '10 parsecs': unknown unit 'parsecs' {UNITS}"],
        ),
        ("RestartSec=-1", ["3: RestartSec=: invalid time span '-1': negative"]),
        ("RestartSec=infinity", ["3: RestartSec=: 'infinity': a restart delay must be finite"]),
        *(
            (
                f"Type={t}",
                [
                    f"3: Type=: '{t}' is not supported: fleetlet cannot receive sd_notify or D-Bus readiness "
                    "from a container; use Type=simple"
                ],
            )
            for t in ("notify", "notify-reload", "dbus")
        ),
        (
            "Type=daemon",
            ["3: Type=: invalid value 'daemon' (valid: exec, forking, idle, oneshot, simple)"],
        ),
        (
            "Type=Simple",
            ["3: Type=: invalid value 'Simple' (valid: exec, forking, idle, oneshot, simple)"],
        ),
        (
            "Restart=sometimes",
            [
                "3: Restart=: invalid value 'sometimes' "
                "(valid: always, no, on-abnormal, on-abort, on-failure, on-success, on-watchdog)"
            ],
        ),
        (
            "TimeoutStartSec=soon",
            ["3: TimeoutStartSec=: invalid time span 'soon'"],
        ),
        ("TimeoutStopSec=-5s", ["3: TimeoutStopSec=: invalid time span '-5s': negative"]),
        (
            "TimeoutSec=5 apples",
            [f"3: TimeoutSec=: invalid time span '5 apples': unknown unit 'apples' {UNITS}"],
        ),
        ("RemainAfterExit=maybe", ["3: RemainAfterExit=: invalid boolean 'maybe' (use yes or no)"]),
        (
            "KillMode=all",
            ["3: KillMode=: invalid value 'all' (valid: control-group, mixed, none, process)"],
        ),
        ("KillSignal=SIGFOO", ["3: KillSignal=: invalid signal 'SIGFOO'"]),
        ("KillSignal=0", ["3: KillSignal=: invalid signal '0': numbers run from 1 to 64"]),
        (
            "SuccessExitStatus=300",
            ["3: SuccessExitStatus=: invalid exit status '300': exit codes run from 0 to 255"],
        ),
        ("StartLimitBurst=-1", ["3: StartLimitBurst=: invalid unsigned integer '-1'"]),
        ("StartLimitInterval=x", ["3: StartLimitInterval=: invalid time span 'x'"]),
        ("Environment=NOEQUALS", ["3: Environment=: 'NOEQUALS' is not a VAR=value assignment"]),
        ("Environment=1A=x", ["3: Environment=: invalid variable name '1A' in '1A=x'"]),
        ("Environment==x", ["3: Environment=: invalid variable name '' in '=x'"]),
        ("Environment=A-B=x", ["3: Environment=: invalid variable name 'A-B' in 'A-B=x'"]),
        ('Environment="A=1', ["3: Environment=: unbalanced quoting"]),
        (
            r"Environment=A=\q",
            ["3: Environment=: unknown escape sequence '\\q' (write \\\\ for a literal backslash)"],
        ),
        ("Environment=A=%z", [f"3: Environment=: unsupported specifier %z {SPECIFIERS}"]),
        (
            "Environment=A=1 bad C B=%",
            [
                "3: Environment=: '%' at the end of the value starts no specifier (write %% for a literal %)",
                "3: Environment=: 'bad' is not a VAR=value assignment",
                "3: Environment=: 'C' is not a VAR=value assignment",
            ],
        ),
        ("EnvironmentFile=etc/app.env", ["3: EnvironmentFile=: path 'etc/app.env' is not absolute"]),
        ("EnvironmentFile=-", ["3: EnvironmentFile=: path '' is not absolute"]),
        ("EnvironmentFile=/etc/%y.env", [f"3: EnvironmentFile=: unsupported specifier %y {SPECIFIERS}"]),
        ("ExecStartPre=bin/foo", [f"3: ExecStartPre=: relative path 'bin/foo': {NOT_ABSOLUTE}"]),
        ("ExecStartPost=/bin/a ;", ["3: ExecStartPost=: empty command next to a ';' separator"]),
        ("ExecReload=-", ["3: ExecReload=: empty program name after prefixes '-'"]),
        ("ExecStop=+!/bin/kill", ["3: ExecStop=: prefixes '+' and '!' cannot be combined: give one"]),
        ('ExecStopPost=/bin/sh -c "x', ["3: ExecStopPost=: unbalanced quoting"]),
        ("ExecStop=/bin/kill %q", [f"3: ExecStop=: unsupported specifier %q {SPECIFIERS}"]),
        # every assignment is checked, and errors never stop the others being found
        (
            "RestartSec=bogus\nRestartSec=5\nType=notify\nKillMode=all\nExecStop=x/y",
            [
                "3: RestartSec=: invalid time span 'bogus'",
                "5: Type=: 'notify' is not supported: fleetlet cannot receive sd_notify or D-Bus readiness "
                "from a container; use Type=simple",
                "6: KillMode=: invalid value 'all' (valid: control-group, mixed, none, process)",
                f"7: ExecStop=: relative path 'x/y': {NOT_ABSOLUTE}",
            ],
        ),
    ],
)
def test_setting_errors(settings: str, diagnostics: list[str]) -> None:
    _, found = check(f"{BASE}{settings}\n")
    assert found == [f"test.service:{d}" for d in diagnostics]


@pytest.mark.parametrize(
    ("settings", "field", "value"),
    [
        ("RestartSec=5\nRestartSec=bogus", "restart_sec", 0.1),  # a bad value falls back to the default
        ("RestartSec=bogus\nRestartSec=5", "restart_sec", 5.0),
        ("Type=notify", "type", "simple"),
        ("Type=oneshot\nType=dbus", "type", "simple"),
        ("TimeoutSec=bad", "timeout_stop_sec", 90.0),
        ("KillSignal=SIGFOO", "kill_signal", signal.SIGTERM),
        ("Environment=A=1 bad B=2", "environment", (("A", "1"), ("B", "2"))),
        ('Environment=A=1\nEnvironment="B', "environment", (("A", "1"),)),
        ("EnvironmentFile=rel\nEnvironmentFile=/abs", "environment_files", (("/abs", False),)),
        (
            "SuccessExitStatus=1\nSuccessExitStatus=999\nSuccessExitStatus=2",
            "success_exit_status",
            (frozenset({1, 2}), frozenset()),
        ),
        (
            "ExecStop=/bin/a\nExecStop=rel/b\nExecStop=/bin/c",
            "exec_stop",
            (ExecCommand(("/bin/a",), raw="/bin/a"), ExecCommand(("/bin/c",), raw="/bin/c")),
        ),
    ],
)
def test_values_after_errors(settings: str, field: str, value: object) -> None:
    config, diagnostics = check(f"{BASE}{settings}\n")
    assert diagnostics != []
    assert getattr(config, field) == value


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("ExecStartPre", "exec_start_pre"),
        ("ExecStartPost", "exec_start_post"),
        ("ExecReload", "exec_reload"),
        ("ExecStop", "exec_stop"),
        ("ExecStopPost", "exec_stop_post"),
    ],
)
def test_exec_lists(setting: str, field: str) -> None:
    text = f"{BASE}{setting}=/bin/old\n{setting}=\n{setting}=-/bin/a x\n{setting}=/bin/b ; @/bin/c c0\n"
    config, diagnostics = check(text)
    assert diagnostics == []
    assert getattr(config, field) == (
        ExecCommand(("/bin/a", "x"), ignore_failure=True, raw="-/bin/a x"),
        ExecCommand(("/bin/b",), raw="/bin/b"),
        ExecCommand(("/bin/c", "c0"), argv0_override=True, raw="@/bin/c c0"),
    )


@pytest.mark.parametrize(
    ("text", "diagnostics"),
    [
        (
            "[Unit]\nDescription=x\n\n[Service]\nRestart=always\n",
            ["5: ExecStart= is required (only Type=oneshot may leave it out)"],
        ),
        (
            "[Unit]\nDescription=x\n",
            ["ExecStart= is required (only Type=oneshot may leave it out)"],
        ),  # line 0
        (
            "[Service]\nExecStart=/bin/a\nExecStart=\n",
            ["2: ExecStart= is required (only Type=oneshot may leave it out)"],
        ),
        ("[Service]\nType=oneshot\nRemainAfterExit=yes\n", []),
        ("[Service]\nType=oneshot\n", ["2: Type=oneshot without ExecStart= needs RemainAfterExit=yes"]),
        ("[Container]\nImage=busybox\n", []),  # the container section supplies the command
        ("[Service]\nRestart=always\n[Container]\nImage=busybox\n", []),
        (
            "[Service]\nExecStart=bin/a\n",
            [f"2: ExecStart=: relative path 'bin/a': {NOT_ABSOLUTE}"],
        ),  # given, bad
        (
            "[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n",
            ["3: ExecStart=: more than one command needs Type=oneshot (Type=simple)"],
        ),
        (
            "[Service]\nExecStart=/bin/a ; /bin/b\n",
            ["2: ExecStart=: more than one command needs Type=oneshot (Type=simple)"],
        ),
        (
            "[Service]\nType=forking\nExecStart=/bin/a\nExecStart=/bin/b\nExecStart=/bin/c\n",
            ["4: ExecStart=: more than one command needs Type=oneshot (Type=forking)"],
        ),
        ("[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n", []),
        ("[Service]\nType=oneshot\nExecStart=/bin/a ; /bin/b\nExecStart=/bin/c\n", []),
        (
            "[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=always\n",
            ["4: Restart=: always is not allowed with Type=oneshot (use on-failure, or Type=simple)"],
        ),
        (
            "[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=on-success\n",
            ["4: Restart=: on-success is not allowed with Type=oneshot (use on-failure, or Type=simple)"],
        ),
        ("[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=on-failure\n", []),
        ("[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=always\nRestart=\n", []),
    ],
)
def test_exec_start_rules(text: str, diagnostics: list[str]) -> None:
    _, found = check(text)
    assert found == [f"test.service:{d}" if d[0].isdigit() else f"test.service: {d}" for d in diagnostics]


@pytest.mark.parametrize(
    ("settings", "start", "stop"),
    [
        ("", math.inf, 90.0),  # systemd turns the start timeout off for oneshot services
        ("TimeoutStartSec=5", 5.0, 90.0),
        ("TimeoutSec=7", 7.0, 7.0),
        ("TimeoutStartSec=5\nTimeoutStartSec=", math.inf, 90.0),
    ],
)
def test_oneshot_start_timeout(settings: str, start: float, stop: float) -> None:
    config, diagnostics = check(f"[Service]\nType=oneshot\nExecStart=/bin/true\n{settings}\n")
    assert diagnostics == []
    assert (config.type, config.timeout_start_sec, config.timeout_stop_sec) == ("oneshot", start, stop)


def test_unit_built_without_lines_reports_line_zero() -> None:
    unit = UnitFile.from_options([UnitOption("Service", "ExecStart", "/bin/a"), UnitOption("Service", "Type", "x")])
    report = Report("api")
    config = service_config(unit, report)
    assert [(d.line, d.message) for d in report.diagnostics] == [
        (0, "Type=: invalid value 'x' (valid: exec, forking, idle, oneshot, simple)")
    ]
    assert config.exec_start == (ExecCommand(("/bin/a",), raw="/bin/a"),)


_KEYS = [
    ("Service", name)
    for name in (
        "Type",
        "Restart",
        "RestartSec",
        "TimeoutStartSec",
        "TimeoutStopSec",
        "TimeoutSec",
        "RemainAfterExit",
        "KillMode",
        "KillSignal",
        "SuccessExitStatus",
        "Environment",
        "EnvironmentFile",
        "ExecStartPre",
        "ExecStart",
        "ExecStartPost",
        "ExecReload",
        "ExecStop",
        "ExecStopPost",
        "StartLimitInterval",
        "StartLimitBurst",
        "StartLimitIntervalSec",
    )
] + [
    ("Unit", "StartLimitIntervalSec"),
    ("Unit", "StartLimitInterval"),
    ("Unit", "StartLimitBurst"),
    ("Container", "Image"),
]
_VALUES = st.one_of(
    st.text(),
    st.sampled_from(["", "0", "5", "infinity", "oneshot", "notify", "always", "yes", "SIGKILL", "-/bin/a", "A=1"]),
    st.text(alphabet="-@:+!;|/\\\"' %$=01xAbs\t", max_size=20),
)


@given(st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), max_size=12))
def test_service_config_only_adds_diagnostics(assignments: list[tuple[tuple[str, str], str]]) -> None:
    options = [UnitOption(section, name, value) for (section, name), value in assignments]
    unit = UnitFile.from_options(options, list(range(1, len(options) + 1)), "fuzz.service")
    report = Report("fuzz.service")
    config = service_config(unit, report)
    assert isinstance(config, ServiceConfig)
    assert all(0 <= d.line <= len(options) for d in report.diagnostics)
