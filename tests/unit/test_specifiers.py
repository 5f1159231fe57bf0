"""Specifiers: systemd's in [Service] settings, and fleet's narrower substitution in [X-Fleet]."""

from __future__ import annotations

import pytest

from fleetlet.units.names import parse_name
from fleetlet.units.specifiers import MachineFacts, expand, expand_xfleet, specifier_problems, unescape

MACHINE = MachineFacts(hostname="node-1", machine_id="0123456789abcdef0123456789abcdef", boot_id="b00t")


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("plain", "web.service", "plain"),
        ("", "web.service", ""),
        ("%n", "web@1.service", "web@1.service"),
        ("%N", "web@1.service", "web@1"),
        ("%p", "web@1.service", "web"),
        ("%i", "web@1.service", "1"),
        ("%p", "web.service", "web"),
        ("%N", "web.service", "web"),
        ("%i", "web.service", ""),
        ("%i", "web@.service", ""),
        ("%I", "mnt@home-user.service", "home/user"),
        ("%i", "mnt@home-user.service", "home-user"),
        ("%f", "mnt@home-user.service", "/home/user"),
        ("%f", "mnt@-.service", "/"),
        ("%f", "srv-www.service", "/srv/www"),
        ("%H", "web.service", "node-1"),
        ("%m", "web.service", "0123456789abcdef0123456789abcdef"),
        ("%b", "web.service", "b00t"),
        ("100%%", "web.service", "100%"),
        ("%%n", "web.service", "%n"),
        ("%%%n", "web.service", "%web.service"),
        ("--name %p-%i on %H", "web@2.service", "--name web-2 on node-1"),
        ("%n%n", "a.service", "a.servicea.service"),
    ],
)
def test_expand(text: str, unit: str, expected: str) -> None:
    assert expand(text, parse_name(unit), MACHINE) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("%x", "unsupported specifier %x"),
        ("%u", "unsupported specifier %u"),
        ("a %", "'%' at the end of the value starts no specifier"),
        ("ok %n then %t", "unsupported specifier %t"),
    ],
)
def test_expand_refuses_unknown_specifiers(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand(text, parse_name("web.service"), MACHINE)


def test_expand_without_machine_facts_gives_empty_strings() -> None:
    assert expand("[%H|%m|%b]", parse_name("web.service"), MachineFacts()) == "[||]"


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("", []),
        ("no specifiers", []),
        ("%n %N %p %i %I %f %H %m %b %%", []),
        ("100%%", []),
        (
            "%x",
            ["unsupported specifier %x (fleetlet knows %n %N %p %i %I %f %H %m %b %%; write %% for a literal %)"],
        ),
        ("%", ["'%' at the end of the value starts no specifier (write %% for a literal %)"]),
        ("50%", ["'%' at the end of the value starts no specifier (write %% for a literal %)"]),
        ("%%%", ["'%' at the end of the value starts no specifier (write %% for a literal %)"]),
        ("%a %b %c", ["unsupported specifier %a", "unsupported specifier %c"]),
        ("%\n", ["unsupported specifier %\n"]),
    ],
)
def test_specifier_problems(text: str, problems: list[str]) -> None:
    found = specifier_problems(text)
    assert len(found) == len(problems), found
    for got, want in zip(found, problems, strict=True):
        assert got.startswith(want)


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("db@%i.service", "web@3.service", "db@3.service"),
        ("db@%i.service", "web@.service", "db@.service"),  # a template's %i is empty, as in fleet
        ("%p.socket", "foo.service", "foo.socket"),
        ("%n", "web@3.service", "web@3.service"),
        ("%N", "web@3.service", "web@3"),
        ("%p@*", "web@3.service", "web@*"),
        ("%i", "web.service", ""),
        # every other % stays as written
        ("%H-%m-%b-%I-%f", "web@3.service", "%H-%m-%b-%I-%f"),
        ("100%%", "web.service", "100%%"),
        ("50%", "web.service", "50%"),
        ("%%i", "web@3.service", "%3"),
        # fleet replaced %n, then %N, then %p, then %i, each over the whole value
        ("%%n", "prod.service", "prodrod.service"),
        ("%%N", "ihost.service", "host"),  # %N gives "%ihost", whose "%i" then goes
        ("%%p", "ihost.service", "host"),
        ("%%i", "web@n.service", "%n"),
    ],
)
def test_expand_xfleet(text: str, unit: str, expected: str) -> None:
    assert expand_xfleet(text, parse_name(unit)) == expected


@pytest.mark.parametrize(
    ("escaped", "expected"),
    [("", ""), ("home-user", "home/user"), ("-", "/"), ("a_b.c", "a_b.c")],
)
def test_unescape(escaped: str, expected: str) -> None:
    assert unescape(escaped) == expected
