"""How an agent reaches its etcd registry: ``etcd://`` URLs, and the TLS and auth options that go with them.

``etcd://HOST:PORT[,HOST:PORT...][/PREFIX/]`` names the members of one etcd cluster (the calls fail over between
them) and, optionally, the key prefix fleetlet keeps its records under (default ``/fleetlet/``, so that one etcd can
hold several clusters' registries, or other programs' keys beside them). ``etcds://`` is the same over TLS.

Compaction: the registry keeps 10,000 revisions of etcd's history for watches to resume from and compacts the
rest, as Kubernetes' API server compacts its etcd; compaction is etcd-wide, so on an etcd shared with other programs
(or other fleetlet clusters under other prefixes) set the history to 0 and let etcd's own
``--auto-compaction-retention`` decide.

The URL holds no secret: a password on a command line is visible to every user of the machine (``ps``), so it is
read from a file (``--etcd-password-file``), as a client key is. Nothing here connects: :func:`parse_etcd_url` is
pure, and :meth:`EtcdSettings.registry` makes the registry object, which connects when entered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from fleetlet.clock import Clock
from fleetlet.registry.etcd import EtcdRegistry
from fleetlet.registry.etcd_layout import DEFAULT_PREFIX
from fleetlet.registry.protocol import DEFAULT_HISTORY

SCHEMES = {"etcd": "http", "etcds": "https"}
DEFAULT_PORT = 2379


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """Where etcd is and how to prove who we are to it; the files are read when the registry is made."""

    endpoints: tuple[str, ...]  # http://HOST:PORT or https://HOST:PORT each
    prefix: str = DEFAULT_PREFIX
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    # Revisions of etcd's history the registry keeps, compacting the rest; None: etcd's own compaction rules.
    history: int | None = DEFAULT_HISTORY

    @property
    def tls(self) -> bool:
        return self.endpoints[0].startswith("https://")

    @property
    def url(self) -> str:
        """The settings as the user wrote them, for messages: ``etcd://h1:2379,h2:2379/fleetlet/``."""
        scheme = "etcds" if self.tls else "etcd"
        hosts = ",".join(endpoint.partition("://")[2] for endpoint in self.endpoints)
        return f"{scheme}://{hosts}{self.prefix if self.prefix != DEFAULT_PREFIX else ''}"

    def with_options(
        self,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        username: str | None = None,
        password_file: Path | None = None,
        history: int | None = None,
    ) -> EtcdSettings:
        """These settings with the options given (None: keep what they have); ValueError for a combination that
        cannot work, so that it fails at start rather than at the first call."""
        merged = replace(
            self,
            ca_file=ca_file or self.ca_file,
            cert_file=cert_file or self.cert_file,
            key_file=key_file or self.key_file,
            username=username or self.username,
            password_file=password_file or self.password_file,
            history=self.history if history is None else history or None,  # 0: leave it to etcd
        )
        if not merged.tls and (merged.ca_file or merged.cert_file or merged.key_file):
            raise ValueError(f"{merged.url}: TLS files given for a plain etcd:// registry (use etcds://)")
        if (merged.cert_file is None) != (merged.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate (etcd cert and key files)")
        if (merged.username is None) != (merged.password_file is None):
            raise ValueError("etcd authentication needs both a username and a password file")
        return merged

    def password(self) -> str | None:
        """The password, read from its file now (trailing newline dropped); OSError if it cannot be read."""
        if self.password_file is None:
            return None
        return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")

    def registry(self, clock: Clock) -> EtcdRegistry:
        """The etcd registry these settings describe, not yet connected (enter it with ``async with``)."""
        return EtcdRegistry(
            self.endpoints,
            clock=clock,
            prefix=self.prefix,
            history=self.history,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            username=self.username,
            password=self.password(),
        )


def is_etcd_url(text: str) -> bool:
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme in SCHEMES


def parse_etcd_url(text: str) -> EtcdSettings:
    """``etcd://HOST[:PORT][,HOST[:PORT]...][/PREFIX/]`` (or ``etcds://``); ValueError naming what is wrong."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"expected etcd://HOST:PORT or etcds://HOST:PORT, not {text!r}")
    hosts, slash, path = rest.partition("/")
    if "@" in hosts:
        raise ValueError(f"{text}: put no credentials in the URL (use the etcd username and password file settings)")
    endpoints = tuple(f"{SCHEMES[scheme]}://{_host_port(part, text)}" for part in hosts.split(","))
    prefix = DEFAULT_PREFIX
    if slash and path:
        prefix = "/" + path.strip("/") + "/"
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"{text}: a member is listed twice")
    return EtcdSettings(endpoints, prefix)


def _host_port(part: str, text: str) -> str:
    part = part.strip()
    if part.startswith("["):  # [IPv6]:PORT
        host, bracket, after = part[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
        if not bracket or not host or (after and not after.startswith(":")):
            raise ValueError(f"{text}: malformed member {part!r}")
        return f"[{host}]:{_port(port, part, text)}"
    host, colon, port = part.partition(":")
    if not host or ":" in port:
        raise ValueError(f"{text}: malformed member {part!r} (expected HOST:PORT)")
    return f"{host}:{_port(port if colon else '', part, text)}"


def _port(port: str, part: str, text: str) -> int:
    if not port:
        return DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text}: member {part!r} has no valid port")
    return int(port)
