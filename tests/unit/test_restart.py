"""systemd's Restart= table, the start rate limit, and how exits are judged."""

from __future__ import annotations

import signal

import pytest

from fleetlet.exec.status import ExitStatus
from fleetlet.service.restart import StartLimit, restarts
from fleetlet.service.states import Result
from fleetlet.units.service import RestartPolicy

# systemd.service(5), Table 2: rows are exit causes, columns the Restart= settings; "X" restarts. The last two
# rows are not in the man page's table; they are where systemd's code puts those results.
TABLE = """
cause        no always on-success on-failure on-abnormal on-abort on-watchdog
success      .  X      X          .          .           .        .
exit-code    .  X      .          X          .           .        .
signal       .  X      .          X          X           X        .
timeout      .  X      .          X          X           .        .
watchdog     .  X      .          X          X           .        X
core-dump    .  X      .          X          X           X        .
resources    .  X      .          X          X           .        .
oom-kill     .  X      .          X          X           .        .
"""


def _table() -> list[tuple[RestartPolicy, Result, bool]]:
    header, *rows = TABLE.strip().splitlines()
    policies = header.split()[1:]
    cases: list[tuple[RestartPolicy, Result, bool]] = []
    for row in rows:
        cause, *marks = row.split()
        cases.extend((policy, cause, mark == "X") for policy, mark in zip(policies, marks, strict=True))  # type: ignore[misc]
    return cases


@pytest.mark.parametrize(("policy", "result", "expected"), _table())
def test_restart_table(policy: RestartPolicy, result: Result, expected: bool) -> None:
    assert restarts(policy, result, stopped_by_request=False) is expected


@pytest.mark.parametrize("policy", ["always", "on-failure", "on-abnormal", "on-success"])
@pytest.mark.parametrize("result", ["success", "exit-code", "signal", "timeout"])
def test_a_requested_stop_never_restarts(policy: RestartPolicy, result: Result) -> None:
    assert restarts(policy, result, stopped_by_request=True) is False


def test_start_limit_hit_never_restarts() -> None:
    assert restarts("always", "start-limit-hit", stopped_by_request=False) is False


def test_start_limit_allows_burst_starts_per_window() -> None:
    limit = StartLimit(interval=10.0, burst=5)
    assert [limit.allow(t) for t in (0, 1, 2, 3, 4)] == [True] * 5
    assert limit.allow(5) is False  # the sixth attempt in the window that opened at 0
    assert limit.allow(9.99) is False
    assert limit.allow(10.0) is False  # a window lasts until *more* than 10 s have passed, as systemd counts
    assert limit.allow(10.5) is True  # a new window opens here
    assert [limit.allow(t) for t in (11, 12, 13, 14)] == [True] * 4
    assert limit.allow(15) is False


def test_refused_attempts_count_too() -> None:
    limit = StartLimit(interval=10.0, burst=1)
    assert limit.allow(0)
    assert not limit.allow(5)
    assert not limit.allow(10)
    assert limit.allow(10.1)


@pytest.mark.parametrize(("interval", "burst"), [(0, 5), (10, 0)])
def test_start_limit_off(interval: float, burst: int) -> None:
    limit = StartLimit(interval, burst)
    assert all(limit.allow(0.0) for _ in range(100))


def test_start_limit_reset_forgets_starts() -> None:
    limit = StartLimit(10, 1)
    assert limit.allow(0)
    assert not limit.allow(1)
    limit.reset()
    assert limit.allow(2)


@pytest.mark.parametrize(
    ("status", "codes", "signals", "daemon", "clean"),
    [
        (ExitStatus.exited(0), (), (), False, True),
        (ExitStatus.exited(1), (), (), False, False),
        (ExitStatus.exited(143), (), (), True, False),  # a container killed by SIGTERM: an unclean exit code
        (ExitStatus.exited(143), (143,), (), True, True),
        (ExitStatus.killed(signal.SIGTERM), (), (), True, True),
        (ExitStatus.killed(signal.SIGTERM), (), (), False, False),  # commands: no signal is clean
        (ExitStatus.killed(signal.SIGKILL), (), (), True, False),
        (ExitStatus.killed(signal.SIGUSR1), (), (signal.SIGUSR1,), False, True),
    ],
)
def test_clean_exits(
    status: ExitStatus, codes: tuple[int, ...], signals: tuple[int, ...], daemon: bool, clean: bool
) -> None:
    assert status.is_clean(frozenset(codes), frozenset(signals), daemon=daemon) is clean


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (ExitStatus.exited(0), "code=exited, status=0/SUCCESS"),
        (ExitStatus.exited(1), "code=exited, status=1/FAILURE"),
        (ExitStatus.exited(137), "code=exited, status=137/n/a"),
        (ExitStatus.exited(203), "code=exited, status=203/EXEC"),
        (ExitStatus.killed(15), "code=killed, status=15/TERM"),
        (ExitStatus.killed(9), "code=killed, status=9/KILL"),
    ],
)
def test_exit_status_in_systemd_words(status: ExitStatus, words: str) -> None:
    assert status.describe() == words


def test_exit_status_has_exactly_one_of_code_and_signal() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ExitStatus()
    with pytest.raises(ValueError, match="exactly one"):
        ExitStatus(code=1, signal=9)
