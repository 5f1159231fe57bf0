"""Unit-file syntax (systemd.syntax(7)): what parses to what, and every error with its line."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleetlet.errors import UnitFileError
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.syntax import MAX_UNIT_FILE_BYTES, parse
from tests.fleet_units import HELLO_WORLD

# The same unit, as a careless human might write it: comments of both kinds, blank lines, indentation, spaces
# around "=", trailing blanks, CRLF line ends, and a long line wrapped with backslashes.
HELLO_WORLD_SCRUFFY = (
    "# hello world, from fleet's documentation\r\n"
    "\r\n"
    "[Unit]\r\n"
    "  Description = HelloWorldApp   \r\n"
    "; ordering\r\n"
    "After=docker.service\r\n"
    "Requires=  docker.service\r\n"
    "\r\n\r\n"
    "[Service]\r\n"
    "TimeoutStartSec =0\r\n"
    "\tExecStartPre=-/usr/bin/docker rm busybox1\r\n"
    "ExecStartPre=/usr/bin/docker pull busybox\r\n"
    "ExecStart=/usr/bin/docker run --rm --name busybox1 busybox \\\r\n"
    "    # a comment inside a continued line is skipped\r\n"
    '    /bin/sh -c "while true; do echo Hello World; sleep 1; done"\r\n'
    "ExecStop=/usr/bin/docker stop busybox1\r\n"
    "[X-Fleet]\r\n"
    "MachineMetadata=group=hw_webservers\r\n"
    "Conflicts=hello_world@*\r\n"
)


def opts(*triples: tuple[str, str, str]) -> tuple[UnitOption, ...]:
    return tuple(UnitOption(*t) for t in triples)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Unit]\nDescription=x\n", opts(("Unit", "Description", "x"))),
        ("[Unit]\n  Description  =  x y  \n", opts(("Unit", "Description", "x y"))),
        ("[Unit]\nDescription=\n", opts(("Unit", "Description", ""))),
        ("[Unit]\nDescription=a=b=c\n", opts(("Unit", "Description", "a=b=c"))),
        ("[Unit]\n# c\n; c\n   # indented comment\nA=1\n", opts(("Unit", "A", "1"))),
        ("[Unit]\nA=1 # not a comment\n", opts(("Unit", "A", "1 # not a comment"))),
        ("[Unit]\nA=1\nA=2\nA=\nA=3\n", opts(*(("Unit", "A", v) for v in ("1", "2", "", "3")))),
        ("[Unit]\nA=one \\\ntwo\n", opts(("Unit", "A", "one two"))),
        ("[Unit]\nA=one\\\n     two\n", opts(("Unit", "A", "one two"))),
        ("[Unit]\nA=a \\\n# skipped\n; skipped\n b \\\n c\n", opts(("Unit", "A", "a b c"))),
        (
            "[Unit]\nA=ends in escaped backslash \\\\\nB=2\n",
            opts(("Unit", "A", "ends in escaped backslash \\\\"), ("Unit", "B", "2")),
        ),
        ("[Unit]\nA=last line continues into nothing \\", opts(("Unit", "A", "last line continues into nothing"))),
        ("[Unit]\nA=x \\\n\nB=y\n", opts(("Unit", "A", "x"), ("Unit", "B", "y"))),
        ("\ufeff[Unit]\nA=bom\n", opts(("Unit", "A", "bom"))),
        ("[Unit]\r\nA=crlf\r\n", opts(("Unit", "A", "crlf"))),
        ("[X-Custom]\nWhatever=kept\n", opts(("X-Custom", "Whatever", "kept"))),
        ("[Unit]\nUnknownKey=kept\n", opts(("Unit", "UnknownKey", "kept"))),
        # A section given twice is merged into its first appearance, as systemd merges it.
        (
            "[Unit]\nA=1\n[Service]\nB=2\n[Unit]\nC=3\n",
            opts(("Unit", "A", "1"), ("Unit", "C", "3"), ("Service", "B", "2")),
        ),
    ],
)
def test_parses(text: str, expected: tuple[UnitOption, ...]) -> None:
    assert parse(text, "t.service").options == expected


def test_lines_point_at_where_each_option_starts() -> None:
    unit = parse("# c\n[Unit]\nA=1\n\nB=wrapped \\\n  value\n[Service]\nC=3\n[Unit]\nD=4\n")
    assert [(o.name, line) for o, line in zip(unit.options, unit.lines, strict=True)] == [
        ("A", 3),
        ("B", 5),
        ("D", 10),
        ("C", 8),
    ]


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("[Unit]\nDescription\n", ["hello.service:2: expected key=value"]),
        ("[Unit]\n=value\n", ["hello.service:2: expected key=value"]),
        ("A=1\n[Unit]\nB=2\n", ["hello.service:1: A= appears before any [Section] header"]),
        ("[Unit\nA=1\n", ["hello.service:1: invalid section header '[Unit': expected [Name]"]),
        ("[Unit] # comment\nA=1\n", ["hello.service:1: invalid section header '[Unit] # comment': expected [Name]"]),
        ("[]\nA=1\n", ["hello.service:1: empty section name []"]),
        (
            "[Unit]\nA=1\n\n\n\n\nnonsense here\n[Service]\nalso bad\n",
            ["hello.service:7: expected key=value", "hello.service:9: expected key=value"],
        ),
        ("[Unit]\nA=1\nB \\\n  still no equals sign\n", ["hello.service:3: expected key=value"]),
        ("", ["hello.service: empty unit file: no settings found"]),
        ("# only a comment\n\n[Unit]\n", ["hello.service: empty unit file: no settings found"]),
        ("[Unit]\nA=1\x00\n", ["hello.service: binary data (NUL character), not a unit file"]),
        ("[Unit]\nA=\ud800\n", ["hello.service:2: text holds a lone surrogate, which is not valid UTF-8"]),
    ],
)
def test_rejects_with_file_and_line(text: str, errors: list[str]) -> None:
    with pytest.raises(UnitFileError) as caught:
        parse(text, "hello.service")
    assert [str(d) for d in caught.value.diagnostics] == errors
    assert str(caught.value) == "\n".join(errors)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"[Unit]\nA=\xff\xfe\n", "hello.service:2: not UTF-8 text: invalid byte 0xff"),
        (b"\x7fELF\x02\x01\x01\x00\x00", "hello.service: binary data (NUL byte), not a unit file"),
        (
            b"[Unit]\n" + b"A=" + b"x" * MAX_UNIT_FILE_BYTES + b"\n",
            f"hello.service: unit file too large: {MAX_UNIT_FILE_BYTES + 10} bytes (the limit is 1048576)",
        ),
    ],
)
def test_rejects_bytes_that_are_not_a_unit_file(data: bytes, error: str) -> None:
    with pytest.raises(UnitFileError) as caught:
        parse(data, "hello.service")
    assert [str(d) for d in caught.value.diagnostics] == [error]


def test_bytes_and_text_parse_alike() -> None:
    assert parse(HELLO_WORLD.encode()) == parse(HELLO_WORLD)


def test_normalized_text_is_what_fleetctl_cat_prints() -> None:
    assert parse(HELLO_WORLD).serialize() == HELLO_WORLD


def test_hash_is_sha1_of_the_normalized_text() -> None:
    import hashlib

    unit = parse(HELLO_WORLD)
    assert unit.hash == hashlib.sha1(HELLO_WORLD.encode()).hexdigest()


def test_hash_ignores_comments_and_whitespace() -> None:
    assert parse(HELLO_WORLD_SCRUFFY) == parse(HELLO_WORLD)
    assert parse(HELLO_WORLD_SCRUFFY).hash == parse(HELLO_WORLD).hash


@pytest.mark.parametrize(
    "changed",
    [
        HELLO_WORLD.replace("busybox1", "busybox2"),
        HELLO_WORLD.replace("Conflicts=hello_world@*\n", ""),
        HELLO_WORLD.replace("ExecStartPre=-/usr/bin/docker rm busybox1\n", ""),
        # Order within a section is meaning (Exec lines run in order), so it changes the hash.
        HELLO_WORLD.replace(
            "ExecStartPre=-/usr/bin/docker rm busybox1\nExecStartPre=/usr/bin/docker pull busybox\n",
            "ExecStartPre=/usr/bin/docker pull busybox\nExecStartPre=-/usr/bin/docker rm busybox1\n",
        ),
    ],
)
def test_hash_changes_when_meaning_changes(changed: str) -> None:
    assert parse(changed).hash != parse(HELLO_WORLD).hash


def test_serialize_of_options_built_in_code() -> None:
    unit = UnitFile.from_options([("Service", "ExecStart", "/bin/true"), ("Unit", "Description", "d")])
    assert unit.serialize() == "[Service]\nExecStart=/bin/true\n\n[Unit]\nDescription=d\n"


@pytest.mark.parametrize(
    ("text", "section", "name", "last", "listed"),
    [
        ("[S]\nA=1\nA=2\n", "S", "A", "2", ["1", "2"]),
        ("[S]\nA=1\nA=\nA=3\n", "S", "A", "3", ["3"]),
        ("[S]\nA=1\nA=2\nA=\n", "S", "A", "", []),
        ("[S]\nB=1\n", "S", "A", None, []),
    ],
)
def test_last_and_list_entries_follow_systemd(
    text: str, section: str, name: str, last: str | None, listed: list[str]
) -> None:
    unit = parse(text)
    entry = unit.last(section, name)
    assert (entry.value if entry else None) == last
    assert [e.value for e in unit.list_entries(section, name)] == listed


# --- properties -------------------------------------------------------------------------------------------------

# Text that looks like a unit file often enough to reach the interesting branches.
unit_like_text = st.lists(
    st.one_of(
        st.sampled_from(["[Unit]", "[Service]", "[X-Fleet]", "", "# c", "; c", "\\", "[", "]", "=", " = "]),
        st.text(alphabet=st.sampled_from("[]=#;\\ \t\rAaZ9%\"'@*.\x85\u2028\ufeff"), max_size=12),
        st.text(max_size=20),
    ),
    max_size=12,
).map("\n".join)


@settings(max_examples=400)
@given(st.one_of(unit_like_text, st.text()))
@example("[Unit]\n\\\n9=")  # a line holding only a backslash: the key it continues into has no leading space
def test_any_text_parses_or_raises_unit_file_error(text: str) -> None:
    try:
        unit = parse(text, "fuzz.service")
    except UnitFileError as e:
        problems = e.diagnostics
    else:
        problems = ()
    if problems:
        assert all(d.file == "fuzz.service" for d in problems)
        return
    again = parse(unit.serialize(), "fuzz.service")
    assert again == unit
    assert again.hash == unit.hash


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_unit_file_error(data: bytes) -> None:
    try:
        parse(data)
    except UnitFileError:
        pass


_ws = st.sampled_from(["", " ", "\t", "  "])
_section = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\0"), min_size=1, max_size=8)
_key = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}", fullmatch=True)
_value = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\0\\"), max_size=30).map(
    lambda v: v.strip(" \t\r\n")
)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["Unit", "Service", "X-Fleet"]) | _section, _key, _value), min_size=1))
def test_serialize_then_parse_is_identity(options: list[tuple[str, str, str]]) -> None:
    unit = UnitFile.from_options(options)
    assert parse(unit.serialize()) == unit


@settings(max_examples=300)
@given(
    st.lists(st.tuples(_key, _value), min_size=1, max_size=8),
    st.lists(st.tuples(_ws, _ws, _ws, st.booleans(), st.booleans()), min_size=8, max_size=8),
)
def test_hash_is_stable_under_whitespace_and_comments(
    settings_: list[tuple[str, str]], noise: list[tuple[str, str, str, bool, bool]]
) -> None:
    plain = "[Service]\n" + "".join(f"{k}={v}\n" for k, v in settings_)
    noisy = ["# generated", "[Service]"]
    for (key, value), (lead, around, trail, comment, blank) in zip(settings_, noise, strict=False):
        if comment:
            noisy.append(f"{lead}; a comment about {key}")
        if blank:
            noisy.append(around)
        noisy.append(f"{lead}{key}{around}={around}{value}{trail}")
    assert parse("\n".join(noisy)).hash == parse(plain).hash
