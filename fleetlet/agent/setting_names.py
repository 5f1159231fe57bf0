"""The agent's settings by name: the config file's keys, and the flags and variables derived from them.

A module of its own, importing nothing of the agent, so that the command line builds ``fleetlet agent``'s parser
without loading the agent (its Docker client, scheduler and registry backends); :mod:`fleetlet.agent.config`
reads the settings by the same names.
"""

from __future__ import annotations

from typing import Final

DEFAULT_LISTEN: Final = "127.0.0.1:49153"
CONFIG_VARIABLE: Final = "FLEETLET_CONFIG"
ENV_PREFIX: Final = "FLEETLET_"
# The settings in the order a user meets them: the file's keys; flags and variables derive from them.
SETTINGS: Final = (
    "listen",
    "state_dir",
    "machine_id",
    "metadata",
    "public_ip",
    "docker_host",
    "registry",
    "etcd_cafile",
    "etcd_certfile",
    "etcd_keyfile",
    "etcd_username",
    "etcd_password_file",
    "etcd_history",
    "leader_ttl",
    "join",
    "advertise",
    "cluster_key",
    "purge",
)


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def variable_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()
