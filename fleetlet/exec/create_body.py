"""The Engine API's ``POST /containers/create`` body for a :class:`~fleetlet.exec.docker_argv.RunSpec`.

The body is what the docker CLI would send for the same ``docker run``, with two differences that keep the
container under fleetlet's supervision: ``AutoRemove`` is never set, because fleetlet reads the exit status
before removing a ``--rm`` container itself; and the ownership labels fleetlet passes in win over the unit's
own labels, so a unit cannot disguise its container as another unit's. Unset fields are left out rather than
sent as nulls, so the engine applies its own defaults exactly as it does for the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fleetlet.exec.docker_argv import RunSpec


def create_body(spec: RunSpec, *, env: Sequence[str], labels: Mapping[str, str]) -> dict[str, Any]:
    """The JSON body to create ``spec``'s container.

    ``env`` is the final ``NAME=value`` list (bare names and env files already resolved by the caller);
    ``labels`` are fleetlet's ownership labels.
    """
    body: dict[str, Any] = {"Image": spec.image}
    if spec.command:
        body["Cmd"] = list(spec.command)
    if spec.entrypoint is not None:
        # [""] is how the engine is told to drop the image's entrypoint, as the CLI does for --entrypoint "".
        body["Entrypoint"] = list(spec.entrypoint) or [""]
    if env:
        body["Env"] = list(env)
    _put(body, "Hostname", spec.hostname)
    _put(body, "User", spec.user)
    _put(body, "WorkingDir", spec.workdir)
    merged = {**spec.labels, **labels}
    if merged:
        body["Labels"] = merged
    if spec.tty:
        body["Tty"] = True
    if spec.interactive:
        body["OpenStdin"] = True
    # Output goes to the engine's log driver either way; fleetlet reads it back through the logs endpoint.
    body["AttachStdout"] = True
    body["AttachStderr"] = True
    exposed = dict.fromkeys([*(mapping.key for mapping in spec.publish), *spec.expose])
    if exposed:
        body["ExposedPorts"] = {port: {} for port in exposed}
    anonymous = [volume.target for volume in spec.volumes if not volume.source]
    if anonymous:
        body["Volumes"] = {target: {} for target in anonymous}
    _put(body, "StopSignal", spec.stop_signal)
    _put(body, "StopTimeout", spec.stop_timeout)
    body["HostConfig"] = _host_config(spec)
    return body


def _host_config(spec: RunSpec) -> dict[str, Any]:
    host: dict[str, Any] = {}
    binds = [volume.bind for volume in spec.volumes if volume.source]
    if binds:
        host["Binds"] = binds
    bindings: dict[str, list[dict[str, str]]] = {}
    for mapping in spec.publish:
        bindings.setdefault(mapping.key, []).append({"HostIp": mapping.host_ip, "HostPort": mapping.host_port})
    if bindings:
        host["PortBindings"] = bindings
    if spec.publish_all:
        host["PublishAllPorts"] = True
    _put(host, "NetworkMode", spec.network)
    _put(host, "Memory", spec.memory)
    _put(host, "NanoCpus", spec.nano_cpus)
    if spec.privileged:
        host["Privileged"] = True
    if spec.cap_add:
        host["CapAdd"] = list(spec.cap_add)
    if spec.cap_drop:
        host["CapDrop"] = list(spec.cap_drop)
    if spec.log_driver is not None or spec.log_opts:
        # An empty Type keeps the engine's default driver, with the options given.
        host["LogConfig"] = {"Type": spec.log_driver or "", "Config": dict(spec.log_opts)}
    if spec.restart is not None:
        host["RestartPolicy"] = {"Name": spec.restart.name, "MaximumRetryCount": spec.restart.max_retries}
    if spec.extra_hosts:
        host["ExtraHosts"] = list(spec.extra_hosts)
    if spec.dns:
        host["Dns"] = list(spec.dns)
    _put(host, "Init", spec.init)  # False is sent when given: it overrides a daemon configured with init
    if spec.read_only:
        host["ReadonlyRootfs"] = True
    if spec.tmpfs:
        host["Tmpfs"] = dict(spec.tmpfs)
    _put(host, "ShmSize", spec.shm_size)
    if spec.ulimits:
        host["Ulimits"] = [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in spec.ulimits]
    return host


def _put(target: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        target[key] = value
