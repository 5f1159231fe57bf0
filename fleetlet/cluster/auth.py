"""Proving knowledge of the cluster key without sending it: an HMAC challenge and response, both ways.

Each side of a gossip connection sends a fresh random nonce; each then proves it holds the key by the HMAC-SHA256
of both nonces, its role and its machine ID. A recorded proof is worthless on another connection (the nonces
differ), a listener's proof cannot be replayed as a dialer's (the role is in it), and a member that lacks the key
learns nothing it could use. Without a key, the proofs are empty and a member with a key refuses such a peer,
telling it why.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Final, Literal

from fleetlet.cluster.errors import BAD_KEY, NO_KEY
from fleetlet.errors import FleetletError

Role = Literal["dialer", "listener"]
MIN_KEY_BYTES: Final = 16
_CONTEXT: Final = b"fleetlet-gossip/1"


class ClusterKeyError(FleetletError):
    """The cluster key file cannot be used: its message is one line for the user."""


def load_key(path: Path) -> bytes:
    """The key in ``path`` (surrounding whitespace ignored, so ``openssl rand -hex 32 > key`` works)."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ClusterKeyError(f"cannot read the cluster key {path}: {exc.strerror or exc}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise ClusterKeyError(
            f"cluster key {path} is too short: {len(key)} bytes, at least {MIN_KEY_BYTES}"
            " (make one with: openssl rand -hex 32)"
        )
    return key


def new_nonce() -> str:
    return secrets.token_hex(16)


def prove(key: bytes | None, role: Role, machine_id: str, own_nonce: str, peer_nonce: str) -> str:
    """This side's proof for one connection; empty without a key."""
    if key is None:
        return ""
    message = b"\n".join(x.encode() for x in (role, machine_id, own_nonce, peer_nonce))
    return hmac.new(key, _CONTEXT + b"\n" + message, hashlib.sha256).hexdigest()


def check(key: bytes | None, role: Role, machine_id: str, peer_nonce: str, own_nonce: str, proof: str) -> str | None:
    """Whether the peer (of ``role``) proved the key; None if it did, else the refusal code of errors.

    A member without a key checks nothing: a peer that has one refuses it, which says more than this side could.
    """
    if key is None:
        return None
    if not proof:
        return NO_KEY
    expected = prove(key, role, machine_id, peer_nonce, own_nonce)
    return None if hmac.compare_digest(expected, proof) else BAD_KEY


_REGISTRY_CONTEXT: Final = b"fleetlet-registry/1"
REGISTRY_TOKEN_HEADER: Final = "X-Fleetlet-Cluster-Token"


def registry_token(key: bytes) -> str:
    """What a member sends with every call of the server's registry: proof of the key, without the key.

    A token derived once rather than a challenge per request: registry calls are short HTTP requests, and a
    challenge would double each one's round trips. Like the rest of the API on TCP it travels in the clear, so a
    listener on the network could replay it; the gossip's per-connection proofs cannot be replayed.
    """
    return hmac.new(key, _REGISTRY_CONTEXT, hashlib.sha256).hexdigest()


def check_registry_token(key: bytes | None, token: str | None) -> bool:
    """Whether a caller of the registry routes proved the key (always, when this member has none)."""
    if key is None:
        return True
    return token is not None and hmac.compare_digest(registry_token(key), token)
