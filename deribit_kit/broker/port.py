r"""The broker's own Deribit-compatible port: external WebSocket clients share the broker's upstream.

    async with BrokerServer(broker, port=0) as srv:
        print(srv.ws_url)            # ws://127.0.0.1:<port>/ws/api/v2

* Where a message arrives: :meth:`BrokerServer.ws_message` (parsed by :mod:`deribit_kit.wire.jsonrpc`);
  it is answered in the order it came, and a subscribe takes its channels at once (an unsubscribe
  right after it sees them) and is answered once the upstream has: always exactly one answer,
  with the channels the client got, each once, or an error.
* Each channel an external client asks for is one :class:`_Topic`: one broker consumer (callback,
  so delivery is a direct call) and, for books, one hold on the broker's live book
  (:meth:`Broker.hold_book`), whatever the number of external subscribers.
* Notifications are framed once and the same bytes are queued to every subscriber: the upstream's
  frame as it arrived (no re-encoding: the client's view of the channel is the upstream's), or,
  without one, encoded once here; each client's queue is written in one ``write`` at the end
  of the event-loop turn. Interval channels (``100ms``, ``agg2``: Deribit batches them itself) may
  wait ``flush_interval`` (2 ms) so that several go out in one write: under load that halves the
  socket writes, the port's main cost. Replies, raw channels and channels without an interval are
  never held (and take what is queued with them, in order).
* Book channels never show a break the exchange did not cause: a joiner gets a snapshot built from
  the broker's live book; a change goes only to clients whose last ``change_id`` is its
  ``prev_change_id``; anyone else (late, lagging, after a resync) gets a fresh snapshot.
* A client whose send buffer passes ``max_buffer`` is conflated (changes skipped, then a fresh
  snapshot once its buffer is under half the limit) or, with ``slow_policy="disconnect"`` or past
  ``4 * max_buffer``, closed with ``connection_too_slow``.
* ``raw`` channels (``book.*.raw``, ``trades.*.raw``, ``ticker.*.raw``) need a signed-in client, with
  ``public/subscribe`` or ``private/subscribe``, and an authenticated upstream: otherwise the call
  is answered with Deribit's 13778, as an unauthenticated Deribit connection is.
* The same port answers Deribit's REST (``GET /api/v2/{method}``, ``POST /api/v2``) through the same
  table; reference data it forwards (instruments, currencies, ...) is kept ``static_ttl`` seconds.
* Private methods are off unless ``token`` is given; then a client ``public/auth``s with the broker's
  own ``client_id``/``token`` (never the upstream key): ``client_credentials``, ``client_signature``
  (Deribit's HMAC of ``timestamp\nnonce\ndata`` with the token as secret; stale timestamps and
  exact replays refused) or ``refresh_token``; its ``private/*`` calls are then forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any, Literal

from ..errors import DeribitError, error_for_code, invalid_params
from ..live.livebook import LiveBook
from ..transport.endpoint import API_VERSION, WS_PATH, Endpoint, Heartbeat, complete, heartbeat_methods
from ..transport.server import HttpRequest, HttpResponse, WsConnection, text_frame
from ..wire import auth as wire_auth
from ..wire import jsonrpc
from ..wire.channels import parse_channel
from ..wire.credits import CreditPools
from ..wire.rpcserver import HTTP_PREFIX, MethodTable, RpcServer, Then, channels_param, http_request, subscribe_channels
from . import metrics
from .broker import Broker
from .consumer import Item

__all__ = ["BrokerServer"]

log = logging.getLogger("deribit_kit.broker.port")

FORWARDED = frozenset({
    "public/get_instruments", "public/get_instrument", "public/get_order_book", "public/ticker",
    "public/get_index_price", "public/get_book_summary_by_currency", "public/get_last_trades_by_instrument",
    "public/get_currencies", "public/get_index_price_names", "public/get_contract_size", "public/status",
})
STATIC = frozenset({"public/get_instruments", "public/get_instrument", "public/get_currencies",
                    "public/get_index_price_names", "public/get_contract_size"})
"""Forwarded methods whose answers are reference data, kept ``static_ttl`` seconds."""
SlowPolicy = Literal["conflate", "disconnect"]


class _Caller:
    """Whoever calls the port's methods, as their handler context: its server, credit pools,
    channels, whether it signed in, its heartbeat. An HTTP request is one as it is (no connection,
    no subscriptions; signed in when its ``Authorization`` header carries the broker's token or
    signature); a WebSocket connection is a :class:`_Client`."""

    __slots__ = ("authed", "heartbeat", "pools", "server", "subs", "token")

    def __init__(self, server: BrokerServer, pools: CreditPools, authed: bool = False,
                 heartbeat: Heartbeat | None = None) -> None:
        self.server = server
        self.pools = pools
        self.authed = authed  # signed by its HTTP Authorization header
        self.token: str | None = None  # the access token the connection signed in with
        self.subs: set[str] = set()
        self.heartbeat = heartbeat or Heartbeat(lambda payload: None, lambda: None)

    @property
    def credit_pools(self) -> CreditPools:
        return self.pools

    @property
    def min_heartbeat_interval(self) -> int:
        return self.server.min_heartbeat_interval


class _Client(_Caller):
    """One external WebSocket connection: its channels, what it was sent, its queued output."""

    __slots__ = ("conn", "drops", "lagging", "out", "sent", "since", "snapshots")

    def __init__(self, server: BrokerServer, conn: WsConnection, pools: CreditPools) -> None:
        super().__init__(server, pools, heartbeat=Heartbeat(lambda payload: server._reply(self, payload),
                                                            lambda: conn.close(1000, "heartbeat timeout")))
        self.conn = conn
        self.sent: dict[str, int | None] = {}  # book channel -> change_id last sent (None: owes a snapshot)
        self.out: list[bytes] = []
        self.lagging = False
        self.drops = 0
        self.snapshots = 0
        self.since = time.monotonic()


class _Topic:
    """One channel served to external clients: one broker consumer (and, for books, one hold on
    the broker's live book) whatever the number of clients."""

    def __init__(self, server: BrokerServer, name: str) -> None:
        self.server = server
        self.name = name
        info = parse_channel(name)
        self.is_book = info.family == "book"
        self.private = info.private
        self.raw = info.interval == "raw" and not info.user
        # Deribit batches interval channels (100ms, agg2) itself: the port may hold them for
        # flush_interval to write several at once; raw channels and the rest go out this loop turn
        self.soon = info.interval in (None, "raw")
        self.clients: set[_Client] = set()
        self.ready: set[_Client] = set()  # subscribe reply sent: notifications may flow
        broker = server.broker
        self.live: LiveBook | None = broker.hold_book(name) if self.is_book else None
        self.consumer = broker.consumer([name], "drop_oldest", 1, callback=self._on_note, name=f"port:{name}")
        self.started: asyncio.Task[Any] = asyncio.get_running_loop().create_task(self.consumer.start())
        self.started.add_done_callback(_retrieve)
        self._snap: tuple[int | None, bytes] | None = None
        self.messages = 0

    def stop(self) -> None:
        """Leave the broker's channel (at once, even while the subscribe is still in flight upstream)."""
        self.consumer.close_nowait()
        if self.live is not None:
            self.live.release()
            self.live = None

    def snapshot_frame(self) -> bytes | None:
        """A ``snapshot`` notification of the live book as it is now (encoded once per change_id)."""
        live = self.live
        data = live.snapshot() if live is not None else None
        if data is None:
            return None
        cid = data["change_id"]
        if self._snap is not None and self._snap[0] == cid:
            return self._snap[1]
        frame = text_frame(jsonrpc.encode_notification(self.name, data))
        self._snap = (cid, frame)
        return frame

    def send_snapshot(self, c: _Client) -> None:
        frame = self.snapshot_frame()
        if frame is None:
            c.sent[self.name] = None  # the next upstream snapshot goes to it
            return
        assert self.live is not None
        c.sent[self.name] = self.live.book.change_id
        c.snapshots += 1
        self.server._queue(c, frame, self.soon)

    def _on_note(self, item: Item) -> None:
        data = getattr(item, "data", None)
        self.messages += 1
        srv = self.server
        if not self.is_book or not isinstance(data, dict):
            if not self.ready:
                return
            frame = text_frame(_payload(item, self.name, data))
            for c in self.ready:
                if c.lagging and not srv._drained(c):
                    c.drops += 1
                    continue
                srv._queue(c, frame, self.soon)
            return
        live = self.live
        if not self.ready:
            return
        if live is None or live.book.state != "live" or live.book.change_id != data.get("change_id"):
            return  # a gap or a change during a resync: the broker resubscribes, a snapshot follows
        snapshot = data.get("type") == "snapshot"
        cid = data.get("change_id")
        prev = data.get("prev_change_id")
        name = self.name
        shared = text_frame(_payload(item, name, data))
        dirty = srv._dirty
        for c in self.ready:  # per client per message: kept to dict and list operations
            if c.lagging and not srv._drained(c):
                c.drops += 1
                c.sent[name] = -1
                continue
            sent = c.sent
            if snapshot or sent.get(name) == prev:
                sent[name] = cid
                if snapshot:
                    c.snapshots += 1
                out = c.out
                if not out:  # what _queue does, inline
                    dirty.append(c)
                out.append(shared)
            else:
                self.send_snapshot(c)  # late, lagging or resumed: a fresh snapshot, never a broken chain
        if dirty:
            srv._schedule_flush(self.soon)


def _payload(item: Item, channel: str, data: Any) -> bytes:
    """The notification's bytes for the port's clients: the upstream frame as it arrived when there
    is one (the client's view is the upstream's: same channel, same data), else encoded once here."""
    raw = getattr(item, "raw", None)
    if type(raw) is bytes:
        return raw
    if type(raw) is str:
        return raw.encode()
    return jsonrpc.encode_notification(channel, data)


def _methods() -> MethodTable:
    """The port's own methods; forwarded ones go through :meth:`BrokerServer._fallback`."""
    t = MethodTable()

    @t.method("public/subscribe", ws_only=True, raw=True)
    def _public_subscribe(c: _Client, p: dict[str, Any]) -> Any:
        return c.server._subscribe(c, p, private=False)

    @t.method("private/subscribe", ws_only=True, raw=True)
    def _private_subscribe(c: _Client, p: dict[str, Any]) -> Any:
        return c.server._subscribe(c, p, private=True)

    def _unsubscribe(c: _Client, p: dict[str, Any]) -> Any:
        gone = [ch for ch in channels_param(p) if ch in c.subs]
        c.server._drop_subs(c, gone)
        return gone

    def _unsubscribe_all(c: _Client, p: dict[str, Any]) -> Any:
        c.server._drop_subs(c, list(c.subs))
        return "ok"

    for prefix in ("public", "private"):  # the port's own plumbing: no token needed, never forwarded
        t.add(f"{prefix}/unsubscribe", _unsubscribe, ws_only=True, raw=True, private=False)
        t.add(f"{prefix}/unsubscribe_all", _unsubscribe_all, ws_only=True, private=False)

    @t.method("public/test")
    def _test(c: _Client, p: dict[str, Any]) -> Any:
        c.heartbeat.answered()
        return {"version": API_VERSION}

    @t.method("public/hello")
    def _hello(c: _Client, p: dict[str, Any]) -> Any:
        return {"version": API_VERSION}

    @t.method("public/get_time")
    def _get_time(c: _Client, p: dict[str, Any]) -> Any:
        return time.time_ns() // 1_000_000

    @t.method("public/auth", raw=True)
    def _auth(c: _Client, p: dict[str, Any]) -> Any:
        return c.server._auth(c, p)

    @t.method("private/logout", ws_only=True, raw=True)
    def _logout(c: _Client, p: dict[str, Any]) -> Any:
        return c.server._logout(c, p)

    @t.method("public/get_order_book", raw=True)
    def _get_order_book(c: _Client, p: dict[str, Any]) -> Any:
        book = c.server._local_book(p)
        return book if book is not None else c.server._forward("public/get_order_book", p)

    for name in FORWARDED - {"public/get_order_book"}:
        t.add(name, _forwarder(name), raw=True)
    return MethodTable.merged(t, heartbeat_methods())


def _forwarder(name: str) -> Any:
    def forward(c: _Client, p: dict[str, Any]) -> Any:
        return c.server._forward(name, p)

    return forward


METHODS = _methods()
"""The port's method table: session plumbing, subscriptions, a local ``get_order_book`` and the
public methods it forwards (``private/*`` are forwarded too, to an authenticated client)."""


class BrokerServer(Endpoint):
    """Serve a :class:`~deribit_kit.broker.Broker` on its own Deribit-compatible WebSocket + HTTP port."""

    def __init__(self, broker: Broker, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, token: str | None = None, *,
                 client_id: str = "deribit-kit-broker", max_connections: int = 1000,
                 max_channels: int = 1000, max_buffer: int = 4 * 1024 * 1024, slow_policy: SlowPolicy = "conflate",
                 rate_limits: bool = True, min_heartbeat_interval: int = 10, testnet: bool = True,
                 flush_interval: float = 0.002, token_ttl: float = 900.0, static_ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(host, port, ssl_context, ws_path=WS_PATH)
        self.broker = broker
        self.token = token
        self.client_id = client_id
        self.max_connections = max_connections
        self.max_channels = max_channels
        self.max_buffer = max_buffer
        self.slow_policy = slow_policy
        self.min_heartbeat_interval = min_heartbeat_interval
        self.flush_interval = flush_interval
        self.clients: set[_Client] = set()
        self.topics: dict[str, _Topic] = {}
        self._dirty: list[_Client] = []
        self._flush_handle: asyncio.Handle | None = None
        self._flush_timed = False  # the scheduled flush waits for flush_interval
        self.token_ttl = token_ttl
        self.static_ttl = static_ttl
        self._static: dict[tuple[str, bytes], tuple[float, Any]] = {}  # (method, params) -> (expires, result)
        self._static_calls: dict[tuple[str, bytes], asyncio.Future[Any]] = {}
        self.clock = clock
        self._access: dict[str, float] = {}  # access token -> when it expires (clock)
        self._refresh: dict[str, str] = {}  # refresh token -> its access token
        self._replays = wire_auth.ReplayGuard()
        self._http_pools: dict[str, CreditPools] = {}
        self.stats = {"requests": 0, "errors": 0, "refused": 0, "slow_disconnects": 0, "deliveries": 0}
        self.rpc = RpcServer(METHODS, testnet=testnet, rate_limits=rate_limits, authorize=self._require_auth,
                             fallback=self._fallback, stats=self.stats)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> BrokerServer:
        """Listen on ``host:port`` (port 0: a free one; see ``ws_url``, ``http_url``)."""
        await self.listen()
        log.info("broker port listening on %s", self.ws_url)
        return self

    async def stop(self) -> None:
        """Write what is queued, close the listener and every connection, and stop the port's topics."""
        if self._flush_handle is not None:
            self._flush()  # what is queued goes out before the connections close
        await self.close_listener()
        for topic in list(self.topics.values()):
            topic.stop()
        self.topics.clear()

    async def __aenter__(self) -> BrokerServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ output, grouped per loop turn or flush window
    def _queue(self, c: _Client, frame: bytes, soon: bool = False) -> None:
        out = c.out
        if not out:
            self._dirty.append(c)
        out.append(frame)
        if len(out) == 1 or (soon and self._flush_timed):  # else a flush is due anyway
            self._schedule_flush(soon)

    def _schedule_flush(self, soon: bool = False) -> None:
        """Write the queued frames at the end of this loop turn, or ``flush_interval`` later for
        notifications (``soon``: a reply, which never waits)."""
        h = self._flush_handle
        if h is not None:
            if not (soon and self._flush_timed):
                return
            h.cancel()
        loop = asyncio.get_running_loop()
        if soon or not self.flush_interval:
            self._flush_handle, self._flush_timed = loop.call_soon(self._flush), False
        else:
            self._flush_handle, self._flush_timed = loop.call_later(self.flush_interval, self._flush), True

    def _flush(self) -> None:
        """Write each client's queued frames, one write per client (the hot path: no calls in it
        but the transport's own)."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        n = 0
        limit = self.max_buffer
        for c in dirty:
            out, c.out = c.out, []
            conn = c.conn
            transport = conn.transport
            if conn.closed or transport.is_closing():
                continue
            n += len(out)
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if transport.get_write_buffer_size() > limit:
                self._too_slow(c)
        self.stats["deliveries"] += n

    def _too_slow(self, c: _Client) -> None:
        if self.slow_policy == "disconnect" or c.conn.buffered > 4 * self.max_buffer:
            self.stats["slow_disconnects"] += 1
            log.warning("disconnecting %s: connection_too_slow", c.conn.peer)
            c.conn.close(1008, "connection_too_slow")
            c.conn.closed = True  # nothing more is written to it
        elif not c.lagging:
            c.lagging = True

    def _drained(self, c: _Client) -> bool:
        """A lagging client resumes (and gets fresh snapshots) once its buffer is under half the limit."""
        if c.conn.buffered > self.max_buffer // 2:
            return False
        c.lagging = False
        return True

    def _reply(self, c: _Client, payload: bytes) -> None:
        self._queue(c, text_frame(payload), soon=True)

    # ------------------------------------------------------------ Endpoint
    def send_reply(self, peer: Any, payload: bytes) -> None:
        """Queue a response frame for ``peer``, written at the end of this loop turn (a reply never waits
        for ``flush_interval``)."""
        self._reply(peer, payload)

    def context(self, peer: Any) -> Any:
        """The client itself is its handlers' context."""
        return peer

    def admit(self, peer: Any) -> bool:
        """Only connected clients are answered (not one refused over the connection limit)."""
        return peer in self.clients

    def ws_refuse(self, path: str) -> tuple[int, str] | None:
        """Over the connection limit the upgrade is refused with HTTP 429, as Deribit does."""
        if len(self.clients) >= self.max_connections:
            self.stats["refused"] += 1
            return 429, "too_many_connections"
        return None

    def ws_open(self, conn: WsConnection) -> None:
        """A new client with its own credit pools; over ``max_connections`` it is closed with 1013
        ``too_many_connections``."""
        c = _Client(self, conn, CreditPools())
        conn.state = c
        if len(self.clients) >= self.max_connections:
            self.stats["refused"] += 1
            conn.close(1013, "too_many_connections")
            return
        self.clients.add(c)

    def ws_close(self, conn: WsConnection) -> None:
        """Forget the client: stop its heartbeat and drop its subscriptions (a topic nobody
        receives any more stops)."""
        c: _Client | None = conn.state
        if c is None or c not in self.clients:
            return
        self.clients.discard(c)
        c.heartbeat.stop()
        self._drop_subs(c, list(c.subs))

    # ------------------------------------------------------------ methods
    def _fallback(self, c: _Client, name: str, p: dict[str, Any]) -> Any:
        if not name.startswith("private/"):
            raise error_for_code(-32601)
        self._require_auth(c, p)
        return self._forward(name, p)

    def _authed(self, c: _Caller, p: dict[str, Any]) -> bool:
        """The call carries one of the broker's live tokens, or its connection signed in with one
        (or its HTTP request was signed)."""
        tok = p.get("access_token")
        return c.authed or self._live(tok) or self._live(c.token)

    def _live(self, token: Any) -> bool:
        if not isinstance(token, str):
            return False
        expires = self._access.get(token)
        if expires is None:
            return False
        if expires <= self.clock():
            del self._access[token]
            return False
        return True

    def _require_auth(self, c: _Caller, p: dict[str, Any]) -> None:
        if self.token is None:
            raise error_for_code(13009, data={"reason": "private methods are disabled on this broker"})
        if not self._authed(c, p):
            raise error_for_code(13009, data={"reason": "authentication required"})

    def _auth(self, c: _Client, p: dict[str, Any]) -> Any:
        if self.token is None:
            raise error_for_code(13009, data={"reason": "private methods are disabled on this broker"})
        grant = p.get("grant_type")
        if grant == "client_credentials":
            ok = p.get("client_id") == self.client_id and secrets.compare_digest(
                str(p.get("client_secret", "")), self.token)
        elif grant == "client_signature":
            ok = p.get("client_id") == self.client_id and self._signature_ok(p, self.token)
        elif grant == "refresh_token":
            old = self._refresh.pop(str(p.get("refresh_token")), None)
            if old is not None:
                self._access.pop(old, None)
            ok = old is not None
        else:
            raise invalid_params("grant_type", "must be client_credentials, client_signature or refresh_token")
        if not ok:
            raise error_for_code(13004, data={"reason": "invalid_credentials"})
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self._access[access] = self.clock() + self.token_ttl
        self._refresh[refresh] = access
        c.token = access
        return {"access_token": access, "refresh_token": refresh, "expires_in": int(self.token_ttl),
                "scope": "connection", "token_type": "bearer", "enabled_features": []}

    def _logout(self, c: _Client, p: dict[str, Any]) -> Any:
        """``private/logout``: the connection's token is revoked (unless ``invalidate_token`` is false)
        and the connection closes after the answer; never forwarded (it is the broker's session
        upstream)."""
        if p.get("invalidate_token", True) not in (False, "false") and c.token is not None:
            self._access.pop(c.token, None)
            self._refresh = {r: a for r, a in self._refresh.items() if a != c.token}
        c.token = None
        return Then("ok", lambda: self._close_after_queued(c, "logout"))

    def _close_after_queued(self, c: _Client, reason: str) -> None:
        """Write what is queued for ``c`` (its last answer among it), then close the connection."""
        if c.out:
            self._flush()
        c.conn.close(1000, reason)

    def _signature_ok(self, p: dict[str, Any], secret: str) -> bool:
        r"""Deribit's ``client_signature`` grant: HMAC-SHA256 of ``timestamp\nnonce\ndata`` with the
        broker's secret; a bad signature, a timestamp out of the window or an exact replay is 13009."""
        ts, sig = p.get("timestamp"), p.get("signature")
        if isinstance(ts, str) and ts.isdigit():
            ts = int(ts)
        if not isinstance(ts, int) or isinstance(ts, bool) or not isinstance(sig, str):
            raise invalid_params("signature", "timestamp and signature are required")
        nonce, data = str(p.get("nonce") or ""), str(p.get("data") or "")
        if not wire_auth.verify(secret, sig, ts, nonce, data):
            raise error_for_code(13009, data={"reason": "invalid signature"})
        reason = self._replays.check(self.client_id, ts, nonce, sig)
        if reason is not None:
            raise error_for_code(13009, data={"reason": reason})
        return True

    def _local_book(self, p: dict[str, Any]) -> dict[str, Any] | None:
        inst = p.get("instrument_name")
        live = self.broker.books.get(inst) if isinstance(inst, str) else None
        if live is None or live.book.state != "live":
            return None
        depth = p.get("depth")
        n = depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else None
        book = live.book
        lv = book.snapshot_levels()
        bids, asks = lv["bids"][:n], lv["asks"][:n]
        return {"instrument_name": inst, "timestamp": book.last_update_ms, "change_id": book.change_id,
                "state": "open", "bids": bids, "asks": asks,
                "best_bid_price": bids[0][0] if bids else None, "best_bid_amount": bids[0][1] if bids else 0.0,
                "best_ask_price": asks[0][0] if asks else None, "best_ask_amount": asks[0][1] if asks else 0.0}

    async def _forward(self, method: str, p: dict[str, Any]) -> Any:
        """Ask the upstream (its errors are answered as they are; a failed link as 11094). Reference
        data (:data:`STATIC`) is kept ``static_ttl`` seconds, and callers asking for the same while
        the upstream answers share one call."""
        params = {k: v for k, v in p.items() if k != "access_token"}
        if method not in STATIC or self.static_ttl <= 0:
            return await self.broker.upstream.call(method, params)
        key = (method, jsonrpc.dumps(sorted(params.items(), key=lambda kv: str(kv[0]))))
        hit = self._static.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._static_calls.get(key)
        if pending is None:
            pending = self._static_calls[key] = asyncio.ensure_future(self.broker.upstream.call(method, params))
            pending.add_done_callback(lambda f: self._remember(key, f))
        return await asyncio.shield(pending)

    def _remember(self, key: tuple[str, bytes], fut: asyncio.Future[Any]) -> None:
        self._static_calls.pop(key, None)
        if not fut.cancelled() and fut.exception() is None:
            if len(self._static) > 1000:
                self._static.clear()
            self._static[key] = (self.clock() + self.static_ttl, fut.result())

    # ------------------------------------------------------------ subscriptions
    def _subscribe(self, c: _Client, p: dict[str, Any], private: bool) -> Any:
        """Take the channels now, in the order the client's requests arrived (an unsubscribe right
        after sees them); answer once the upstream has answered for the new ones."""
        wanted = self._wanted(c, p, private)
        new = [ch for ch in wanted if ch not in c.subs]
        for ch in new:
            topic = self.topics.get(ch)
            if topic is None:
                topic = self.topics[ch] = _Topic(self, ch)
            topic.clients.add(c)
            c.subs.add(ch)
        return self._answer_subscribe(c, wanted, [self.topics[ch] for ch in new])

    async def _answer_subscribe(self, c: _Client, wanted: list[str], topics: list[_Topic]) -> Then:
        """One answer per call, always: the channels the client now has of those it named (each
        once, in its order; unknown or refused ones left out, as Deribit does); the topics go live
        for it once the answer is written."""
        results = await asyncio.gather(*(asyncio.shield(t.started) for t in topics), return_exceptions=True)
        if any(isinstance(r, BaseException) and t.raw for t, r in zip(topics, results, strict=True)):
            # a raw channel the upstream would not give (it is not authenticated): refused as Deribit does
            if c in self.clients:
                self._drop_subs(c, [t.name for t in topics if t.name in c.subs])
            raise error_for_code(13778)
        failed = {t.name for t, r in zip(topics, results, strict=True) if isinstance(r, BaseException)}
        if c in self.clients:
            self._drop_subs(c, [ch for ch in failed if ch in c.subs])
        return Then([ch for ch in wanted if ch in c.subs], lambda: self._activate(c, topics))

    def _activate(self, c: _Client, topics: list[_Topic]) -> None:
        if c not in self.clients:
            return
        for topic in topics:
            if topic.name in c.subs and self.topics.get(topic.name) is topic:
                topic.ready.add(c)
                if topic.is_book:
                    topic.send_snapshot(c)

    def _wanted(self, c: _Client, params: dict[str, Any], private: bool) -> list[str]:
        """The channels of a subscribe call this client may have, each once, in order."""
        if private:
            channels_param(params)
            self._require_auth(c, params)
        wanted: list[str] = []
        for info in subscribe_channels(params):
            if info.user:
                if not private:  # the account's own data: private/subscribe only
                    if not c.authed and self.token is None:
                        raise error_for_code(13009, data={"reason": "private channels are disabled on this broker"})
                    continue
            elif info.private and not self._authed(c, params):
                raise error_for_code(13778)  # a raw channel needs an authenticated connection, as on Deribit
            wanted.append(info.name)
        new = sum(1 for ch in wanted if ch not in c.subs)
        if len(c.subs) + new > self.max_channels:
            raise invalid_params("channels", f"too many channels for one connection (max {self.max_channels})")
        return wanted

    def _drop_subs(self, c: _Client, names: list[str]) -> None:
        for name in names:
            c.subs.discard(name)
            c.sent.pop(name, None)
            topic = self.topics.get(name)
            if topic is None:
                continue
            topic.clients.discard(c)
            topic.ready.discard(c)
            if not topic.clients:
                del self.topics[name]
                topic.stop()

    # ------------------------------------------------------------ HTTP: health and metrics
    def metrics(self) -> dict[str, Any]:
        """The port's figures: upstream state, clients, channels, the counters (requests, errors,
        refused, slow disconnects, deliveries) and per client its peer, channels, ``buffered`` bytes,
        drops, lagging, snapshots and ``age_s`` (seconds connected)."""
        now = time.monotonic()
        return {
            "status": "ok", "upstream": self.broker.upstream.state, "clients": len(self.clients),
            "channels": len(self.topics), **self.stats,
            "per_client": [{"peer": c.conn.peer, "channels": len(c.subs), "buffered": c.conn.buffered,
                            "drops": c.drops, "lagging": c.lagging, "snapshots": c.snapshots,
                            "age_s": round(now - c.since, 3)} for c in self.clients],
        }

    def prometheus(self) -> str:
        """The port's and the broker's metrics in the Prometheus text format."""
        return metrics.port_text(self.metrics()) + self.broker.prometheus()

    def health(self) -> dict[str, Any]:
        """``/healthz``: :meth:`metrics` without the per-client list."""
        m = self.metrics()
        del m["per_client"]
        return m

    async def route_http(self, request: HttpRequest) -> HttpResponse | None:
        """``/metrics`` (:meth:`prometheus`) and Deribit's REST surface under ``/api/v2``; other paths: None (a 404)."""
        if request.path == "/metrics":
            return HttpResponse(200, self.prometheus().encode(), "text/plain; version=0.0.4")
        if request.path.startswith(HTTP_PREFIX):
            return await self._rest(request)
        return None

    async def _rest(self, request: HttpRequest) -> HttpResponse:
        """Deribit's REST surface on the port: ``GET /api/v2/{method}?params`` (answered without an id)
        and ``POST /api/v2[/{method}]`` with a JSON-RPC body, through the same method table as the
        WebSocket (subscriptions and heartbeats need a WebSocket: 10030); private calls need the
        broker's token as a bearer or a ``deri-hmac-sha256`` signature with it."""
        rpc = self.rpc
        us_in = jsonrpc.now_us()
        try:
            req, with_id = http_request(request.path, request.query, request.body)
        except DeribitError as exc:
            return HttpResponse(400, jsonrpc.encode_error(jsonrpc.request_id_of(exc), exc, us_in, rpc.testnet))
        try:
            authed = self._http_authed(request)
        except DeribitError as exc:
            return HttpResponse(401, jsonrpc.encode_error(req.id, exc, us_in, rpc.testnet, with_id=with_id))
        pools = self._http_pools.setdefault(request.peer.rsplit(":", 1)[0], CreditPools())
        caller = _Caller(self, pools, authed)
        answer = rpc.answer(caller, b"", pools, websocket=False, with_id=with_id, request=req)
        if answer.pending is not None:
            await complete(rpc, answer, with_id=with_id)
        err = answer.error
        status = 200 if err is None else 401 if err.code == 13009 else 400
        return HttpResponse(status, answer.payload or b"")

    def _http_authed(self, request: HttpRequest) -> bool:
        """Whether the request's ``Authorization`` signs it in: ``bearer <access token>`` or
        ``deri-hmac-sha256`` signed with the broker's token; no header is an anonymous call."""
        header = request.headers.get("authorization")
        if not header:
            return False
        if self.token is None:
            raise error_for_code(13009, data={"reason": "private methods are disabled on this broker"})
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            if self._live(value.strip()):
                return True
            raise error_for_code(13009, data={"reason": "invalid_token"})
        signed = wire_auth.parse_http_signature_header(header)
        if signed is None or signed.client_id != self.client_id:
            raise error_for_code(13009, data={"reason": "invalid authorization header"})
        data = wire_auth.http_request_data(request.method, request.target, request.body)
        if not wire_auth.verify(self.token, signed.signature, signed.timestamp, signed.nonce, data):
            raise error_for_code(13009, data={"reason": "invalid signature"})
        reason = self._replays.check(self.client_id, signed.timestamp, signed.nonce, signed.signature)
        if reason is not None:
            raise error_for_code(13009, data={"reason": reason})
        return True


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A topic's start may fail after every client left: its error is logged, never left unretrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.info("subscribing for the port failed: %s", task.exception())
