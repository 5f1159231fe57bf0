"""[Container] sections: the RunSpec they ask for, every problem at its line, and `fleetlet verify` seeing them."""

from __future__ import annotations

from typing import Any

import pytest

from fleetlet.diagnostics import Report
from fleetlet.exec.docker_argv import RunSpec
from fleetlet.exec.docker_values import PortMapping, VolumeMount
from fleetlet.exec.quadlet import container_spec, default_container_name
from fleetlet.units.check import check_unit
from fleetlet.units.names import parse_name
from fleetlet.units.specifiers import MachineFacts
from fleetlet.units.syntax import parse

KNOWN = (
    "ContainerName, Entrypoint, Environment, EnvironmentFile, Exec, HostName, Image, Label, Memory, Network, "
    "PublishPort, User, Volume"
)


def spec_of(
    body: str, name: str = "web.service", machine: MachineFacts | None = None
) -> tuple[RunSpec | None, list[str]]:
    """The spec of ``[Container]`` + body (settings start on line 2), and every diagnostic as file:line: message."""
    report = Report(name)
    spec = container_spec(parse("[Container]\n" + body, name), parse_name(name), report, machine=machine)
    return spec, [str(d) for d in report.in_file_order()]


def web(**fields: Any) -> RunSpec:
    return RunSpec(**{"image": "nginx", "name": "fleetlet-web", **fields})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Image=nginx", web()),
        ("Image=registry.example.com:5000/team/nginx:1.27", web(image="registry.example.com:5000/team/nginx:1.27")),
        ("Image=busybox\nImage=nginx", web()),  # the last one wins
        ('Image=nginx\nExec=nginx -g "daemon off;"', web(command=("nginx", "-g", "daemon off;"))),
        ("Image=nginx\nExec=a\nExec=b c", web(command=("b", "c"))),
        ("Image=nginx\nExec=a\nExec=", web()),  # an empty assignment resets to the image's command
        ("Image=nginx\nEntrypoint=/docker-entrypoint.sh", web(entrypoint=("/docker-entrypoint.sh",))),
        ('Image=nginx\nEntrypoint=""', web(entrypoint=())),  # clears the image's entrypoint
        ('Image=nginx\nEntrypoint=["/bin/sh", "-c"]', web(entrypoint=("/bin/sh", "-c"))),
        ('Image=nginx\nEntrypoint="/path with/space"', web(entrypoint=("/path with/space",))),
        ("Image=nginx\nContainerName=front", web(name="front")),
        ("Image=nginx\nContainerName=front-%p", web(name="front-web")),
        (
            'Image=nginx\nEnvironment=A=1 "B=two words"\nEnvironment=C=%n',
            web(env=("A=1", "B=two words", "C=web.service")),
        ),
        ("Image=nginx\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2", web(env=("B=2",))),  # reset
        (
            "Image=nginx\nEnvironmentFile=/etc/web.env\nEnvironmentFile=/etc/%N.env",
            web(env_files=("/etc/web.env", "/etc/web.env")),
        ),
        (
            "Image=nginx\nPublishPort=8080:80\nPublishPort=127.0.0.1:53:53/udp\nPublishPort= 443 ",
            web(
                publish=(
                    PortMapping("", "8080", 80),
                    PortMapping("127.0.0.1", "53", 53, "udp"),
                    PortMapping("", "", 443),
                )
            ),
        ),
        (
            "Image=nginx\nPublishPort=8000-8001:8000-8001",
            web(publish=(PortMapping("", "8000", 8000), PortMapping("", "8001", 8001))),
        ),
        (
            "Image=nginx\nVolume=/srv/www:/usr/share/nginx/html:ro\nVolume=cache:/cache\nVolume=/scratch",
            web(
                volumes=(
                    VolumeMount("/srv/www", "/usr/share/nginx/html", "ro"),
                    VolumeMount("cache", "/cache"),
                    VolumeMount("", "/scratch"),
                )
            ),
        ),
        ("Image=nginx\nNetwork=host", web(network="host")),
        ("Image=nginx\nNetwork=a\nNetwork=\nNetwork=b", web(network="b")),
        ("Image=nginx\nLabel=a=1 b=2\nLabel=c=x=y\nLabel=a=3", web(labels={"a": "3", "b": "2", "c": "x=y"})),
        ('Image=nginx\nLabel="description=a web server"', web(labels={"description": "a web server"})),
        ("Image=nginx\nUser=1000:1000", web(user="1000:1000")),
        ("Image=nginx\nHostName=%H", web(hostname="localhost")),  # a stand-in when no machine is given
        ("Image=nginx\nMemory=512m", web(memory=512 * 1024**2)),
        ("Image=nginx\nMemory=1g\nMemory=", web()),
    ],
)
def test_container_sections(body: str, expected: RunSpec) -> None:
    assert spec_of(body) == (expected, [])


def test_specifiers_resolve_for_the_machine_and_instance() -> None:
    machine = MachineFacts(hostname="node1", machine_id="a" * 32, boot_id="b" * 32)
    body = "Image=nginx\nHostName=%H\nEnvironment=ID=%m INSTANCE=%i\nContainerName=web-%i"
    spec, diagnostics = spec_of(body, "web@7.service", machine)
    assert diagnostics == []
    assert spec == RunSpec(image="nginx", name="web-7", hostname="node1", env=("ID=" + "a" * 32, "INSTANCE=7"))


@pytest.mark.parametrize(
    ("unit", "name"),
    [
        ("web.service", "fleetlet-web"),
        ("web@1.service", "fleetlet-web-1"),
        ("web@.service", "fleetlet-web-"),
        ("a.b_c.service", "fleetlet-a.b_c"),
        ("db:primary.service", "fleetlet-db-primary"),  # ':' is not allowed in a container name
    ],
)
def test_default_container_name(unit: str, name: str) -> None:
    assert default_container_name(parse_name(unit)) == name
    assert spec_of("Image=nginx", unit)[0] == RunSpec(image="nginx", name=name)


def test_no_container_section() -> None:
    report = Report("web.service")
    assert container_spec(parse("[Service]\nExecStart=/bin/true\n"), parse_name("web.service"), report) is None
    assert report.diagnostics == []


@pytest.mark.parametrize(
    ("body", "diagnostics"),
    [
        ("ContainerName=web", ["web.service:2: Image= is required in [Container]"]),
        ("Image=nginx\nImage=", ["web.service:2: Image= is required in [Container]"]),
        (
            "Image=Nginx",
            ["web.service:2: Image=: invalid image reference 'Nginx' (repository names must be lowercase)"],
        ),
        (
            "Image=nginx\nPodmanArgs=--device /dev/fuse",
            [
                "web.service:3: PodmanArgs= is not supported: fleetlet talks to the Docker Engine API; there is no "
                "podman command line to pass arguments to"
            ],
        ),
        (
            "Image=nginx\nAutoUpdate=registry\nPod=web.pod",
            [
                f"web.service:3: AutoUpdate= is not supported in [Container] (fleetlet knows: {KNOWN})",
                f"web.service:4: Pod= is not supported in [Container] (fleetlet knows: {KNOWN})",
            ],
        ),
        (
            "Image=nginx\nPublishPort=99999:80",
            ["web.service:3: PublishPort=: port '99999' in '99999:80' is out of range 0-65535"],
        ),
        ("Image=nginx\nPublishPort=80 81", ["web.service:3: PublishPort=: invalid port '80 81' in '80 81'"]),
        (
            "Image=nginx\nVolume=data",
            ["web.service:3: Volume=: invalid volume 'data': the container path 'data' must be absolute"],
        ),
        (
            "Image=nginx\nVolume=data.volume:/data",
            [
                "web.service:3: Volume=: 'data.volume' names a Quadlet .volume unit, which fleetlet does not support: "
                "name a docker volume or an absolute host path"
            ],
        ),
        (
            "Image=nginx\nNetwork=a\nNetwork=b",
            ["web.service:4: Network= given more than once: fleetlet connects a container to one network"],
        ),
        (
            "Image=nginx\nNetwork=web.network",
            ["web.service:3: Network=: 'web.network' names a Quadlet .network unit, which fleetlet does not support"],
        ),
        ("Image=nginx\nLabel=a=1 b", ["web.service:3: Label=: invalid label 'b': expected key=value"]),
        (
            "Image=nginx\nMemory=lots",
            ["web.service:3: Memory=: invalid size 'lots' (use bytes or a number with b, k, m, g, t or p)"],
        ),
        ("Image=nginx\nUser=a b", ["web.service:3: User=: expected one value, got 'a b'"]),
        ('Image=nginx\nHostName=""', ["web.service:3: HostName=: expected one value, got '\"\"'"]),
        (
            "Image=nginx\nEnvironmentFile=web.env",
            [
                "web.service:3: EnvironmentFile=: path 'web.env' is not absolute "
                "(a unit in the cluster has no directory of its own)"
            ],
        ),
        ("Image=nginx\nEnvironment=A", ["web.service:3: Environment=: 'A' is not a VAR=value assignment"]),
        ("Image=nginx\nEnvironment=1A=x", ["web.service:3: Environment=: invalid variable name '1A' in '1A=x'"]),
        ('Image=nginx\nExec=sh -c "x', ["web.service:3: Exec=: unbalanced quoting"]),
        (
            "Image=nginx\nEntrypoint=/bin/sh -c",
            [
                "web.service:3: Entrypoint=: '/bin/sh -c' is 2 words: give one program, put its arguments in Exec=, "
                'or write a JSON array such as ["/bin/sh", "-c"]'
            ],
        ),
        ("Image=nginx\nEntrypoint=[1, 2]", ["web.service:3: Entrypoint=: '[1, 2]' is not a JSON array of strings"]),
        ("Image=nginx\nEntrypoint=[oops", ["web.service:3: Entrypoint=: '[oops' is not a JSON array of strings"]),
        (
            "Image=nginx\nContainerName=a",
            ["web.service:3: ContainerName=: invalid container name 'a': use [a-zA-Z0-9][a-zA-Z0-9_.-]+"],
        ),
        (
            "Image=nginx\nContainerName=web-%q",
            [
                "web.service:3: ContainerName=: unsupported specifier %q "
                "(fleetlet knows %n %N %p %i %I %f %H %m %b %%; write %% for a literal %)"
            ],
        ),
        (
            # every assignment is checked, not only the one that counts
            "Image=Bad\nImage=nginx\nMemory=x\nMemory=1g",
            [
                "web.service:2: Image=: invalid image reference 'Bad' (repository names must be lowercase)",
                "web.service:4: Memory=: invalid size 'x' (use bytes or a number with b, k, m, g, t or p)",
            ],
        ),
    ],
)
def test_container_errors(body: str, diagnostics: list[str]) -> None:
    assert spec_of(body) == (None, diagnostics)


VERIFY = """\
[Unit]
Description=web

[Service]
Restart=always
ExecStart=/usr/bin/docker run --rm nginx

[Container]
Image=nginx
PublishPort=80:99999
Volume=./html:/usr/share/nginx/html
PodmanArgs=--tls-verify=false
Notify=true

[X-Fleet]
Conflicts=web*
"""


def test_verify_reports_container_problems_at_their_lines() -> None:
    report = Report("units/web.service")
    assert check_unit(VERIFY, "web.service", report) is None
    assert [str(d) for d in report.in_file_order()] == [
        "units/web.service:6: ExecStart= and a [Container] section cannot be combined: choose one",
        "units/web.service:10: PublishPort=: port '99999' in '80:99999' is out of range 1-65535",
        "units/web.service:11: Volume=: invalid volume './html:/usr/share/nginx/html': relative host path './html'; "
        "give an absolute path",
        "units/web.service:12: PodmanArgs= is not supported: fleetlet talks to the Docker Engine API; there is no "
        "podman command line to pass arguments to",
        f"units/web.service:13: Notify= is not supported in [Container] (fleetlet knows: {KNOWN})",
    ]


def test_verify_accepts_a_container_unit_without_service_section() -> None:
    text = "[Unit]\nDescription=web\n\n[Container]\nImage=nginx:1.27\nPublishPort=8080:80\nContainerName=web-%i\n"
    report = Report("web@.service")
    checked = check_unit(text, "web@.service", report)
    assert report.diagnostics == []
    assert checked is not None
    assert checked.service is not None
    assert checked.service.exec_start == ()


def test_verify_checks_container_sections_of_service_units_only() -> None:
    report = Report("web.socket")
    check_unit("[Socket]\nListenStream=80\n[Container]\nImage=Bad\n", "web.socket", report)
    assert [str(d) for d in report.in_file_order()] == [
        "web.socket: warning: fleetlet runs .service units only; this .socket unit will never start"
    ]
