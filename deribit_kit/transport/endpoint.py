"""The I/O half of a Deribit-compatible server, shared by the embedded exchange and the broker's
port: the loopback HTTP+WebSocket server (:mod:`.server`) at Deribit's path, each connection's
heartbeat and ``test_request`` timer, ``public/set_heartbeat`` / ``disable_heartbeat``, the
request loop around :class:`~deribit_kit.wire.rpcserver.RpcServer`, ``/healthz`` and 404, and the
URLs and schemes.

Where a message arrives: :meth:`Endpoint.ws_message` (a WebSocket frame) or :meth:`Endpoint.http`
(an HTTP request); it is parsed, charged, dispatched and encoded by the server's
:class:`~deribit_kit.wire.rpcserver.RpcServer`; the answer leaves through
:meth:`Endpoint.send_reply` (the server decides how: written at once, or queued with its
notifications), and what a handler asked to run after its reply (:class:`~.rpcserver.Then`)
runs right after. A handler's coroutine (a call forwarded upstream) is answered when it completes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ..errors import DeribitError, DeribitKitError, error_for_code, invalid_params
from ..wire import jsonrpc
from ..wire.credits import CreditPools
from ..wire.enums import API_VERSION
from ..wire.rpcserver import Answer, MethodTable, P, RpcServer, Then
from .server import HttpRequest, HttpResponse, LoopbackServer, WsConnection

log = logging.getLogger("deribit_kit.transport.endpoint")

WS_PATH = "/ws/api/v2"
"""Deribit's WebSocket path."""


class Heartbeat:
    """One connection's heartbeat (``public/set_heartbeat``): every ``interval`` a ``test_request``
    goes out; if the previous one was not answered (``public/test`` calls :meth:`answered`) the
    connection is closed. ``paused()`` true skips a beat (a fault: heartbeats stopped)."""

    __slots__ = ("_close", "_paused", "_send", "_task", "awaiting")

    def __init__(self, send: Callable[[bytes], None], close: Callable[[], None],
                 paused: Callable[[], bool] | None = None) -> None:
        self._send = send
        self._close = close
        self._paused = paused
        self._task: asyncio.Task[None] | None = None
        self.awaiting = False

    @property
    def running(self) -> bool:
        """Whether the timer runs (``public/set_heartbeat`` was called and not disabled)."""
        return self._task is not None

    def start(self, interval: float) -> None:
        """(Re)start the timer: a ``test_request`` every ``interval`` seconds."""
        self.stop()
        self._task = asyncio.get_running_loop().create_task(self._beat(interval))

    def stop(self) -> None:
        """Stop the timer (``public/disable_heartbeat``, or the connection closed)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.awaiting = False

    def answered(self) -> None:
        """The peer answered the ``test_request`` (with ``public/test``): the connection stays open."""
        self.awaiting = False

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._paused is not None and self._paused():
                continue
            if self.awaiting:
                self._task = None
                self._close()
                return
            self.awaiting = True
            self._send(jsonrpc.TEST_REQUEST)


class Peer(Protocol):
    """What an endpoint keeps per WebSocket connection (the exchange's session, the port's client)."""

    conn: WsConnection | None
    heartbeat: Heartbeat

    @property
    def credit_pools(self) -> CreditPools:
        """The credit pools the peer's requests are charged to."""


class HeartbeatContext(Protocol):
    """A handler context that can reach its connection's heartbeat."""

    @property
    def heartbeat(self) -> Heartbeat: ...

    @property
    def min_heartbeat_interval(self) -> int: ...


def set_heartbeat(heartbeat: Heartbeat, interval: int, minimum: int) -> str:
    """``public/set_heartbeat``: -32602 below ``minimum`` seconds, else (re)start the timer."""
    if interval < minimum:
        raise invalid_params("interval", f"must be at least {minimum} seconds")
    heartbeat.start(float(interval))
    return "ok"


def heartbeat_methods() -> MethodTable:
    """``public/set_heartbeat`` and ``public/disable_heartbeat`` for a context with a heartbeat."""
    table = MethodTable()

    @table.method("public/set_heartbeat", P("interval", "int", True), ws_only=True)
    def _set_heartbeat(cx: HeartbeatContext, p: dict[str, Any]) -> Any:
        return set_heartbeat(cx.heartbeat, p["interval"], cx.min_heartbeat_interval)

    @table.method("public/disable_heartbeat", ws_only=True)
    def _disable_heartbeat(cx: HeartbeatContext, p: dict[str, Any]) -> Any:
        cx.heartbeat.stop()
        return "ok"

    return table


async def complete(rpc: RpcServer, answer: Answer, *, with_id: bool = True) -> None:
    """Await a pending answer's coroutine and encode what it gave: its result (a :class:`Then`'s
    work kept for after the reply), its Deribit error, or 11094 when the link upstream failed."""
    try:
        result = await answer.pending
    except DeribitError as exc:
        answer.payload, answer.error = rpc.error(answer.request_id, exc, answer.us_in, with_id=with_id), exc
    except (DeribitKitError, TimeoutError, OSError) as exc:
        err = error_for_code(11094, data={"reason": f"upstream: {exc}"})
        answer.payload, answer.error = rpc.error(answer.request_id, err, answer.us_in, with_id=with_id), err
    else:
        if type(result) is Then:
            answer.after, result = result.after, result.result
        answer.payload = rpc.result(answer.request_id, result, answer.us_in, with_id=with_id)
    answer.pending = None


def not_found_response(path: str) -> HttpResponse:
    return HttpResponse(404, jsonrpc.dumps({"error": f"no endpoint at {path}"}))


class Endpoint:
    """A Deribit-compatible server on one loopback port: subclass it, set ``self.rpc`` and
    implement ``ws_open``/``ws_close`` (make a :class:`Peer` per connection, kept in
    ``conn.state``), :meth:`context`, :meth:`health` and, for more HTTP than health,
    :meth:`route_http`."""

    rpc: RpcServer

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None,
                 *, ws_path: str = WS_PATH) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.ws_path = ws_path
        self.server: LoopbackServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ lifecycle and URLs
    async def listen(self) -> None:
        """Start the loopback server; ``port`` is the bound one afterwards (port 0: a free one)."""
        self.server = LoopbackServer(self, self.host, self.port, self.ssl_context)
        await self.server.start()
        self.port = self.server.port

    async def close_listener(self) -> None:
        """Stop the server (open connections are dropped) and cancel the endpoint's tasks."""
        if self.server is not None:
            await self.server.stop()
            self.server = None
        for t in list(self._tasks):
            t.cancel()

    @property
    def testnet(self) -> bool:
        """The ``testnet`` flag every response carries."""
        return self.rpc.testnet

    @property
    def rate_limits(self) -> bool:
        """Whether requests are charged credits (10028 when a pool runs dry)."""
        return self.rpc.rate_limits

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` and ``ws_path`` (``/ws/api/v2`` by default); ``wss://`` with TLS."""
        return f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}{self.ws_path}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS); Deribit's HTTP API is under ``/api/v2``."""
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the endpoint cancels when it stops."""
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # ------------------------------------------------------------ WebSocket (WsHandler)
    def ws_path_ok(self, path: str) -> bool:
        """Whether a WebSocket upgrade to ``path`` is accepted: ``ws_path``, a trailing slash allowed."""
        return path.rstrip("/") == self.ws_path

    def ws_open(self, conn: WsConnection) -> None:
        """Make the connection's peer (``conn.state``)."""
        raise NotImplementedError

    def ws_close(self, conn: WsConnection) -> None:
        """Forget the connection's peer."""
        raise NotImplementedError

    def context(self, peer: Any) -> Any:
        """The handler context of one connection's calls."""
        raise NotImplementedError

    def admit(self, peer: Any) -> bool:
        """Whether a request of ``peer`` is answered at all (False: a refused or ended session)."""
        return True

    def send_reply(self, peer: Any, payload: bytes) -> None:
        """Write one response frame (or a ``test_request``) to ``peer``."""
        conn = peer.conn
        if conn is not None:
            conn.send(payload)

    def reply_delay(self) -> float:
        """Seconds every answer waits (a fault of the embedded exchange; 0 otherwise)."""
        return 0.0

    def answered(self, peer: Any, answer: Answer) -> None:
        """Called with every answer before it is sent (a server's session rules)."""

    def ws_message(self, conn: WsConnection, data: bytes) -> None:
        """Answer one request frame: through :attr:`rpc` with the peer's credit pools, after
        :meth:`reply_delay`; a pending (coroutine) answer is completed in a task."""
        peer = conn.state
        if peer is None or not self.admit(peer):
            return
        answer = self.rpc.answer(self.context(peer), data, peer.credit_pools)
        if answer.pending is not None:
            self.spawn(self._finish(peer, answer))
            return
        self.answered(peer, answer)
        delay = self.reply_delay()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._deliver, peer, answer)
        else:
            self._deliver(peer, answer)

    def _deliver(self, peer: Any, answer: Answer) -> None:
        if answer.payload is not None:
            self.send_reply(peer, answer.payload)
        if answer.after is not None:
            answer.after()

    async def _finish(self, peer: Any, answer: Answer) -> None:
        await complete(self.rpc, answer)
        if peer.conn is None or peer.conn.closed:
            return
        self.answered(peer, answer)
        self._deliver(peer, answer)

    # ------------------------------------------------------------ HTTP (WsHandler)
    def health(self) -> dict[str, Any]:
        """The ``/healthz`` document."""
        return {"status": "ok"}

    async def route_http(self, request: HttpRequest) -> HttpResponse | None:
        """Answer HTTP beyond ``/healthz``; ``None`` is a 404."""
        return None

    async def http(self, request: HttpRequest) -> HttpResponse:
        """``/healthz`` (:meth:`health`), else :meth:`route_http`, else a JSON 404."""
        if request.path == "/healthz":
            return HttpResponse(200, jsonrpc.dumps(self.health()))
        response = await self.route_http(request)
        return response if response is not None else not_found_response(request.path)


__all__ = ["API_VERSION", "WS_PATH", "Endpoint", "Heartbeat", "Peer", "complete", "heartbeat_methods", "set_heartbeat"]
