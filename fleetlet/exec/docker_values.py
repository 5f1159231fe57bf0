"""The value syntax of docker CLI flags: image references, port mappings, volumes, sizes, CPUs, ulimits.

Shared by ``docker run`` command lines (:mod:`fleetlet.exec.docker_argv`) and ``[Container]`` sections
(:mod:`fleetlet.exec.quadlet`), so that ``-p 8080:80`` and ``PublishPort=8080:80`` can never mean two things.
Each parser raises ValueError naming the bad value; callers add the flag or setting and line.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from fleetlet.units.values import parse_signal

PullPolicy = Literal["missing", "always", "never"]
PULL_POLICIES: tuple[PullPolicy, ...] = ("missing", "always", "never")

_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_PATH_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}")
_MAX_NAME = 255
_OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")  # containers and named volumes
_BYTES = re.compile(r"([0-9]{1,19})(?:\.([0-9]{1,19}))? ?([kmgtp]?)(?:i?b)?", re.IGNORECASE)
_CPUS = re.compile(r"([0-9]{0,9})(?:\.([0-9]{0,30}))?")
_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_PROTOCOLS = ("tcp", "udp", "sctp")
_MOUNT_OPTION_GROUPS = (
    frozenset({"ro", "rw"}),
    frozenset({"z", "Z"}),
    frozenset({"shared", "rshared", "slave", "rslave", "private", "rprivate"}),
    frozenset({"nocopy"}),
    frozenset({"consistent", "cached", "delegated"}),
)
_PROPAGATION = _MOUNT_OPTION_GROUPS[2]
_ULIMITS = frozenset(
    "core cpu data fsize locks memlock msgqueue nice nofile nproc rss rtprio rttime sigpending stack".split()
)
_RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """``[registry[:port]/]path[:tag][@digest]``; ``name`` keeps the registry and is not normalized."""

    name: str
    tag: str = ""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class PortMapping:
    """One published container port. ``host_port`` is "" for any free port, or a range ``"8000-8010"``."""

    host_ip: str
    host_port: str
    container_port: int
    protocol: str = "tcp"

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class VolumeMount:
    """``-v``: a bind mount (absolute ``source``), a named volume, or an anonymous volume (``source`` is "")."""

    source: str
    target: str
    mode: str = ""

    @property
    def bind(self) -> str:
        """The Engine API's ``Binds`` entry."""
        return f"{self.source}:{self.target}" + (f":{self.mode}" if self.mode else "")


@dataclass(frozen=True, slots=True)
class Ulimit:
    name: str
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class RestartSetting:
    """``--restart``: ``no``, ``always``, ``unless-stopped`` or ``on-failure[:max_retries]``."""

    name: str
    max_retries: int = 0


def parse_image_ref(text: str) -> ImageRef:
    """Split and validate an image reference; a ``:`` after the last ``/`` starts the tag, one before is a port."""
    name, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid digest {digest!r} in image reference {text!r}")
    tag = ""
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid tag {tag!r} in image reference {text!r}")
    if not name:
        raise ValueError(f"invalid image reference {text!r}: no repository name")
    if len(name) > _MAX_NAME:
        raise ValueError(f"invalid image reference {text!r}: the name is longer than {_MAX_NAME} characters")
    first, slash, rest = name.partition("/")
    # Docker's rule: the first component is a registry if it has a dot or a port, is localhost, or has capitals.
    path = name
    if slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        if not _DOMAIN.fullmatch(first):
            raise ValueError(f"invalid registry {first!r} in image reference {text!r}")
        path = rest
    for part in path.split("/"):
        if not _PATH_PART.fullmatch(part):
            lower = " (repository names must be lowercase)" if part.lower() != part else ""
            raise ValueError(f"invalid image reference {text!r}{lower}")
    return ImageRef(name, tag, digest)


def parse_ports(text: str) -> list[PortMapping]:
    """``-p [ip:][hostPort:]containerPort[/proto]``, with port ranges; one mapping per container port."""
    raw, slash, protocol = text.rpartition("/")
    if not slash:
        raw, protocol = text, "tcp"
    protocol = protocol or "tcp"
    if protocol not in _PROTOCOLS:
        raise ValueError(f"invalid protocol {protocol!r} in {text!r} (use tcp, udp or sctp)")
    parts = raw.split(":")
    container = parts[-1]
    host = parts[-2] if len(parts) > 1 else ""
    ip = ":".join(parts[:-2])
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"invalid IP address {ip!r} in {text!r}") from None
    if not container:
        raise ValueError(f"no container port in {text!r}")
    first, last = _port_range(container, text, lowest=1)
    if not host:
        return [PortMapping(ip, "", port, protocol) for port in range(first, last + 1)]
    host_first, host_last = _port_range(host, text, lowest=0)
    if first == last:
        shown = str(host_first) if host_first == host_last else f"{host_first}-{host_last}"
        return [PortMapping(ip, shown, first, protocol)]
    if last - first != host_last - host_first:
        raise ValueError(f"port ranges in {text!r} differ in size")
    return [PortMapping(ip, str(host_first + i), first + i, protocol) for i in range(last - first + 1)]


def _port_range(text: str, spec: str, lowest: int) -> tuple[int, int]:
    start, dash, end = text.partition("-")
    numbers = [start, end] if dash else [start]
    if not all(n.isascii() and n.isdigit() and len(n) <= 5 for n in numbers):
        raise ValueError(f"invalid port {text!r} in {spec!r}")
    first, last = int(numbers[0]), int(numbers[-1])
    if not lowest <= first <= 65535 or not lowest <= last <= 65535:
        raise ValueError(f"port {text!r} in {spec!r} is out of range {lowest}-65535")
    if last < first:
        raise ValueError(f"invalid port range {text!r} in {spec!r}: it ends before it starts")
    return first, last


def parse_exposed(text: str) -> list[str]:
    """``--expose port[/proto]`` or a range: the Engine API's ``port/proto`` keys."""
    if ":" in text:
        raise ValueError(f"invalid port {text!r}: --expose takes a container port, not a mapping (use -p)")
    return [mapping.key for mapping in parse_ports(text)]


def parse_volume(text: str) -> VolumeMount:
    """``-v`` as on Linux: ``/target`` (anonymous), ``source:/target`` or ``source:/target:options``."""
    parts = text.split(":")
    if len(parts) > 3:
        raise ValueError(f"invalid volume {text!r}: too many ':' (use source:/target[:options])")
    if len(parts) == 1:
        _check_target(parts[0], text)
        return VolumeMount("", parts[0])
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else ""
    _check_target(target, text)
    bind = source.startswith("/")
    if not source:
        raise ValueError(f"invalid volume {text!r}: empty source")
    if source.startswith(("./", "../", "~")) or source in (".", ".."):
        raise ValueError(f"invalid volume {text!r}: relative host path {source!r}; give an absolute path")
    if not bind and not _OBJECT_NAME.fullmatch(source):
        raise ValueError(
            f"invalid volume {text!r}: {source!r} is neither an absolute path nor a volume name "
            "([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
        )
    if len(parts) == 3:
        _check_mount_options(mode, text, bind)
    return VolumeMount(source, target, mode)


def _check_target(target: str, spec: str) -> None:
    if not target.startswith("/"):
        raise ValueError(f"invalid volume {spec!r}: the container path {target!r} must be absolute")
    if not posixpath.normpath(target).strip("/"):
        raise ValueError(f"invalid volume {spec!r}: cannot mount over the container's /")


def _check_mount_options(mode: str, spec: str, bind: bool) -> None:
    seen: set[frozenset[str]] = set()
    for option in mode.split(","):
        group = next((g for g in _MOUNT_OPTION_GROUPS if option in g), None)
        if group is None:
            raise ValueError(f"invalid volume {spec!r}: unknown option {option!r}")
        if group in seen:
            raise ValueError(f"invalid volume {spec!r}: conflicting or repeated option {option!r}")
        seen.add(group)
        if option == "nocopy" and bind:
            raise ValueError(f"invalid volume {spec!r}: nocopy applies to named volumes only")
        if option in _PROPAGATION and not bind:
            raise ValueError(f"invalid volume {spec!r}: propagation {option!r} applies to bind mounts only")


def parse_bytes(text: str) -> int:
    """A size such as ``512m``, ``1g``, ``1.5GiB``, ``1024k`` or plain bytes; units are powers of 1024."""
    match = _BYTES.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid size {text!r} (use bytes or a number with b, k, m, g, t or p)")
    whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
    scale: int = 10 ** len(fraction)
    value = (int(whole) * scale + int(fraction or "0")) * _BYTE_UNITS[unit.lower()] // scale
    if value > _INT64_MAX:
        raise ValueError(f"invalid size {text!r}: too large")
    return value


def parse_cpus(text: str) -> int:
    """``--cpus 1.5``: billionths of a CPU, the Engine API's NanoCpus."""
    match = _CPUS.fullmatch(text)
    if match is None or match.group(0) in ("", "."):
        raise ValueError(f"invalid number of CPUs {text!r}")
    whole, fraction = match.group(1), (match.group(2) or "").rstrip("0")
    if len(fraction) > 9:
        raise ValueError(f"invalid number of CPUs {text!r}: more precise than a billionth")
    return int(whole or "0") * 1_000_000_000 + int(fraction.ljust(9, "0"))


def parse_key_value(text: str, what: str, *, value_required: bool) -> tuple[str, str]:
    """``key=value`` (``key`` alone gives an empty value unless one is required)."""
    key, sep, value = text.partition("=")
    if not key.strip():
        raise ValueError(f"invalid {what} {text!r}: empty name")
    if any(c.isspace() for c in key):
        raise ValueError(f"invalid {what} {text!r}: the name contains whitespace")
    if value_required and not sep:
        raise ValueError(f"invalid {what} {text!r}: expected key=value")
    return key, value


def checked_container_name(text: str) -> str:
    """A container name as the engine accepts it: two characters or more."""
    if not _OBJECT_NAME.fullmatch(text):
        raise ValueError(f"invalid container name {text!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+")
    return text


def checked_env(text: str) -> str:
    """``-e NAME=value``, or a bare ``NAME`` to be taken from the unit's environment."""
    if not text.partition("=")[0]:
        raise ValueError(f"invalid environment variable {text!r}: empty name")
    return text


def checked_path(text: str) -> str:
    """An absolute path: fleetlet runs commands from no particular directory, so a relative one means nothing."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    return text


def checked_ip(text: str) -> str:
    ipaddress.ip_address(text)  # its ValueError names the address
    return text


def parse_extra_host(text: str) -> str:
    """``--add-host host:ip``, ``host=ip`` or ``host=[ipv6]``, as the Engine API's ``host:ip``."""
    host, sep, address = text.partition("=")
    if not sep:
        host, sep, address = text.partition(":")
    if not host or not sep:
        raise ValueError(f"invalid host entry {text!r}: expected host:ip")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if address != "host-gateway":
        checked_ip(address)
    return f"{host}:{address}"


def parse_ulimit(text: str) -> Ulimit:
    """``--ulimit name=soft[:hard]``; the hard limit defaults to the soft one, and -1 means unlimited."""
    name, values = parse_key_value(text, "ulimit", value_required=True)
    if name not in _ULIMITS:
        raise ValueError(f"invalid ulimit {text!r}: unknown name {name!r} (known: {', '.join(sorted(_ULIMITS))})")
    soft, colon, hard = values.partition(":")
    if not _INTEGER.fullmatch(soft) or (colon and not _INTEGER.fullmatch(hard)):
        raise ValueError(f"invalid ulimit {text!r}: expected {name}=soft[:hard] with integers")
    low, high = int(soft), int(hard) if colon else int(soft)
    if high != -1 and (low == -1 or low > high):
        raise ValueError(f"invalid ulimit {text!r}: the soft limit is above the hard limit")
    return Ulimit(name, low, high)


def parse_tmpfs(text: str) -> tuple[str, str]:
    """``--tmpfs /path[:options]``: the path and its mount options (passed to the engine as written)."""
    path, _, options = text.partition(":")
    return checked_path(path), options


def parse_restart(text: str) -> RestartSetting:
    name, colon, count = text.partition(":")
    if name not in _RESTART_POLICIES:
        raise ValueError(f"invalid restart policy {text!r} (valid: {', '.join(_RESTART_POLICIES)})")
    if not colon:
        return RestartSetting(name)
    if name != "on-failure":
        raise ValueError(f"invalid restart policy {text!r}: only on-failure takes a retry count")
    if not count.isascii() or not count.isdigit() or len(count) > 9:
        raise ValueError(f"invalid restart policy {text!r}: the retry count must be a number")
    return RestartSetting(name, int(count))


def checked_signal(text: str) -> str:
    """A signal name or number, kept as written: the engine reads names in any case, with or without SIG."""
    parse_signal(text.upper())
    return text


def parse_integer(text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"invalid integer {text!r}")
    return int(text)


def parse_pull_policy(text: str) -> PullPolicy:
    for policy in PULL_POLICIES:
        if text == policy:
            return policy
    raise ValueError(f"invalid pull policy {text!r} (valid: {', '.join(PULL_POLICIES)})")


def checked_image(text: str) -> str:
    parse_image_ref(text)
    return text
