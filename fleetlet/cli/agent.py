"""``fleetlet agent``: run this machine's agent in the foreground until SIGINT or SIGTERM.

Every flag is also a ``FLEETLET_<FLAG>`` variable and a key of the TOML file of ``--config`` (or
``FLEETLET_CONFIG``): flags win over variables, variables over the file, the file over the defaults
(:mod:`fleetlet.agent.config` has the rules; ``configs/fleetlet.toml`` every setting). SIGHUP reloads the metadata
from the file. The API listens on ``--listen`` (default ``127.0.0.1:49153``, loopback only) and on
``STATE_DIR/fleetlet.sock``. On SIGTERM running containers keep running, to be adopted by the next agent;
``--purge`` stops them first.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

# The agent's modules (its configuration's among them) bring the Docker client, the scheduler and the registry
# backends: about 100 ms that every command would pay at start to build its parser. They are imported when the
# agent runs; the parser needs only the settings' names.
from fleetlet.agent.setting_names import DEFAULT_LISTEN, flag_name

# Flag: (metavar, help). Defaults are None so that a flag not given leaves the setting to the other layers.
_FLAGS: dict[str, tuple[str, str]] = {
    "listen": ("HOST:PORT", f"the API's address besides STATE_DIR/fleetlet.sock (default: {DEFAULT_LISTEN})"),
    "state_dir": (
        "DIR",
        "registry, journals and socket (default: /var/lib/fleetlet as root, else ~/.local/state/fleetlet)",
    ),
    "machine_id": ("ID", "this machine's ID (default: /etc/machine-id, else one generated and kept)"),
    "metadata": ("K=V,...", "this machine's metadata (pins it: SIGHUP then leaves it)"),
    "public_ip": ("IP", "the address other machines and users reach"),
    "docker_host": ("URL", "the Docker engine (default: $DOCKER_HOST, else the local socket)"),
    "registry": (
        "URL",
        "sqlite:PATH, a relative PATH in the state directory (default: sqlite:registry.sqlite), or "
        "etcd://HOST:PORT[,HOST:PORT...][/PREFIX/] (etcds:// over TLS): every agent on one etcd may lead",
    ),
    "etcd_cafile": ("FILE", "the CA that signed etcd's certificate (etcds://; default: the system's)"),
    "etcd_certfile": ("FILE", "a client certificate for etcd's --client-cert-auth (with --etcd-keyfile)"),
    "etcd_keyfile": ("FILE", "the client certificate's key"),
    "etcd_username": ("USER", "an etcd user to authenticate as (with --etcd-password-file)"),
    "etcd_password_file": ("FILE", "a file holding that user's password"),
    "etcd_history": (
        "N",
        "revisions of etcd's history to keep, compacting the rest (default: 10000); 0 leaves compaction to etcd "
        "(--auto-compaction-retention): do that on an etcd shared with other programs",
    ),
    "leader_ttl": (
        "SECONDS",
        "how long a leader's term lasts unrenewed: a dead leader's successor takes over "
        "about this much later (default: 5)",
    ),
    "join": ("URL", "join the cluster through this member (repeatable; URL,URL in the variable and the file)"),
    "advertise": ("URL", "the URL the other members reach this agent at (default: http://LISTEN)"),
    "cluster_key": ("FILE", "a shared secret every member must prove it knows (without it: loopback only)"),
}


def register(commands: Any) -> None:
    agent = commands.add_parser(
        "agent",
        help="run this machine's agent: API, registry, scheduler and units",
        description="Run the agent in the foreground. SIGTERM or Ctrl-C stops it, leaving containers running "
        "for the next agent to adopt (unless --purge); SIGHUP reloads the metadata from the config file. "
        "Every flag is also a FLEETLET_<FLAG> variable and a key of the config file; flags win over "
        "variables, variables over the file.",
    )
    agent.add_argument("--config", metavar="FILE", help="a TOML config file (default: $FLEETLET_CONFIG, else none)")
    for setting, (metavar, help_text) in _FLAGS.items():
        action = "append" if setting == "join" else "store"
        agent.add_argument(flag_name(setting), dest=setting, metavar=metavar, help=help_text, action=action)
    agent.add_argument(
        "--purge",
        action=argparse.BooleanOptionalAction,
        help="on shutdown, stop every unit instead of leaving it (default: no)",
    )
    agent.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import anyio

    from fleetlet.agent import config
    from fleetlet.agent.agent import AgentStartupError, serve

    try:
        texts = {setting: getattr(args, setting) for setting in _FLAGS}
        texts["join"] = ",".join(args.join) if args.join else None
        flags = config.from_flags(texts, purge=args.purge)
        loaded = config.load(flags, args.config, os.environ)
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
        anyio.run(serve, loaded.config, loaded.reload_metadata)
    except (config.ConfigError, AgentStartupError) as exc:  # what the user can fix, in one line
        print(f"fleetlet agent: {exc}", file=sys.stderr)
        return 1
    return 0
