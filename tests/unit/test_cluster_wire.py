"""Gossip messages on the wire: every message survives a round trip, and a malformed digest is refused whole."""

from __future__ import annotations

import orjson
import pytest

from fleetlet.cluster.errors import ProtocolError
from fleetlet.cluster.state import Delta, Entry
from fleetlet.cluster.wire import Ack, Ack2, Hello, Message, Proof, Ready, Refuse, Syn, Welcome, decode, encode

DIGEST = {"a": (7, 3, 12), "b": (1, 0, 0)}
DELTAS = [Delta("a", 7, (("machine", Entry({"address": "x"}, 1)), ("unit/x", Entry(None, 3))))]


@pytest.mark.parametrize(
    "message",
    [
        Hello("a", 7, "http://a", "n", "1.0"),
        Welcome("b", 8, "n2", "proof"),
        Proof("p"),
        Ready(),
        Refuse("self", "no"),
        Syn(DIGEST),
        Syn({}),
        Ack(DIGEST, DELTAS),
        Ack2(DELTAS),
        Ack2([]),
    ],
)
def test_every_message_survives_a_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


def test_a_digest_travels_as_members_then_their_numbers_flat() -> None:
    assert orjson.loads(encode(Syn(DIGEST)))["digest"] == [["a", "b"], [7, 3, 12, 1, 0, 0]]


@pytest.mark.parametrize(
    "digest",
    [
        {"a": [7, 3, 12]},  # the old form, an object
        [["a"]],
        [["a"], [7, 3, 12], []],
        [["a"], [7, 3]],  # short of a number
        [["a", "b"], [7, 3, 12]],
        [[1], [7, 3, 12]],  # a member that is no string
        [["a"], [7, 3, True]],  # a bool is no integer
        [["a"], [7, 3.0, 12]],
        [["a"], [7, -1, 12]],
        [["a"], [7, "3", 12]],
        [["a"], None],
        [["a", "a"], [7, 3, 12, 7, 3, 13]],  # a member twice
        "a",
    ],
)
def test_a_malformed_digest_is_refused(digest: object) -> None:
    with pytest.raises(ProtocolError):
        decode(orjson.dumps({"type": "syn", "digest": digest}))
