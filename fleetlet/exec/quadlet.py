"""A ``[Container]`` section, in the style of Podman Quadlet: a container run directly, without Exec lines.

::

    [Container]
    Image=nginx:1.27
    PublishPort=8080:80
    Environment=MODE=production

Values use the same syntax as the matching ``docker run`` flags (``PublishPort=`` is ``-p``, ``Volume=`` is
``-v``, ``Memory=`` is ``-m``) and the same parsers, so the two spellings of a unit cannot drift apart.
``EnvironmentFile=`` is docker's ``--env-file`` format, as it is for Quadlet (whose files podman reads), not
systemd's. Specifiers (``%i``, ``%H``, ...) are resolved; ``$VAR`` is not, since no shell or systemd expands
these values. Single-valued settings follow systemd: the last assignment wins and an empty one resets; an empty
assignment of a list setting empties the list. Every assignment is checked and every problem reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from fleetlet.diagnostics import Report
from fleetlet.exec.docker_argv import RunSpec
from fleetlet.exec.docker_values import (
    PortMapping,
    VolumeMount,
    checked_container_name,
    checked_image,
    parse_bytes,
    parse_key_value,
    parse_ports,
    parse_volume,
)
from fleetlet.exec.environment import parse_assignments
from fleetlet.units.model import Entry, UnitFile
from fleetlet.units.names import UnitName
from fleetlet.units.specifiers import MachineFacts, expand, specifier_problems
from fleetlet.units.words import split_words

SECTION = "Container"
KEYS = (
    "ContainerName",
    "Entrypoint",
    "Environment",
    "EnvironmentFile",
    "Exec",
    "HostName",
    "Image",
    "Label",
    "Memory",
    "Network",
    "PublishPort",
    "User",
    "Volume",
)
# Stand-ins for the machine-dependent specifiers when checking a unit before it is placed on a machine.
_ANY_MACHINE = MachineFacts(hostname="localhost", machine_id="0" * 32, boot_id="0" * 32)

_T = TypeVar("_T")


def container_spec(
    unit: UnitFile, name: UnitName, report: Report, *, machine: MachineFacts | None = None
) -> RunSpec | None:
    """The container a unit's ``[Container]`` section asks for, with specifiers resolved for ``machine``.

    Problems go to ``report`` at their lines. None when there is no ``[Container]`` section, or when it has
    errors. Without ``machine`` (checking a unit before placement) ``%H``, ``%m`` and ``%b`` get stand-ins.
    """
    if SECTION not in unit.sections():
        return None
    reader = _Reader(unit, name, machine or _ANY_MACHINE, report)
    errors = len(report.errors)
    reader.check_keys()
    image = reader.single("Image", checked_image)
    if image is None and not any(entry.value for entry in unit.entries(SECTION, "Image")[-1:]):
        report.error(unit.line_of(SECTION), "Image= is required in [Container]")
    spec = RunSpec(
        image=image or "",
        command=tuple(reader.single("Exec", split_words) or ()),
        entrypoint=reader.single("Entrypoint", _entrypoint),
        name=reader.single("ContainerName", checked_container_name) or default_container_name(name),
        env=tuple(f"{key}={value}" for pairs in reader.all("Environment", parse_assignments) for key, value in pairs),
        env_files=tuple(reader.all("EnvironmentFile", _env_file)),
        publish=tuple(mapping for mappings in reader.all("PublishPort", _ports) for mapping in mappings),
        volumes=tuple(reader.all("Volume", _volume)),
        network=reader.network(),
        hostname=reader.single("HostName", _one_word),
        user=reader.single("User", _one_word),
        labels=dict(pair for pairs in reader.all("Label", _labels) for pair in pairs),
        memory=reader.single("Memory", parse_bytes),
    )
    return spec if len(report.errors) == errors else None


def default_container_name(name: UnitName) -> str:
    """``fleetlet-`` and the unit's name without its suffix: ``web@1.service`` runs ``fleetlet-web-1``."""
    return "fleetlet-" + name.name.replace("@", "-").replace(":", "-")


class _Reader:
    """Reads ``[Container]`` settings, resolving specifiers and reporting problems at their lines."""

    def __init__(self, unit: UnitFile, name: UnitName, machine: MachineFacts, report: Report) -> None:
        self.unit = unit
        self.name = name
        self.machine = machine
        self.report = report

    def check_keys(self) -> None:
        lines = self.unit.lines or (0,) * len(self.unit.options)
        for option, line in zip(self.unit.options, lines, strict=True):
            if option.section != SECTION or option.name in KEYS:
                continue
            if option.name == "PodmanArgs":
                self.report.error(
                    line,
                    "PodmanArgs= is not supported: fleetlet talks to the Docker Engine API; there is no podman "
                    "command line to pass arguments to",
                )
            else:
                self.report.error(
                    line, f"{option.name}= is not supported in [Container] (fleetlet knows: {', '.join(KEYS)})"
                )

    def single(self, key: str, parse: Callable[[str], _T]) -> _T | None:
        """The last assignment's value; None when unset, reset or invalid. Every assignment is checked."""
        value: _T | None = None
        for entry in self.unit.entries(SECTION, key):
            value = self._parse(key, entry, parse) if entry.value else None
        return value

    def all(self, key: str, parse: Callable[[str], _T]) -> list[_T]:
        """The valid values of a list setting, since its last reset."""
        values = (self._parse(key, entry, parse) for entry in self.unit.list_entries(SECTION, key))
        return [value for value in values if value is not None]

    def network(self) -> str | None:
        """Quadlet connects a container to each Network= given; a container created here joins only one."""
        entries = self.unit.list_entries(SECTION, "Network")
        for extra in entries[1:]:
            self.report.error(extra.line, "Network= given more than once: fleetlet connects a container to one network")
        return self._parse("Network", entries[0], _network) if entries else None

    def _parse(self, key: str, entry: Entry, parse: Callable[[str], _T]) -> _T | None:
        problems = specifier_problems(entry.value)
        for problem in problems:
            self.report.error(entry.line, f"{key}=: {problem}")
        if problems:
            return None
        try:
            return parse(expand(entry.value, self.name, self.machine))
        except ValueError as e:
            self.report.error(entry.line, f"{key}=: {e}")
            return None


def _entrypoint(text: str) -> tuple[str, ...]:
    """One program (``""`` clears the image's entrypoint), or a JSON array such as ``["/bin/sh", "-c"]``."""
    if text.startswith("["):
        try:
            words = json.loads(text)
        except json.JSONDecodeError:
            words = None
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise ValueError(f"{text!r} is not a JSON array of strings")
        return tuple(words)
    words = split_words(text)
    if len(words) != 1:
        raise ValueError(
            f"{text!r} is {len(words)} words: give one program, put its arguments in Exec=, "
            'or write a JSON array such as ["/bin/sh", "-c"]'
        )
    return tuple(word for word in words if word)


def _ports(text: str) -> list[PortMapping]:
    return parse_ports(text.strip())


def _volume(text: str) -> VolumeMount:
    volume = parse_volume(text.strip())
    if volume.source.endswith(".volume"):
        raise ValueError(
            f"{volume.source!r} names a Quadlet .volume unit, which fleetlet does not support: "
            "name a docker volume or an absolute host path"
        )
    return volume


def _network(text: str) -> str:
    network = _one_word(text)
    if network.endswith(".network"):
        raise ValueError(f"{network!r} names a Quadlet .network unit, which fleetlet does not support")
    return network


def _env_file(text: str) -> str:
    path = _one_word(text)
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} is not absolute (a unit in the cluster has no directory of its own)")
    return path


def _labels(text: str) -> list[tuple[str, str]]:
    return [parse_key_value(word, "label", value_required=True) for word in split_words(text)]


def _one_word(text: str) -> str:
    words = split_words(text)
    if len(words) != 1 or not words[0]:
        raise ValueError(f"expected one value, got {text!r}")
    return words[0]
