"""The agent's configuration: flags, ``FLEETLET_*`` variables, a TOML file and defaults, merged into an AgentConfig.

Every setting comes from four layers; the first one that says something wins::

    --state-dir DIR  >  FLEETLET_STATE_DIR=DIR  >  state_dir = "DIR" in the file  >  the default

The file is ``--config FILE``, else ``FLEETLET_CONFIG``; without either there is none. Its keys are the flags'
names with underscores (``state_dir``, ``public_ip``); an unknown key is an error, so a typo cannot pass silently.
``configs/fleetlet.toml`` shows every setting. The rules where a choice had to be made:

- An empty ``FLEETLET_*`` variable counts as unset (as an empty ``DOCKER_HOST`` does for Docker).
- ``metadata`` is ``k=v,k=v`` in a flag or variable; in the file, a ``[metadata]`` table of strings or that string.
- A relative ``state_dir`` in the file is relative to the file's directory (systemd starts the agent in ``/``);
  in a flag or variable, relative to the working directory.
- ``registry`` is ``sqlite:PATH`` (or ``sqlite:///ABSOLUTE/PATH``); a relative PATH is in the state directory, and
  the default is ``sqlite:registry.sqlite``. Or ``etcd://HOST:PORT,...[/PREFIX/]`` (``etcds://`` over TLS; see
  :mod:`fleetlet.registry.etcd_settings`), with the ``etcd_*`` settings for TLS files and authentication; those
  settings without an etcd registry are an error, as they would do nothing.
- ``docker_host`` defaults to ``DOCKER_HOST``, else the local socket. ``DOCKER_HOST`` speaks for every Docker
  client, so it ranks below the file, which names an engine for fleetlet alone.

SIGHUP reloads the metadata: the file is read and checked again as at start, and its metadata (none if it has none)
becomes the machine's. If ``--metadata`` or ``FLEETLET_METADATA`` was given at start, they still win: the metadata
is pinned, and SIGHUP logs so and changes nothing (the process's environment cannot change, so the variable is as it
was). A file that no longer reads or checks leaves the old metadata. Other settings take effect at the next start;
SIGHUP logs which of them the file changed.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Final

from fleetlet.agent.agent import DEFAULT_LEADER_TTL, REGISTRY_NAME, AgentConfig, MetadataSource
from fleetlet.agent.setting_names import (
    CONFIG_VARIABLE,
    DEFAULT_LISTEN,
    SETTINGS,
    flag_name,
    variable_name,
)
from fleetlet.errors import FleetletError
from fleetlet.exec.docker_runtime import DEFAULT_HOST
from fleetlet.registry.etcd_settings import EtcdSettings, is_etcd_url, parse_etcd_url

log = logging.getLogger("fleetlet.agent")

# A bare etcd address, given where an etcd:// URL was meant: refused with the right spelling.
_BARE_ETCD_SCHEMES: Final = frozenset({"http", "https"})
_TOML_POSITION = re.compile(r"^(?P<message>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class ConfigError(FleetletError):
    """A setting is invalid or the config file cannot be used; the message is the one line the user sees."""


class MetadataPinned(ConfigError):
    """SIGHUP found the metadata pinned by ``--metadata`` or ``FLEETLET_METADATA``: nothing to reload."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What one layer (flags, environment, file) says; None where it says nothing."""

    listen: tuple[str, int] | None = None
    state_dir: Path | None = None
    machine_id: str | None = None
    metadata: Mapping[str, str] | None = None
    public_ip: str | None = None
    docker_host: str | None = None
    registry: Path | EtcdSettings | None = None  # a relative SQLite path: in the state directory
    etcd_cafile: Path | None = None
    etcd_certfile: Path | None = None
    etcd_keyfile: Path | None = None
    etcd_username: str | None = None
    etcd_password_file: Path | None = None
    etcd_history: int | None = None
    leader_ttl: float | None = None
    join: tuple[str, ...] | None = None
    advertise: str | None = None
    cluster_key: Path | None = None
    purge: bool | None = None


# --- one value, from text ------------------------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def parse_metadata(text: str) -> dict[str, str]:
    """``k=v,k=v``; blank items are skipped, so ``""`` is no metadata."""
    metadata: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, not {item!r}")
        if key in metadata:
            raise ValueError(f"key {key!r} given twice")
        metadata[key] = value
    return metadata


def _path(text: str) -> Path:
    if not text:
        raise ValueError("expected a path, not an empty string")
    return Path(text)


def _machine_id(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"expected an ID without spaces, not {text!r}")
    return text


def _public_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"expected an IP address, not {text!r}") from None


def _docker_host(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme or not rest:
        raise ValueError(f"expected a URL such as unix:///var/run/docker.sock or tcp://HOST:2376, not {text!r}")
    return text


def parse_registry(text: str) -> Path | EtcdSettings:
    """The SQLite file of ``sqlite:PATH`` or ``sqlite:///ABSOLUTE/PATH`` (relative paths are left relative), or
    the etcd cluster of ``etcd://`` and ``etcds://`` URLs."""
    if is_etcd_url(text):
        return parse_etcd_url(text)
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError(f"expected sqlite:PATH or etcd://HOST:PORT, not {text!r}")
    if scheme in _BARE_ETCD_SCHEMES:
        raise ValueError(f"{text}: an etcd registry is etcd://HOST:PORT (etcds:// for TLS)")
    if scheme != "sqlite":
        raise ValueError(f"{text}: unknown registry {scheme!r} (use sqlite:PATH or etcd://HOST:PORT)")
    if rest.startswith("//"):  # the URL form names no host: sqlite:///var/lib/x.sqlite
        if not rest.startswith("///"):
            raise ValueError(f"{text}: a sqlite URL names no host (use sqlite:PATH or sqlite:///ABSOLUTE/PATH)")
        rest = rest[2:]
    if not rest:
        raise ValueError(f"{text}: expected sqlite:PATH, the path is missing")
    return Path(rest)


def _member_url(text: str) -> str:
    """A member's API as ``http://HOST:PORT`` (a bare ``HOST:PORT`` gets ``http://``)."""
    url = text.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    scheme, _, rest = url.partition("://")
    host, sep, port = rest.rpartition(":")
    if scheme not in ("http", "https") or not sep or not host or "/" in rest or not port.isdigit():
        raise ValueError(f"expected a member's URL such as http://10.0.0.5:49153, not {text!r}")
    return url


def parse_join(text: str) -> tuple[str, ...]:
    """``URL,URL,...``: the members to join through."""
    urls = tuple(_member_url(part) for part in text.split(",") if part.strip())
    if not urls:
        raise ValueError("expected one or more member URLs")
    return urls


def parse_seconds(text: str) -> float:
    try:
        seconds = float(text.removesuffix("s"))
    except ValueError:
        raise ValueError(f"expected a number of seconds, not {text!r}") from None
    if not 0 < seconds < 3600:
        raise ValueError(f"expected more than 0 and less than 3600 seconds, not {text!r}")
    return seconds


def parse_history(text: str) -> int:
    try:
        history = int(text)
    except ValueError:
        raise ValueError(f"expected a number of revisions (0: leave compaction to etcd), not {text!r}") from None
    if history < 0:
        raise ValueError(f"expected a number of revisions (0: leave compaction to etcd), not {text!r}")
    return history


def _username(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"expected a user name without spaces, not {text!r}")
    return text


def parse_boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"expected true or false, not {text!r}")


_FROM_TEXT: Final[dict[str, Callable[[str], object]]] = {
    "listen": parse_listen,
    "state_dir": _path,
    "machine_id": _machine_id,
    "metadata": parse_metadata,
    "public_ip": _public_ip,
    "docker_host": _docker_host,
    "registry": parse_registry,
    "etcd_cafile": _path,
    "etcd_certfile": _path,
    "etcd_keyfile": _path,
    "etcd_username": _username,
    "etcd_password_file": _path,
    "etcd_history": parse_history,
    "leader_ttl": parse_seconds,
    "join": parse_join,
    "advertise": _member_url,
    "cluster_key": _path,
    "purge": parse_boolean,
}


def _settings(values: Mapping[str, Any]) -> Settings:
    return Settings(**values)


# --- the layers ----------------------------------------------------------------------------------------------------


def from_flags(texts: Mapping[str, str | None], *, purge: bool | None = None) -> Settings:
    """The flags given (None: not given), keyed by setting; ``purge`` is ``--purge``/``--no-purge``."""
    values: dict[str, Any] = {"purge": purge}
    for setting, text in texts.items():
        if text is not None:
            values[setting] = _parsed(setting, text, flag_name(setting))
    return _settings(values)


def from_environment(environ: Mapping[str, str]) -> Settings:
    """The ``FLEETLET_*`` variables; others (``FLEETLET_ENDPOINT`` is the CLI's) are not the agent's business."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        text = environ.get(variable_name(setting), "")
        if text:
            values[setting] = _parsed(setting, text, variable_name(setting))
    return _settings(values)


def _parsed(setting: str, text: str, where: str) -> object:
    try:
        return _FROM_TEXT[setting](text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_file(text: str, file: str, *, directory: Path) -> Settings:
    """The settings of a TOML config file's ``text``; errors name ``file`` and the key or the line.

    ``directory`` is where the file is: a relative ``state_dir`` is relative to it.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {_toml_position(str(exc), text)}") from None
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key not in _FROM_TEXT:
            raise ConfigError(f"{file}: unknown setting {key!r}{_suggestion(key)}")
        values[key] = _file_value(key, value, file)
    if values.get("state_dir") is not None:
        values["state_dir"] = directory / values["state_dir"]
    return _settings(values)


def read_file(path: Path) -> Settings:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text") from None
    return parse_file(text, str(path), directory=path.parent)


def _file_value(key: str, value: object, file: str) -> object:
    if key == "purge":
        if not isinstance(value, bool):
            raise ConfigError(f"{file}: purge: expected a boolean (true or false), not {_toml_type(value)}")
        return value
    if key == "metadata" and isinstance(value, dict):
        return _metadata_table(value, file)
    if key == "etcd_history" and isinstance(value, int) and not isinstance(value, bool):
        return _parsed(key, str(value), f"{file}: {key}")
    if key == "leader_ttl" and isinstance(value, int | float) and not isinstance(value, bool):
        return _parsed(key, str(value), f"{file}: {key}")
    if key == "join" and isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{file}: join: expected an array of strings")
        return _parsed(key, ",".join(value), f"{file}: {key}")
    if not isinstance(value, str):
        raise ConfigError(f"{file}: {key}: expected a string, not {_toml_type(value)}")
    return _parsed(key, value, f"{file}: {key}")


def _metadata_table(table: dict[str, object], file: str) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for key, value in table.items():
        where = f"{file}: metadata.{key}"
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, not {_toml_type(value)}{_quote_hint(value)}")
        # The same metadata must read back as k=v,k=v (list-machines, the flag), so neither may hold a comma.
        if not key or "=" in key or "," in key:
            raise ConfigError(f"{file}: metadata: a key may not be empty or hold '=' or ',', not {key!r}")
        if "," in value:
            raise ConfigError(f"{where}: a value may not hold ',', not {value!r}")
        metadata[key] = value
    return metadata


def _toml_position(message: str, text: str) -> str:
    """tomllib's ``Invalid value (at line 3, column 7)`` as ``line 3, column 7: Invalid value``."""
    found = _TOML_POSITION.match(message)
    if found is None:
        return message
    if found["line"] is None:
        return f"line {max(1, len(text.splitlines()))} (end of file): {found['message']}"
    return f"line {found['line']}, column {found['column']}: {found['message']}"


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime | date | time):
        return "a date-time"
    return "a string"


def _quote_hint(value: object) -> str:
    if isinstance(value, bool):
        return f' (quote it: "{str(value).lower()}")'
    if isinstance(value, int | float):
        return f' (quote it: "{value}")'
    return ""


# fleet's names for what fleetlet spells otherwise: a fleet user's config gets the fleetlet spelling.
_FLEET_NAMES: Final = {
    "etcd_servers": 'registry = "etcd://HOST:PORT,HOST:PORT"',
    "etcd_key_prefix": 'the registry URL\'s path: registry = "etcd://HOST:PORT/PREFIX/"',
    "etcd_password": "etcd_password_file (a file holding the password)",
}


def _suggestion(key: str) -> str:
    if key in _FLEET_NAMES:
        return f" (fleetlet's spelling of fleet's {key}: {_FLEET_NAMES[key]})"
    close = difflib.get_close_matches(key.replace("-", "_"), SETTINGS, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (settings: {', '.join(SETTINGS)})"


def merge(*layers: Settings) -> Settings:
    """Each setting from the first layer that has it."""
    merged: dict[str, Any] = {}
    for setting in SETTINGS:
        merged[setting] = next((v for layer in layers if (v := getattr(layer, setting)) is not None), None)
    return _settings(merged)


# --- the whole configuration ---------------------------------------------------------------------------------------


def default_state_dir(environ: Mapping[str, str], *, root: bool) -> Path:
    if root:
        return Path("/var/lib/fleetlet")
    return Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "fleetlet"


def agent_config(
    settings: Settings,
    *,
    default_state_dir: Path,
    default_docker_host: str,
    machine_id: Callable[[Path], str],
) -> AgentConfig:
    """The agent's configuration from the merged ``settings``, defaults for what they leave out.

    ``machine_id`` finds the default ID for a state directory; called only when no layer gives one.
    """
    state_dir = settings.state_dir or default_state_dir
    host, port = settings.listen or parse_listen(DEFAULT_LISTEN)
    etcd, sqlite = _registry(settings)
    return AgentConfig(
        state_dir=state_dir,
        machine_id=settings.machine_id or machine_id(state_dir),
        host=host,
        port=port,
        docker_url=settings.docker_host or default_docker_host,
        metadata=dict(settings.metadata or {}),
        public_ip=settings.public_ip or "",
        purge=bool(settings.purge),
        registry=state_dir / (sqlite or REGISTRY_NAME),
        etcd=etcd,
        leader_ttl=settings.leader_ttl or DEFAULT_LEADER_TTL,
        join=settings.join or (),
        advertise=settings.advertise or "",
        cluster_key=settings.cluster_key,
    )


_ETCD_OPTIONS: Final = tuple(setting for setting in SETTINGS if setting.startswith("etcd_"))


def _registry(settings: Settings) -> tuple[EtcdSettings | None, Path | None]:
    """The etcd registry with its options, or the SQLite file (None: the default)."""
    if not isinstance(settings.registry, EtcdSettings):
        given = [name for name in _ETCD_OPTIONS if getattr(settings, name) is not None]
        if given:
            raise ConfigError(f"{flag_name(given[0])} is for an etcd registry (--registry etcd://HOST:PORT)")
        return None, settings.registry
    try:
        etcd = settings.registry.with_options(
            ca_file=settings.etcd_cafile,
            cert_file=settings.etcd_certfile,
            key_file=settings.etcd_keyfile,
            username=settings.etcd_username,
            password_file=settings.etcd_password_file,
            history=settings.etcd_history,
        )
    except ValueError as exc:
        raise ConfigError(f"{flag_name('registry')}: {exc}") from None
    return etcd, None


def config_file(flag: str | None, environ: Mapping[str, str]) -> Path | None:
    """``--config``, else ``FLEETLET_CONFIG``, else no file."""
    if flag is not None:
        if not flag:
            raise ConfigError("--config: expected a file, not an empty string")
        return Path(flag)
    chosen = environ.get(CONFIG_VARIABLE, "")
    return Path(chosen) if chosen else None


@dataclass(frozen=True, slots=True)
class Loaded:
    config: AgentConfig
    reload_metadata: MetadataSource | None  # None without a config file


def load(flags: Settings, config_flag: str | None, environ: Mapping[str, str]) -> Loaded:
    """Everything ``fleetlet agent`` was told, read from its flags, ``environ`` and the config file."""
    path = config_file(config_flag, environ)
    file = read_file(path) if path is not None else Settings()
    env = from_environment(environ)
    config = agent_config(
        merge(flags, env, file),
        default_state_dir=default_state_dir(environ, root=os.geteuid() == 0),
        default_docker_host=environ.get("DOCKER_HOST") or DEFAULT_HOST,
        machine_id=kept_machine_id,
    )
    if path is None:
        return Loaded(config, None)
    pinned_by = flag_name("metadata") if flags.metadata is not None else None
    if pinned_by is None and env.metadata is not None:
        pinned_by = variable_name("metadata")
    return Loaded(config, MetadataReloader(path, file, pinned_by))


class MetadataReloader:
    """On SIGHUP: the config file's metadata, read again; see the module docstring for the rule."""

    def __init__(self, path: Path, at_start: Settings, pinned_by: str | None) -> None:
        self._path = path
        self._at_start = at_start
        self._pinned_by = pinned_by

    def __call__(self) -> Mapping[str, str]:
        settings = read_file(self._path)
        changed = [
            setting
            for setting in SETTINGS
            if setting != "metadata" and getattr(settings, setting) != getattr(self._at_start, setting)
        ]
        if changed:
            log.warning(
                "%s: %s changed: restart the agent to apply (SIGHUP reloads the metadata only)",
                self._path,
                ", ".join(changed),
            )
        if self._pinned_by is not None:
            raise MetadataPinned(f"the metadata is pinned by {self._pinned_by}, given at start; restart to change it")
        return dict(settings.metadata or {})


def kept_machine_id(state_dir: Path) -> str:
    """/etc/machine-id, else an ID generated once and kept in the state directory."""
    try:
        found = Path("/etc/machine-id").read_text().strip()
    except OSError:
        found = ""
    if found:
        return found
    kept = state_dir / "machine-id"
    try:
        if kept.exists():
            return kept.read_text().strip()
        state_dir.mkdir(parents=True, exist_ok=True)
        generated = uuid.uuid4().hex
        kept.write_text(generated + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot keep a machine ID in {state_dir}: {exc.strerror or exc}") from exc
    return generated
