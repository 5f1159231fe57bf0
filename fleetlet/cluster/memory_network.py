"""A network in memory for gossip tests: members by address, connections as memory streams, links that fail.

Every message is encoded and decoded on its way, so what crosses is exactly what a websocket would carry, and the
handshake of :mod:`fleetlet.cluster.channel` runs as it does on the real transport. Tests make trouble with
:meth:`MemoryNetwork.partition` (messages between two addresses are lost, and their connections break) and
:meth:`MemoryNetwork.detach` (a member gone, as after ``kill -9``).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleetlet.cluster import channel as gossip_channel
from fleetlet.cluster.channel import Link, Listener
from fleetlet.cluster.errors import PeerUnreachable, ProtocolError
from fleetlet.cluster.wire import Hello, Message, decode, encode

log = logging.getLogger("fleetlet.cluster")

_BUFFER = 16


class MemoryChannel:
    """One end of a connection between two addresses."""

    def __init__(
        self,
        network: MemoryNetwork,
        local: str,
        remote: str,
        send: MemoryObjectSendStream[bytes],
        receive: MemoryObjectReceiveStream[bytes],
    ) -> None:
        self._network = network
        self._local, self._remote = local, remote
        self._send, self._receive = send, receive

    async def send(self, message: Message) -> None:
        if not self._network.reachable(self._local, self._remote):
            await self.aclose()
            raise PeerUnreachable(f"{self._remote} is unreachable")
        self._network.messages += 1
        try:
            await self._send.send(encode(message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise PeerUnreachable(f"connection to {self._remote} closed") from exc

    async def receive(self) -> Message:
        try:
            data = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise PeerUnreachable(f"connection to {self._remote} closed") from exc
        if not self._network.reachable(self._local, self._remote):
            await self.aclose()
            raise PeerUnreachable(f"{self._remote} is unreachable")
        return decode(data)

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


class MemoryNetwork:
    """Addresses to listeners; ``async with`` runs the listeners' sides of connections in its task group."""

    def __init__(self) -> None:
        self._listeners: dict[str, tuple[Listener, bytes | None]] = {}
        self._cut: set[frozenset[str]] = set()
        self._tg: TaskGroup | None = None
        self.messages = 0  # every message sent, for tests that count the traffic
        self.connections = 0  # every connection dialed

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    def attach(self, address: str, listener: Listener, key: bytes | None = None) -> None:
        self._listeners[address] = (listener, key)

    def detach(self, address: str) -> None:
        """The member at ``address`` is gone: no new connection reaches it, existing ones break."""
        self._listeners.pop(address, None)

    def partition(self, a: str, b: str, *, cut: bool = True) -> None:
        """Lose every message between ``a`` and ``b`` (``cut=False`` heals it)."""
        pair = frozenset((a, b))
        if cut:
            self._cut.add(pair)
        else:
            self._cut.discard(pair)

    def reachable(self, a: str, b: str) -> bool:
        return b in self._listeners and a in self._listeners and frozenset((a, b)) not in self._cut

    def dialer(self, address: str, key: bytes | None = None) -> MemoryDialer:
        return MemoryDialer(self, address, key)

    async def connect(self, local: str, remote: str, hello: Hello, key: bytes | None) -> Link:
        if self._tg is None:
            raise RuntimeError("use the network inside async with")
        if not self.reachable(local, remote):
            raise PeerUnreachable(f"cannot connect to {remote}")
        listener, listener_key = self._listeners[remote]
        self.connections += 1
        to_remote, from_local = anyio.create_memory_object_stream[bytes](_BUFFER)
        to_local, from_remote = anyio.create_memory_object_stream[bytes](_BUFFER)
        ours = MemoryChannel(self, local, remote, to_remote, from_remote)
        theirs = MemoryChannel(self, remote, local, to_local, from_local)
        self._tg.start_soon(self._serve, theirs, listener, listener_key)
        try:
            return await gossip_channel.dial(ours, hello, key)
        except BaseException:
            await ours.aclose()
            raise

    @staticmethod
    async def _serve(channel: MemoryChannel, listener: Listener, key: bytes | None) -> None:
        try:
            await gossip_channel.serve(channel, listener, key)
        except (PeerUnreachable, ProtocolError) as exc:
            log.debug("memory connection ended: %s", exc)
        finally:
            await channel.aclose()


class MemoryDialer:
    """Dials from one address of a MemoryNetwork."""

    def __init__(self, network: MemoryNetwork, address: str, key: bytes | None) -> None:
        self._network, self._address, self._key = network, address, key

    async def dial(self, address: str, hello: Hello) -> Link:
        return await self._network.connect(self._address, address, hello, self._key)
