"""The embedded Deribit-compatible exchange as a server: WebSocket JSON-RPC at ``/ws/api/v2`` and
HTTP at ``/api/v2/{method}`` on one loopback port; sessions, subscriptions, heartbeats, rate
limits, the market clock and fault injection.

Where a message arrives: :meth:`Simulator.ws_message` / :meth:`Simulator.http`; where it is
parsed: :mod:`deribit_kit.wire.jsonrpc`; where it is answered: :mod:`.handlers`; where market
state changes: :meth:`.market.Market.step`; where notifications leave: :meth:`Simulator.publish`.

    async with Simulator(seed=1) as sim:
        print(sim.ws_url)          # ws://127.0.0.1:<port>/ws/api/v2
        sim.faults.skip_change_id("BTC-PERPETUAL")
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeribitError, error_for_code
from ..transport.server import HttpRequest, HttpResponse, LoopbackServer, WsConnection, text_frame
from ..wire import jsonrpc
from ..wire.channels import Channel, parse_channel
from ..wire.credits import CreditPools
from . import handlers
from .accounts import Account, Accounts
from .instruments import CURRENCIES
from .market import ASK, BID, Instrument, Market, StepResult
from .trading import Trading

log = logging.getLogger("deribit_kit.sim")

DEMO_CLIENT_ID = "sim-demo"
DEMO_CLIENT_SECRET = "sim-demo-secret"
WS_PATH = "/ws/api/v2"
MAX_SEND_BUFFER = 16 * 1024 * 1024
"""A connection whose unsent output grows past this is cut off as ``connection_too_slow``."""


@dataclass
class Faults:
    """Failures the exchange can be told to produce, from Python or over ``sim/*`` methods."""

    sim: Simulator
    heartbeats_stopped: bool = False
    latency: float = 0.0
    skip: set[str] = field(default_factory=set)
    storm: int = 0  # answer the next N requests that cost credits with 10028

    def drop_connections(self) -> int:
        """Cut every WebSocket and HTTP connection at the TCP level, as a network failure would."""
        n = self.sim.server.connections if self.sim.server else 0
        if self.sim.server is not None:
            self.sim.server.abort_all()
        return n

    def skip_change_id(self, instrument: str) -> None:
        """Withhold the next book change of ``instrument`` from subscribers: a ``change_id`` gap."""
        handlers.instrument(self.sim, instrument)
        self.skip.add(instrument)

    def stop_heartbeats(self, stopped: bool = True) -> None:
        """Stop (or resume) sending heartbeats and ``test_request``s."""
        self.heartbeats_stopped = stopped

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds``."""
        self.latency = max(0.0, seconds)

    def halt(self, instrument: str, halted: bool = True) -> None:
        """Halt (or resume) trading and quoting in ``instrument``; its book state becomes closed."""
        inst = handlers.instrument(self.sim, instrument)
        inst.halted = halted
        inst.state = "closed" if halted else "open"

    def rate_limit_storm(self, requests: int) -> None:
        """Answer the next ``requests`` requests that cost credits (on any connection) with 10028;
        session plumbing (hello, auth, test, set_heartbeat) is free and passes, as on Deribit."""
        self.storm = max(0, requests)

    def inject_frame(self, payload: bytes) -> int:
        """Send ``payload`` as a text frame to every WebSocket (malformed frames for client tests)."""
        frame = text_frame(payload)
        for s in list(self.sim.sessions):
            if s.conn is not None:
                s.conn.send_frame(frame)
        return len(self.sim.sessions)


class Session:
    """One client connection (or one HTTP request) and what it holds."""

    def __init__(self, sim: Simulator, conn: WsConnection | None, peer: str, pools: CreditPools | None = None) -> None:
        self.sim = sim
        self.conn = conn
        self.peer = peer
        self.account: Account | None = None
        self.token: str | None = None
        self.subscriptions: set[str] = set()
        self.pools = pools or CreditPools()
        self.client_name = ""
        self.awaiting_test = False
        self.logout_requested = False
        self.cancel_on_disconnect = False
        self.ended: str | None = None  # the exchange ended the session (e.g. 10028): no more answers
        self._hb: asyncio.Task[None] | None = None
        self._pending: list[Channel] = []

    def require_auth(self, access_token: Any = None) -> Account:
        """The authenticated account, or 13009."""
        if isinstance(access_token, str) and access_token:
            account = self.sim.accounts.check_token(access_token)
            self.account = account  # an HTTP session lives for one request: keep it for the handler
            if self.conn is not None:
                self.token = access_token
            return account
        if self.account is None:
            raise error_for_code(13009, data={"reason": "authentication required"})
        if self.token is not None:
            self.sim.accounts.check_token(self.token)
        return self.account

    @property
    def credit_pools(self) -> CreditPools:
        return self.account.pools if self.account is not None else self.pools

    def start_heartbeat(self, interval: float) -> None:
        self.stop_heartbeat()
        self.awaiting_test = False
        self._hb = asyncio.get_running_loop().create_task(self._heartbeat(interval))

    def stop_heartbeat(self) -> None:
        if self._hb is not None:
            self._hb.cancel()
            self._hb = None
        self.awaiting_test = False

    async def _heartbeat(self, interval: float) -> None:
        while self.conn is not None and not self.conn.closed:
            await asyncio.sleep(interval)
            if self.sim.faults.heartbeats_stopped or self.conn is None:
                continue
            if self.awaiting_test:
                log.info("closing %s: test_request not answered", self.peer)
                self.conn.close(1000, "heartbeat timeout")
                return
            self.awaiting_test = True
            self.conn.send(jsonrpc.TEST_REQUEST)

    def close(self) -> None:
        self.stop_heartbeat()


class Simulator:
    """The embedded Deribit-compatible exchange."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 0,
        tick_interval: float = 0.1,
        autostep: bool = True,
        option_requote: float = 0.1,
        trade_rate: float = 1.0,
        testnet: bool = True,
        rate_limits: bool = True,
        token_ttl: float = 900.0,
        min_heartbeat_interval: int = 10,
        client_id: str | None = None,
        client_secret: str | None = None,
        clock: Callable[[], float] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_send_buffer: int = MAX_SEND_BUFFER,
        control: bool = True,
        rate_limit_ends_session: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.market = Market(seed=seed, clock=clock, tick_interval=tick_interval,
                             option_requote=option_requote, trade_rate=trade_rate)
        self.tick_interval = tick_interval
        self.autostep = autostep
        self.testnet = testnet
        self.rate_limits = rate_limits
        self.min_heartbeat_interval = min_heartbeat_interval
        self.max_send_buffer = max_send_buffer
        self.control = control
        # Deribit answers 10028 and then terminates the session; False keeps the connection open
        self.rate_limit_ends_session = rate_limit_ends_session
        self.accounts = Accounts(token_ttl=token_ttl, **({"clock": clock} if clock else {}))
        cid = client_id or os.environ.get("DERIBIT_CLIENT_ID") or DEMO_CLIENT_ID
        secret = client_secret or os.environ.get("DERIBIT_CLIENT_SECRET") or DEMO_CLIENT_SECRET
        self.demo_account = self.accounts.create(cid, secret)
        self.faults = Faults(self)
        self.sessions: set[Session] = set()
        self.subs: dict[str, set[Session]] = {}  # active channel -> sessions
        self.by_instrument: dict[str, set[Channel]] = {}  # instrument -> active channels
        self.kind_channels: set[Channel] = set()  # trades.{kind}.{currency}.{interval}
        self.index_channels: set[Channel] = set()
        self.server: LoopbackServer | None = None
        self.ssl_context = ssl_context
        self._ticker: asyncio.Task[None] | None = None
        self._http_pools: dict[str, CreditPools] = {}
        self.stats = {"notifications": 0, "requests": 0, "errors": 0, "slow_disconnects": 0,
                      "rate_limit_session_ends": 0}
        self.step_listeners: list[Callable[[StepResult], None]] = []
        self.session_closed_listeners: list[Callable[[Session], None]] = []
        self.trading = Trading(self)  # orders, matching, accounts' ledgers, private channels

    def fund(self, account: Account | str, currency: str, amount: float) -> float:
        """Credit (or debit, with a negative ``amount``) an account (or a client_id's); the new balance."""
        acct = self.accounts.by_client_id[account] if isinstance(account, str) else account
        return self.trading.engine.fund(acct, currency, amount)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> Simulator:
        self.server = LoopbackServer(self, self.host, self.port, self.ssl_context)
        await self.server.start()
        self.port = self.server.port
        if self.autostep and self.tick_interval > 0:
            self._ticker = asyncio.get_running_loop().create_task(self._run_clock())
        log.info("embedded exchange listening on %s", self.ws_url)
        return self

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None
        for s in list(self.sessions):
            s.close()
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://{self.host}:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def now_ms(self) -> int:
        return self.market.now_ms()

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_interval
            try:
                self.step()
            except Exception:
                log.exception("market step failed")
            delay = next_at - loop.time()
            if delay < -1.0:  # fell far behind (suspended laptop): don't burst to catch up
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))

    def step(self, n: int = 1) -> StepResult:
        """Advance the market ``n`` ticks and publish what changed; returns the last tick's result."""
        result: StepResult | None = None
        for _ in range(n):
            result = self.market.step()
            self.publish(result)
            for listener in self.step_listeners:
                listener(result)
        assert result is not None
        return result

    # ------------------------------------------------------------ subscriptions
    def channel_exists(self, ch: Channel) -> bool:
        if ch.instrument is not None:
            inst = self.market.get(ch.instrument)
            # perpetual.{instrument}.{interval} exists for perpetuals only
            return inst is not None and (ch.family != "perpetual" or inst.perpetual)
        if ch.family == "price_index":
            return ch.index_name in self.market.index_names()
        if ch.user and ch.currency is not None:
            return ch.currency.upper() in _USER_CURRENCIES
        return True

    def add_subscription(self, s: Session, ch: Channel) -> bool:
        """Record a subscription; it goes live (snapshot first) once the reply has been sent."""
        if ch.name in s.subscriptions:
            return False
        s.subscriptions.add(ch.name)
        s._pending.append(ch)
        return True

    def _activate(self, s: Session) -> None:
        pending, s._pending = s._pending, []
        for ch in pending:
            if ch.name not in s.subscriptions or s.conn is None:
                continue
            if ch.user:  # the account's own data: registered per account, never shared by name
                self.trading.subscribe(s, ch)
                continue
            self.subs.setdefault(ch.name, set()).add(s)
            if ch.instrument is not None:
                self.by_instrument.setdefault(ch.instrument, set()).add(ch)
            elif ch.family == "trades_kind":
                self.kind_channels.add(ch)
            elif ch.family == "price_index":
                self.index_channels.add(ch)
            if ch.family == "book":
                inst = self.market.get(ch.instrument or "")
                if inst is not None:
                    snap = inst.book.snapshot(self.market.last_step_ms, inst.name)
                    s.conn.send(jsonrpc.encode_notification(ch.name, snap))

    def remove_subscription(self, s: Session, name: str) -> None:
        s.subscriptions.discard(name)
        if name.startswith("user."):
            self.trading.unsubscribe(s, name)
            return
        subs = self.subs.get(name)
        if subs is None:
            return
        subs.discard(s)
        if subs:
            return
        del self.subs[name]
        ch = parse_channel(name)
        if ch.instrument is not None:
            chans = self.by_instrument.get(ch.instrument)
            if chans is not None:
                chans.discard(ch)
                if not chans:
                    del self.by_instrument[ch.instrument]
        self.kind_channels.discard(ch)
        self.index_channels.discard(ch)

    def subscriber_count(self, channel: str) -> int:
        """How many connections receive ``channel`` (tests use it to check sharing upstream)."""
        if channel.startswith("user."):
            return self.trading.subscriber_count(channel)
        return len(self.subs.get(channel, ()))

    # ------------------------------------------------------------ publishing
    def _send(self, channel: str, data: Any) -> None:
        subs = self.subs.get(channel)
        if subs:
            self.send_to(subs, channel, data)

    def publish_user(self, account: Account, channel: str, data: Any) -> None:
        """Send ``data`` on the private ``channel`` to ``account``'s connections subscribed to it
        (another account subscribed to the same channel name receives nothing)."""
        subs = self.trading.sessions(account, channel)
        if subs:
            self.send_to(subs, channel, data)

    def send_to(self, subs: Iterable[Session], channel: str, data: Any) -> None:
        """Send one notification to ``subs`` (encoded once); cut off connections that lag too far."""
        subs = list(subs)
        frame = text_frame(jsonrpc.encode_notification(channel, data))
        limit = self.max_send_buffer
        for s in subs:
            conn = s.conn
            if conn is None:
                continue
            conn.send_frame(frame)
            if conn.buffered > limit:
                self._too_slow(s)
        self.stats["notifications"] += len(subs)

    def _too_slow(self, s: Session) -> None:
        self.stats["slow_disconnects"] += 1
        log.warning("disconnecting %s: connection_too_slow", s.peer)
        if s.conn is not None:
            s.conn.abort()

    def publish(self, result: StepResult) -> None:
        """Send one tick's changes to the channels that have subscribers."""
        changes = {inst.name: msg for inst, msg in result.book_changes}
        trades = {inst.name: t for inst, t in result.trades}
        market = self.market
        ts = result.timestamp
        for name, chans in list(self.by_instrument.items()):
            inst = market.get(name)
            if inst is None:
                continue
            self._publish_instrument(inst, chans, changes.get(name), trades.get(name), ts, ticker=True)
        self._publish_kind_trades(result.trades)
        for ch in list(self.index_channels):
            price = market.index_price(ch.index_name or "")
            if price is not None:
                self._send(ch.name, {"index_name": ch.index_name, "price": round(price, 4), "timestamp": ts})

    def publish_instrument(self, inst: Instrument, trades: list[dict[str, Any]]) -> None:
        """Publish at once what orders and trades did to ``inst``: its book change (flushed now, so
        ``change_id`` stays chained) and its new public trades, without waiting for the next tick."""
        ts = max(self.market.now_ms(), self.market.last_step_ms)
        change = inst.book.flush(ts, inst.name)
        chans = self.by_instrument.get(inst.name)
        if chans:
            self._publish_instrument(inst, chans, change, trades or None, ts, ticker=False)
        if trades:
            self._publish_kind_trades([(inst, trades)])

    def _publish_instrument(self, inst: Instrument, chans: set[Channel], change: dict[str, Any] | None,
                            traded: list[dict[str, Any]] | None, ts: int, *, ticker: bool) -> None:
        market = self.market
        name = inst.name
        if change is not None and name in self.faults.skip:
            self.faults.skip.discard(name)
            change = None  # withheld: subscribers see a change_id gap on the next one
        tick: dict[str, Any] | None = None
        for ch in list(chans):
            fam = ch.family
            if fam == "book":
                if change is not None:
                    self._send(ch.name, change)
            elif fam == "ticker" or fam == "incremental_ticker":
                if ticker:
                    if tick is None:
                        tick = market.ticker(inst, ts)
                    self._send(ch.name, tick)
            elif fam == "trades":
                if traded:
                    self._send(ch.name, traded)
            elif fam == "book_grouped":
                if change is not None:
                    self._send(ch.name, market.grouped_book(inst, ch.group or "none", ch.depth or 10))
            elif fam == "quote":
                if change is not None:
                    self._send(ch.name, _quote(inst, ts))
            elif fam == "chart_trades":  # the open candle on trades, a filler when a period begins
                candle = market.candles.due(name, ch.interval or "1", ts, bool(traded))
                if candle is not None:
                    self._send(ch.name, candle)
            elif fam == "perpetual" and inst.perpetual and ticker:
                self._send(ch.name, {"index_price": round(market.index[inst.coin], 4),
                                     "interest": round(market.premium[inst.coin] / 3, 8), "timestamp": ts})

    def _publish_kind_trades(self, trades: list[tuple[Instrument, list[dict[str, Any]]]]) -> None:
        for ch in list(self.kind_channels):
            batch = [t for inst, ts_ in trades for t in ts_
                     if (ch.kind == "any" or inst.kind == ch.kind)
                     and (ch.currency in ("any", inst.coin, inst.info.get("settlement_currency")))]
            if batch:
                self._send(ch.name, batch)

    # ------------------------------------------------------------ WebSocket (WsHandler)
    def ws_path_ok(self, path: str) -> bool:
        return path.rstrip("/") == WS_PATH

    def ws_open(self, conn: WsConnection) -> None:
        s = Session(self, conn, conn.peer)
        conn.state = s
        self.sessions.add(s)

    def ws_close(self, conn: WsConnection) -> None:
        s: Session = conn.state
        self.sessions.discard(s)
        for name in list(s.subscriptions):
            self.remove_subscription(s, name)
        s.close()
        for listener in self.session_closed_listeners:
            listener(s)
        s.conn = None

    def ws_message(self, conn: WsConnection, data: bytes) -> None:
        s: Session = conn.state
        if s.ended is not None:
            return  # the session is over: what arrives before the close is not answered
        payload, err = self.handle(s, data)
        if err is not None and err.code == 10028 and self.rate_limit_ends_session:
            s.ended = "too_many_requests"
            self.stats["rate_limit_session_ends"] += 1
            log.info("ending the session of %s: 10028 too_many_requests", s.peer)
        if self.faults.latency > 0:
            asyncio.get_running_loop().call_later(self.faults.latency, self._reply, s, payload)
        else:
            self._reply(s, payload)

    def _reply(self, s: Session, payload: bytes) -> None:
        conn = s.conn
        if conn is None:
            return
        conn.send(payload)
        if s.ended is not None:
            conn.close(1008, s.ended)
            return
        if s._pending:
            self._activate(s)
        if s.logout_requested:
            conn.close(1000, "logout")

    def handle(self, s: Session, data: bytes | str, *, with_id: bool = True,
               request: jsonrpc.Request | None = None) -> tuple[bytes, DeribitError | None]:
        """Answer one JSON-RPC request frame: the response frame, and the error if it is one."""
        us_in = jsonrpc.now_us()
        self.stats["requests"] += 1
        req_id: Any = None
        try:
            req = request or jsonrpc.parse_request(data)
            req_id = req.id
            if self.faults.storm > 0 and s.credit_pools.charged(req.method):
                self.faults.storm -= 1
                raise error_for_code(10028)
            if self.rate_limits and not s.credit_pools.try_spend(req.method):
                raise error_for_code(10028)
            result = handlers.dispatch(self, s, req.method, req.params)
            return jsonrpc.encode_result(req_id, result, us_in, self.testnet, with_id=with_id), None
        except DeribitError as exc:
            err = exc
        except Exception:
            log.exception("internal error handling a request")
            err = error_for_code(11094)
        self.stats["errors"] += 1
        if req_id is None:
            req_id = jsonrpc.request_id_of(err)
        return jsonrpc.encode_error(req_id, err, us_in, self.testnet, with_id=with_id), err

    # ------------------------------------------------------------ HTTP (WsHandler)
    async def http(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if path == "/healthz":
            return HttpResponse(200, jsonrpc.dumps({"status": "ok", "connections": len(self.sessions)}))
        if not path.startswith("/api/v2"):
            return HttpResponse(404, jsonrpc.dumps({"error": f"no endpoint at {path}"}))
        host = request.peer.rsplit(":", 1)[0]
        pools = self._http_pools.setdefault(host, CreditPools())
        s = Session(self, None, request.peer, pools)
        path_method = path[len("/api/v2/"):] if path.startswith("/api/v2/") else ""
        us_in = jsonrpc.now_us()
        req: jsonrpc.Request | None = None
        with_id = True
        if request.body:
            try:
                req = jsonrpc.parse_request(request.body)
            except DeribitError as exc:
                return HttpResponse(400, jsonrpc.encode_error(jsonrpc.request_id_of(exc), exc, us_in, self.testnet))
            if path_method and req.method != path_method:
                req.method = path_method
        elif path_method:
            req = jsonrpc.Request(None, path_method, dict(request.query))
            with_id = False
        else:
            missing = error_for_code(11050, data={"reason": "no method"})
            return HttpResponse(400, jsonrpc.encode_error(None, missing, us_in, self.testnet))
        try:
            s.account = self.accounts.http_account(request.headers.get("authorization"), request.method,
                                                   request.target, request.body)
        except DeribitError as exc:
            return HttpResponse(401, jsonrpc.encode_error(req.id, exc, us_in, self.testnet, with_id=with_id))
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        body, err = self.handle(s, b"", with_id=with_id, request=req)
        status = 200 if err is None else 401 if err.code == 13009 else 400
        return HttpResponse(status, body)


_USER_CURRENCIES = frozenset({str(c["currency"]) for c in CURRENCIES} | {"EURR", "ANY"})


def _quote(inst: Instrument, ts: int) -> dict[str, Any]:
    bid, ask = inst.book.best(BID), inst.book.best(ASK)
    return {
        "timestamp": ts,
        "instrument_name": inst.name,
        "best_bid_price": bid,
        "best_bid_amount": inst.book.levels[BID][bid] if bid is not None else 0.0,
        "best_ask_price": ask,
        "best_ask_amount": inst.book.levels[ASK][ask] if ask is not None else 0.0,
    }
