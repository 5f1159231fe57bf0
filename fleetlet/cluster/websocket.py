"""Gossip over aiohttp websockets: ``/v1/gossip`` on every agent's API, and the dialer that connects to it.

A member's gossip address is its API's base URL (``http://10.0.0.5:4001``); the connection is a websocket at
``/v1/gossip`` under it, one binary message per gossip message (orjson). Connections stay open between rounds,
so a round costs three messages, not a TCP and HTTP handshake. What is said on them is
:mod:`fleetlet.cluster.channel`'s; this module only moves the bytes and maps aiohttp's failures to
:class:`PeerUnreachable`.
"""

from __future__ import annotations

import logging
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web

from fleetlet.cluster import channel as gossip_channel
from fleetlet.cluster.channel import Link, Listener
from fleetlet.cluster.errors import PeerUnreachable, ProtocolError
from fleetlet.cluster.wire import Hello, Message, decode, encode

log = logging.getLogger("fleetlet.cluster")

GOSSIP_PATH: Final = "/v1/gossip"
# A message carries at most state.DEFAULT_MAX_ENTRIES entries; unit states are small, so this is ample.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
CONNECT_TIMEOUT: Final = 3.0
GOING_AWAY: Final = 1001

_Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


class WebSocketChannel:
    """One gossip connection over a websocket, either end."""

    def __init__(self, socket: _Socket, peer: str) -> None:
        self._socket = socket
        self._peer = peer

    async def send(self, message: Message) -> None:
        try:
            await self._socket.send_bytes(encode(message))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            # aiohttp raises ConnectionResetError, or RuntimeError for a closing socket.
            raise PeerUnreachable(f"connection to {self._peer} broke: {exc}") from exc

    async def receive(self) -> Message:
        message = await self._socket.receive()
        if message.type in _CLOSED:
            raise PeerUnreachable(f"{self._peer} closed the connection")
        if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            raise ProtocolError(f"unexpected websocket message {message.type.name} from {self._peer}")
        return decode(message.data)

    async def aclose(self) -> None:
        await self._socket.close()


def gossip_url(address: str) -> str:
    return address.rstrip("/") + GOSSIP_PATH


class WebSocketDialer:
    """Dials peers' ``/v1/gossip`` over one aiohttp session; :meth:`aclose` when done."""

    def __init__(self, key: bytes | None, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self._key = key
        self._timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def dial(self, address: str, hello: Hello) -> Link:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            socket = await self._session.ws_connect(
                gossip_url(address),
                timeout=aiohttp.ClientWSTimeout(ws_close=self._timeout),
                max_msg_size=MAX_MESSAGE_BYTES,
                autoping=True,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerUnreachable(f"cannot connect to {address}: {exc or type(exc).__name__}") from exc
        channel = WebSocketChannel(socket, address)
        try:
            return await gossip_channel.dial(channel, hello, self._key)
        except BaseException:
            await channel.aclose()
            raise

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class GossipEndpoint:
    """The server side: ``/v1/gossip`` answering for ``listener``; connections close when the app shuts down."""

    def __init__(self, listener: Listener, key: bytes | None) -> None:
        self._listener = listener
        self._key = key
        self._open: set[web.WebSocketResponse] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get(GOSSIP_PATH, self._handle)]

    async def close(self, app: web.Application | None = None) -> None:
        """Close every open connection (an ``on_shutdown`` hook): the peers dial again, elsewhere or later."""
        for socket in list(self._open):
            await socket.close(code=GOING_AWAY, message=b"shutting down")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=True)
        await socket.prepare(request)
        self._open.add(socket)
        peer = request.remote or "a peer"
        try:
            await gossip_channel.serve(WebSocketChannel(socket, peer), self._listener, self._key)
        except PeerUnreachable:
            pass  # the peer went: it dials again when it wants to
        except ProtocolError as exc:
            log.warning("dropping gossip from %s: %s", peer, exc)
        finally:
            self._open.discard(socket)
            await socket.close()
        return socket
