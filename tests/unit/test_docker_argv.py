"""docker command lines read as the docker CLI reads them, into the commands fleetlet carries out."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlet.exec.docker_argv import (
    DockerArgvError,
    DockerCommand,
    Exec,
    Inspect,
    Kill,
    Pull,
    Remove,
    Restart,
    Run,
    RunSpec,
    Start,
    Stop,
    is_docker,
    parse_docker_argv,
)
from fleetlet.exec.docker_values import PortMapping, RestartSetting, Ulimit, VolumeMount
from fleetlet.units.execline import parse_exec_line

DIGEST = "sha256:" + "0123456789abcdef" * 4
UNSUPPORTED = "(fleetlet cannot carry it out; it is never silently dropped)"
RESTART_WARNING = (
    "docker run: {flag} {policy} fights fleetlet's supervision: the engine restarts the container behind the "
    "unit's back (use Restart= in [Service] instead)"
)
STDIN_WARNING = (
    "docker run: {flag} keeps the container's stdin open with nothing attached: a process that reads stdin waits "
    "instead of reading end of file"
)


def docker(line: str) -> DockerCommand:
    """Parse an Exec line's words, quoting and all, as fleetlet will."""
    (command,) = parse_exec_line(line)
    return parse_docker_argv(command.argv)


def run(*args: str) -> Run:
    command = parse_docker_argv(("docker", "run", *args))
    assert isinstance(command, Run)
    return command


def spec(**fields: Any) -> RunSpec:
    return RunSpec(**{"image": "img", **fields})


# fleet's hello_world unit, line by line.
@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("/usr/bin/docker rm busybox1", Remove(("busybox1",))),
        ("/usr/bin/docker pull busybox", Pull("busybox", "latest")),
        (
            "/usr/bin/docker run --rm --name busybox1 busybox "
            '/bin/sh -c "while true; do echo Hello World; sleep 1; done"',
            Run(
                RunSpec(
                    image="busybox",
                    command=("/bin/sh", "-c", "while true; do echo Hello World; sleep 1; done"),
                    name="busybox1",
                ),
                remove=True,
            ),
        ),
        ("/usr/bin/docker stop busybox1", Stop(("busybox1",))),
        ("/usr/bin/docker rm -f hello_world-1", Remove(("hello_world-1",), force=True)),
    ],
)
def test_fleet_hello_world(line: str, command: DockerCommand) -> None:
    assert docker(line) == command


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["img"], spec()),
        (["--name", "web", "img"], spec(name="web")),
        (["--name=web", "img"], spec(name="web")),
        (["--name", "a", "--name", "web", "img"], spec(name="web")),  # the last one wins
        (["--entrypoint", "/bin/sh", "img", "-c", "x"], spec(entrypoint=("/bin/sh",), command=("-c", "x"))),
        (["--entrypoint=/bin/sh -x", "img"], spec(entrypoint=("/bin/sh -x",))),  # one program, never split
        (["--entrypoint", "", "img"], spec(entrypoint=())),
        (["--entrypoint=", "img"], spec(entrypoint=())),
        (
            ["-e", "A=1", "-eB=2", "-e=C=3", "--env", "D=4", "--env=E", "-e", "F=", "img"],
            spec(env=("A=1", "B=2", "C=3", "D=4", "E", "F=")),
        ),
        (["--env-file", "/etc/a.env", "--env-file=/etc/b.env", "img"], spec(env_files=("/etc/a.env", "/etc/b.env"))),
        (
            ["-p", "8080:80", "-p80", "--publish", "127.0.0.1:53:53/udp", "--publish=[::1]::443", "-p=1-2", "img"],
            spec(
                publish=(
                    PortMapping("", "8080", 80),
                    PortMapping("", "", 80),
                    PortMapping("127.0.0.1", "53", 53, "udp"),
                    PortMapping("::1", "", 443),
                    PortMapping("", "", 1),
                    PortMapping("", "", 2),
                )
            ),
        ),
        (["-P", "img"], spec(publish_all=True)),
        (["--publish-all", "img"], spec(publish_all=True)),
        (["--publish-all=false", "img"], spec()),
        (
            ["--expose", "80", "--expose=9000-9001/udp", "--expose", "80/tcp", "img"],
            spec(expose=("80/tcp", "9000/udp", "9001/udp")),
        ),
        (
            ["-v", "/data", "-v/srv:/srv:ro", "--volume", "cache:/cache:nocopy", "--volume=/a:/b:rw,rshared", "img"],
            spec(
                volumes=(
                    VolumeMount("", "/data"),
                    VolumeMount("/srv", "/srv", "ro"),
                    VolumeMount("cache", "/cache", "nocopy"),
                    VolumeMount("/a", "/b", "rw,rshared"),
                )
            ),
        ),
        (["--network", "host", "img"], spec(network="host")),
        (["--network=container:db", "img"], spec(network="container:db")),
        (["--net", "none", "img"], spec(network="none")),
        (["--net=my-net", "img"], spec(network="my-net")),
        (["-h", "box", "img"], spec(hostname="box")),
        (["--hostname=box", "img"], spec(hostname="box")),
        (["-u", "1000:1000", "img"], spec(user="1000:1000")),
        (["-unobody", "img"], spec(user="nobody")),
        (["--user=nobody", "img"], spec(user="nobody")),
        (["-w", "/app", "img"], spec(workdir="/app")),
        (["--workdir=/app", "img"], spec(workdir="/app")),
        (
            ["-l", "a=1", "--label", "b", "--label=c=x=y", "-l", "a=2", "img"],
            spec(labels={"a": "2", "b": "", "c": "x=y"}),
        ),
        (["-m", "512m", "img"], spec(memory=512 * 1024**2)),
        (["--memory=1g", "img"], spec(memory=1024**3)),
        (["--memory", "1024k", "img"], spec(memory=1024**2)),
        (["-m1000", "img"], spec(memory=1000)),
        (["--cpus", "1.5", "img"], spec(nano_cpus=1_500_000_000)),
        (["--cpus=0.25", "img"], spec(nano_cpus=250_000_000)),
        (["--shm-size", "64m", "img"], spec(shm_size=64 * 1024**2)),
        (["--shm-size=1g", "img"], spec(shm_size=1024**3)),
        (["--privileged", "img"], spec(privileged=True)),
        (["--privileged=true", "img"], spec(privileged=True)),
        (["--read-only", "img"], spec(read_only=True)),
        (["--init", "img"], spec(init=True)),
        (["--init=false", "img"], spec(init=False)),  # said explicitly: overrides a daemon that defaults to init
        (
            ["--cap-add", "NET_ADMIN", "--cap-add=SYS_TIME", "--cap-drop", "ALL", "--cap-drop=MKNOD", "img"],
            spec(cap_add=("NET_ADMIN", "SYS_TIME"), cap_drop=("ALL", "MKNOD")),
        ),
        (
            ["--log-driver", "journald", "--log-opt", "tag=web", "--log-opt=max-size=10m", "img"],
            spec(log_driver="journald", log_opts={"tag": "web", "max-size": "10m"}),
        ),
        (["--log-driver=none", "img"], spec(log_driver="none")),
        (["-t", "img"], spec(tty=True)),
        (["--tty", "img"], spec(tty=True)),
        (["--tty=false", "-t=0", "img"], spec()),
        (["--stop-signal", "SIGINT", "img"], spec(stop_signal="SIGINT")),
        (["--stop-signal=term", "img"], spec(stop_signal="term")),
        (["--stop-signal=9", "img"], spec(stop_signal="9")),
        (["--stop-timeout", "30", "img"], spec(stop_timeout=30)),
        (["--stop-timeout=-1", "img"], spec(stop_timeout=-1)),
        (
            ["--add-host", "db:10.0.0.2", "--add-host=gw=host-gateway", "--add-host", "v6=[::1]", "img"],
            spec(extra_hosts=("db:10.0.0.2", "gw:host-gateway", "v6:::1")),
        ),
        (["--dns", "8.8.8.8", "--dns=2001:4860:4860::8888", "img"], spec(dns=("8.8.8.8", "2001:4860:4860::8888"))),
        (["--tmpfs", "/run", "--tmpfs=/tmp:rw,size=64m", "img"], spec(tmpfs={"/run": "", "/tmp": "rw,size=64m"})),
        (
            ["--ulimit", "nofile=1024:2048", "--ulimit=nproc=-1", "--ulimit", "nofile=10", "img"],
            spec(ulimits=(Ulimit("nofile", 10, 10), Ulimit("nproc", -1, -1))),
        ),
        (["--pull", "always", "img"], spec(pull="always")),
        (["--pull=never", "img"], spec(pull="never")),
        (["--pull=missing", "img"], spec()),
        (["--restart=no", "img"], spec(restart=RestartSetting("no"))),  # the default: no warning
        # Flags stop at the image: what follows is the command, whatever it looks like.
        (["img", "--rm", "-d", "--name", "x"], spec(command=("--rm", "-d", "--name", "x"))),
        (["img", "--", "x"], spec(command=("--", "x"))),
        (["--", "img", "-x"], spec(command=("-x",))),
        (["img", "-"], spec(command=("-",))),
        (["--hostname", "-h", "img"], spec(hostname="-h")),  # a flag's value may start with -
        (
            ["registry.example.com:5000/team/app:1.2@" + DIGEST],
            spec(image="registry.example.com:5000/team/app:1.2@" + DIGEST),
        ),
    ],
)
def test_run_flags(args: list[str], expected: RunSpec) -> None:
    assert run(*args) == Run(expected)


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["--rm", "img"], Run(spec(), remove=True)),
        (["--rm=false", "img"], Run(spec())),
        (["--rm=0", "--rm=1", "img"], Run(spec(), remove=True)),
        (["--rm=True", "img"], Run(spec(), remove=True)),
        (["-d", "img"], Run(spec(), detach=True)),
        (["--detach", "img"], Run(spec(), detach=True)),
        (["-d=false", "img"], Run(spec())),
        (["--detach=F", "img"], Run(spec())),
        (["-dt", "img"], Run(spec(tty=True), detach=True)),
        (["-td", "--rm", "img"], Run(spec(tty=True), detach=True, remove=True)),
        (["-dp8080:80", "img"], Run(spec(publish=(PortMapping("", "8080", 80),)), detach=True)),
        (["-dtp", "80", "img"], Run(spec(tty=True, publish=(PortMapping("", "", 80),)), detach=True)),
        (["-dPe", "A=1", "img"], Run(spec(publish_all=True, env=("A=1",)), detach=True)),
        (["-i", "img"], Run(spec(interactive=True), warnings=(STDIN_WARNING.format(flag="-i"),))),
        (
            ["-it", "img", "sh"],
            Run(spec(tty=True, interactive=True, command=("sh",)), warnings=(STDIN_WARNING.format(flag="-i"),)),
        ),
        (
            ["-dit", "img"],
            Run(spec(tty=True, interactive=True), detach=True, warnings=(STDIN_WARNING.format(flag="-i"),)),
        ),
        (
            ["--interactive", "img"],
            Run(spec(interactive=True), warnings=(STDIN_WARNING.format(flag="--interactive"),)),
        ),
        (
            ["--restart", "always", "img"],
            Run(
                spec(restart=RestartSetting("always")),
                warnings=(RESTART_WARNING.format(flag="--restart", policy="always"),),
            ),
        ),
        (
            ["--restart=on-failure:3", "-d", "img"],
            Run(
                spec(restart=RestartSetting("on-failure", 3)),
                detach=True,
                warnings=(RESTART_WARNING.format(flag="--restart", policy="on-failure"),),
            ),
        ),
        (["--restart=no", "--rm", "img"], Run(spec(restart=RestartSetting("no")), remove=True)),
    ],
)
def test_run_booleans_and_warnings(args: list[str], command: Run) -> None:
    assert run(*args) == command


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["stop", "busybox1"], Stop(("busybox1",))),
        (["stop", "-t", "5", "a", "b"], Stop(("a", "b"), 5)),
        (["stop", "a", "--time=10"], Stop(("a",), 10)),  # flags may come after the containers
        (["stop", "--timeout", "-1", "a"], Stop(("a",), -1)),
        (["stop", "-t0", "a"], Stop(("a",), 0)),
        (["container", "stop", "a"], Stop(("a",))),
        (["restart", "a"], Restart(("a",))),
        (["restart", "-t", "3", "a", "b"], Restart(("a", "b"), 3)),
        (["container", "restart", "--time=1", "a"], Restart(("a",), 1)),
        (["kill", "a"], Kill(("a",))),
        (["kill", "-s", "HUP", "a"], Kill(("a",), "HUP")),
        (["kill", "--signal=SIGUSR1", "a", "b"], Kill(("a", "b"), "SIGUSR1")),
        (["kill", "a", "-s", "15"], Kill(("a",), "15")),
        (["container", "kill", "-sINT", "a"], Kill(("a",), "INT")),
        (["rm", "busybox1"], Remove(("busybox1",))),
        (["rm", "-f", "x"], Remove(("x",), force=True)),
        (["rm", "-fv", "x", "y"], Remove(("x", "y"), force=True, volumes=True)),
        (["rm", "--force", "--volumes", "x"], Remove(("x",), force=True, volumes=True)),
        (["rm", "x", "-f"], Remove(("x",), force=True)),
        (["container", "rm", "-v=false", "x"], Remove(("x",))),
        (["container", "remove", "-f", "x"], Remove(("x",), force=True)),
        (["pull", "busybox"], Pull("busybox", "latest")),
        (["pull", "busybox:1.36"], Pull("busybox", "1.36")),
        (["pull", "-q", "quay.io/coreos/etcd:v3.5.9"], Pull("quay.io/coreos/etcd", "v3.5.9")),
        (["pull", "--quiet", "localhost:5000/app"], Pull("localhost:5000/app", "latest")),
        (["image", "pull", "registry.example.com:5000/a/b"], Pull("registry.example.com:5000/a/b", "latest")),
        (["pull", "busybox@" + DIGEST], Pull("busybox@" + DIGEST, "")),
        (["pull", "reg:5000/app:1@" + DIGEST], Pull("reg:5000/app:1@" + DIGEST, "")),
        (["pull", "--all-tags=false", "busybox"], Pull("busybox", "latest")),
        (["start", "a"], Start(("a",))),
        (["start", "a", "b"], Start(("a", "b"))),
        (["container", "start", "a"], Start(("a",))),
        (["start", "-a=false", "a"], Start(("a",))),
        (["exec", "web", "ls", "-l"], Exec("web", ("ls", "-l"))),
        (["exec", "web", "sh", "-c", "-e"], Exec("web", ("sh", "-c", "-e"))),  # flags stop at the container
        (["exec", "web", "echo", ""], Exec("web", ("echo", ""))),
        (
            ["exec", "-it", "-e", "A=1", "--env=B", "-u", "root", "-w", "/tmp", "web", "sh"],
            Exec("web", ("sh",), env=("A=1", "B"), user="root", workdir="/tmp", tty=True, interactive=True),
        ),
        (["exec", "-d", "web", "touch", "/x"], Exec("web", ("touch", "/x"), detach=True)),
        (
            ["exec", "--detach", "--user=1000", "--workdir=/", "web", "id"],
            Exec("web", ("id",), user="1000", workdir="/", detach=True),
        ),
        (["container", "exec", "--", "web", "true"], Exec("web", ("true",))),
        (["inspect", "a"], Inspect(("a",))),
        (["inspect", "-f", "{{.State.Pid}}", "a", "b"], Inspect(("a", "b"), "{{.State.Pid}}")),
        (["inspect", "--format={{.Id}}", "--type=container", "a"], Inspect(("a",), "{{.Id}}")),
        (["inspect", "a", "--format", "{{json .}}"], Inspect(("a",), "{{json .}}")),
        (["container", "inspect", "a"], Inspect(("a",))),
    ],
)
def test_other_commands(argv: list[str], command: DockerCommand) -> None:
    assert parse_docker_argv(["/usr/bin/docker", *argv]) == command


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "docker: no command given"),
        (
            ["-H", "unix:///var/run/docker.sock", "run", "img"],
            "docker: unsupported global flag -H (fleetlet talks to its own engine through the Engine API; give the "
            "command first, as in docker run ...)",
        ),
        (
            ["--context=prod", "run", "img"],
            "docker: unsupported global flag --context (fleetlet talks to its own engine through the Engine API; give "
            "the command first, as in docker run ...)",
        ),
        (
            ["create", "img"],
            "docker: unsupported command 'create' (fleetlet carries out: exec, inspect, kill, pull, restart, rm, run, "
            "start, stop)",
        ),
        (
            ["compose", "up"],
            "docker: unsupported command 'compose' (fleetlet carries out: exec, inspect, kill, pull, restart, rm, run, "
            "start, stop)",
        ),
        (["container"], "docker container: no command given"),
        (
            ["container", "ls"],
            "docker container: unsupported command 'ls' (fleetlet carries out: exec, inspect, kill, remove, restart, "
            "rm, run, start, stop)",
        ),
        (["image", "rm", "busybox"], "docker image: unsupported command 'rm' (fleetlet carries out: pull)"),
        # run
        (["run", "--device", "/dev/fuse", "img"], f"docker run: unsupported flag --device {UNSUPPORTED}"),
        (["run", "--device=/dev/fuse", "img"], f"docker run: unsupported flag --device {UNSUPPORTED}"),
        (["run", "--mount", "type=bind,src=/a,dst=/b", "img"], f"docker run: unsupported flag --mount {UNSUPPORTED}"),
        (["run", "--auto-remove", "img"], f"docker run: unsupported flag --auto-remove {UNSUPPORTED}"),
        (["run", "-x", "img"], f"docker run: unsupported flag -x {UNSUPPORTED}"),
        (["run", "-dx", "img"], f"docker run: unsupported flag -x {UNSUPPORTED}"),
        (["run", "-rm", "img"], f"docker run: unsupported flag -r {UNSUPPORTED}"),
        (["run", "-a", "stdout", "img"], f"docker run: unsupported flag -a {UNSUPPORTED}"),
        (["run", "---rm", "img"], f"docker run: unsupported flag ---rm {UNSUPPORTED}"),
        (["container", "run", "--gpus", "all", "img"], f"docker container run: unsupported flag --gpus {UNSUPPORTED}"),
        (["run"], "docker run: needs an image (docker run [OPTIONS] IMAGE [COMMAND] [ARG...])"),
        (["run", "--rm", "-d"], "docker run: needs an image (docker run [OPTIONS] IMAGE [COMMAND] [ARG...])"),
        (["run", "--name"], "docker run: flag --name needs a value"),
        (["run", "-e"], "docker run: flag -e needs a value"),
        (["run", "-de"], "docker run: flag -e needs a value"),
        (["run", "--rm=yes", "img"], "docker run: invalid value 'yes' for --rm: use true or false"),
        (["run", "-d=no", "img"], "docker run: invalid value 'no' for -d: use true or false"),
        (["run", "--rm=", "img"], "docker run: invalid value '' for --rm: use true or false"),
        (["run", "Busybox"], "docker run: invalid image reference 'Busybox' (repository names must be lowercase)"),
        (["run", "--", "-img"], "docker run: invalid image reference '-img'"),
        (
            ["run", "--name", "a", "img"],
            "docker run: --name: invalid container name 'a': use [a-zA-Z0-9][a-zA-Z0-9_.-]+",
        ),
        (["run", "--name=", "img"], "docker run: --name: invalid container name '': use [a-zA-Z0-9][a-zA-Z0-9_.-]+"),
        (["run", "-e", "=x", "img"], "docker run: -e: invalid environment variable '=x': empty name"),
        (["run", "--env-file", "app.env", "img"], "docker run: --env-file: 'app.env' is not an absolute path"),
        (["run", "-w", "app", "img"], "docker run: -w: 'app' is not an absolute path"),
        (
            ["run", "-m", "lots", "img"],
            "docker run: -m: invalid size 'lots' (use bytes or a number with b, k, m, g, t or p)",
        ),
        (
            ["run", "--memory=1x", "img"],
            "docker run: --memory: invalid size '1x' (use bytes or a number with b, k, m, g, t or p)",
        ),
        (
            ["run", "--cpus", "0.0000000001", "img"],
            "docker run: --cpus: invalid number of CPUs '0.0000000001': more precise than a billionth",
        ),
        (["run", "--cpus=many", "img"], "docker run: --cpus: invalid number of CPUs 'many'"),
        (["run", "-p", "80:70000", "img"], "docker run: -p: port '70000' in '80:70000' is out of range 1-65535"),
        (
            ["run", "--publish=8000-8001:80-82", "img"],
            "docker run: --publish: port ranges in '8000-8001:80-82' differ in size",
        ),
        (
            ["run", "-p", "80/icmp", "img"],
            "docker run: -p: invalid protocol 'icmp' in '80/icmp' (use tcp, udp or sctp)",
        ),
        (
            ["run", "--expose", "80:80", "img"],
            "docker run: --expose: invalid port '80:80': --expose takes a container port, not a mapping (use -p)",
        ),
        (
            ["run", "-v", "data:rel", "img"],
            "docker run: -v: invalid volume 'data:rel': the container path 'rel' must be absolute",
        ),
        (
            ["run", "-v", "/a:/b:ro,rw", "img"],
            "docker run: -v: invalid volume '/a:/b:ro,rw': conflicting or repeated option 'rw'",
        ),
        (
            ["run", "--volume", "./data:/data", "img"],
            "docker run: --volume: invalid volume './data:/data': relative host path './data'; give an absolute path",
        ),
        (
            ["run", "--restart", "always", "--rm", "img"],
            "docker run: --restart and --rm conflict: a container removed when it exits cannot be restarted",
        ),
        (
            ["run", "--restart", "sometimes", "img"],
            "docker run: --restart: invalid restart policy 'sometimes' (valid: no, always, unless-stopped, on-failure)",
        ),
        (["run", "--stop-signal", "SIGFOO", "img"], "docker run: --stop-signal: invalid signal 'SIGFOO'"),
        (["run", "--stop-timeout", "soon", "img"], "docker run: --stop-timeout: invalid integer 'soon'"),
        (
            ["run", "--ulimit", "nofile=10:5", "img"],
            "docker run: --ulimit: invalid ulimit 'nofile=10:5': the soft limit is above the hard limit",
        ),
        (
            ["run", "--pull", "sometimes", "img"],
            "docker run: --pull: invalid pull policy 'sometimes' (valid: missing, always, never)",
        ),
        (["run", "--log-opt", "tag", "img"], "docker run: --log-opt: invalid log option 'tag': expected key=value"),
        (["run", "-l", "=x", "img"], "docker run: -l: invalid label '=x': empty name"),
        (["run", "--tmpfs", "run", "img"], "docker run: --tmpfs: 'run' is not an absolute path"),
        (["run", "--add-host", "db", "img"], "docker run: --add-host: invalid host entry 'db': expected host:ip"),
        (
            ["run", "--dns", "dns.google", "img"],
            "docker run: --dns: 'dns.google' does not appear to be an IPv4 or IPv6 address",
        ),
        (["run", "--network=", "img"], "docker run: --network: it is empty"),
        (["run", "--cap-add=", "img"], "docker run: --cap-add: it is empty"),
        # the other commands
        (["stop"], "docker stop: needs at least one container"),
        (["stop", "-t", "5"], "docker stop: needs at least one container"),
        (["stop", ""], "docker stop: empty container name"),
        (["stop", "-t", "soon", "x"], "docker stop: -t: invalid integer 'soon'"),
        (["stop", "-t", "-2", "x"], "docker stop: -t: use seconds, or -1 to wait without limit"),
        (["stop", "-s", "TERM", "x"], f"docker stop: unsupported flag -s {UNSUPPORTED}"),
        (["restart", "--signal=HUP", "x"], f"docker restart: unsupported flag --signal {UNSUPPORTED}"),
        (["kill", "-s", "NOPE", "x"], "docker kill: -s: invalid signal 'NOPE'"),
        (["kill"], "docker kill: needs at least one container"),
        (["rm", "-l", "x"], f"docker rm: unsupported flag -l {UNSUPPORTED}"),
        (["rm"], "docker rm: needs at least one container"),
        (["pull", "-a", "busybox"], "docker pull: -a is not supported: fleetlet pulls one tag, never all tags"),
        (
            ["pull", "--all-tags", "busybox"],
            "docker pull: --all-tags is not supported: fleetlet pulls one tag, never all tags",
        ),
        (["pull"], "docker pull: needs exactly one image (docker pull [OPTIONS] NAME[:TAG|@DIGEST])"),
        (["pull", "a", "b"], "docker pull: needs exactly one image (docker pull [OPTIONS] NAME[:TAG|@DIGEST])"),
        (["pull", "--platform", "linux/arm64", "busybox"], f"docker pull: unsupported flag --platform {UNSUPPORTED}"),
        (
            ["image", "pull", "Busybox"],
            "docker image pull: invalid image reference 'Busybox' (repository names must be lowercase)",
        ),
        (
            ["start", "-a", "x"],
            "docker start: -a is not supported: fleetlet does not attach to a container it starts (use docker run for "
            "a container the unit runs in the foreground)",
        ),
        (
            ["start", "--interactive", "x"],
            "docker start: --interactive is not supported: fleetlet does not attach to a container it starts (use "
            "docker run for a container the unit runs in the foreground)",
        ),
        (
            ["start", "-ai", "x"],
            "docker start: -a is not supported: fleetlet does not attach to a container it starts (use docker run for "
            "a container the unit runs in the foreground)",
        ),
        (
            ["exec", "web"],
            "docker exec: needs a container and a command (docker exec [OPTIONS] CONTAINER COMMAND [ARG...])",
        ),
        (["exec", "", "sh"], "docker exec: empty container name"),
        (["exec", "--privileged", "web", "sh"], f"docker exec: unsupported flag --privileged {UNSUPPORTED}"),
        (["exec", "-w", "tmp", "web", "sh"], "docker exec: -w: 'tmp' is not an absolute path"),
        (["inspect", "--type", "image", "busybox"], "docker inspect: --type: fleetlet inspects containers only"),
        (["inspect", "-s", "x"], f"docker inspect: unsupported flag -s {UNSUPPORTED}"),
        (["inspect"], "docker inspect: needs at least one container"),
    ],
)
def test_errors_name_the_problem(argv: list[str], message: str) -> None:
    with pytest.raises(DockerArgvError, match=f"^{re.escape(message)}$"):
        parse_docker_argv(["/usr/bin/docker", *argv])


@pytest.mark.parametrize("argv", [[], ["/bin/sh", "-c", "docker run img"], ["dockerd"], ["podman", "run", "img"]])
def test_only_docker_command_lines(argv: list[str]) -> None:
    with pytest.raises(DockerArgvError, match=r"^not a docker command line: "):
        parse_docker_argv(argv)


def test_errors_are_value_errors() -> None:
    assert issubclass(DockerArgvError, ValueError)


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("docker", True),
        ("/usr/bin/docker", True),
        ("/usr/local/bin/docker", True),
        ("/opt/docker/bin/docker", True),
        ("dockerd", False),
        ("/usr/bin/docker-compose", False),
        ("/docker/podman", False),
        ("Docker", False),
        ("", False),
    ],
)
def test_is_docker(argv0: str, expected: bool) -> None:
    assert is_docker(argv0) is expected


_TOKENS = st.sampled_from(
    [
        "run", "stop", "kill", "rm", "pull", "start", "restart", "exec", "inspect", "container", "image",
        "--", "-", "-d", "-it", "-dit", "--rm", "--rm=false", "--rm=x", "--name", "--name=", "-e", "-eA=1",
        "-p", "-p80", "-v", "--memory", "-m", "--cpus", "--entrypoint", "--restart", "--ulimit", "--add-host",
        "--dns", "--tmpfs", "--stop-signal", "--pull", "-t", "-s", "-f", "-a", "--type", "busybox", "a:b",
        "1.5", "512m", "nan", "1e999", "8080:80", "[::1]:1:2", "/a:/b:ro", "on-failure:x", "nofile=1:2",
        "host=::1", "SIGTERM", "@", ":", "=", "",
    ]
)  # fmt: skip


@given(st.lists(st.one_of(_TOKENS, st.text(max_size=12)), max_size=10))
def test_arbitrary_argv_raises_only_docker_argv_error(words: list[str]) -> None:
    try:
        command = parse_docker_argv(["docker", *words])
    except DockerArgvError:
        return
    assert isinstance(command, Run | Stop | Kill | Remove | Pull | Start | Restart | Exec | Inspect)
