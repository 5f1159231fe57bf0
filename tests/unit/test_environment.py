"""systemd's EnvironmentFile= format, docker's --env-file format, and $VAR expansion in Exec lines."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlet.exec.environment import (
    EnvironmentFileError,
    expand_argv,
    parse_assignments,
    read_docker_env_file,
    read_environment_file,
    resolve_docker_env,
    resolve_environment,
)


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("", []),
        ("\n\n   \n", []),
        ("A=1", [("A", "1")]),
        ("A=1\nB=2\n", [("A", "1"), ("B", "2")]),
        ("A=1\r\nB=2\r\n", [("A", "1"), ("B", "2")]),
        ("# comment\n; comment\nA=1\n  # indented comment\n", [("A", "1")]),
        ("A=1 # not a comment", [("A", "1 # not a comment")]),
        ("A = 1", [("A", "1")]),
        ("  A\t=\t1  \t", [("A", "1")]),
        ("A=", [("A", "")]),
        ("A=   ", [("A", "")]),
        ("A=x=y", [("A", "x=y")]),
        ("export A=1", [("A", "1")]),
        ("export\tA=1", [("A", "1")]),
        ("exportA=1", [("exportA", "1")]),
        ("export=1", [("export", "1")]),
        ("A=one two  three", [("A", "one two  three")]),
        ("A='single quoted'", [("A", "single quoted")]),
        ('A="double quoted"', [("A", "double quoted")]),
        ("A='  kept  '", [("A", "  kept  ")]),
        ('A=""', [("A", "")]),
        ("A=''", [("A", "")]),
        ('A="a \\" b \\\\ c \\$ d \\` e"', [("A", 'a " b \\ c $ d ` e')]),
        ('A="\\n stays \\x"', [("A", "\\n stays \\x")]),  # other escapes are not escapes inside double quotes
        ("A='$HOME \"x\"'", [("A", '$HOME "x"')]),
        ("A='it\\'s'", [("A", "it's")]),  # systemd: a backslash escapes inside single quotes too
        ("A=\"a\"'b'c", [("A", "abc")]),  # quoted parts join the text around them
        ('A="a" "b"', [("A", "ab")]),  # as in systemd: whitespace between quoted parts is dropped
        ('A=x"y"', [("A", 'x"y"')]),  # a quote inside unquoted text is literal
        ("A=a\\ b\\\\c\\#", [("A", "a b\\c#")]),  # unquoted: a backslash takes the next character literally
        ("A=trailing\\ ", [("A", "trailing ")]),  # an escaped space survives trimming
        ("A=one\\\ntwo\nB=3", [("A", "onetwo"), ("B", "3")]),  # continued lines
        ("A=one \\\n  two", [("A", "one   two")]),
        ('A="multi\nline"\nB=2', [("A", "multi\nline"), ("B", "2")]),
        ('A="joined \\\nline"', [("A", "joined line")]),
        ("A='x\ny'", [("A", "x\ny")]),
        ("A=1\nA=2", [("A", "1"), ("A", "2")]),  # kept in order: the caller lets the later win
        ("_under_9=ok", [("_under_9", "ok")]),
        ("A=é ✓", [("A", "é ✓")]),
        ("A=\\", [("A", "")]),
    ],
)
def test_environment_file(text: str, pairs: list[tuple[str, str]]) -> None:
    assert read_environment_file(text) == pairs


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("A", 1, "expected KEY=VALUE, got 'A'"),
        ("A=1\n\nB\n", 3, "expected KEY=VALUE, got 'B'"),
        ("export A", 1, "expected KEY=VALUE, got 'export A'"),
        ("=1", 1, "invalid variable name ''"),
        ("1A=2", 1, "invalid variable name '1A'"),
        ("A-B=1", 1, "invalid variable name 'A-B'"),
        ("A B=1", 1, "invalid variable name 'A B'"),
        ("A.B=1", 1, "invalid variable name 'A.B'"),
        ("A=1\nB='x\n\n", 2, "unterminated single-quoted value"),
        ('A="x', 1, "unterminated double-quoted value"),
        ('A="x\\"', 1, "unterminated double-quoted value"),
        ('A="a"\nB=\'b\nc\'\nC="', 4, "unterminated double-quoted value"),
        ("A=1\nB=x\0", 2, "NUL character"),
    ],
)
def test_environment_file_errors(text: str, line: int, reason: str) -> None:
    with pytest.raises(EnvironmentFileError, match=f"^{re.escape(f'line {line}: {reason}')}$") as raised:
        read_environment_file(text)
    assert (raised.value.line, raised.value.reason) == (line, reason)


@given(st.text())
def test_environment_file_raises_only_value_errors(text: str) -> None:
    try:
        pairs = read_environment_file(text)
    except EnvironmentFileError:
        return
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in pairs)


@given(st.text(alphabet="AB=#;'\"\\ \t\n\rx$`", max_size=40))
def test_environment_file_syntax_soup_raises_only_value_errors(text: str) -> None:
    try:
        read_environment_file(text)
    except EnvironmentFileError:
        pass


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("", []),
        ("A=1\nB=2", ["A=1", "B=2"]),
        ('A="quoted"', ['A="quoted"']),  # taken literally: docker removes no quotes
        ("A='x' # no comment", ["A='x' # no comment"]),
        ("A=trailing  ", ["A=trailing  "]),
        ("  A=1", ["A=1"]),
        ("# comment\n\n  # indented\nA=1", ["A=1"]),
        (";x=1", [";x=1"]),  # ; starts no comment here
        ("PASS\nPASS2  ", ["PASS", "PASS2"]),  # bare names: taken from the unit's environment
        ("A=1\r\nB=2\r\n", ["A=1", "B=2"]),
        ("\ufeffA=1", ["A=1"]),
        ("A=$HOME", ["A=$HOME"]),
        ("A=x=y", ["A=x=y"]),
    ],
)
def test_docker_env_file(text: str, entries: list[str]) -> None:
    assert read_docker_env_file(text) == entries


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=1", "line 1: no variable name in '=1'"),
        ("A=1\nMY VAR=1", "line 2: variable name 'MY VAR' contains whitespace"),
        ("A =1", "line 1: variable name 'A ' contains whitespace"),
        ("A B", "line 1: variable name 'A B' contains whitespace"),
        ("; x=1", "line 1: variable name '; x' contains whitespace"),
        ("A=\0", "line 1: NUL character"),
    ],
)
def test_docker_env_file_errors(text: str, message: str) -> None:
    with pytest.raises(EnvironmentFileError, match=f"^{re.escape(message)}$"):
        read_docker_env_file(text)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/bin/echo", "$A"], ["/bin/echo", "one"]),
        (["/bin/echo", "${A}"], ["/bin/echo", "one"]),
        (["/bin/echo", "$WORDS"], ["/bin/echo", "a", "b", "c"]),  # a whole-word $VAR is split at whitespace
        (["/bin/echo", "${WORDS}"], ["/bin/echo", " a  b\tc\n"]),  # ${VAR} stays one argument
        (["/bin/echo", "x${A}y${A}"], ["/bin/echo", "xoneyone"]),
        (["/bin/echo", "$EMPTY"], ["/bin/echo"]),
        (["/bin/echo", "$BLANK"], ["/bin/echo"]),
        (["/bin/echo", "${EMPTY}"], ["/bin/echo", ""]),
        (["/bin/echo", "$UNSET", "x"], ["/bin/echo", "x"]),  # undefined: no argument at all
        (["/bin/echo", "${UNSET}"], ["/bin/echo", ""]),
        (["/bin/echo", "$$"], ["/bin/echo", "$"]),
        (["/bin/echo", "$$A"], ["/bin/echo", "$A"]),
        (["/bin/echo", "$${A}"], ["/bin/echo", "${A}"]),
        (["/bin/echo", "$$$$"], ["/bin/echo", "$$"]),
        (["/bin/echo", "cost: 5$"], ["/bin/echo", "cost: 5$"]),
        (["/bin/echo", "a$A"], ["/bin/echo", "a$A"]),  # $VAR inside a word is not expanded (systemd's rule)
        (["/bin/echo", "$A-x"], ["/bin/echo", "$A-x"]),
        (["/bin/echo", "${1}", "${A", "${}"], ["/bin/echo", "${1}", "${A", "${}"]),
        (["/bin/echo", "$1"], ["/bin/echo", "$1"]),
        (["$PROG", "x"], ["/usr/bin/docker", "x"]),  # argv[0] too
        (["${PROG}", "x"], ["/usr/bin/docker", "x"]),
        (["/bin/echo", "${A}$A"], ["/bin/echo", "one$A"]),
        (["/bin/echo", "${DOLLAR}"], ["/bin/echo", "$A"]),  # values are not expanded again
        (["/bin/echo", "$_x9"], ["/bin/echo", "v"]),
        ([], []),
    ],
)
def test_expand_argv(argv: list[str], expected: list[str]) -> None:
    env = {
        "A": "one",
        "WORDS": " a  b\tc\n",
        "EMPTY": "",
        "BLANK": "  ",
        "PROG": "/usr/bin/docker",
        "DOLLAR": "$A",
        "_x9": "v",
    }
    assert expand_argv(argv, env) == expected


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("A=1", [("A", "1")]),
        ('A=1 "B=two words" C=', [("A", "1"), ("B", "two words"), ("C", "")]),
        ("A=x=y", [("A", "x=y")]),
        ("", []),
    ],
)
def test_assignments(text: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_assignments(text) == pairs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A", "'A' is not a VAR=value assignment"),
        ("1A=x", "invalid variable name '1A' in '1A=x'"),
        ('A="x', "unbalanced quoting"),
    ],
)
def test_assignment_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_assignments(text)


def test_environment_files_override_assignments_in_order() -> None:
    env = resolve_environment(
        [("A", "assigned"), ("B", "assigned"), ("A", "reassigned")],
        [("/etc/one.env", "B=one\nC=one"), ("/etc/two.env", "C=two\nD='two'")],
    )
    assert env == {"A": "reassigned", "B": "one", "C": "two", "D": "two"}


def test_environment_file_errors_name_the_file() -> None:
    with pytest.raises(ValueError, match=r"^/etc/app\.env:2: invalid variable name '1X'$"):
        resolve_environment([], [("/etc/ok.env", "A=1"), ("/etc/app.env", "B=1\n1X=2")])


@pytest.mark.parametrize(
    ("flags", "files", "expected"),
    [
        ([], [], []),
        (["A=1", "B=2"], [], ["A=1", "B=2"]),
        (["A=flag"], ["A=file\nB=file"], ["A=flag", "B=file"]),  # -e wins over --env-file
        ([], ["A=1", "A=2"], ["A=2"]),
        (["HOME", "PATH"], [], ["HOME=/root", "PATH"]),  # unset in the unit: left bare, so the engine unsets it
        ([], ["HOME\n"], ["HOME=/root"]),
        (["A=1", "A"], [], ["A"]),
        (['Q="x"'], [], ['Q="x"']),
    ],
)
def test_docker_env(flags: list[str], files: list[str], expected: list[str]) -> None:
    named = [(f"/etc/{i}.env", text) for i, text in enumerate(files)]
    assert resolve_docker_env(flags, named, {"HOME": "/root"}) == expected


def test_docker_env_file_errors_name_the_file() -> None:
    with pytest.raises(ValueError, match=r"^/etc/app\.env:3: variable name 'MY VAR' contains whitespace$"):
        resolve_docker_env([], [("/etc/app.env", "A=1\n\nMY VAR=2")], {})
