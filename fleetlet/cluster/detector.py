"""Failure detection from heartbeats: the phi accrual detector (Hayashibara et al., 2004).

Instead of a fixed timeout, the detector learns how far apart a member's heartbeats arrive here (a window of the
latest intervals: their mean and standard deviation) and says how unlikely the current silence is, as
``phi = -log10(P(a heartbeat comes later than this))``: phi 1 means a 10% chance that the member is only late,
phi 8 one in 10^8. A busy network or a loaded machine widens the intervals, and the detector follows, where a
fixed timeout would either be too slow everywhere or wrong under load.

Heartbeats here arrive by gossip, relayed, so their spacing has jitter; two settings keep a jittery but healthy
member from looking dead: ``min_std`` (the deviation assumed at least) and ``acceptable_pause`` (added to the
mean: a pause that short is never suspicious). The distribution is the normal one, its tail by the logistic
approximation of the normal CDF (Bowling et al., 2009), which needs no ``erf`` and stays finite far out.

Pure: times are passed in (the injected clock's ``monotonic``), so tests set them exactly.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

DEFAULT_WINDOW: Final = 100
# Where the tail is so thin that phi says nothing more: capped so that comparisons stay finite.
MAX_PHI: Final = 1000.0
# phi when the silence is just the mean interval plus the acceptable pause (y = 0: the tail is one half); never more
# before that, since phi grows with the silence.
PHI_AT_MEAN: Final = math.log10(2)


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """How the detector reads silence; ``first_interval`` is assumed until real intervals are known."""

    first_interval: float
    min_std: float
    acceptable_pause: float
    window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.first_interval <= 0 or self.min_std <= 0 or self.acceptable_pause < 0 or self.window < 1:
            raise ValueError("intervals and deviations must be positive, the pause not negative, the window >= 1")


class PhiAccrual:
    """One member's heartbeat arrivals, and how suspicious its silence is now."""

    __slots__ = ("_intervals", "_last", "_settings", "_sum", "_sum_sq")

    def __init__(self, settings: DetectorSettings, now: float) -> None:
        self._settings = settings
        self._last = now
        self._intervals: deque[float] = deque(maxlen=settings.window)
        self._sum = 0.0
        self._sum_sq = 0.0
        # Seeded with the expected interval, give or take a quarter, as if two heartbeats had been seen: a member
        # heard of once is judged by what heartbeats should look like, not by nothing.
        spread = settings.first_interval / 4
        for interval in (settings.first_interval - spread, settings.first_interval + spread):
            self._push(interval)

    @property
    def last_heartbeat(self) -> float:
        return self._last

    def heartbeat(self, now: float) -> None:
        """A new heartbeat of the member arrived at ``now``."""
        interval = now - self._last
        self._last = now
        if interval > 0:
            self._push(interval)

    def phi(self, now: float) -> float:
        """How unlikely it is, on what was seen so far, that the member is alive and merely silent since then."""
        settings = self._settings
        count = len(self._intervals)
        mean = self._sum / count
        variance = max(self._sum_sq / count - mean * mean, 0.0)
        std = max(math.sqrt(variance), settings.min_std)
        y = (now - self._last - mean - settings.acceptable_pause) / std
        x = -y * (1.5976 + 0.070566 * y * y)
        # log of the tail e^x / (1 + e^x), written so that neither side overflows.
        log_tail = x - math.log1p(math.exp(x)) if x <= 0 else -math.log1p(math.exp(-x))
        return min(-log_tail / math.log(10), MAX_PHI)

    def suspicious(self, now: float, threshold: float) -> bool:
        """Whether ``phi(now) >= threshold``; a silence no longer than the mean and the pause is not worked out.

        Every member judges every other member's silence every round, and nearly always that silence is shorter
        than the mean interval: one comparison then, instead of a square root, an exponential and two logarithms.
        """
        if (
            threshold > PHI_AT_MEAN
            and now - self._last <= self._sum / len(self._intervals) + self._settings.acceptable_pause
        ):
            return False
        return self.phi(now) >= threshold

    def _push(self, interval: float) -> None:
        if len(self._intervals) == self._intervals.maxlen:
            dropped = self._intervals[0]
            self._sum -= dropped
            self._sum_sq -= dropped * dropped
        self._intervals.append(interval)
        self._sum += interval
        self._sum_sq += interval * interval
