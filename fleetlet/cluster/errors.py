"""The cluster's errors, in the tree of :mod:`fleetlet.errors`::

FleetletError
└── ClusterError               gossip with another member failed
    ├── PeerUnreachable        no connection, a timeout, or the connection broke: tried again later
    ├── ProtocolError          a peer sent something that is not fleetlet's gossip: the connection is dropped
    └── GossipRefused          a peer would not let this member in (.code, the peer's reason)
        └── DuplicateMachineId another member already has this machine ID (.machine_id)
"""

from __future__ import annotations

from typing import Final

from fleetlet.errors import FleetletError

# Why a peer refuses: the codes of a ``refuse`` message.
DUPLICATE_ID: Final = "duplicate-id"
BAD_KEY: Final = "bad-key"
NO_KEY: Final = "no-key"
SELF: Final = "self"


class ClusterError(FleetletError):
    """Base of the cluster's errors."""


class PeerUnreachable(ClusterError):
    """The peer could not be reached, did not answer in time, or the connection broke."""


class ProtocolError(ClusterError):
    """A message that is not what fleetlet's gossip sends."""


class GossipRefused(ClusterError):
    """The peer refused the connection; ``code`` says why (see the codes above)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class DuplicateMachineId(GossipRefused):
    """Another live member already has this machine ID: two agents cannot share one."""

    def __init__(self, machine_id: str, message: str) -> None:
        self.machine_id = machine_id
        super().__init__(DUPLICATE_ID, message)


def refusal(code: str, message: str, machine_id: str) -> GossipRefused:
    """The error for a peer's ``refuse`` of this member (``machine_id``), a DuplicateMachineId when it is one."""
    if code == DUPLICATE_ID:
        return DuplicateMachineId(machine_id, message)
    return GossipRefused(code, message)
