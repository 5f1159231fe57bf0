"""The Engine API create body: what docker run would send, minus AutoRemove, with fleetlet's labels winning."""

from __future__ import annotations

from typing import Any

import pytest

from fleetlet.exec.create_body import create_body
from fleetlet.exec.docker_argv import Run, RunSpec, parse_docker_argv
from fleetlet.exec.docker_values import PortMapping, RestartSetting, Ulimit, VolumeMount

OWNER = {"fleetlet.unit": "web.service", "fleetlet.hash": "abc123"}
ATTACH = {"AttachStdout": True, "AttachStderr": True}


def body_of(*args: str, env: tuple[str, ...] = ()) -> dict[str, Any]:
    command = parse_docker_argv(("docker", "run", *args))
    assert isinstance(command, Run)
    return create_body(command.spec, env=env, labels=OWNER)


def test_fleet_hello_world() -> None:
    assert body_of("--rm", "--name", "busybox1", "busybox", "/bin/sh", "-c", "echo Hello World") == {
        "Image": "busybox",
        "Cmd": ["/bin/sh", "-c", "echo Hello World"],
        "Labels": OWNER,
        **ATTACH,
        "HostConfig": {},  # no AutoRemove: fleetlet reads the exit status, then removes the container itself
    }


def test_minimal_body_has_no_nulls_and_no_labels_when_none_are_given() -> None:
    assert create_body(RunSpec("busybox"), env=(), labels={}) == {"Image": "busybox", **ATTACH, "HostConfig": {}}


def test_every_field() -> None:
    spec = RunSpec(
        image="registry.example.com:5000/app:1.2",
        command=("serve", "--port", "80"),
        entrypoint=("/entry",),
        name="web",
        env=("IGNORED=1",),  # the caller resolves env; only the env argument reaches the body
        publish=(
            PortMapping("", "8080", 80),
            PortMapping("127.0.0.1", "8081", 80),
            PortMapping("", "", 53, "udp"),
            PortMapping("", "9000-9010", 9000),
        ),
        publish_all=True,
        expose=("80/tcp", "7000/tcp"),
        volumes=(VolumeMount("", "/scratch"), VolumeMount("/srv", "/srv", "ro"), VolumeMount("cache", "/cache")),
        network="backend",
        hostname="web1",
        user="1000:1000",
        workdir="/app",
        labels={"team": "web", "fleetlet.unit": "spoofed.service"},
        memory=512 * 1024**2,
        nano_cpus=1_500_000_000,
        shm_size=64 * 1024**2,
        privileged=True,
        read_only=True,
        init=True,
        cap_add=("NET_ADMIN",),
        cap_drop=("ALL",),
        log_driver="journald",
        log_opts={"tag": "web"},
        tty=True,
        interactive=True,
        restart=RestartSetting("on-failure", 3),
        stop_signal="SIGINT",
        stop_timeout=30,
        extra_hosts=("db:10.0.0.2",),
        dns=("10.0.0.53",),
        tmpfs={"/run": "", "/tmp": "size=64m"},
        ulimits=(Ulimit("nofile", 1024, 2048),),
        pull="always",
    )
    assert create_body(spec, env=["A=1", "B=two words"], labels=OWNER) == {
        "Image": "registry.example.com:5000/app:1.2",
        "Cmd": ["serve", "--port", "80"],
        "Entrypoint": ["/entry"],
        "Env": ["A=1", "B=two words"],
        "Hostname": "web1",
        "User": "1000:1000",
        "WorkingDir": "/app",
        "Labels": {"team": "web", "fleetlet.unit": "web.service", "fleetlet.hash": "abc123"},
        "Tty": True,
        "OpenStdin": True,
        **ATTACH,
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}, "7000/tcp": {}},
        "Volumes": {"/scratch": {}},
        "StopSignal": "SIGINT",
        "StopTimeout": 30,
        "HostConfig": {
            "Binds": ["/srv:/srv:ro", "cache:/cache"],
            "PortBindings": {
                "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "8081"}],
                "53/udp": [{"HostIp": "", "HostPort": ""}],
                "9000/tcp": [{"HostIp": "", "HostPort": "9000-9010"}],
            },
            "PublishAllPorts": True,
            "NetworkMode": "backend",
            "Memory": 512 * 1024**2,
            "NanoCpus": 1_500_000_000,
            "Privileged": True,
            "CapAdd": ["NET_ADMIN"],
            "CapDrop": ["ALL"],
            "LogConfig": {"Type": "journald", "Config": {"tag": "web"}},
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "ExtraHosts": ["db:10.0.0.2"],
            "Dns": ["10.0.0.53"],
            "Init": True,
            "ReadonlyRootfs": True,
            "Tmpfs": {"/run": "", "/tmp": "size=64m"},
            "ShmSize": 64 * 1024**2,
            "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
        },
    }


@pytest.mark.parametrize(
    ("args", "top", "host"),
    [
        (["--entrypoint", "", "img"], {"Entrypoint": [""]}, {}),  # how the engine is told to drop the entrypoint
        (["--entrypoint", "/bin/sh", "img", "-c", "x"], {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "x"]}, {}),
        (["--init=false", "img"], {}, {"Init": False}),  # sent: it overrides a daemon configured with init
        (["--log-opt", "max-size=10m", "img"], {}, {"LogConfig": {"Type": "", "Config": {"max-size": "10m"}}}),
        (["--log-driver", "none", "img"], {}, {"LogConfig": {"Type": "none", "Config": {}}}),
        (["-p", "8000-8001:8000-8001", "img"], {"ExposedPorts": {"8000/tcp": {}, "8001/tcp": {}}},
         {"PortBindings": {"8000/tcp": [{"HostIp": "", "HostPort": "8000"}],
                           "8001/tcp": [{"HostIp": "", "HostPort": "8001"}]}}),
        (["-v", "/data", "img"], {"Volumes": {"/data": {}}}, {}),
        (["--restart", "always", "img"], {}, {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}),
        (["--rm", "-d", "img"], {}, {}),
        (["-l", "fleetlet.hash=forged", "-l", "x=y", "img"], {"Labels": {**OWNER, "x": "y"}}, {}),
        (["--stop-timeout", "0", "--memory", "0", "img"], {"StopTimeout": 0}, {"Memory": 0}),
    ],
)  # fmt: skip
def test_fields_from_flags(args: list[str], top: dict[str, Any], host: dict[str, Any]) -> None:
    expected: dict[str, Any] = {"Image": "img", "Labels": OWNER, **ATTACH, **top, "HostConfig": host}
    assert body_of(*args) == expected


def test_labels_given_by_fleetlet_win() -> None:
    spec = RunSpec("img", labels={"fleetlet.unit": "other.service", "keep": "me"})
    body = create_body(spec, env=(), labels={"fleetlet.unit": "web.service"})
    assert body["Labels"] == {"fleetlet.unit": "web.service", "keep": "me"}


def _nulls(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_nulls(v) for v in value.values())
    if isinstance(value, list):
        return any(_nulls(v) for v in value)
    return False


@pytest.mark.parametrize(
    "args",
    [
        ["img"],
        ["-dit", "--rm", "--init=false", "--entrypoint=", "-v", "/d", "img"],
        ["--restart=on-failure:2", "--log-opt", "a=b", "-p", "80", "--ulimit", "core=0", "img", "x"],
    ],
)
def test_no_nulls_and_no_auto_remove(args: list[str]) -> None:
    body = body_of(*args)
    assert not _nulls(body)
    assert "AutoRemove" not in body["HostConfig"]
