"""`fleetlet verify`: every problem as FILE:LINE: message, exit 0 only when every file is valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetlet.cli.main import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "configs" / "units").glob("*.service"))

VALID = """\
[Unit]
Description=ok

[Service]
ExecStart=/usr/bin/docker run --rm busybox true
"""


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    status = main(["verify", *args])
    out = capsys.readouterr().out
    return status, out.splitlines()


def test_examples_shipped_with_fleetlet_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(EXAMPLES) >= 4
    status, lines = verify(capsys, *map(str, EXAMPLES))
    assert status == 0
    assert lines[-1] == f"{len(EXAMPLES)} of {len(EXAMPLES)} unit files valid"
    assert all(": ok (hash " in line for line in lines[:-1]), lines


def test_hello_world_hash_is_stable_across_comments_and_whitespace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    original = (REPO / "configs" / "units" / "hello_world.service").read_text()
    reformatted = tmp_path / "hello_world.service"
    spaced = "\n".join("  " + line.replace("=", " = ", 1) + "\t" for line in original.splitlines())
    reformatted.write_text("; reformatted by hand\n\n" + spaced.replace("[Service]", "# the service\n\n[Service]"))
    _, lines = verify(capsys, str(REPO / "configs" / "units" / "hello_world.service"), str(reformatted))
    hashes = {line.rpartition("hash ")[2] for line in lines[:2]}
    assert len(hashes) == 1, lines


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "hello.service",
            VALID + "ExecStop\n",
            ["{path}:6: expected key=value"],
        ),
        (
            "hello.service",
            VALID + "Restart=sometimes\n\n[X-Fleet]\nMachineMetadata=region\n",
            [
                "{path}:6: Restart=: invalid value 'sometimes' (valid: always, no, on-abnormal, on-abort, on-failure, "
                "on-success, on-watchdog)",
                "{path}:9: MachineMetadata=: malformed entry 'region' (expected key=value)",
            ],
        ),
        (
            "hello.txt",
            VALID,
            [
                "{path}: invalid unit name 'hello.txt': unknown unit type 'txt' (known: automount, "
                "device, mount, path, service, socket, timer)"
            ],
        ),
        ("empty.service", "", ["{path}: empty unit file: no settings found"]),
        ("binary.service", b"\x7fELF\x02\x01\x01\x00\x00\x00", ["{path}: binary data (NUL byte), not a unit file"]),
        (
            "huge.service",
            b"[Service]\nExecStart=/bin/true\n" + b"#" * (1024 * 1024),
            ["{path}: unit file too large: over 1048576 bytes"],
        ),
    ],
)
def test_problems_are_printed_with_file_and_line_and_fail(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: str | bytes, expected: list[str]
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    status, lines = verify(capsys, str(path))
    assert status == 1
    assert lines == [e.format(path=path) for e in expected]


def test_warnings_are_printed_but_do_not_fail(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "old.service"
    path.write_text(VALID + "\n[X-Fleet]\nX-Conflicts=web*\n")
    status, lines = verify(capsys, str(path))
    assert status == 0
    assert lines[0].startswith(f"{path}:8: warning: ")
    assert "Conflicts" in lines[0]
    assert lines[1] == f"{path}: ok (hash {_hash_of(path)})"


def test_one_bad_file_fails_the_run_but_every_file_is_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = tmp_path / "good.service"
    good.write_text(VALID)
    missing = tmp_path / "missing.service"
    status, lines = verify(capsys, str(missing), str(good), str(tmp_path))
    assert status == 1
    assert lines == [
        f"{missing}: cannot read: No such file or directory",
        f"{good}: ok (hash {_hash_of(good)})",
        f"{tmp_path}: cannot read: Is a directory",
        "1 of 3 unit files valid",
    ]


def test_quiet_prints_problems_only(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = verify(capsys, "--quiet", *map(str, EXAMPLES))
    assert (status, lines) == (0, [])


@pytest.mark.parametrize("program", ["fleetlet", "fleetctl"])
def test_installed_commands_exit_nonzero_without_traceback(program: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.service"
    path.write_bytes(b"\xff\xfe[Unit]\n")
    executable = Path(sys.executable).parent / program
    result = subprocess.run([executable, "verify", path], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stdout == f"{path}:1: not UTF-8 text: invalid byte 0xff\n"
    assert "Traceback" not in result.stderr


def test_usage_error_is_short_and_exits_2() -> None:
    executable = Path(sys.executable).parent / "fleetlet"
    result = subprocess.run([executable, "verify"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "the following arguments are required: FILE" in result.stderr
    assert "Traceback" not in result.stderr


def _hash_of(path: Path) -> str:
    from fleetlet.units.syntax import parse

    return parse(path.read_bytes()).hash[:7]
