"""Typed setting values as systemd reads them: booleans, time spans, signals, exit statuses, counts.

Each parser raises ValueError naming the bad value, so that a caller can prefix the setting and line and
report every problem in a file rather than stopping at the first.
"""

from __future__ import annotations

import math
import re
import signal

from fleetlet.units.words import split_words

_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
_FALSE = frozenset({"0", "no", "n", "false", "f", "off"})

_USEC_PER_SEC = 1_000_000
# Multipliers in microseconds, so that sums are exact integers (``100ms`` is 0.1, not 0.1000000000000000055).
# A month is a twelfth of a year, 2629800 s: the value systemd computes with (its manual says 30.44 days).
_TIME_UNITS: dict[str, int] = {
    **dict.fromkeys(("usec", "us", "µs", "μs"), 1),  # micro sign U+00B5 and Greek mu U+03BC
    **dict.fromkeys(("msec", "ms"), 1_000),
    **dict.fromkeys(("seconds", "second", "sec", "s"), _USEC_PER_SEC),
    **dict.fromkeys(("minutes", "minute", "min", "m"), 60 * _USEC_PER_SEC),
    **dict.fromkeys(("hours", "hour", "hr", "h"), 3_600 * _USEC_PER_SEC),
    **dict.fromkeys(("days", "day", "d"), 86_400 * _USEC_PER_SEC),
    **dict.fromkeys(("weeks", "week", "w"), 604_800 * _USEC_PER_SEC),
    **dict.fromkeys(("months", "month", "M"), 2_629_800 * _USEC_PER_SEC),
    **dict.fromkeys(("years", "year", "y"), 31_557_600 * _USEC_PER_SEC),
}
_USEC_INFINITY = 2**64 - 1  # systemd keeps spans as unsigned 64-bit microseconds; this one means "infinity"
_SPACE = " \t\n\r"
_TERM = re.compile(r"[ \t\n\r]*([0-9]*)(?:\.([0-9]*))?[ \t\n\r]*([A-Za-zµμ]*)[ \t\n\r]*")
_MAX_DIGITS = 30  # far beyond 2**64 microseconds; keeps int() away from Python's digit limit

MAX_SIGNAL = 64  # Linux's _NSIG - 1, the range systemd accepts
_SIGNALS: dict[str, int] = {name: int(number) for name, number in signal.Signals.__members__.items()}
_REALTIME = re.compile(r"RTMIN\+([0-9]{1,2})|RTMAX-([0-9]{1,2})")
_NUMBER = re.compile(r"[0-9]+")
UINT_MAX = 2**32 - 1


def parse_bool(text: str) -> bool:
    """systemd's booleans, any case: 1/yes/y/true/t/on and 0/no/n/false/f/off."""
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r} (use yes or no)")


def parse_timespan(text: str, default_unit: str = "s") -> float:
    """Seconds in a systemd.time(7) span such as ``2min 30s``, ``1h30m`` or ``1.5``; ``infinity`` is math.inf.

    A term without a unit is in ``default_unit``. Fractions below a microsecond are dropped, as systemd does.
    """
    default = _TIME_UNITS.get(default_unit)
    if default is None:
        raise ValueError(f"unknown default time unit {default_unit!r}")
    stripped = text.strip(_SPACE)
    if not stripped:
        raise ValueError(f"invalid time span {text!r}: empty")
    if stripped == "infinity":
        return math.inf
    if stripped.startswith("-"):
        raise ValueError(f"invalid time span {text!r}: negative")
    usec = 0
    pos = 0
    while pos < len(text):
        term = _TERM.match(text, pos)
        assert term is not None  # every part of the pattern may be empty
        whole, fraction, unit = term.group(1), term.group(2) or "", term.group(3)
        if not whole and not fraction:
            raise ValueError(f"invalid time span {text!r}")
        if unit and unit not in _TIME_UNITS:
            raise ValueError(f"invalid time span {text!r}: unknown unit {unit!r} (use us, ms, s, min, h, d, w, M or y)")
        if not unit and term.end() < len(text) and text[term.end() - 1] not in _SPACE:
            raise ValueError(f"invalid time span {text!r}")  # "1.5.5": numbers need a unit or a space between
        multiplier = _TIME_UNITS[unit] if unit else default
        if len(whole) > _MAX_DIGITS:
            raise ValueError(f"invalid time span {text!r}: too large")
        fraction = fraction[:_MAX_DIGITS]
        usec += int(whole or "0") * multiplier
        if fraction:
            usec += int(fraction) * multiplier // 10 ** len(fraction)
        pos = term.end()
    if usec >= _USEC_INFINITY:
        raise ValueError(f"invalid time span {text!r}: too large")
    return usec / _USEC_PER_SEC


def parse_signal(text: str) -> int:
    """A signal number from ``SIGTERM``, ``TERM``, ``RTMIN+3`` or a number 1..64."""
    if _NUMBER.fullmatch(text):
        if len(text) <= 3 and 1 <= int(text) <= MAX_SIGNAL:
            return int(text)
        raise ValueError(f"invalid signal {text!r}: numbers run from 1 to {MAX_SIGNAL}")
    name = text.removeprefix("SIG")
    number = _SIGNALS.get("SIG" + name)
    if number is not None:
        return number
    realtime = _REALTIME.fullmatch(name)
    if realtime is not None and "SIGRTMIN" in _SIGNALS:
        low, high = _SIGNALS["SIGRTMIN"], _SIGNALS["SIGRTMAX"]
        above, below = realtime.groups()
        number = low + int(above) if above is not None else high - int(below or "0")
        if low <= number <= high:
            return number
    raise ValueError(f"invalid signal {text!r}")


def parse_exit_statuses(text: str) -> tuple[frozenset[int], frozenset[int]]:
    """``SuccessExitStatus=``: exit codes 0..255 and signal names, space separated; gives (codes, signals)."""
    codes: set[int] = set()
    signals: set[int] = set()
    for word in split_words(text):
        if _NUMBER.fullmatch(word):
            if len(word) > 3 or int(word) > 255:
                raise ValueError(f"invalid exit status {word!r}: exit codes run from 0 to 255")
            codes.add(int(word))
            continue
        try:
            signals.add(parse_signal(word))
        except ValueError:
            raise ValueError(f"invalid exit status {word!r}: not a number 0..255 or a signal name") from None
    return frozenset(codes), frozenset(signals)


def parse_unsigned(text: str, maximum: int = UINT_MAX) -> int:
    """A decimal number 0..``maximum`` (systemd's unsigned int by default), without sign or spaces."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"invalid unsigned integer {text!r}")
    if len(text) > _MAX_DIGITS or int(text) > maximum:
        raise ValueError(f"invalid unsigned integer {text!r}: above {maximum}")
    return int(text)
