"""The value syntax of docker flags: image references, ports, volumes, sizes, CPUs and the smaller ones."""

from __future__ import annotations

import re

import pytest

from fleetlet.exec.docker_values import (
    ImageRef,
    PortMapping,
    RestartSetting,
    Ulimit,
    VolumeMount,
    checked_container_name,
    parse_bytes,
    parse_cpus,
    parse_exposed,
    parse_extra_host,
    parse_image_ref,
    parse_ports,
    parse_restart,
    parse_tmpfs,
    parse_ulimit,
    parse_volume,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


def exactly(message: str) -> str:
    """A ``match`` pattern for exactly this message."""
    return f"^{re.escape(message)}$"


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("busybox", ImageRef("busybox")),
        ("busybox:1.36", ImageRef("busybox", "1.36")),
        ("library/busybox:latest", ImageRef("library/busybox", "latest")),
        ("quay.io/coreos/etcd:v3.5.9", ImageRef("quay.io/coreos/etcd", "v3.5.9")),
        ("localhost:5000/app", ImageRef("localhost:5000/app")),  # a port, not a tag: it comes before the /
        ("localhost:5000/app:2", ImageRef("localhost:5000/app", "2")),
        ("registry.example.com:5000/team/app:1.2", ImageRef("registry.example.com:5000/team/app", "1.2")),
        ("localhost/app", ImageRef("localhost/app")),
        ("[::1]:5000/app:x", ImageRef("[::1]:5000/app", "x")),
        ("MyRegistry/app", ImageRef("MyRegistry/app")),  # capitals make the first part a registry host
        ("busybox@" + DIGEST, ImageRef("busybox", "", DIGEST)),
        ("reg:5000/a/b:1@" + DIGEST, ImageRef("reg:5000/a/b", "1", DIGEST)),
        ("a__b/c-d/e.f--g:TAG_1.x-y", ImageRef("a__b/c-d/e.f--g", "TAG_1.x-y")),
        ("localhost:5000", ImageRef("localhost", "5000")),  # no /: this is image localhost, tag 5000
    ],
)
def test_image_references(text: str, ref: ImageRef) -> None:
    assert parse_image_ref(text) == ref


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid image reference '': no repository name"),
        (":tag", "invalid image reference ':tag': no repository name"),
        ("Busybox", "invalid image reference 'Busybox' (repository names must be lowercase)"),
        ("team/App", "invalid image reference 'team/App' (repository names must be lowercase)"),
        ("busy box", "invalid image reference 'busy box'"),
        ("a//b", "invalid image reference 'a//b'"),
        ("app-", "invalid image reference 'app-'"),
        ("busybox:", "invalid tag '' in image reference 'busybox:'"),
        ("busybox:-x", "invalid tag '-x' in image reference 'busybox:-x'"),
        ("busybox:" + "x" * 129, f"invalid tag '{'x' * 129}' in image reference 'busybox:{'x' * 129}'"),
        ("busybox@sha256:abc", "invalid digest 'sha256:abc' in image reference 'busybox@sha256:abc'"),
        ("-bad.host:5000/app", "invalid registry '-bad.host:5000' in image reference '-bad.host:5000/app'"),
        ("a" * 256, f"invalid image reference '{'a' * 256}': the name is longer than 255 characters"),
    ],
)
def test_invalid_image_references(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        parse_image_ref(text)


@pytest.mark.parametrize(
    ("text", "mappings"),
    [
        ("80", [PortMapping("", "", 80)]),
        ("8080:80", [PortMapping("", "8080", 80)]),
        ("127.0.0.1:8080:80", [PortMapping("127.0.0.1", "8080", 80)]),
        ("127.0.0.1::80", [PortMapping("127.0.0.1", "", 80)]),
        ("53:53/udp", [PortMapping("", "53", 53, "udp")]),
        ("9:9/sctp", [PortMapping("", "9", 9, "sctp")]),
        ("80/", [PortMapping("", "", 80)]),
        ("[::1]:8443:443", [PortMapping("::1", "8443", 443)]),
        ("::1:8443:443", [PortMapping("::1", "8443", 443)]),
        ("0:80", [PortMapping("", "0", 80)]),
        ("08080:80", [PortMapping("", "8080", 80)]),
        ("8000-8001:8000-8001", [PortMapping("", "8000", 8000), PortMapping("", "8001", 8001)]),
        ("9000-9001:8000-8001/udp", [PortMapping("", "9000", 8000, "udp"), PortMapping("", "9001", 8001, "udp")]),
        ("8000-8001", [PortMapping("", "", 8000), PortMapping("", "", 8001)]),
        ("8000-8010:80", [PortMapping("", "8000-8010", 80)]),  # any free host port in the range
        ("65535:65535", [PortMapping("", "65535", 65535)]),
    ],
)
def test_port_mappings(text: str, mappings: list[PortMapping]) -> None:
    assert parse_ports(text) == mappings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no container port in ''"),
        ("8080:", "no container port in '8080:'"),
        ("http", "invalid port 'http' in 'http'"),
        ("80/icmp", "invalid protocol 'icmp' in '80/icmp' (use tcp, udp or sctp)"),
        ("80/TCP", "invalid protocol 'TCP' in '80/TCP' (use tcp, udp or sctp)"),
        ("0", "port '0' in '0' is out of range 1-65535"),
        ("65536", "port '65536' in '65536' is out of range 1-65535"),
        ("70000:80", "port '70000' in '70000:80' is out of range 0-65535"),
        ("123456:80", "invalid port '123456' in '123456:80'"),
        ("1.2.3:80:80", "invalid IP address '1.2.3' in '1.2.3:80:80'"),
        ("host:80:80", "invalid IP address 'host' in 'host:80:80'"),
        ("8001-8000", "invalid port range '8001-8000' in '8001-8000': it ends before it starts"),
        ("8000-8001:80-82", "port ranges in '8000-8001:80-82' differ in size"),
        ("8000:80-81", "port ranges in '8000:80-81' differ in size"),
        ("80-", "invalid port '80-' in '80-'"),
        ("-80", "invalid port '-80' in '-80'"),
        ("+80", "invalid port '+80' in '+80'"),
        ("٨٠", "invalid port '٨٠' in '٨٠'"),  # Arabic-Indic digits are digits to str.isdigit, not to docker
    ],
)
def test_invalid_port_mappings(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        parse_ports(text)


@pytest.mark.parametrize(
    ("text", "ports"),
    [("80", ["80/tcp"]), ("53/udp", ["53/udp"]), ("9000-9002", ["9000/tcp", "9001/tcp", "9002/tcp"])],
)
def test_exposed_ports(text: str, ports: list[str]) -> None:
    assert parse_exposed(text) == ports


def test_exposed_port_is_not_a_mapping() -> None:
    with pytest.raises(ValueError, match=r"^invalid port '80:80': --expose takes a container port, not a mapping"):
        parse_exposed("80:80")


@pytest.mark.parametrize(
    ("text", "volume", "bind"),
    [
        ("/data", VolumeMount("", "/data"), ":/data"),
        ("/srv/www:/usr/share/nginx/html", VolumeMount("/srv/www", "/usr/share/nginx/html"), None),
        ("/srv:/srv:ro", VolumeMount("/srv", "/srv", "ro"), "/srv:/srv:ro"),
        ("/srv:/srv:rw,rshared,Z", VolumeMount("/srv", "/srv", "rw,rshared,Z"), "/srv:/srv:rw,rshared,Z"),
        ("cache:/cache", VolumeMount("cache", "/cache"), "cache:/cache"),
        ("cache:/cache:nocopy,ro", VolumeMount("cache", "/cache", "nocopy,ro"), "cache:/cache:nocopy,ro"),
        ("my_vol.1-x:/v", VolumeMount("my_vol.1-x", "/v"), "my_vol.1-x:/v"),
        ("/etc/hosts:/etc/hosts:ro,cached", VolumeMount("/etc/hosts", "/etc/hosts", "ro,cached"), None),
    ],
)
def test_volumes(text: str, volume: VolumeMount, bind: str | None) -> None:
    assert parse_volume(text) == volume
    assert volume.bind == (bind or text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data", "invalid volume 'data': the container path 'data' must be absolute"),
        ("/a:b", "invalid volume '/a:b': the container path 'b' must be absolute"),
        ("/a:/", "invalid volume '/a:/': cannot mount over the container's /"),
        ("/a://", "invalid volume '/a://': cannot mount over the container's /"),
        (":/b", "invalid volume ':/b': empty source"),
        ("./data:/data", "invalid volume './data:/data': relative host path './data'; give an absolute path"),
        ("~/data:/data", "invalid volume '~/data:/data': relative host path '~/data'; give an absolute path"),
        (
            "x:/data",
            "invalid volume 'x:/data': 'x' is neither an absolute path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
        ),
        (
            "rel/dir:/data",
            "invalid volume 'rel/dir:/data': 'rel/dir' is neither an absolute path nor a volume name "
            "([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
        ),
        ("/a:/b:c:d", "invalid volume '/a:/b:c:d': too many ':' (use source:/target[:options])"),
        ("/a:/b:", "invalid volume '/a:/b:': unknown option ''"),
        ("/a:/b:rx", "invalid volume '/a:/b:rx': unknown option 'rx'"),
        ("/a:/b:ro,rw", "invalid volume '/a:/b:ro,rw': conflicting or repeated option 'rw'"),
        ("/a:/b:ro,ro", "invalid volume '/a:/b:ro,ro': conflicting or repeated option 'ro'"),
        ("/a:/b:z,Z", "invalid volume '/a:/b:z,Z': conflicting or repeated option 'Z'"),
        ("/a:/b:shared,slave", "invalid volume '/a:/b:shared,slave': conflicting or repeated option 'slave'"),
        ("/a:/b:nocopy", "invalid volume '/a:/b:nocopy': nocopy applies to named volumes only"),
        ("vol:/b:rshared", "invalid volume 'vol:/b:rshared': propagation 'rshared' applies to bind mounts only"),
    ],
)
def test_invalid_volumes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        parse_volume(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1000", 1000),
        ("100b", 100),
        ("1024k", 1024 * 1024),
        ("1024K", 1024 * 1024),
        ("512m", 512 * 1024**2),
        ("512M", 512 * 1024**2),
        ("512mb", 512 * 1024**2),
        ("1g", 1024**3),
        ("1GiB", 1024**3),
        ("1gb", 1024**3),
        ("1.5g", 1536 * 1024**2),
        ("2 m", 2 * 1024**2),
        ("1t", 1024**4),
        ("1p", 1024**5),
        ("0.5k", 512),
        ("1.0000000001k", 1024),  # fractions of a byte are dropped
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize(
    "text", ["", "m", "-1m", "1x", "1..5m", "1.m", "1 g b", " 1g", "1e3", "8192p", "9223372036854775808", "1" * 20]
)
def test_invalid_sizes(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid size "):
        parse_bytes(text)


@pytest.mark.parametrize(
    ("text", "nano"),
    [
        ("1", 1_000_000_000),
        ("1.5", 1_500_000_000),
        ("0.001", 1_000_000),
        ("0.000000001", 1),
        ("0", 0),
        ("16", 16 * 10**9),
        (".5", 500_000_000),
        ("2.", 2_000_000_000),
        ("1.500000000000", 1_500_000_000),  # trailing zeros add no precision
    ],
)
def test_cpus(text: str, nano: int) -> None:
    assert parse_cpus(text) == nano


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid number of CPUs ''"),
        ("one", "invalid number of CPUs 'one'"),
        ("-1", "invalid number of CPUs '-1'"),
        ("nan", "invalid number of CPUs 'nan'"),
        ("inf", "invalid number of CPUs 'inf'"),
        ("1e9", "invalid number of CPUs '1e9'"),
        ("1e-1000000000", "invalid number of CPUs '1e-1000000000'"),
        (".", "invalid number of CPUs '.'"),
        ("1,5", "invalid number of CPUs '1,5'"),
        ("0.0000000001", "invalid number of CPUs '0.0000000001': more precise than a billionth"),
    ],
)
def test_invalid_cpus(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        parse_cpus(text)


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("nofile=1024", Ulimit("nofile", 1024, 1024)),
        ("nofile=1024:2048", Ulimit("nofile", 1024, 2048)),
        ("core=-1", Ulimit("core", -1, -1)),
        ("memlock=100:-1", Ulimit("memlock", 100, -1)),
    ],
)
def test_ulimits(text: str, limit: Ulimit) -> None:
    assert parse_ulimit(text) == limit


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nofile", "invalid ulimit 'nofile': expected key=value"),
        (
            "files=1",
            "invalid ulimit 'files=1': unknown name 'files' (known: core, cpu, data, fsize, locks, memlock, "
            "msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)",
        ),
        ("nofile=many", "invalid ulimit 'nofile=many': expected nofile=soft[:hard] with integers"),
        ("nofile=1:", "invalid ulimit 'nofile=1:': expected nofile=soft[:hard] with integers"),
        ("nofile=10:5", "invalid ulimit 'nofile=10:5': the soft limit is above the hard limit"),
        ("nofile=-1:5", "invalid ulimit 'nofile=-1:5': the soft limit is above the hard limit"),
    ],
)
def test_invalid_ulimits(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        parse_ulimit(text)


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("db:10.0.0.2", "db:10.0.0.2"),
        ("db=10.0.0.2", "db:10.0.0.2"),
        ("gw:host-gateway", "gw:host-gateway"),
        ("v6=::1", "v6:::1"),
        ("v6=[::1]", "v6:::1"),
        ("v6:[2001:db8::1]", "v6:2001:db8::1"),
    ],
)
def test_extra_hosts(text: str, entry: str) -> None:
    assert parse_extra_host(text) == entry


@pytest.mark.parametrize("text", ["db", ":10.0.0.2", "db:", "db:nowhere", "db=10.0.0.300"])
def test_invalid_extra_hosts(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid host entry |does not appear to be an IPv4 or IPv6 address"):
        parse_extra_host(text)


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("no", RestartSetting("no")),
        ("always", RestartSetting("always")),
        ("unless-stopped", RestartSetting("unless-stopped")),
        ("on-failure", RestartSetting("on-failure")),
        ("on-failure:5", RestartSetting("on-failure", 5)),
    ],
)
def test_restart_settings(text: str, setting: RestartSetting) -> None:
    assert parse_restart(text) == setting


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sometimes", "invalid restart policy 'sometimes' (valid: no, always, unless-stopped, on-failure)"),
        ("always:3", "invalid restart policy 'always:3': only on-failure takes a retry count"),
        ("on-failure:x", "invalid restart policy 'on-failure:x': the retry count must be a number"),
        ("on-failure:-1", "invalid restart policy 'on-failure:-1': the retry count must be a number"),
    ],
)
def test_invalid_restart_settings(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        parse_restart(text)


@pytest.mark.parametrize(
    ("text", "mount"), [("/run", ("/run", "")), ("/tmp:rw,size=64m,mode=1777", ("/tmp", "rw,size=64m,mode=1777"))]
)
def test_tmpfs(text: str, mount: tuple[str, str]) -> None:
    assert parse_tmpfs(text) == mount


@pytest.mark.parametrize(("text", "valid"), [("web", True), ("w", False), ("web-1.a_b", True), ("-web", False)])
def test_container_names(text: str, valid: bool) -> None:
    if valid:
        assert checked_container_name(text) == text
    else:
        with pytest.raises(ValueError, match=r"^invalid container name .*: use \[a-zA-Z0-9\]\[a-zA-Z0-9_.-\]\+$"):
            checked_container_name(text)
