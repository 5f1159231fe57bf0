"""One gossip connection, whatever carries it: the handshake both ways, then exchanges, over a message Channel.

A transport (websockets in :mod:`fleetlet.cluster.websocket`, memory streams in
:mod:`fleetlet.cluster.memory_network`) only moves messages; everything said on a connection is here, so the
fake network runs exactly the protocol the real one does, cluster key and refusals included.
"""

from __future__ import annotations

import logging
from typing import Protocol

from fleetlet.cluster import auth
from fleetlet.cluster.errors import NO_KEY, GossipRefused, ProtocolError, refusal
from fleetlet.cluster.wire import Ack, Ack2, Hello, Message, Proof, Ready, Refuse, Syn, Welcome

log = logging.getLogger("fleetlet.cluster")


class Channel(Protocol):
    """Messages to and from one peer, in order. Errors: PeerUnreachable when the connection is gone,
    ProtocolError when the peer sent garbage."""

    async def send(self, message: Message) -> None: ...

    async def receive(self) -> Message: ...

    async def aclose(self) -> None: ...


class Listener(Protocol):
    """What answers inbound gossip: the gossiper."""

    def admit(self, hello: Hello) -> Welcome:
        """Let the dialer in, or raise GossipRefused saying why; the welcome's nonce and proof are filled here."""

    def on_syn(self, syn: Syn) -> Ack: ...

    def on_ack2(self, ack2: Ack2) -> None: ...


class Dialer(Protocol):
    """Opens connections to peers: a handshaken Link, or PeerUnreachable / GossipRefused / ProtocolError."""

    async def dial(self, address: str, hello: Hello) -> Link: ...


class Link:
    """A dialed connection after its handshake: what the gossiper exchanges over. Use one exchange at a time."""

    def __init__(self, channel: Channel, peer: Welcome) -> None:
        self.peer = peer
        self._channel = channel

    async def exchange(self, syn: Syn) -> Ack:
        await self._channel.send(syn)
        reply = await self._channel.receive()
        if not isinstance(reply, Ack):
            raise ProtocolError(f"expected ack, got {type(reply).__name__.lower()}")
        return reply

    async def finish(self, ack2: Ack2) -> None:
        await self._channel.send(ack2)

    async def aclose(self) -> None:
        await self._channel.aclose()


async def dial(channel: Channel, hello: Hello, key: bytes | None) -> Link:
    """Introduce this member on a fresh channel and check the listener's proof; a Link, or GossipRefused."""
    nonce = auth.new_nonce()
    await channel.send(Hello(hello.id, hello.generation, hello.address, nonce, hello.version))
    welcome = await channel.receive()
    if isinstance(welcome, Refuse):
        raise refusal(welcome.code, welcome.message, hello.id)
    if not isinstance(welcome, Welcome):
        raise ProtocolError(f"expected welcome, got {type(welcome).__name__.lower()}")
    problem = auth.check(key, "listener", welcome.id, welcome.nonce, nonce, welcome.proof)
    if problem is not None:
        message = _key_problem(problem, welcome.id)
        await _refuse(channel, problem, message)
        raise GossipRefused(problem, message)
    await channel.send(Proof(auth.prove(key, "dialer", hello.id, nonce, welcome.nonce)))
    ready = await channel.receive()
    if isinstance(ready, Refuse):
        raise refusal(ready.code, ready.message, hello.id)
    if not isinstance(ready, Ready):
        raise ProtocolError(f"expected ready, got {type(ready).__name__.lower()}")
    return Link(channel, welcome)


async def serve(channel: Channel, listener: Listener, key: bytes | None) -> None:
    """Answer one inbound connection until it closes: the handshake, then syn → ack and ack2.

    A refused dialer is told why before the channel closes, and the refusal is logged here too: both sides of
    a refused connection say so. Returns when the peer goes; raises ProtocolError on garbage.
    """
    hello = await channel.receive()
    if not isinstance(hello, Hello):
        raise ProtocolError(f"expected hello, got {type(hello).__name__.lower()}")
    try:
        welcome = listener.admit(hello)
    except GossipRefused as exc:
        log.error("refused gossip from machine %s at %s: %s", hello.id, hello.address, exc)
        await _refuse(channel, exc.code, str(exc))
        return
    nonce = auth.new_nonce()
    proof = auth.prove(key, "listener", welcome.id, nonce, hello.nonce)
    await channel.send(Welcome(welcome.id, welcome.generation, nonce, proof))
    answer = await channel.receive()
    if isinstance(answer, Refuse):
        log.error("machine %s at %s refused this member: %s", hello.id, hello.address, answer.message)
        return
    if not isinstance(answer, Proof):
        raise ProtocolError(f"expected proof, got {type(answer).__name__.lower()}")
    problem = auth.check(key, "dialer", hello.id, hello.nonce, nonce, answer.proof)
    if problem is not None:
        why = _key_problem(problem, hello.id)
        log.error("refused gossip from machine %s at %s: %s", hello.id, hello.address, why)
        await _refuse(channel, problem, why)
        return
    await channel.send(Ready())
    while True:
        message = await channel.receive()
        if isinstance(message, Syn):
            await channel.send(listener.on_syn(message))
        elif isinstance(message, Ack2):
            listener.on_ack2(message)
        else:
            raise ProtocolError(f"expected syn or ack2, got {type(message).__name__.lower()}")


def _key_problem(code: str, peer: str) -> str:
    if code == NO_KEY:
        return f"machine {peer} did not prove the cluster key (started without --cluster-key?)"
    return f"machine {peer} proved a different cluster key"


async def _refuse(channel: Channel, code: str, message: str) -> None:
    try:
        await channel.send(Refuse(code, message))
    except Exception:
        log.debug("could not send a refusal", exc_info=True)
