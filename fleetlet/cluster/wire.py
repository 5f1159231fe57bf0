"""Gossip messages and their JSON (orjson) form; decoding checks every field, since peers are not trusted.

A connection starts with a handshake, then carries exchanges:

- ``hello`` (dialer → listener): who dials (``id``, ``generation``, ``address``), its agent ``version`` and a
  fresh ``nonce``;
- ``welcome`` (listener): who answers, its own ``nonce`` and ``proof`` of the cluster key; or ``refuse`` with a
  ``code`` and a ``message`` (:mod:`fleetlet.cluster.errors`), after which the listener closes;
- ``proof`` (dialer): its proof of the key; answered ``ready`` or ``refuse``;
- ``syn`` (dialer): its digest; ``ack`` (listener): the deltas the dialer lacks and the listener's digest;
  ``ack2`` (dialer): the deltas the listener lacks, if it lacks any (else no ack2). Three messages at most,
  and each side has what the other knew.

Deltas travel as ``[member, generation, [[key, version, value], ...]]``. A digest travels as two lists,
``[[member, ...], [generation, version, heartbeat, generation, version, heartbeat, ...]]``: every exchange carries
two digests of every member, and this form is both smaller than an object of triples and checked without a Python
loop (the types of a flat list are read in C), which at 100 members is most of what decoding an exchange costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

from fleetlet.cluster.errors import ProtocolError
from fleetlet.cluster.state import Delta, Digest, Entry, Version


@dataclass(frozen=True, slots=True)
class Hello:
    id: str
    generation: int
    address: str
    nonce: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class Welcome:
    id: str
    generation: int
    nonce: str = ""
    proof: str = ""


@dataclass(frozen=True, slots=True)
class Proof:
    proof: str


@dataclass(frozen=True, slots=True)
class Ready:
    pass


@dataclass(frozen=True, slots=True)
class Refuse:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Syn:
    digest: Mapping[str, Version]


@dataclass(frozen=True, slots=True)
class Ack:
    digest: Mapping[str, Version]
    deltas: Sequence[Delta]


@dataclass(frozen=True, slots=True)
class Ack2:
    deltas: Sequence[Delta]


Message: TypeAlias = Hello | Welcome | Proof | Ready | Refuse | Syn | Ack | Ack2


def encode(message: Message) -> bytes:
    doc: dict[str, Any]
    match message:
        case Hello():
            doc = {"type": "hello", "id": message.id, "generation": message.generation, "address": message.address}
            doc |= {"nonce": message.nonce, "version": message.version}
        case Welcome():
            doc = {"type": "welcome", "id": message.id, "generation": message.generation}
            doc |= {"nonce": message.nonce, "proof": message.proof}
        case Proof():
            doc = {"type": "proof", "proof": message.proof}
        case Ready():
            doc = {"type": "ready"}
        case Refuse():
            doc = {"type": "refuse", "code": message.code, "message": message.message}
        case Syn():
            doc = {"type": "syn", "digest": _digest_doc(message.digest)}
        case Ack():
            doc = {"type": "ack", "digest": _digest_doc(message.digest), "deltas": _deltas_doc(message.deltas)}
        case Ack2():
            doc = {"type": "ack2", "deltas": _deltas_doc(message.deltas)}
    return orjson.dumps(doc)


def decode(data: bytes | str) -> Message:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = doc.get("type")
    if kind == "hello":
        return Hello(_str(doc, "id"), _int(doc, "generation"), _str(doc, "address"), _str(doc, "nonce"),
                     _str(doc, "version"))  # fmt: skip
    if kind == "welcome":
        return Welcome(_str(doc, "id"), _int(doc, "generation"), _str(doc, "nonce"), _str(doc, "proof"))
    if kind == "proof":
        return Proof(_str(doc, "proof"))
    if kind == "ready":
        return Ready()
    if kind == "refuse":
        return Refuse(_str(doc, "code"), _str(doc, "message"))
    if kind == "syn":
        return Syn(_digest(doc.get("digest")))
    if kind == "ack":
        return Ack(_digest(doc.get("digest")), _deltas(doc.get("deltas")))
    if kind == "ack2":
        return Ack2(_deltas(doc.get("deltas")))
    raise ProtocolError(f"unknown message type {kind!r}")


def _digest_doc(versions: Mapping[str, Version]) -> list[list[Any]]:
    digest = Digest.of(versions)
    return [digest.members, digest.numbers]


def _deltas_doc(deltas: Sequence[Delta]) -> list[Any]:
    return [[d.member, d.generation, [[key, entry.version, entry.value] for key, entry in d.entries]] for d in deltas]


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{key!r} must be a string")
    return value


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if not _is_int(value):
        raise ProtocolError(f"{key!r} must be an integer")
    assert isinstance(value, int)
    return value


def _is_int(value: object) -> bool:
    return type(value) is int and value >= 0  # not bool, which is an int subclass


_STR: frozenset[type] = frozenset({str})
_INT: frozenset[type] = frozenset({int})  # not bool, which is an int subclass but another type


def _digest(doc: object) -> Digest:
    """A digest's two lists, checked with no Python loop per member: ``set(map(type, ...))`` runs in C."""
    if type(doc) is not list or len(doc) != 2:
        raise ProtocolError("a digest must be [[member, ...], [generation, version, heartbeat, ...]]")
    members, numbers = doc
    if type(members) is not list or type(numbers) is not list or len(numbers) != 3 * len(members):
        raise ProtocolError("a digest must have three integers (generation, version, heartbeat) per member")
    if not _STR.issuperset(map(type, members)):
        raise ProtocolError("a digest's members must be strings")
    if not _INT.issuperset(map(type, numbers)) or (numbers and min(numbers) < 0):
        raise ProtocolError("a digest's generations, versions and heartbeats must be integers >= 0")
    index = dict(zip(members, range(0, len(numbers), 3), strict=True))
    if len(index) != len(members):
        raise ProtocolError("a digest names a member twice")
    return Digest(members, numbers, index)


def _deltas(doc: object) -> list[Delta]:
    """The deltas of a message; the hottest decoding of all (every exchange carries every member's heartbeat)."""
    if not isinstance(doc, list):
        raise ProtocolError("deltas must be a list")
    deltas: list[Delta] = []
    try:
        for member, generation, raw in doc:
            if type(member) is not str or not _is_int(generation) or type(raw) is not list:
                raise ProtocolError("a delta must be [member, generation, [entries]]")
            entries: list[tuple[str, Entry]] = []
            for key, version, value in raw:
                if type(key) is not str or not _is_int(version):
                    raise ProtocolError(f"an entry of {member!r} must be [key, version, value]")
                entries.append((key, Entry(value, version)))
            deltas.append(Delta(member, generation, tuple(entries)))
    except (TypeError, ValueError):  # an item that does not unpack
        raise ProtocolError("a delta must be [member, generation, [[key, version, value], ...]]") from None
    return deltas
