"""`fleetlet verify` reads the docker commands in Exec lines as fleetlet will carry them out: problems at their line."""

from __future__ import annotations

import pytest

from fleetlet.diagnostics import Report
from fleetlet.units.check import check_unit

SLEEP = 'busybox sh -c "while true; do sleep 1; done"'
UNSUPPORTED = "unsupported flag --device (fleetlet cannot carry it out; it is never silently dropped)"
RESTART_FIGHTS = (
    "--restart always fights fleetlet's supervision: the engine restarts the container behind the unit's back "
    "(use Restart= in [Service] instead)"
)
VALID_NAME = "[a-zA-Z0-9][a-zA-Z0-9_.-]+"
DETACHED = (
    "ends as soon as the container starts, so the unit stops at once (use Type=forking to follow the container, "
    "or drop -d)"
)


def diagnostics(body: str, name: str = "hello.service") -> list[str]:
    """Every diagnostic of ``[Service]`` + body (settings start on line 2), as file:line: message."""
    report = Report(name)
    check_unit("[Service]\n" + body, name, report)
    return [str(d) for d in report.in_file_order()]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # fleet's own commands: nothing to say.
        (
            "ExecStartPre=-/usr/bin/docker rm -f web\nExecStartPre=/usr/bin/docker pull busybox\n"
            f"ExecStart=/usr/bin/docker run --rm --name web -p 8080:80 -e A=1 -v /srv:/srv:ro {SLEEP}\n"
            "ExecStop=/usr/bin/docker stop -t 5 web\nExecReload=/usr/bin/docker kill -s HUP web\n"
            "ExecStopPost=-/usr/bin/docker rm web",
            [],
        ),
        # A flag fleetlet cannot carry out, in each of the six settings.
        (
            f"ExecStart=/bin/true\nExecStartPre=/usr/bin/docker run --device /dev/fuse {SLEEP}",
            [f"hello.service:3: ExecStartPre=: docker run: {UNSUPPORTED}"],
        ),
        (
            f"ExecStart=/usr/bin/docker run --device /dev/fuse {SLEEP}",
            [f"hello.service:2: ExecStart=: docker run: {UNSUPPORTED}"],
        ),
        (
            f"ExecStart=/bin/true\nExecStartPost=docker run --device=/dev/fuse {SLEEP}",
            [f"hello.service:3: ExecStartPost=: docker run: {UNSUPPORTED}"],
        ),
        (
            "ExecStart=/bin/true\nExecReload=/usr/bin/docker logs web",
            [
                "hello.service:3: ExecReload=: docker: unsupported command 'logs' (fleetlet carries out: exec, "
                "inspect, kill, pull, restart, rm, run, start, stop)"
            ],
        ),
        (
            "ExecStart=/bin/true\nExecStop=/usr/bin/docker -H tcp://10.0.0.1:2375 stop web",
            [
                "hello.service:3: ExecStop=: docker: unsupported global flag -H (fleetlet talks to its own engine "
                "through the Engine API; give the command first, as in docker run ...)"
            ],
        ),
        (
            "ExecStart=/bin/true\nExecStopPost=/usr/bin/docker run",
            [
                "hello.service:3: ExecStopPost=: docker run: needs an image (docker run [OPTIONS] IMAGE [COMMAND] "
                "[ARG...])"
            ],
        ),
        # Accepted, with a warning the docker command line carries.
        (
            f"ExecStart=/usr/bin/docker run --restart=always {SLEEP}",
            [f"hello.service:2: warning: ExecStart=: docker run: {RESTART_FIGHTS}"],
        ),
        # Several commands on one line: each is read, each problem at that line.
        (
            "Type=oneshot\nExecStart=/usr/bin/docker rm web ; /usr/bin/docker run --device /dev/fuse busybox true ; "
            "/usr/bin/docker frob",
            [
                f"hello.service:3: ExecStart=: docker run: {UNSUPPORTED}",
                "hello.service:3: ExecStart=: docker: unsupported command 'frob' (fleetlet carries out: exec, "
                "inspect, kill, pull, restart, rm, run, start, stop)",
            ],
        ),
        # An empty assignment resets the list: the commands before it never run.
        (
            "ExecStart=/bin/true\nExecStartPre=/usr/bin/docker frob\nExecStartPre=\nExecStartPre=/usr/bin/docker rm x",
            [],
        ),
        # '@': the second word is argv[0] only; docker reads the rest.
        (
            f"ExecStart=@/usr/bin/docker docker run --device /dev/fuse {SLEEP}",
            [f"hello.service:2: ExecStart=: docker run: {UNSUPPORTED}"],
        ),
        # $VAR is only known at run time: the command is left alone...
        (f"ExecStart=/usr/bin/docker run --device $DEVICE {SLEEP}", []),
        (f"ExecStart=/usr/bin/docker run ${{FLAGS}} {SLEEP}", []),
        # ...unless ':' keeps it literal.
        (
            f"ExecStart=:/usr/bin/docker run --device $DEVICE {SLEEP}",
            [f"hello.service:2: ExecStart=: docker run: {UNSUPPORTED}"],
        ),
        # Not the docker CLI.
        ("ExecStart=/bin/sh -c 'docker run --device /dev/fuse busybox'", []),
        ("ExecStart=/usr/local/bin/docker-compose up --no-start", []),
        # A command line that did not parse is reported once, by the [Service] checks.
        (
            "ExecStart=/usr/bin/docker run --device 'busybox",
            ["hello.service:2: ExecStart=: unbalanced quoting"],
        ),
    ],
)
def test_docker_commands_in_exec_lines(body: str, expected: list[str]) -> None:
    assert diagnostics(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", [f"hello.service:2: warning: ExecStart=: docker run -d under Type=simple {DETACHED}"]),
        ("Type=simple\n", [f"hello.service:3: warning: ExecStart=: docker run -d under Type=simple {DETACHED}"]),
        ("Type=exec\n", [f"hello.service:3: warning: ExecStart=: docker run -d under Type=exec {DETACHED}"]),
        ("Type=forking\n", []),  # the container is followed once the command returns
        ("Type=oneshot\nRemainAfterExit=yes\n", []),  # the command is meant to end
    ],
)
def test_detached_run_under_a_type_that_waits_for_the_command(body: str, expected: list[str]) -> None:
    assert diagnostics(body + f"ExecStart=/usr/bin/docker run -d --name web {SLEEP}") == expected


@pytest.mark.parametrize("flag", ["-d", "--detach", "-dit", "--detach=true"])
def test_every_spelling_of_detach_is_seen(flag: str) -> None:
    found = diagnostics(f"ExecStart=/usr/bin/docker run {flag} --name web {SLEEP}")
    assert f"hello.service:2: warning: ExecStart=: docker run -d under Type=simple {DETACHED}" in found


def test_detach_elsewhere_than_exec_start_is_fine() -> None:
    assert diagnostics(f"ExecStart=/bin/sleep infinity\nExecStartPre=/usr/bin/docker run -d --name side {SLEEP}") == []


@pytest.mark.parametrize(
    ("name", "line", "expected"),
    [
        # Specifiers resolve before the command is read: the unit's name...
        ("web.service", "--name %p-%N", []),
        (
            "web@1.service",
            "--name %n",
            [
                "web@1.service:2: ExecStart=: docker run: --name: invalid container name 'web@1.service': use "
                + VALID_NAME
            ],
        ),
        (
            "web@x.service",
            "--name %i",
            ["web@x.service:2: ExecStart=: docker run: --name: invalid container name 'x': use " + VALID_NAME],
        ),
        # ...stand-ins for the machine's facts...
        ("web.service", "--name web-%H-%m --hostname %H", []),
        # ...and in a template, whatever an instance's name makes of the command is left to the instance...
        ("web@.service", "--name %i", []),  # fine for web@db, not for web@1
        ("web@.service", "-p %i:80", []),  # fine for web@8080, not for web@db
        # ...and the rest is reported.
        (
            "web@.service",
            "--name web-%i --device /dev/fuse",
            ["web@.service:2: ExecStart=: docker run: " + UNSUPPORTED],
        ),
        (
            "web@.service",
            "--name web-%%i",  # a literal %, whatever the instance
            ["web@.service:2: ExecStart=: docker run: --name: invalid container name 'web-%i': use " + VALID_NAME],
        ),
        ("web@.service", "--name %p --device /dev/fuse", ["web@.service:2: ExecStart=: docker run: " + UNSUPPORTED]),
    ],
)
def test_specifiers(name: str, line: str, expected: list[str]) -> None:
    assert diagnostics(f"ExecStart=/usr/bin/docker run {line} {SLEEP}", name) == expected


def test_a_unit_with_a_docker_error_is_refused() -> None:
    report = Report("hello.service")
    assert (
        check_unit(f"[Service]\nExecStart=/usr/bin/docker run --device /dev/fuse {SLEEP}\n", "hello.service", report)
        is None
    )
    warned = Report("hello.service")
    assert check_unit(f"[Service]\nExecStart=/usr/bin/docker run -d {SLEEP}\n", "hello.service", warned) is not None
