"""Unit names: fleet's validity rules, templates and instances, and names typed on the command line."""

from __future__ import annotations

import dataclasses

import pytest

from fleetlet.errors import UnitFileError, UnitNameError
from fleetlet.units.names import (
    MAX_NAME_LENGTH,
    UNIT_TYPES,
    UnitName,
    has_known_suffix,
    instance_of,
    name_from_argument,
    parse_name,
)


@pytest.mark.parametrize(
    ("full", "name", "prefix", "instance", "unit_type"),
    [
        ("web.service", "web", "web", "", "service"),
        ("web@.service", "web@", "web", "", "service"),
        ("web@1.service", "web@1", "web", "1", "service"),
        ("web@a@b.service", "web@a@b", "web", "a@b", "service"),
        ("my-app_2:x.y.socket", "my-app_2:x.y", "my-app_2:x.y", "", "socket"),
        ("dev-sda.device", "dev-sda", "dev-sda", "", "device"),
        ("home.mount", "home", "home", "", "mount"),
        ("home.automount", "home", "home", "", "automount"),
        ("backup@daily.timer", "backup@daily", "backup", "daily", "timer"),
        ("watch.path", "watch", "watch", "", "path"),
        ("a.service.service", "a.service", "a.service", "", "service"),
        ("-.mount", "-", "-", "", "mount"),
        ("A" * (MAX_NAME_LENGTH - len(".service")) + ".service", "A" * 248, "A" * 248, "", "service"),
    ],
)
def test_valid_name(full: str, name: str, prefix: str, instance: str, unit_type: str) -> None:
    parsed = parse_name(full)
    assert parsed == UnitName(full=full, name=name, prefix=prefix, instance=instance, unit_type=unit_type)
    assert str(parsed) == full


@pytest.mark.parametrize(
    ("full", "reason"),
    [
        ("", "it is empty"),
        ("A" * (MAX_NAME_LENGTH - len(".service") + 1) + ".service", "it is longer than 256 characters"),
        ("web", 'it must end in a type suffix such as ".service"'),
        ("web.", 'it cannot end in "."'),
        ("web.target", "unknown unit type 'target'"),
        ("web.Service", "unknown unit type 'Service'"),
        ("web.scope", "unknown unit type 'scope'"),
        (".service", "nothing comes before the type suffix"),
        ("@.service", 'it cannot start with "@"'),
        ("@web.service", 'it cannot start with "@"'),
        ("web app.service", "invalid character ' '"),
        ("web/app.service", "invalid character '/'"),
        ("web\\x2d.service", "invalid character '\\\\'"),
        ("wéb.service", "invalid character 'é'"),
        ("web%i.service", "invalid character '%'"),
        ("web*.service", "invalid character '*'"),
    ],
)
def test_invalid_name(full: str, reason: str) -> None:
    with pytest.raises(UnitNameError) as caught:
        parse_name(full)
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert isinstance(caught.value, UnitFileError)  # callers catching unit-file errors catch these too
    assert caught.value.line == 0


def test_long_name_is_shortened_in_the_error() -> None:
    with pytest.raises(UnitNameError) as caught:
        parse_name("x" * 300 + ".service")
    assert caught.value.name == "x" * 40 + "..."


def test_known_unit_types() -> None:
    assert frozenset({"service", "socket", "device", "mount", "automount", "timer", "path"}) == UNIT_TYPES


@pytest.mark.parametrize(
    ("full", "is_template", "is_instance", "template"),
    [
        ("web.service", False, False, None),
        ("web@.service", True, False, "web@.service"),
        ("web@1.service", False, True, "web@.service"),
        ("web@1.socket", False, True, "web@.socket"),
        ("web@a@b.service", False, True, "web@.service"),
    ],
)
def test_templates_and_instances(full: str, is_template: bool, is_instance: bool, template: str | None) -> None:
    name = parse_name(full)
    assert name.is_template is is_template
    assert name.is_instance is is_instance
    assert name.template == template


@pytest.mark.parametrize(
    ("template", "instance", "expected"),
    [
        ("web@.service", "1", "web@1.service"),
        ("web@.service", "eu-west:3", "web@eu-west:3.service"),
        ("backup@.timer", "daily", "backup@daily.timer"),
    ],
)
def test_instance_of(template: str, instance: str, expected: str) -> None:
    made = instance_of(parse_name(template), instance)
    assert made == parse_name(expected)
    assert made.is_instance
    assert made.template == template


@pytest.mark.parametrize(
    ("template", "instance", "reason"),
    [
        ("web.service", "1", "it is not a template unit"),
        ("web@1.service", "2", "it is not a template unit"),
        ("web@.service", "", "an instance needs a non-empty instance name"),
        ("web@.service", "a b", "invalid character ' '"),
        ("web@.service", "a/b", "invalid character '/'"),
    ],
)
def test_instance_of_refuses(template: str, instance: str, reason: str) -> None:
    with pytest.raises(UnitNameError) as caught:
        instance_of(parse_name(template), instance)
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("web", "web.service"),
        ("web.service", "web.service"),
        ("web.socket", "web.socket"),
        ("web@1", "web@1.service"),
        ("web@", "web@.service"),
        ("web@.service", "web@.service"),
        ("units/web.service", "web.service"),
        ("/srv/units/web@2.timer", "web@2.timer"),
        ("units/web/", "web.service"),
        ("web.target", "web.target.service"),  # fleet: only its own types count as a suffix
        ("app.v2", "app.v2.service"),
        ("web.Service", "web.Service.service"),
    ],
)
def test_name_from_argument(argument: str, expected: str) -> None:
    assert name_from_argument(argument) == parse_name(expected)


@pytest.mark.parametrize(
    ("argument", "reason"),
    [
        ("", "nothing comes before the type suffix"),
        ("/", "nothing comes before the type suffix"),
        ("@x", 'it cannot start with "@"'),
        ("web app", "invalid character ' '"),
    ],
)
def test_name_from_argument_refuses(argument: str, reason: str) -> None:
    with pytest.raises(UnitNameError) as caught:
        name_from_argument(argument)
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web.service", True),
        ("web.path", True),
        ("web.automount", True),
        (".service", True),
        ("web", False),
        ("service", False),
        ("web.target", False),
        ("web.service.bak", False),
        ("web.", False),
    ],
)
def test_has_known_suffix(name: str, expected: bool) -> None:
    assert has_known_suffix(name) is expected


def test_unit_name_is_frozen_and_hashable() -> None:
    name = parse_name("web@1.service")
    assert {name: 1}[parse_name("web@1.service")] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        name.instance = "2"  # type: ignore[misc]
