"""``fleetlet agent``: run this machine's agent in the foreground until SIGINT or SIGTERM.

The API listens on ``--listen`` (default ``127.0.0.1:49153``, loopback only) and on ``STATE_DIR/fleetlet.sock``.
The state directory (default ``/var/lib/fleetlet`` as root, else ``$XDG_STATE_HOME/fleetlet`` or
``~/.local/state/fleetlet``) holds the registry, the journals and, without ``/etc/machine-id``, the machine ID.
On SIGTERM running containers keep running, to be adopted by the next agent; ``--purge`` stops them first.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio

from fleetlet.agent.agent import AgentConfig, AgentStartupError, serve
from fleetlet.exec.docker_runtime import docker_host

DEFAULT_LISTEN = "127.0.0.1:49153"


def register(commands: Any) -> None:
    agent = commands.add_parser(
        "agent",
        help="run this machine's agent: API, registry, scheduler and units",
        description="Run the agent in the foreground. SIGTERM or Ctrl-C stops it, leaving containers running "
        "for the next agent to adopt (unless --purge).",
    )
    agent.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=_listen,
        default=_listen(DEFAULT_LISTEN),
        help=f"where the API listens besides STATE_DIR/fleetlet.sock (default: {DEFAULT_LISTEN})",
    )
    agent.add_argument(
        "--state-dir",
        type=Path,
        help="registry, journals and socket (default: /var/lib/fleetlet as root, else ~/.local/state/fleetlet)",
    )
    agent.add_argument("--machine-id", help="this machine's ID (default: /etc/machine-id, else one generated and kept)")
    agent.add_argument("--metadata", type=_metadata, default={}, metavar="K=V,...", help="this machine's metadata")
    agent.add_argument("--public-ip", default="", metavar="IP", help="the address other machines and users reach")
    agent.add_argument("--docker-host", help="the Docker engine (default: $DOCKER_HOST, else the local socket)")
    agent.add_argument("--purge", action="store_true", help="on shutdown, stop every unit instead of leaving it")
    agent.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    state_dir: Path = args.state_dir or _default_state_dir()
    host, port = args.listen
    try:
        machine_id = args.machine_id or _machine_id(state_dir)
        config = AgentConfig(
            state_dir=state_dir,
            machine_id=machine_id,
            host=host,
            port=port,
            docker_url=docker_host(args.docker_host),
            metadata=args.metadata,
            public_ip=args.public_ip,
            purge=args.purge,
        )
        anyio.run(serve, config)
    except AgentStartupError as exc:
        print(f"fleetlet agent: {exc}", file=sys.stderr)
        return 1
    return 0


def _default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/fleetlet")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "fleetlet"


def _machine_id(state_dir: Path) -> str:
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
        raise AgentStartupError(f"cannot keep a machine ID in {state_dir}: {exc.strerror or exc}") from exc
    return generated


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


def _metadata(value: str) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {item!r}")
        metadata[key.strip()] = val.strip()
    return metadata
