"""One loopback server for HTTP and WebSocket on the same port, built on sans-I/O parsers
(``h11`` for HTTP/1.1, ``websockets``' protocol for RFC 6455) and asyncio's transports.

Used by the embedded exchange and by the broker's own port. Why not a framework: fan-out wants
to frame a notification once and write the same bytes to every subscriber's transport
(``bench/broker_port.py`` measures it against ``websockets.broadcast``), and the exchange must
answer oversize frames with Deribit's JSON-RPC error rather than a close. Writing the frame
header ourselves is a few lines; parsing, handshakes, pings, closes and fragmentation stay with ``websockets``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import h11
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol

from .wslog import websockets_logger

log = logging.getLogger("deribit_kit.transport.server")

MAX_FRAME_BYTES = 1 << 20
"""Frames above this close the connection with 1009; smaller ones reach the handler, which
answers Deribit's -32600 for anything above 32 kB."""
MAX_HTTP_BODY = 1 << 20
MAX_HEAD_BYTES = 64 * 1024


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (what a server sends)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


@dataclass(slots=True)
class HttpRequest:
    """A complete HTTP request."""

    method: str
    target: str  # raw request target, path plus query, exactly as sent
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str

    @property
    def path(self) -> str:
        """The target's path, without the query string."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (blank values kept; the last of a repeated name wins)."""
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))


@dataclass(slots=True)
class HttpResponse:
    """An HTTP response to send."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


class WsHandler(Protocol):
    """What a server application implements."""

    def ws_path_ok(self, path: str) -> bool:
        """Whether a WebSocket upgrade to ``path`` is accepted (otherwise a 404)."""

    # optional: ``ws_refuse(path) -> (status, text) | None`` refuses an upgrade with an HTTP status

    def ws_open(self, conn: WsConnection) -> None:
        """A WebSocket connection was accepted."""

    def ws_message(self, conn: WsConnection, data: bytes) -> None:
        """One complete text or binary message arrived on ``conn``."""

    def ws_close(self, conn: WsConnection) -> None:
        """``conn`` is closed (by either side, or the TCP connection was lost)."""

    async def http(self, request: HttpRequest) -> HttpResponse:
        """Answer one plain HTTP request."""


class WsConnection:
    """One accepted WebSocket connection.

    ``send`` frames and writes immediately; ``send_frame`` writes bytes already framed by
    :func:`text_frame` (the fan-out path). ``buffered`` is the transport's pending output, which a
    server uses to spot slow readers.
    """

    __slots__ = ("_ws", "closed", "path", "peer", "state", "transport")

    def __init__(self, transport: asyncio.Transport, ws: ServerProtocol, peer: str, path: str) -> None:
        self.transport = transport
        self._ws = ws
        self.peer = peer
        self.path = path
        self.closed = False
        self.state: Any = None  # owned by the handler

    def send(self, payload: bytes) -> None:
        """Frame ``payload`` as one text frame and write it now (dropped once closed or closing)."""
        if not self.closed and not self.transport.is_closing():
            self.transport.write(text_frame(payload))

    def send_frame(self, frame: bytes) -> None:
        """Write a frame built by :func:`text_frame` (dropped once closed or closing)."""
        if not self.closed and not self.transport.is_closing():
            self.transport.write(frame)

    @property
    def buffered(self) -> int:
        """Bytes written but not yet sent by the transport."""
        return self.transport.get_write_buffer_size()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the TCP connection ends when the peer answers or soon after."""
        if self.closed or self._ws.state is not State.OPEN:
            return
        self._ws.send_close(code, reason[:120])
        for chunk in self._ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
        loop = asyncio.get_running_loop()
        loop.call_later(2.0, self.abort)

    def abort(self) -> None:
        """Drop the TCP connection at once (as a network failure would)."""
        self.transport.abort()


class _Conn(asyncio.Protocol):
    """Per-TCP-connection state machine: HTTP until an Upgrade, then WebSocket."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.h11: h11.Connection | None = None
        self.ws: ServerProtocol | None = None
        self.wsconn: WsConnection | None = None
        self.peer = ""
        self.fragments: list[bytes] | None = None
        self.http_task: asyncio.Task[None] | None = None
        self.http_request: tuple[h11.Request, bytearray] | None = None

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # any transport with write/abort will do (asyncio's, uvloop's, TLS)
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and self.server.send_buffer:
            # a small kernel send buffer keeps a slow reader's backlog in user space, where
            # ``WsConnection.buffered`` sees it (otherwise megabytes hide in the socket)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.send_buffer)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)
        if self.wsconn is not None and not self.wsconn.closed:
            self.wsconn.closed = True
            try:
                self.server.handler.ws_close(self.wsconn)
            except Exception:
                log.exception("ws_close handler failed")
        if self.http_task is not None:
            self.http_task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self._ws_data(data)
        elif self.h11 is not None:
            self._http_data(data)
        else:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD_BYTES:
                    self._plain_error(431, b"request header too large")
                return
            head = bytes(self.buf[:end]).lower()
            raw = bytes(self.buf)
            self.buf.clear()
            if b"\r\nupgrade: websocket" in head or b"\r\nupgrade:websocket" in head:
                self._ws_start(raw)
            else:
                self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
                self._http_data(raw)

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.receive_eof()
            self._ws_flush()
        return None

    # ---- WebSocket
    def _ws_start(self, raw: bytes) -> None:
        assert self.transport is not None
        ws = ServerProtocol(max_size=MAX_FRAME_BYTES, logger=websockets_logger("server"))
        self.ws = ws
        ws.receive_data(raw)
        events = ws.events_received()
        request = events[0] if events and isinstance(events[0], WsRequest) else None
        if request is None:
            self._ws_flush()
            self.transport.close()
            return
        path = urlsplit(request.path).path
        refuse = getattr(self.server.handler, "ws_refuse", None)
        refusal = refuse(path) if refuse is not None else None
        if not self.server.handler.ws_path_ok(path):
            response = ws.reject(404, f"no WebSocket endpoint at {path}\n")
        elif refusal is not None:
            response = ws.reject(refusal[0], refusal[1] + "\n")  # e.g. 429 over a connection limit
        else:
            response = ws.accept(request)
        ws.send_response(response)
        self._ws_flush()
        if response.status_code != 101:
            self.transport.close()
            return
        self.wsconn = WsConnection(self.transport, ws, self.peer, path)
        try:
            self.server.handler.ws_open(self.wsconn)
        except Exception:
            log.exception("ws_open handler failed")
        self._ws_events()

    def _ws_data(self, data: bytes) -> None:
        assert self.ws is not None
        self.ws.receive_data(data)
        self._ws_events()

    def _ws_events(self) -> None:
        ws, conn = self.ws, self.wsconn
        assert ws is not None
        for ev in ws.events_received():
            if not isinstance(ev, Frame) or conn is None:
                continue
            op = ev.opcode
            if op is Opcode.TEXT or op is Opcode.BINARY:
                if ev.fin:
                    self._deliver(conn, bytes(ev.data))
                else:
                    self.fragments = [bytes(ev.data)]
            elif op is Opcode.CONT and self.fragments is not None:
                self.fragments.append(bytes(ev.data))
                if ev.fin:
                    data, self.fragments = b"".join(self.fragments), None
                    self._deliver(conn, data)
        self._ws_flush()

    def _deliver(self, conn: WsConnection, data: bytes) -> None:
        try:
            self.server.handler.ws_message(conn, data)
        except Exception:
            log.exception("ws_message handler failed for %s", conn.peer)

    def _ws_flush(self) -> None:
        ws, transport = self.ws, self.transport
        assert ws is not None and transport is not None
        for chunk in ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                transport.close()
        if ws.close_expected() and not transport.is_closing():
            transport.close()

    # ---- HTTP
    def _http_data(self, data: bytes) -> None:
        assert self.h11 is not None
        self.h11.receive_data(data)
        self._http_events()

    def _http_events(self) -> None:
        conn = self.h11
        assert conn is not None
        while self.http_task is None:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._plain_error(exc.error_status_hint, str(exc).encode())
                return
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            if isinstance(ev, h11.Request):
                self.http_request = (ev, bytearray())
            elif isinstance(ev, h11.Data) and self.http_request is not None:
                body = self.http_request[1]
                body += ev.data
                if len(body) > MAX_HTTP_BODY:
                    self._plain_error(413, b"request entity too large")
                    return
            elif isinstance(ev, h11.EndOfMessage) and self.http_request is not None:
                req, body = self.http_request
                self.http_request = None
                request = HttpRequest(
                    req.method.decode(),
                    req.target.decode(),
                    {k.decode().lower(): v.decode() for k, v in req.headers},
                    bytes(body),
                    self.peer,
                )
                self.http_task = asyncio.get_running_loop().create_task(self._http_answer(request))
            elif isinstance(ev, h11.ConnectionClosed):
                if self.transport is not None:
                    self.transport.close()
                return

    async def _http_answer(self, request: HttpRequest) -> None:
        conn, transport = self.h11, self.transport
        assert conn is not None and transport is not None
        try:
            response = await self.server.handler.http(request)
        except Exception:
            log.exception("http handler failed")
            response = HttpResponse(500, b'{"error":"internal"}')
        headers = [("content-type", response.content_type), ("content-length", str(len(response.body))),
                   *response.headers]
        try:
            transport.write(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
            transport.write(conn.send(h11.Data(data=response.body)) or b"")
            transport.write(conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            transport.close()
            return
        self.http_task = None
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            transport.close()
            return
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            # Back to sniffing: the next request on this keep-alive connection may be a WebSocket
            # upgrade (aiohttp, and so ccxt.pro, opens its WebSocket on a pooled HTTP connection).
            pending, _ = conn.trailing_data
            self.h11 = None
            if pending:
                self.data_received(bytes(pending))

    def _plain_error(self, status: int, text: bytes) -> None:
        if self.transport is None:
            return
        reason = {400: b"Bad Request", 413: b"Payload Too Large", 431: b"Request Header Fields Too Large"}
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason.get(status, b"Error"), len(text), text)
        )
        self.transport.close()


class LoopbackServer:
    """Serve a :class:`WsHandler` on ``host:port`` (port 0 picks a free one), optionally over TLS."""

    def __init__(self, handler: WsHandler, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, *, send_buffer: int | None = 256 * 1024) -> None:
        self.handler = handler
        self.send_buffer = send_buffer
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()

    async def start(self) -> None:
        """Listen; ``port`` is the bound one afterwards."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self), self.host, self.port, ssl=self.ssl_context, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self.ssl_context else "http"

    @property
    def ws_scheme(self) -> str:
        """``wss`` with TLS, else ``ws``."""
        return "wss" if self.ssl_context else "ws"

    @property
    def connections(self) -> int:
        """Open TCP connections (HTTP and WebSocket)."""
        return len(self._conns)

    def abort_all(self) -> None:
        """Drop every open TCP connection (fault injection and shutdown)."""
        for c in list(self._conns):
            if c.transport is not None:
                c.transport.abort()

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            self.abort_all()
            await self._server.wait_closed()
            self._server = None

