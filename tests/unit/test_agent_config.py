"""The agent's configuration: the four layers and their precedence, every error message, the example file, SIGHUP."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from fleetlet.agent.agent import DEFAULT_LEADER_TTL, AgentConfig
from fleetlet.agent.config import (
    ConfigError,
    MetadataPinned,
    MetadataReloader,
    Settings,
    agent_config,
    default_state_dir,
    from_environment,
    from_flags,
    load,
    merge,
    parse_file,
    read_file,
)
from fleetlet.agent.setting_names import DEFAULT_LISTEN, SETTINGS, variable_name
from fleetlet.cli.main import main
from fleetlet.exec.docker_runtime import DEFAULT_HOST
from fleetlet.registry.etcd_settings import EtcdSettings, parse_etcd_url
from fleetlet.units.check import load_unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "fleetlet.toml"
DEFAULT_STATE = Path("/default/state")
DEFAULT_ENGINE = "unix:///default/docker.sock"


def _kept_id(state_dir: Path) -> str:
    return f"kept-in-{state_dir}"


def resolve(settings: Settings) -> AgentConfig:
    return agent_config(
        settings, default_state_dir=DEFAULT_STATE, default_docker_host=DEFAULT_ENGINE, machine_id=_kept_id
    )


def file_settings(text: str, directory: Path = Path("/etc/fleetlet")) -> Settings:
    return parse_file(text, "fleetlet.toml", directory=directory)


# --- precedence ----------------------------------------------------------------------------------------------------


class Layers(NamedTuple):
    """One setting as each layer gives it, and what each layer (or the default) makes of it in the AgentConfig."""

    setting: str
    flag: Any  # the flag's text (purge: its bool)
    env: str
    file: str  # a TOML line
    from_flag: object
    from_env: object
    from_file: object
    default: object


def _listen(config: AgentConfig) -> object:
    return (config.host, config.port)


LAYERS = [
    Layers(
        "listen", "10.0.0.1:1001", "10.0.0.2:1002", 'listen = "10.0.0.3:1003"',
        ("10.0.0.1", 1001), ("10.0.0.2", 1002), ("10.0.0.3", 1003), ("127.0.0.1", 49153),
    ),
    Layers(
        "state_dir", "/flag/state", "/env/state", 'state_dir = "/file/state"',
        Path("/flag/state"), Path("/env/state"), Path("/file/state"), DEFAULT_STATE,
    ),
    Layers(
        "machine_id", "flag-id", "env-id", 'machine_id = "file-id"',
        "flag-id", "env-id", "file-id", f"kept-in-{DEFAULT_STATE}",
    ),
    Layers(
        "metadata", "group=flag,region=lab", "group=env", '[metadata]\ngroup = "file"',
        {"group": "flag", "region": "lab"}, {"group": "env"}, {"group": "file"}, {},
    ),
    Layers(
        "public_ip", "192.0.2.1", "192.0.2.2", 'public_ip = "192.0.2.3"',
        "192.0.2.1", "192.0.2.2", "192.0.2.3", "",
    ),
    Layers(
        "docker_host", "tcp://flag:2376", "tcp://env:2376", 'docker_host = "tcp://file:2376"',
        "tcp://flag:2376", "tcp://env:2376", "tcp://file:2376", DEFAULT_ENGINE,
    ),
    Layers(
        "registry", "sqlite:/flag.sqlite", "sqlite:/env.sqlite", 'registry = "sqlite:/file.sqlite"',
        Path("/flag.sqlite"), Path("/env.sqlite"), Path("/file.sqlite"), DEFAULT_STATE / "registry.sqlite",
    ),
    Layers(
        "etcd_cafile", "/flag.ca", "/env.ca", 'etcd_cafile = "/file.ca"',
        Path("/flag.ca"), Path("/env.ca"), Path("/file.ca"), None,
    ),
    Layers(
        "etcd_certfile", "/flag.crt", "/env.crt", 'etcd_certfile = "/file.crt"',
        Path("/flag.crt"), Path("/env.crt"), Path("/file.crt"), Path("/base.crt"),
    ),
    Layers(
        "etcd_keyfile", "/flag.key", "/env.key", 'etcd_keyfile = "/file.key"',
        Path("/flag.key"), Path("/env.key"), Path("/file.key"), Path("/base.key"),
    ),
    Layers(
        "etcd_username", "flag", "env", 'etcd_username = "file"',
        "flag", "env", "file", "base",
    ),
    Layers(
        "etcd_password_file", "/flag.pw", "/env.pw", 'etcd_password_file = "/file.pw"',
        Path("/flag.pw"), Path("/env.pw"), Path("/file.pw"), Path("/base.pw"),
    ),
    Layers("etcd_history", "0", "5", "etcd_history = 7", None, 5, 7, 10_000),
    Layers("leader_ttl", "7", "8s", "leader_ttl = 9", 7.0, 8.0, 9.0, DEFAULT_LEADER_TTL),
    Layers(
        "join", "10.0.0.1:1", "http://10.0.0.2:2,http://10.0.0.3:3", 'join = ["http://10.0.0.4:4"]',
        ("http://10.0.0.1:1",), ("http://10.0.0.2:2", "http://10.0.0.3:3"), ("http://10.0.0.4:4",), (),
    ),
    Layers(
        "advertise", "http://10.0.0.1:1", "10.0.0.2:2", 'advertise = "http://10.0.0.3:3/"',
        "http://10.0.0.1:1", "http://10.0.0.2:2", "http://10.0.0.3:3", "",
    ),
    Layers(
        "cluster_key", "/flag.key", "/env.key", 'cluster_key = "/file.key"',
        Path("/flag.key"), Path("/env.key"), Path("/file.key"), None,
    ),
    # A boolean has two values for four layers: each layer differs from the one below it.
    Layers("purge", True, "off", "purge = true", True, False, True, False),
]  # fmt: skip
VIEW: dict[str, Callable[[AgentConfig], object]] = {
    "listen": _listen,
    "state_dir": lambda c: c.state_dir,
    "machine_id": lambda c: c.machine_id,
    "metadata": lambda c: dict(c.metadata),
    "public_ip": lambda c: c.public_ip,
    "docker_host": lambda c: c.docker_url,
    "registry": lambda c: c.registry_path,
    "etcd_cafile": lambda c: c.etcd.ca_file if c.etcd else None,
    "etcd_certfile": lambda c: c.etcd.cert_file if c.etcd else None,
    "etcd_keyfile": lambda c: c.etcd.key_file if c.etcd else None,
    "etcd_username": lambda c: c.etcd.username if c.etcd else None,
    "etcd_password_file": lambda c: c.etcd.password_file if c.etcd else None,
    "etcd_history": lambda c: c.etcd.history if c.etcd else None,
    "leader_ttl": lambda c: c.leader_ttl,
    "join": lambda c: c.join,
    "advertise": lambda c: c.advertise,
    "cluster_key": lambda c: c.cluster_key,
    "purge": lambda c: c.purge,
}


# The etcd options need an etcd registry, and some their partner: a layer below the three, as a default would be.
_TLS = parse_etcd_url("etcds://e:2379")
_BELOW = {
    "etcd_cafile": Settings(registry=_TLS),
    "etcd_certfile": Settings(registry=_TLS, etcd_certfile=Path("/base.crt"), etcd_keyfile=Path("/base.key")),
    "etcd_keyfile": Settings(registry=_TLS, etcd_certfile=Path("/base.crt"), etcd_keyfile=Path("/base.key")),
    "etcd_username": Settings(registry=_TLS, etcd_username="base", etcd_password_file=Path("/base.pw")),
    "etcd_password_file": Settings(registry=_TLS, etcd_username="base", etcd_password_file=Path("/base.pw")),
    "etcd_history": Settings(registry=_TLS),
}


def test_every_setting_has_a_precedence_case() -> None:
    assert [layers.setting for layers in LAYERS] == list(SETTINGS)


@pytest.mark.parametrize("present", list(itertools.product([True, False], repeat=3)), ids=str)
@pytest.mark.parametrize("layers", LAYERS, ids=lambda layers: layers.setting)
def test_flag_beats_environment_beats_file_beats_default(layers: Layers, present: tuple[bool, bool, bool]) -> None:
    with_flag, with_env, with_file = present
    if layers.setting == "purge":
        flags = from_flags({}, purge=layers.flag if with_flag else None)
    else:
        flags = from_flags({layers.setting: layers.flag if with_flag else None})
    env = from_environment({variable_name(layers.setting): layers.env} if with_env else {})
    file = file_settings(layers.file if with_file else "")

    config = resolve(merge(flags, env, file, _BELOW.get(layers.setting, Settings())))

    winner = next(
        (
            value
            for given, value in zip(present, (layers.from_flag, layers.from_env, layers.from_file), strict=True)
            if given
        ),
        layers.default,
    )
    assert VIEW[layers.setting](config) == winner


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [(None, "1", True), (None, "TRUE", True), (None, "no", False), (False, "yes", False), (None, "", False)],
)
def test_purge_from_the_environment(flag: bool | None, env: str, expected: bool) -> None:
    config = resolve(merge(from_flags({}, purge=flag), from_environment({"FLEETLET_PURGE": env})))
    assert config.purge is expected


def test_an_empty_variable_is_unset_and_other_fleetlet_variables_are_not_the_agents() -> None:
    environ = {"FLEETLET_LISTEN": "", "FLEETLET_METADATA": "", "FLEETLET_ENDPOINT": "unix:///x.sock"}
    assert from_environment(environ) == Settings()


def test_empty_metadata_flag_is_no_metadata_and_still_wins() -> None:
    config = resolve(merge(from_flags({"metadata": ""}), file_settings('metadata = "group=web"')))
    assert config.metadata == {}


def test_metadata_in_the_file_may_be_a_string() -> None:
    assert file_settings('metadata = "group=web, region = us-west"').metadata == {"group": "web", "region": "us-west"}


def test_a_relative_state_dir_in_the_file_is_relative_to_the_file() -> None:
    assert file_settings('state_dir = "state"', Path("/etc/fleetlet")).state_dir == Path("/etc/fleetlet/state")
    assert from_flags({"state_dir": "state"}).state_dir == Path("state")


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("sqlite:registry.sqlite", DEFAULT_STATE / "registry.sqlite"),
        ("sqlite:sub/r.sqlite", DEFAULT_STATE / "sub" / "r.sqlite"),
        ("sqlite:/srv/r.sqlite", Path("/srv/r.sqlite")),
        ("sqlite:///srv/r.sqlite", Path("/srv/r.sqlite")),
    ],
)
def test_registry_paths(registry: str, expected: Path) -> None:
    assert resolve(from_flags({"registry": registry})).registry_path == expected


@pytest.mark.parametrize(
    ("url", "endpoints", "prefix"),
    [
        ("etcd://10.0.0.1:2379", ("http://10.0.0.1:2379",), "/fleetlet/"),
        ("etcd://e1,e2:22379", ("http://e1:2379", "http://e2:22379"), "/fleetlet/"),
        ("etcds://e1:2379/", ("https://e1:2379",), "/fleetlet/"),
        ("etcd://e1:2379/prod", ("http://e1:2379",), "/prod/"),
        ("etcd://e1:2379/teams/a/", ("http://e1:2379",), "/teams/a/"),
        ("etcd://[::1]:2379,[fd00::2]", ("http://[::1]:2379", "http://[fd00::2]:2379"), "/fleetlet/"),
    ],
)
def test_etcd_registry_urls(url: str, endpoints: tuple[str, ...], prefix: str) -> None:
    config = resolve(from_flags({"registry": url}))
    assert config.etcd == EtcdSettings(endpoints, prefix)


def test_etcd_options_go_with_the_registry() -> None:
    flags = from_flags(
        {
            "registry": "etcds://e1:2379",
            "etcd_cafile": "/ca.pem",
            "etcd_certfile": "/c.pem",
            "etcd_keyfile": "/c.key",
            "etcd_username": "fleet",
            "etcd_password_file": "/pw",
        }
    )
    assert resolve(flags).etcd == EtcdSettings(
        ("https://e1:2379",), "/fleetlet/", Path("/ca.pem"), Path("/c.pem"), Path("/c.key"), "fleet", Path("/pw")
    )


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ({"etcd_cafile": "/ca.pem"}, "--etcd-cafile is for an etcd registry (--registry etcd://HOST:PORT)"),
        (
            {"registry": "sqlite:r.sqlite", "etcd_username": "u"},
            "--etcd-username is for an etcd registry (--registry etcd://HOST:PORT)",
        ),
        (
            {"registry": "etcd://e:1", "etcd_cafile": "/ca.pem"},
            "--registry: etcd://e:1: TLS files given for a plain etcd:// registry (use etcds://)",
        ),
        (
            {"registry": "etcds://e:1", "etcd_certfile": "/c.pem"},
            "--registry: a client certificate needs its key, and a key its certificate (etcd cert and key files)",
        ),
        (
            {"registry": "etcd://e:1", "etcd_username": "u"},
            "--registry: etcd authentication needs both a username and a password file",
        ),
    ],
)
def test_etcd_options_that_cannot_work_are_refused(texts: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(from_flags(texts))
    assert str(caught.value) == message


def test_ipv6_listen_and_public_ip() -> None:
    config = resolve(from_flags({"listen": "[::1]:8080", "public_ip": "2001:DB8::7"}))
    assert (config.host, config.port, config.public_ip) == ("::1", 8080, "2001:db8::7")


def test_default_state_dir() -> None:
    assert default_state_dir({"XDG_STATE_HOME": "/xdg"}, root=True) == Path("/var/lib/fleetlet")
    assert default_state_dir({"XDG_STATE_HOME": "/xdg"}, root=False) == Path("/xdg/fleetlet")
    assert default_state_dir({}, root=False) == Path.home() / ".local" / "state" / "fleetlet"


# --- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "text", "message"),
    [
        ("listen", "nope", "--listen: expected HOST:PORT, not 'nope'"),
        ("listen", "host:0", "--listen: expected HOST:PORT, not 'host:0'"),
        ("listen", "host:65536", "--listen: expected HOST:PORT, not 'host:65536'"),
        ("listen", ":80", "--listen: expected HOST:PORT, not ':80'"),
        ("state_dir", "", "--state-dir: expected a path, not an empty string"),
        ("machine_id", "a b", "--machine-id: expected an ID without spaces, not 'a b'"),
        ("machine_id", "", "--machine-id: expected an ID without spaces, not ''"),
        ("metadata", "group", "--metadata: expected KEY=VALUE, not 'group'"),
        ("metadata", "=web", "--metadata: expected KEY=VALUE, not '=web'"),
        ("metadata", "a=1,a=2", "--metadata: key 'a' given twice"),
        ("public_ip", "node1.example", "--public-ip: expected an IP address, not 'node1.example'"),
        (
            "docker_host",
            "/var/run/docker.sock",
            "--docker-host: expected a URL such as unix:///var/run/docker.sock or tcp://HOST:2376, "
            "not '/var/run/docker.sock'",
        ),
        (
            "registry",
            "https://10.0.0.1:2379",
            "--registry: https://10.0.0.1:2379: an etcd registry is etcd://HOST:PORT (etcds:// for TLS)",
        ),
        (
            "registry",
            "postgres://db/fleet",
            "--registry: postgres://db/fleet: unknown registry 'postgres' (use sqlite:PATH or etcd://HOST:PORT)",
        ),
        (
            "registry",
            "/var/lib/r.sqlite",
            "--registry: expected sqlite:PATH or etcd://HOST:PORT, not '/var/lib/r.sqlite'",
        ),
        (
            "registry",
            "etcd://root:secret@10.0.0.1:2379",
            "--registry: etcd://root:secret@10.0.0.1:2379: put no credentials in the URL "
            "(use the etcd username and password file settings)",
        ),
        (
            "registry",
            "etcd://10.0.0.1:99999",
            "--registry: etcd://10.0.0.1:99999: member '10.0.0.1:99999' has no valid port",
        ),
        ("registry", "etcd://a:1,,b:2", "--registry: etcd://a:1,,b:2: malformed member '' (expected HOST:PORT)"),
        ("registry", "etcd://a:1,a:1", "--registry: etcd://a:1,a:1: a member is listed twice"),
        ("leader_ttl", "0", "--leader-ttl: expected more than 0 and less than 3600 seconds, not '0'"),
        ("leader_ttl", "soon", "--leader-ttl: expected a number of seconds, not 'soon'"),
        ("registry", "sqlite:", "--registry: sqlite:: expected sqlite:PATH, the path is missing"),
        (
            "registry",
            "sqlite://host/r.sqlite",
            "--registry: sqlite://host/r.sqlite: a sqlite URL names no host "
            "(use sqlite:PATH or sqlite:///ABSOLUTE/PATH)",
        ),
    ],
)
def test_flag_errors(setting: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_flags({setting: text})
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("FLEETLET_PURGE", "maybe", "FLEETLET_PURGE: expected true or false, not 'maybe'"),
        ("FLEETLET_LISTEN", "49153", "FLEETLET_LISTEN: expected HOST:PORT, not '49153'"),
        ("FLEETLET_METADATA", "group", "FLEETLET_METADATA: expected KEY=VALUE, not 'group'"),
    ],
)
def test_environment_errors(variable: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_environment({variable: text})
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listen = "127.0.0.1:1"\npurge = ture\n', "fleetlet.toml: line 2, column 9: Invalid value"),
        ("[metadata\n", "fleetlet.toml: line 1, column 10: Expected ']' at the end of a table declaration"),
        ('listen = "127.0.0.1:1\n', "fleetlet.toml: line 1, column 22: Illegal character '\\n'"),
        ('purge = false\nmachine_id = "a', "fleetlet.toml: line 2 (end of file): Unterminated string"),
        ('lisen = "127.0.0.1:1"', "fleetlet.toml: unknown setting 'lisen' (did you mean 'listen'?)"),
        ('state-dir = "/x"', "fleetlet.toml: unknown setting 'state-dir' (did you mean 'state_dir'?)"),
        (
            'etcd_servers = "http://127.0.0.1:2379"',
            "fleetlet.toml: unknown setting 'etcd_servers' "
            "(fleetlet's spelling of fleet's etcd_servers: registry = \"etcd://HOST:PORT,HOST:PORT\")",
        ),
        (
            'zookeeper = "127.0.0.1:2181"',
            "fleetlet.toml: unknown setting 'zookeeper' "
            "(settings: listen, state_dir, machine_id, metadata, public_ip, docker_host, registry, etcd_cafile,"
            " etcd_certfile, etcd_keyfile, etcd_username, etcd_password_file, etcd_history, leader_ttl, join,"
            " advertise, cluster_key, purge)",
        ),
        ("listen = 49153", "fleetlet.toml: listen: expected a string, not an integer"),
        ('listen = "49153"', "fleetlet.toml: listen: expected HOST:PORT, not '49153'"),
        ("state_dir = []", "fleetlet.toml: state_dir: expected a string, not an array"),
        ("machine_id = 1979-05-27", "fleetlet.toml: machine_id: expected a string, not a date-time"),
        ("public_ip = 1.5", "fleetlet.toml: public_ip: expected a string, not a float"),
        ("docker_host = true", "fleetlet.toml: docker_host: expected a string, not a boolean"),
        (
            'registry = "http://10.0.0.1:2379"',
            "fleetlet.toml: registry: http://10.0.0.1:2379: an etcd registry is etcd://HOST:PORT (etcds:// for TLS)",
        ),
        ('leader_ttl = "long"', "fleetlet.toml: leader_ttl: expected a number of seconds, not 'long'"),
        ('purge = "yes"', "fleetlet.toml: purge: expected a boolean (true or false), not a string"),
        ("[purge]", "fleetlet.toml: purge: expected a boolean (true or false), not a table"),
        ("metadata = 3", "fleetlet.toml: metadata: expected a string, not an integer"),
        ('metadata = "group"', "fleetlet.toml: metadata: expected KEY=VALUE, not 'group'"),
        ("[metadata]\ncores = 4", 'fleetlet.toml: metadata.cores: expected a string, not an integer (quote it: "4")'),
        ("[metadata]\nssd = true", 'fleetlet.toml: metadata.ssd: expected a string, not a boolean (quote it: "true")'),
        ('[metadata.rack]\nrow = "a"', "fleetlet.toml: metadata.rack: expected a string, not a table"),
        ('[metadata]\n"a,b" = "x"', "fleetlet.toml: metadata: a key may not be empty or hold '=' or ',', not 'a,b'"),
        ('[metadata]\n"" = "x"', "fleetlet.toml: metadata: a key may not be empty or hold '=' or ',', not ''"),
        ('[metadata]\nzone = "a,b"', "fleetlet.toml: metadata.zone: a value may not hold ',', not 'a,b'"),
    ],
)
def test_file_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        file_settings(text)
    assert str(caught.value) == message


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"^cannot read the config file .*/missing\.toml: No such file or directory$"):
        read_file(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'purge = false\nmachine_id = "\xff"\n')
    with pytest.raises(ConfigError) as caught:
        read_file(binary)
    assert str(caught.value) == f"{binary}: line 2: not UTF-8 text"


def test_an_empty_config_flag_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(Settings(), "", {})
    assert str(caught.value) == "--config: expected a file, not an empty string"


# --- the example ---------------------------------------------------------------------------------------------------


def test_the_example_says_what_its_comments_say() -> None:
    settings = read_file(EXAMPLE)
    assert settings == Settings(
        listen=("127.0.0.1", 49153),
        metadata={"group": "hw_webservers"},
        registry=Path("registry.sqlite"),
        leader_ttl=DEFAULT_LEADER_TTL,
        purge=False,
    )
    # Every value it sets is the default, except the metadata.
    assert resolve(settings) == resolve(Settings(metadata={"group": "hw_webservers"}))
    assert settings.listen == from_flags({"listen": DEFAULT_LISTEN}).listen


def test_the_examples_commented_settings_are_valid_and_show_the_defaults() -> None:
    lines = EXAMPLE.read_text().splitlines()
    uncommented = "\n".join(
        line.removeprefix("# ") if any(line.startswith(f"# {s} = ") for s in SETTINGS) else line for line in lines
    )
    settings = parse_file(uncommented, str(EXAMPLE), directory=EXAMPLE.parent)

    assert {s for s in SETTINGS if getattr(settings, s) is None} == set()
    assert settings.state_dir == default_state_dir({}, root=True)
    assert settings.docker_host == DEFAULT_HOST


def test_the_examples_machine_runs_fleets_hello_world() -> None:
    unit = load_unit((ROOT / "configs" / "units" / "hello_world.service").read_text(), "hello_world.service")
    metadata = read_file(EXAMPLE).metadata
    assert metadata is not None
    assert unit.requirements.metadata_matches(metadata)


# --- loading, and SIGHUP -------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_load_reads_the_file_of_the_flag_before_the_variables(tmp_path: Path) -> None:
    chosen = _write(tmp_path / "chosen.toml", 'machine_id = "from-chosen"\n')
    other = _write(tmp_path / "other.toml", 'machine_id = "from-other"\n')
    environ = {"FLEETLET_CONFIG": str(other), "FLEETLET_STATE_DIR": str(tmp_path)}

    assert load(Settings(), str(chosen), environ).config.machine_id == "from-chosen"
    assert load(Settings(), None, environ).config.machine_id == "from-other"


def test_load_without_a_file_has_nothing_to_reload(tmp_path: Path) -> None:
    loaded = load(Settings(machine_id="m"), None, {"FLEETLET_STATE_DIR": str(tmp_path), "DOCKER_HOST": "tcp://d:1"})
    assert loaded.reload_metadata is None
    assert loaded.config.docker_url == "tcp://d:1"
    assert loaded.config.registry_path == tmp_path / "registry.sqlite"


def test_the_file_beats_docker_host(tmp_path: Path) -> None:
    file = _write(tmp_path / "f.toml", 'machine_id = "m"\ndocker_host = "tcp://file:2376"\n')
    assert load(Settings(), str(file), {"DOCKER_HOST": "tcp://env:2376"}).config.docker_url == "tcp://file:2376"


def test_sighup_reloads_the_files_metadata(tmp_path: Path) -> None:
    file = _write(tmp_path / "f.toml", f'state_dir = "{tmp_path}"\nmachine_id = "m"\n[metadata]\ngroup = "a"\n')
    loaded = load(Settings(), str(file), {})
    assert loaded.config.metadata == {"group": "a"}
    assert loaded.reload_metadata is not None

    _write(file, f'state_dir = "{tmp_path}"\nmachine_id = "m"\n[metadata]\ngroup = "b"\nregion = "lab"\n')
    assert loaded.reload_metadata() == {"group": "b", "region": "lab"}
    _write(file, f'state_dir = "{tmp_path}"\nmachine_id = "m"\n')
    assert loaded.reload_metadata() == {}


def test_sighup_with_a_broken_file_names_the_line(tmp_path: Path) -> None:
    file = _write(tmp_path / "f.toml", 'metadata = "group=a"\n')
    reload = MetadataReloader(file, read_file(file), pinned_by=None)
    _write(file, "[metadata]\ngroup = b\n")
    with pytest.raises(ConfigError) as caught:
        reload()
    assert str(caught.value) == f"{file}: line 2, column 9: Invalid value"


@pytest.mark.parametrize(
    ("flags", "environ", "pinned_by"),
    [
        (Settings(metadata={"group": "flag"}), {}, "--metadata"),
        (Settings(), {"FLEETLET_METADATA": "group=env"}, "FLEETLET_METADATA"),
        (Settings(metadata={}), {"FLEETLET_METADATA": "group=env"}, "--metadata"),
    ],
)
def test_metadata_given_at_start_pins_it(
    tmp_path: Path, flags: Settings, environ: dict[str, str], pinned_by: str
) -> None:
    file = _write(tmp_path / "f.toml", f'state_dir = "{tmp_path}"\nmachine_id = "m"\nmetadata = "group=file"\n')
    loaded = load(flags, str(file), environ)
    assert loaded.config.metadata != {"group": "file"}
    assert loaded.reload_metadata is not None

    _write(file, f'state_dir = "{tmp_path}"\nmachine_id = "m"\nmetadata = "group=new"\n')
    with pytest.raises(MetadataPinned) as caught:
        loaded.reload_metadata()
    assert str(caught.value) == f"the metadata is pinned by {pinned_by}, given at start; restart to change it"


def test_sighup_says_which_other_settings_wait_for_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = _write(tmp_path / "f.toml", 'listen = "127.0.0.1:1"\nmetadata = "group=a"\n')
    reload = MetadataReloader(file, read_file(file), pinned_by=None)

    with caplog.at_level(logging.INFO, logger="fleetlet.agent"):
        assert reload() == {"group": "a"}
        assert caplog.messages == []
        _write(file, 'listen = "127.0.0.1:2"\npurge = true\nmetadata = "group=b"\n')
        assert reload() == {"group": "b"}
    assert caplog.messages == [
        f"{file}: listen, purge changed: restart the agent to apply (SIGHUP reloads the metadata only)"
    ]


# --- the command ---------------------------------------------------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in (*SETTINGS, "config"):
        monkeypatch.delenv(variable_name(setting), raising=False)


@pytest.mark.usefixtures("clean_environment")
def test_agent_with_a_bad_file_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = _write(tmp_path / "fleetlet.toml", '[metadata]\ngroup = "a"\nlisten "x"\n')
    assert main(["agent", "--config", str(file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"fleetlet agent: {file}: line 3, column 8: Expected '=' after a key in a key/value pair\n"


@pytest.mark.usefixtures("clean_environment")
def test_agent_with_a_bad_variable_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEETLET_REGISTRY", "http://10.0.0.1:2379")
    assert main(["agent"]) == 1
    assert capsys.readouterr().err == (
        "fleetlet agent: FLEETLET_REGISTRY: http://10.0.0.1:2379: an etcd registry is etcd://HOST:PORT "
        "(etcds:// for TLS)\n"
    )
