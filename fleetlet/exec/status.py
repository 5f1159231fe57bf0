"""How a process or container ended, and how systemd words and judges it."""

from __future__ import annotations

import signal as signals
from collections.abc import Set
from dataclasses import dataclass

# Exit codes systemd itself uses when it could not run a command at all.
EXIT_EXEC = 203  # the executable could not be run
# The names systemd gives exit codes: the LSB ones, and its own for a command it could not run.
_EXIT_NAMES = {
    0: "SUCCESS",
    1: "FAILURE",
    2: "INVALIDARGUMENT",
    3: "NOTIMPLEMENTED",
    4: "NOPERMISSION",
    5: "NOTINSTALLED",
    6: "NOTCONFIGURED",
    7: "NOTRUNNING",
    EXIT_EXEC: "EXEC",
}
# Signals after which systemd counts a main process as having ended cleanly.
CLEAN_SIGNALS = frozenset({signals.SIGHUP, signals.SIGINT, signals.SIGTERM, signals.SIGPIPE})


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """A process's end: an exit ``code`` or a terminating ``signal``, exactly one of them.

    A container always ends with a code: the engine reports death by signal N as 128+N, which systemd's rules
    then judge as an unclean exit code, just as they judge ``docker run`` exiting with it.
    """

    code: int | None = None
    signal: int | None = None

    def __post_init__(self) -> None:
        if (self.code is None) == (self.signal is None):
            raise ValueError("an ExitStatus has exactly one of code and signal")

    @classmethod
    def exited(cls, code: int) -> ExitStatus:
        return cls(code=code)

    @classmethod
    def killed(cls, signum: int) -> ExitStatus:
        return cls(signal=signum)

    def is_clean(
        self, success_codes: Set[int] = frozenset(), success_signals: Set[int] = frozenset(), *, daemon: bool = False
    ) -> bool:
        """systemd's "clean": exit 0, or a SuccessExitStatus= code or signal.

        For a daemon's main process (not a oneshot's, nor a control command) SIGHUP, SIGINT, SIGTERM and SIGPIPE
        are clean too: they are how daemons are normally asked to go.
        """
        if self.code is not None:
            return self.code == 0 or self.code in success_codes
        assert self.signal is not None
        return self.signal in success_signals or (daemon and self.signal in CLEAN_SIGNALS)

    def describe(self) -> str:
        """systemd's words: ``code=exited, status=1/FAILURE`` or ``code=killed, status=15/TERM``."""
        if self.code is not None:
            return f"code=exited, status={self.code}/{_EXIT_NAMES.get(self.code, 'n/a')}"
        assert self.signal is not None
        return f"code=killed, status={self.signal}/{signal_name(self.signal)}"


def signal_name(signum: int) -> str:
    """``TERM`` for 15; the number itself for signals Python does not name."""
    try:
        return signals.Signals(signum).name.removeprefix("SIG")
    except ValueError:
        return str(signum)
