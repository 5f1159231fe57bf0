"""[X-Fleet] requirements: what each key means, fleet's quirks kept, every mistake reported at its line."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set

import pytest

from fleetlet.diagnostics import Report
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.names import parse_name
from fleetlet.units.syntax import parse
from fleetlet.units.xfleet import Requirements, requirements, split_values
from tests.fleet_units import HELLO_WORLD

# fleet's example unit; the backslash-newline in ExecStart= is Python's and leaves one line in the text.

FULL_ID = "0123456789abcdef0123456789abcdef"


def _read(xfleet: str, name: str = "web@3.service") -> tuple[Requirements, Report]:
    """Requirements of a unit whose line 1 is [Service], line 2 ExecStart and line 3 [X-Fleet]."""
    text = "[Service]\nExecStart=/bin/true\n[X-Fleet]\n" + xfleet
    report = Report("unit")
    return requirements(parse(text), parse_name(name), report), report


def _md(metadata: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    return {key: frozenset(values) for key, values in metadata.items()}


def _problems(report: Report) -> list[tuple[str, int, str]]:
    return [(d.severity, d.line, d.message) for d in report.diagnostics]


def test_hello_world() -> None:
    report = Report("hello_world.service")
    reqs = requirements(parse(HELLO_WORLD), parse_name("hello_world.service"), report)
    assert reqs == Requirements(machine_metadata={"group": frozenset({"hw_webservers"})}, conflicts=("hello_world@*",))
    assert reqs.machine_metadata == {"group": {"hw_webservers"}}
    assert report.diagnostics == []


def test_unit_without_xfleet_has_no_requirements() -> None:
    report = Report("unit")
    reqs = requirements(parse("[Service]\nExecStart=/bin/true\n"), parse_name("a.service"), report)
    assert reqs == Requirements()
    assert reqs.machine_id is None
    assert not reqs.is_global
    assert report.diagnostics == []


def test_unit_built_without_lines() -> None:
    unit = UnitFile.from_options([UnitOption("X-Fleet", "Global", "nope")])
    report = Report("unit")
    assert requirements(unit, parse_name("a.service"), report) == Requirements()
    assert [(d.line, d.message[:8]) for d in report.errors] == [(0, "Global=:")]


@pytest.mark.parametrize(
    ("xfleet", "name", "expected"),
    [
        # MachineID: a full or a short ID, kept as written; modern spelling before the old ones
        (f"MachineID={FULL_ID}\n", "a.service", Requirements(machine_id=FULL_ID)),
        ("MachineID=0123abcd\n", "a.service", Requirements(machine_id="0123abcd")),
        ("MachineID=0123ABCD\n", "a.service", Requirements(machine_id="0123ABCD")),
        ('MachineID="0123abcd"\n', "a.service", Requirements(machine_id="0123abcd")),
        (
            "X-ConditionMachineID=aaaaaaaa\nMachineID=bbbbbbbb\n",
            "a.service",
            Requirements(machine_id="bbbbbbbb"),
        ),
        (
            "X-ConditionMachineBootID=cccccccc\nX-ConditionMachineID=aaaaaaaa\n",
            "a.service",
            Requirements(machine_id="aaaaaaaa"),
        ),
        ("X-ConditionMachineBootID=cccccccc\n", "a.service", Requirements(machine_id="cccccccc")),
        ("MachineID=aaaaaaaa\nMachineID=aaaaaaaa\n", "a.service", Requirements(machine_id="aaaaaaaa")),
        # MachineOf: unit names; old spelling first; specifiers; blanks and quotes separate names
        ("MachineOf=db.service\n", "a.service", Requirements(machine_of=("db.service",))),
        ("MachineOf=db@%i.service\n", "web@3.service", Requirements(machine_of=("db@3.service",))),
        ("MachineOf=%p.socket\n", "foo.service", Requirements(machine_of=("foo.socket",))),
        ("MachineOf=%p-db@%i.service\n", "web@x.service", Requirements(machine_of=("web-db@x.service",))),
        ("MachineOf=db@%i.service\n", "web@.service", Requirements(machine_of=("db@.service",))),
        (
            "MachineOf=b.service\nX-ConditionMachineOf=a.service\n",
            "x.service",
            Requirements(machine_of=("a.service", "b.service")),
        ),
        (
            "MachineOf=a.service  b.service\tc.service\n",
            "x.service",
            Requirements(machine_of=("a.service", "b.service", "c.service")),
        ),
        (
            'MachineOf="a.service" "b.service"\n',
            "x.service",
            Requirements(machine_of=("a.service", "b.service")),
        ),
        ("MachineOf=\n", "x.service", Requirements()),
        # MachineMetadata: key=value items merged, any value per key
        ("MachineMetadata=region=us\n", "a.service", Requirements(machine_metadata=_md({"region": {"us"}}))),
        (
            'MachineMetadata="region=us-east-1" "diskType=SSD"\nMachineMetadata=region=us-west-1\n',
            "a.service",
            Requirements(machine_metadata=_md({"region": {"us-east-1", "us-west-1"}, "diskType": {"SSD"}})),
        ),
        (
            "X-ConditionMachineMetadata=role=web\nMachineMetadata=role=db\n",
            "a.service",
            Requirements(machine_metadata=_md({"role": {"web", "db"}})),
        ),
        (
            'MachineMetadata="name=two words"\n',
            "a.service",
            Requirements(machine_metadata=_md({"name": {"two words"}})),
        ),
        (
            "MachineMetadata=name=two words\n",
            "a.service",
            Requirements(machine_metadata=_md({"name": {"two words"}})),
        ),
        (
            "MachineMetadata=unit=%n\n",
            "a.service",
            Requirements(machine_metadata=_md({"unit": {"a.service"}})),
        ),
        ('MachineMetadata=""\n', "a.service", Requirements()),
        # Conflicts and Replaces: globs, old spelling first, blanks separate them
        ("Conflicts=web@*\n", "web@1.service", Requirements(conflicts=("web@*",))),
        (
            "Conflicts=web@* db@*\n",
            "web@1.service",
            Requirements(conflicts=("web@*", "db@*")),
        ),
        (
            "Conflicts=b*\nX-Conflicts=a*\n",
            "x.service",
            Requirements(conflicts=("a*", "b*")),
        ),
        ('Conflicts="a*" "b*"\n', "x.service", Requirements(conflicts=("a*", "b*"))),
        ("Conflicts=%p@*\n", "web@1.service", Requirements(conflicts=("web@*",))),
        ("Replaces=old-web.service\n", "web.service", Requirements(replaces=("old-web.service",))),
        (
            "Replaces=old-*.service old2.service\n",
            "web.service",
            Requirements(replaces=("old-*.service", "old2.service")),
        ),
        # Global: fleet's truthy and falsy words, any case; the last value wins
        *[
            (f"Global={word}\n", "a.service", Requirements(is_global=True))
            for word in ["true", "yes", "1", "on", "t", "TRUE", "Yes", "On", "T"]
        ],
        *[
            (f"Global={word}\n", "a.service", Requirements())
            for word in ["false", "no", "0", "off", "f", "FALSE", "No", "F"]
        ],
        ("Global=true\nGlobal=false\n", "a.service", Requirements()),
        ("Global=false\nGlobal=true\n", "a.service", Requirements(is_global=True)),
        ('Global="false" "true"\n', "a.service", Requirements(is_global=True)),
        (
            "Global=true\nMachineMetadata=a=b\nConflicts=x*\n",
            "a.service",
            Requirements(is_global=True, machine_metadata=_md({"a": {"b"}}), conflicts=("x*",)),
        ),
        # Global=false takes no part in the rules about Global
        ("Global=false\nMachineID=aaaaaaaa\n", "a.service", Requirements(machine_id="aaaaaaaa")),
        (
            "Global=no\nMachineOf=b.service\nReplaces=c*\n",
            "a.service",
            Requirements(machine_of=("b.service",), replaces=("c*",)),
        ),
        # everything that may go together
        (
            "MachineMetadata=a=b\nMachineOf=db@%i.service\nConflicts=web@*\n",
            "web@2.service",
            Requirements(machine_metadata=_md({"a": {"b"}}), machine_of=("db@2.service",), conflicts=("web@*",)),
        ),
    ],
)
def test_valid(xfleet: str, name: str, expected: Requirements) -> None:
    reqs, report = _read(xfleet, name)
    assert reqs == expected
    assert report.errors == []


@pytest.mark.parametrize(
    ("xfleet", "line", "message"),
    [
        # unknown keys: fleet refused them too
        ("Foo=bar\n", 4, "unrecognized requirement in [X-Fleet]: 'Foo'"),
        ("MachineID=aaaaaaaa\nFoo=\n", 5, "unrecognized requirement in [X-Fleet]: 'Foo'"),
        (
            "machineof=a.service\n",
            4,
            "unrecognized requirement in [X-Fleet]: 'machineof' (did you mean 'MachineOf'?)",
        ),
        (
            "X-ConditionMachineBootId=aaaaaaaa\n",
            4,
            "unrecognized requirement in [X-Fleet]: 'X-ConditionMachineBootId' "
            "(did you mean 'X-ConditionMachineBootID'?)",
        ),
        ("X-Replaces=a*\n", 4, "unrecognized requirement in [X-Fleet]: 'X-Replaces'"),
        ("X-ConditionGlobal=true\n", 4, "unrecognized requirement in [X-Fleet]: 'X-ConditionGlobal'"),
        # MachineID values
        (
            "MachineID=0123abc\n",
            4,
            "MachineID=: '0123abc' is not a machine ID (expected 32 hex digits, or the first 8 of them)",
        ),
        ("MachineID=0123abcde\n", 4, "MachineID=: '0123abcde' is not a machine ID"),
        ("MachineID=0123abcg\n", 4, "MachineID=: '0123abcg' is not a machine ID"),
        (f"MachineID={FULL_ID[:-1]}\n", 4, f"MachineID=: '{FULL_ID[:-1]}' is not a machine ID"),
        (f"MachineID={FULL_ID}0\n", 4, f"MachineID=: '{FULL_ID}0' is not a machine ID"),
        ("MachineID=\n", 4, "MachineID=: '' is not a machine ID"),
        ("MachineID=%m\n", 4, "MachineID=: '%m' is not a machine ID"),
        ("\nX-ConditionMachineID=web-1\n", 5, "X-ConditionMachineID=: 'web-1' is not a machine ID"),
        # MachineOf peers must be unit names
        ("MachineOf=db\n", 4, "MachineOf=: invalid unit name 'db': it must end in a type suffix"),
        ("MachineOf=db.target\n", 4, "MachineOf=: invalid unit name 'db.target': unknown unit type 'target'"),
        (
            "MachineOf=a.service db!.service\n",
            4,
            "MachineOf=: invalid unit name 'db!.service': invalid character '!'",
        ),
        ("X-ConditionMachineOf=@.service\n", 4, "X-ConditionMachineOf=: invalid unit name '@.service'"),
        ('MachineOf=a.service "b.service"\n', 4, "MachineOf=: invalid unit name '\"b.service\"'"),
        # MachineMetadata entries: exactly one =, both sides non-empty
        ("MachineMetadata=region\n", 4, "MachineMetadata=: malformed entry 'region' (expected key=value)"),
        ("MachineMetadata=region=\n", 4, "MachineMetadata=: malformed entry 'region=' (expected key=value)"),
        ("MachineMetadata==us\n", 4, "MachineMetadata=: malformed entry '=us' (expected key=value)"),
        ("MachineMetadata=a=b=c\n", 4, "MachineMetadata=: malformed entry 'a=b=c' (expected key=value)"),
        ("MachineMetadata=\n", 4, "MachineMetadata=: malformed entry '' (expected key=value)"),
        ("MachineMetadata=a=b c=d\n", 4, "MachineMetadata=: malformed entry 'a=b c=d' (expected key=value)"),
        ('MachineMetadata="a=b" "c"\n', 4, "MachineMetadata=: malformed entry 'c' (expected key=value)"),
        ("X-ConditionMachineMetadata=ab\n", 4, "X-ConditionMachineMetadata=: malformed entry 'ab'"),
        # globs
        ("Conflicts=web@[\n", 4, "Conflicts=: invalid glob 'web@[': '[' is never closed"),
        ("Conflicts=bad\\ ok*\n", 4, "Conflicts=: invalid glob 'bad\\\\': a trailing '\\' escapes nothing"),
        ("X-Conflicts=[]\n", 4, "X-Conflicts=: invalid glob '[]': a character class cannot be empty"),
        ("\n\nReplaces=[z-a]\n", 6, "Replaces=: invalid glob '[z-a]': range 'z-a' is reversed"),
        # Global values
        (
            "Global=maybe\n",
            4,
            "Global=: 'maybe' is not a boolean (expected true, yes, 1, on, t or false, no, 0, off, f)",
        ),
        ("Global=\n", 4, "Global=: '' is not a boolean"),
        ("Global=y\n", 4, "Global=: 'y' is not a boolean"),
        ("Global=true\nGlobal=2\n", 5, "Global=: '2' is not a boolean"),
        # combinations that can never hold, reported at the later key
        ("MachineID=aaaaaaaa\nMachineOf=b.service\n", 5, "MachineOf= cannot be combined with MachineID="),
        ("MachineOf=b.service\nMachineID=aaaaaaaa\n", 5, "MachineID= cannot be combined with MachineOf="),
        ("MachineID=aaaaaaaa\nConflicts=b*\n", 5, "Conflicts= cannot be combined with MachineID="),
        (
            "X-Conflicts=b*\n\nX-ConditionMachineID=aaaaaaaa\n",
            6,
            "X-ConditionMachineID= cannot be combined with X-Conflicts=",
        ),
        ("MachineID=aaaaaaaa\nGlobal=true\n", 5, "Global=true cannot be combined with MachineID="),
        ("Global=yes\nMachineID=aaaaaaaa\n", 5, "MachineID= cannot be combined with Global=yes"),
        ("MachineID=aaaaaaaa\nReplaces=b*\n", 5, "Replaces= cannot be combined with MachineID="),
        ("Global=true\nMachineOf=b.service\n", 5, "MachineOf= cannot be combined with Global=true"),
        (
            "X-ConditionMachineOf=b.service\nGlobal=1\n",
            5,
            "Global=1 cannot be combined with X-ConditionMachineOf=",
        ),
        ("Global=true\nReplaces=b*\n", 5, "Replaces= cannot be combined with Global=true"),
        ("Replaces=b*\nConflicts=c*\n", 5, "Conflicts= cannot be combined with Replaces="),
        ("Conflicts=c*\nReplaces=b*\n", 5, "Replaces= cannot be combined with Conflicts="),
        # the later key is where the combination starts, whatever the spelling order
        (
            "MachineOf=a.service\nMachineID=aaaaaaaa\nX-ConditionMachineOf=b.service\n",
            5,
            "MachineID= cannot be combined with MachineOf=",
        ),
        # a peer the unit must avoid or replace can never be beside it
        (
            "MachineOf=db.service\nConflicts=db*\n",
            5,
            "unresolvable requirements: peer 'db.service' matches Conflicts=db*",
        ),
        (
            "Conflicts=db*\nMachineOf=db.service\n",
            5,
            "unresolvable requirements: peer 'db.service' matches Conflicts=db*",
        ),
        (
            "X-Conflicts=db@?.service\nX-ConditionMachineOf=db@%i.service\n",
            5,
            "unresolvable requirements: peer 'db@3.service' matches X-Conflicts=db@?.service",
        ),
        (
            "MachineOf=old.service\nReplaces=old*\n",
            5,
            "unresolvable requirements: peer 'old.service' matches Replaces=old*",
        ),
    ],
)
def test_error(xfleet: str, line: int, message: str) -> None:
    _, report = _read(xfleet)
    errors = [(d.line, d.message) for d in report.errors]
    assert len(errors) == 1, errors
    assert errors[0][0] == line
    assert errors[0][1].startswith(message), errors[0][1]


def test_every_error_is_reported_and_bad_values_are_left_out() -> None:
    reqs, report = _read(
        "Foo=1\n"  # 4
        "MachineMetadata=ok=yes\n"  # 5
        "MachineMetadata=broken\n"  # 6
        "Conflicts=good* [bad\n"  # 7
        "MachineOf=fine.service nope\n"  # 8
        "Global=perhaps\n"  # 9
    )
    assert reqs == Requirements(
        machine_metadata=_md({"ok": {"yes"}}), conflicts=("good*",), machine_of=("fine.service",)
    )
    assert sorted(d.line for d in report.errors) == [4, 6, 7, 8, 9]
    assert report.warnings == []


@pytest.mark.parametrize(
    ("xfleet", "expected", "warnings"),
    [
        # old spellings: honoured, with a pointer to the new one
        (
            "X-ConditionMachineID=aaaaaaaa\n",
            Requirements(machine_id="aaaaaaaa"),
            [(4, "X-ConditionMachineID= is deprecated; write MachineID= instead")],
        ),
        (
            "X-ConditionMachineOf=a.service\n",
            Requirements(machine_of=("a.service",)),
            [(4, "X-ConditionMachineOf= is deprecated; write MachineOf= instead")],
        ),
        (
            "X-ConditionMachineMetadata=a=b\n",
            Requirements(machine_metadata=_md({"a": {"b"}})),
            [(4, "X-ConditionMachineMetadata= is deprecated; write MachineMetadata= instead")],
        ),
        (
            "X-Conflicts=a*\n",
            Requirements(conflicts=("a*",)),
            [(4, "X-Conflicts= is deprecated; write Conflicts= instead")],
        ),
        (
            "X-ConditionMachineBootID=aaaaaaaa\n",
            Requirements(machine_id="aaaaaaaa"),
            [
                (
                    4,
                    "X-ConditionMachineBootID= is deprecated; fleet compared its value with machine IDs, "
                    "not boot IDs, and so does fleetlet: write MachineID= instead",
                )
            ],
        ),
        # specifiers other than %n %N %p %i stay as written
        (
            "Conflicts=%H-*\n",
            Requirements(conflicts=("%H-*",)),
            [
                (
                    4,
                    "Conflicts=: %H is left as written: fleet and fleetlet replace only %n %N %p %i in [X-Fleet]",
                )
            ],
        ),
        (
            "MachineMetadata=host=%H\nMachineMetadata=id=%m%H%m\n",
            Requirements(machine_metadata=_md({"host": {"%H"}, "id": {"%m%H%m"}})),
            [
                (4, "MachineMetadata=: %H is left as written"),
                (5, "MachineMetadata=: %m %H is left as written"),
            ],
        ),
        ("MachineOf=a%%.service\n", None, [(4, "MachineOf=: %% is left as written")]),
        ("Conflicts=%I*\n", Requirements(conflicts=("%I*",)), [(4, "Conflicts=: %I is left as written")]),
        ("Conflicts=a%\n", Requirements(conflicts=("a%",)), []),
        ("Conflicts=%n %N %p %i\n", Requirements(conflicts=("web@3.service", "web@3", "web", "3")), []),
        # quotes in a value that is not a quoted list are part of it
        (
            'MachineMetadata=region="us"\n',
            Requirements(machine_metadata=_md({"region": {'"us"'}})),
            [(4, "MachineMetadata=: the '\"' characters in 'region=\"us\"' are kept as part of the value")],
        ),
        # a second machine is ignored, as fleet ignored it, but not silently
        (
            "MachineID=aaaaaaaa\nMachineID=bbbbbbbb\n",
            Requirements(machine_id="aaaaaaaa"),
            [
                (
                    5,
                    "MachineID=: 'bbbbbbbb' is ignored: the unit is already bound to machine 'aaaaaaaa' (line 4)",
                )
            ],
        ),
        (
            "X-ConditionMachineID=bbbbbbbb\nMachineID=aaaaaaaa\n",
            Requirements(machine_id="aaaaaaaa"),
            [
                (4, "X-ConditionMachineID= is deprecated"),
                (
                    4,
                    "X-ConditionMachineID=: 'bbbbbbbb' is ignored: "
                    "the unit is already bound to machine 'aaaaaaaa' (line 5)",
                ),
            ],
        ),
    ],
)
def test_warning(xfleet: str, expected: Requirements | None, warnings: list[tuple[int, str]]) -> None:
    reqs, report = _read(xfleet)
    if expected is not None:
        assert reqs == expected
        assert report.errors == []
    found = [(d.line, d.message) for d in report.warnings]
    assert len(found) == len(warnings), found
    for (line, message), (want_line, want) in zip(found, warnings, strict=True):
        assert line == want_line
        assert message.startswith(want), message


def test_literal_specifier_in_a_peer_is_then_an_invalid_name() -> None:
    reqs, report = _read("MachineOf=%H.service\n")
    assert reqs == Requirements()
    assert _problems(report) == [
        (
            "warning",
            4,
            "MachineOf=: %H is left as written: fleet and fleetlet replace only %n %N %p %i in [X-Fleet]",
        ),
        (
            "error",
            4,
            "MachineOf=: invalid unit name '%H.service': invalid character '%' (allowed: A-Z a-z 0-9 : _ . @ -)",
        ),
    ]


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a=b", ["a=b"]),
        ("", [""]),
        ("a b", ["a b"]),
        ('"a=b" "c=d"', ["a=b", "c=d"]),
        ('"a=b"  "c=d"', ["a=b", "c=d"]),
        ('"a=b"\t"c=d"', ["a=b", "c=d"]),
        ('"a b"', ["a b"]),
        ('"a"b"c d"', ["abc d"]),  # quotes are dropped wherever they fall, as fleet did
        ('"a" b "c"', ["a", "b", "c"]),
        ('"a" "" "b"', ["a", "b"]),
        ('""', []),
        ('"', []),
        ('"a" "b', ['"a" "b']),  # does not end with a quote: one value, quotes and all
        ('a "b"', ['a "b"']),
    ],
)
def test_split_values(value: str, items: list[str]) -> None:
    assert split_values(value) == items


# The helpers the scheduler uses.


@pytest.mark.parametrize(
    ("conflicts", "other", "expected"),
    [
        ((), "a.service", False),
        (("web@*",), "web@1.service", True),
        (("web@*",), "web.service", False),
        (("db*", "web@*"), "web@1.service", True),
        (("db@[0-9].service",), "db@10.service", False),
    ],
)
def test_conflicts_with(conflicts: tuple[str, ...], other: str, expected: bool) -> None:
    assert Requirements(conflicts=conflicts).conflicts_with(other) is expected
    assert Requirements(replaces=conflicts).replaces_unit(other) is expected
    assert Requirements(replaces=conflicts).conflicts_with(other) is False
    assert Requirements(conflicts=conflicts).replaces_unit(other) is False


@pytest.mark.parametrize(
    ("required", "machine", "expected"),
    [
        (None, FULL_ID, True),
        (FULL_ID, FULL_ID, True),
        (FULL_ID, FULL_ID[:-1] + "0", False),
        (FULL_ID[:8], FULL_ID, True),
        (FULL_ID[:8], "f" + FULL_ID[1:], False),
        (FULL_ID[:8].upper(), FULL_ID, True),
        (FULL_ID.upper(), FULL_ID, True),
        (FULL_ID[:8], FULL_ID[:8], True),
        (FULL_ID[:8], FULL_ID[:7], False),
        (FULL_ID, FULL_ID[:8], False),
    ],
)
def test_machine_id_matches(required: str | None, machine: str, expected: bool) -> None:
    assert Requirements(machine_id=required).machine_id_matches(machine) is expected


@pytest.mark.parametrize(
    ("required", "machine", "expected"),
    [
        ({}, {}, True),
        ({}, {"region": "us"}, True),
        ({"region": {"us"}}, {"region": "us"}, True),
        ({"region": {"us"}}, {"region": "eu"}, False),
        ({"region": {"us"}}, {}, False),
        ({"region": {"us"}}, {"Region": "us"}, False),
        ({"region": {"us", "eu"}}, {"region": "eu"}, True),
        ({"region": {"us"}, "disk": {"ssd"}}, {"region": "us"}, False),
        ({"region": {"us"}, "disk": {"ssd"}}, {"region": "us", "disk": "ssd", "extra": "x"}, True),
        ({"region": {"us"}}, {"region": {"eu", "us"}}, True),
        ({"region": {"us"}}, {"region": frozenset({"eu"})}, False),
        ({"region": {"us"}}, {"region": set()}, False),
    ],
)
def test_metadata_matches(required: dict[str, set[str]], machine: Mapping[str, str | Set[str]], expected: bool) -> None:
    reqs = Requirements(machine_metadata=_md(required))
    assert reqs.metadata_matches(machine) is expected


def test_requirements_are_frozen_and_hashable() -> None:
    source = {"region": frozenset({"us"})}
    reqs = Requirements(machine_metadata=source, conflicts=("a*",))
    source["region"] = frozenset({"eu"})  # the caller's dict is copied, not kept
    assert reqs.machine_metadata == {"region": {"us"}}
    with pytest.raises(TypeError):
        reqs.machine_metadata["disk"] = frozenset({"ssd"})  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        reqs.is_global = True  # type: ignore[misc]
    same = Requirements(machine_metadata={"region": frozenset({"us"})}, conflicts=("a*",))
    assert {reqs: 1}[same] == 1
    assert reqs != Requirements(machine_metadata={"region": frozenset({"eu"})}, conflicts=("a*",))


def test_requirements_refuse_a_bad_glob() -> None:
    with pytest.raises(ValueError, match=r"invalid glob 'a\['"):
        Requirements(conflicts=("a[",))
    with pytest.raises(ValueError, match="invalid glob"):
        Requirements(replaces=("[]",))
