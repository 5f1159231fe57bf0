"""``fleetlet version`` and ``fleetlet --version``: the package's version, as ``fleetctl version`` worded it."""

from __future__ import annotations

import re

import pytest

import fleetlet
from fleetlet.cli.main import main


def test_version_command_prints_the_packages_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr() == (f"fleetlet version {fleetlet.__version__}\n", "")
    assert re.fullmatch(r"\d+\.\d+\.\d+", fleetlet.__version__)


def test_version_flag_prints_the_same_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"fleetlet version {fleetlet.__version__}\n"


def test_version_needs_no_endpoint(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLET_ENDPOINT", "unix:///nonexistent/fleetlet.sock")
    assert main(["--endpoint", "unix:///nonexistent/other.sock", "version"]) == 0
    assert capsys.readouterr().out == f"fleetlet version {fleetlet.__version__}\n"
