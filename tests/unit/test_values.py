"""Typed setting values: booleans, time spans (systemd.time(7)), signals, exit statuses, unsigned numbers."""

from __future__ import annotations

import math
import re
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlet.units.values import (
    parse_bool,
    parse_exit_statuses,
    parse_signal,
    parse_timespan,
    parse_unsigned,
)


def _raises(message: str) -> pytest.RaisesExc[ValueError]:
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *((t, True) for t in ("1", "yes", "y", "true", "t", "on", "YES", "True", "On", "Y")),
        *((t, False) for t in ("0", "no", "n", "false", "f", "off", "NO", "False", "OFF", "N")),
    ],
)
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize("text", ["", "2", "yess", "enable", " yes", "nein", "-1"])
def test_parse_bool_rejects(text: str) -> None:
    with _raises(f"invalid boolean {text!r} (use yes or no)"):
        parse_bool(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("5", 5.0),
        ("1.5", 1.5),
        ("1.5s", 1.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("100ms", 0.1),
        ("100 ms", 0.1),
        ("2min 30s", 150.0),
        ("2min30s", 150.0),
        ("1h30m", 5400.0),
        ("1h 30min 15s 500ms", 5415.5),
        ("  10s  ", 10.0),
        ("1 2", 3.0),  # a term without a unit is in the default unit, wherever it is
        ("1us", 0.000001),
        ("1usec", 0.000001),
        ("1µs", 0.000001),  # MICRO SIGN
        ("1μs", 0.000001),  # GREEK SMALL LETTER MU
        ("250msec", 0.25),
        ("1seconds 1second 1sec 1s", 4.0),
        ("1minutes 1minute 1min 1m", 240.0),
        ("1hours 1hour 1hr 1h", 4 * 3600.0),
        ("1days 1day 1d", 3 * 86400.0),
        ("1weeks 1week 1w", 3 * 604800.0),
        ("1M", 2629800.0),  # a twelfth of 365.25 days, as systemd computes it
        ("1months 1month", 2 * 2629800.0),
        ("1y", 31557600.0),  # 365.25 days
        ("1years 1year", 2 * 31557600.0),
        ("1.5M", 3944700.0),
        ("0.1234567s", 0.123456),  # below a microsecond is dropped, as in systemd
        ("infinity", math.inf),
        (" infinity ", math.inf),
    ],
)
def test_parse_timespan(text: str, seconds: float) -> None:
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize(
    ("text", "default_unit", "seconds"),
    [
        ("5", "s", 5.0),
        ("5", "ms", 0.005),
        ("5", "min", 300.0),
        ("5 10s", "min", 310.0),
        ("1.5", "h", 5400.0),
        ("5", "us", 0.000005),
    ],
)
def test_parse_timespan_default_unit(text: str, default_unit: str, seconds: float) -> None:
    assert parse_timespan(text, default_unit) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid time span '': empty"),
        ("   ", "invalid time span '   ': empty"),
        ("-1", "invalid time span '-1': negative"),
        ("-5s", "invalid time span '-5s': negative"),
        ("1h -5m", "invalid time span '1h -5m'"),
        ("+5", "invalid time span '+5'"),
        (".", "invalid time span '.'"),
        ("s", "invalid time span 's'"),
        ("5s!", "invalid time span '5s!'"),
        ("1..5", "invalid time span '1..5'"),
        ("1.5.5", "invalid time span '1.5.5'"),
        ("1.5.5s", "invalid time span '1.5.5s'"),
        ("Infinity", "invalid time span 'Infinity'"),
        ("infinity 5s", "invalid time span 'infinity 5s'"),
        (
            "10 parsecs",
            "invalid time span '10 parsecs': unknown unit 'parsecs' (use us, ms, s, min, h, d, w, M or y)",
        ),
        ("5S", "invalid time span '5S': unknown unit 'S' (use us, ms, s, min, h, d, w, M or y)"),
        ("5sx", "invalid time span '5sx': unknown unit 'sx' (use us, ms, s, min, h, d, w, M or y)"),
        ("5ns", "invalid time span '5ns': unknown unit 'ns' (use us, ms, s, min, h, d, w, M or y)"),
        ("600000y", "invalid time span '600000y': too large"),  # beyond 2**64 microseconds
        ("1" * 31, f"invalid time span '{'1' * 31}': too large"),
    ],
)
def test_parse_timespan_rejects(text: str, message: str) -> None:
    with _raises(message):
        parse_timespan(text)


def test_parse_timespan_rejects_unknown_default_unit() -> None:
    with _raises("unknown default time unit 'fortnight'"):
        parse_timespan("1", "fortnight")


@given(st.text(max_size=40))
def test_parse_timespan_returns_seconds_or_raises_value_error(text: str) -> None:
    try:
        seconds = parse_timespan(text)
    except ValueError:
        return
    assert seconds >= 0


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("SIGTERM", signal.SIGTERM),
        ("TERM", signal.SIGTERM),
        ("SIGKILL", signal.SIGKILL),
        ("KILL", signal.SIGKILL),
        ("SIGHUP", signal.SIGHUP),
        ("INT", signal.SIGINT),
        ("SIGUSR2", signal.SIGUSR2),
        ("SIGIOT", signal.SIGABRT),  # an alias
        ("1", 1),
        ("15", 15),
        ("64", 64),
        ("RTMIN", signal.SIGRTMIN),
        ("SIGRTMIN+3", signal.SIGRTMIN + 3),
        ("RTMAX-1", signal.SIGRTMAX - 1),
        ("SIGRTMAX", signal.SIGRTMAX),
    ],
)
def test_parse_signal(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "invalid signal '0': numbers run from 1 to 64"),
        ("65", "invalid signal '65': numbers run from 1 to 64"),
        ("0015000", "invalid signal '0015000': numbers run from 1 to 64"),
        ("", "invalid signal ''"),
        ("SIG", "invalid signal 'SIG'"),
        ("sigterm", "invalid signal 'sigterm'"),
        ("term", "invalid signal 'term'"),
        ("SIGFOO", "invalid signal 'SIGFOO'"),
        ("SIG_DFL", "invalid signal 'SIG_DFL'"),
        ("-15", "invalid signal '-15'"),
        ("RTMIN+40", "invalid signal 'RTMIN+40'"),
        ("RTMAX+1", "invalid signal 'RTMAX+1'"),
    ],
)
def test_parse_signal_rejects(text: str, message: str) -> None:
    with _raises(message):
        parse_signal(text)


@pytest.mark.parametrize(
    ("text", "codes", "signals"),
    [
        ("", set(), set()),
        ("0", {0}, set()),
        ("1 2 255", {1, 2, 255}, set()),
        ("SIGKILL", set(), {signal.SIGKILL}),
        ("143 SIGTERM USR1", {143}, {signal.SIGTERM, signal.SIGUSR1}),
        ("  7\t7  ", {7}, set()),
    ],
)
def test_parse_exit_statuses(text: str, codes: set[int], signals: set[int]) -> None:
    assert parse_exit_statuses(text) == (frozenset(codes), frozenset(signals))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("256", "invalid exit status '256': exit codes run from 0 to 255"),
        ("0 1000", "invalid exit status '1000': exit codes run from 0 to 255"),
        ("-1", "invalid exit status '-1': not a number 0..255 or a signal name"),
        ("1 SIGFOO", "invalid exit status 'SIGFOO': not a number 0..255 or a signal name"),
        ("'a", "unbalanced quoting"),
    ],
)
def test_parse_exit_statuses_rejects(text: str, message: str) -> None:
    with _raises(message):
        parse_exit_statuses(text)


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("5", 5), ("007", 7), ("4294967295", 2**32 - 1)])
def test_parse_unsigned(text: str, number: int) -> None:
    assert parse_unsigned(text) == number


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid unsigned integer ''"),
        ("-1", "invalid unsigned integer '-1'"),
        ("+1", "invalid unsigned integer '+1'"),
        (" 1", "invalid unsigned integer ' 1'"),
        ("1.0", "invalid unsigned integer '1.0'"),
        ("five", "invalid unsigned integer 'five'"),
        ("٣", "invalid unsigned integer '٣'"),  # a digit, but not an ASCII one
        ("4294967296", "invalid unsigned integer '4294967296': above 4294967295"),
    ],
)
def test_parse_unsigned_rejects(text: str, message: str) -> None:
    with _raises(message):
        parse_unsigned(text)


def test_parse_unsigned_maximum() -> None:
    assert parse_unsigned("10", maximum=10) == 10
    with _raises("invalid unsigned integer '11': above 10"):
        parse_unsigned("11", maximum=10)
