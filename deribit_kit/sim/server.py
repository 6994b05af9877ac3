"""The embedded Deribit-compatible exchange as a server: WebSocket JSON-RPC at ``/ws/api/v2`` and
HTTP at ``/api/v2/{method}`` on one loopback port. This module only adapts the endpoint to the
rest: sessions, the market clock, fault injection.

Where a message arrives: :meth:`Simulator.ws_message` (the endpoint's,
:mod:`deribit_kit.transport.endpoint`) or :meth:`Simulator.route_http`; where it is parsed, charged
and dispatched: :class:`deribit_kit.wire.rpcserver.RpcServer` over the method table of
:mod:`.rpc`; where state changes: the exchange (:mod:`.exchange`, pure); where notifications leave:
:mod:`.pubsub`.

    async with Simulator(seed=1) as sim:
        print(sim.ws_url)          # ws://127.0.0.1:<port>/ws/api/v2
        sim.faults.skip_change_id("BTC-PERPETUAL")
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeribitError, error_for_code
from ..transport.endpoint import WS_PATH, Endpoint, Heartbeat
from ..transport.server import HttpRequest, HttpResponse, WsConnection, text_frame
from ..wire import jsonrpc
from ..wire.credits import CreditPools
from ..wire.rpcserver import Answer, RpcServer, http_request
from .exchange import Account, AccountState, Exchange, StepResult
from .pubsub import PubSub
from .rpc import METHODS, Context
from .rpc.context import ExchangeParts

log = logging.getLogger("deribit_kit.sim")

DEMO_CLIENT_ID = "sim-demo"
DEMO_CLIENT_SECRET = "sim-demo-secret"
MAX_SEND_BUFFER = 16 * 1024 * 1024
"""A connection whose unsent output grows past this is cut off as ``connection_too_slow``."""

__all__ = ["DEMO_CLIENT_ID", "DEMO_CLIENT_SECRET", "MAX_SEND_BUFFER", "WS_PATH", "Faults", "Session", "Simulator"]


@dataclass
class Faults:
    """Failures the exchange can be told to produce, from Python or over ``sim/*`` methods (whose
    handlers reach it, and the clock, as their context's ``control``)."""

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
        self.sim.exchange.instrument(instrument)
        self.skip.add(instrument)

    def stop_heartbeats(self, stopped: bool = True) -> None:
        """Stop (or resume) sending heartbeats and ``test_request``s."""
        self.heartbeats_stopped = stopped

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds``."""
        self.latency = max(0.0, seconds)

    def halt(self, instrument: str, halted: bool = True) -> None:
        """Halt (or resume) trading and quoting in ``instrument``; its book state becomes closed."""
        inst = self.sim.exchange.instrument(instrument)
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

    def step(self, n: int = 1) -> StepResult:
        """Advance the market clock ``n`` ticks (``sim/step``)."""
        return self.sim.step(n)

    @property
    def demo_account(self) -> Account:
        """The exchange's demo account (the client_id and secret it was started with)."""
        return self.sim.demo_account


class Session:
    """One client connection (or one HTTP request) and what it holds."""

    def __init__(self, sim: Simulator, conn: WsConnection | None, peer: str, pools: CreditPools | None = None) -> None:
        self.conn = conn
        self.peer = peer
        self.accounts = sim.exchange.accounts
        self.account: Account | None = None
        self.token: str | None = None
        self.subscriptions: set[str] = set()
        self.pools = pools or CreditPools()
        self.client_name = ""
        self.logout_requested = False
        self.cancel_on_disconnect = False
        self.ended: str | None = None  # the exchange ended the session (e.g. 10028): no more answers
        self.heartbeat = Heartbeat(self._send, self._heartbeat_timeout, lambda: sim.faults.heartbeats_stopped)
        self.context = Context(sim.exchange, self, sim.pubsub, sim.faults if sim.control else None,
                               sim.min_heartbeat_interval)

    def _send(self, payload: bytes) -> None:
        if self.conn is not None:
            self.conn.send(payload)

    def _heartbeat_timeout(self) -> None:
        if self.conn is not None:
            log.info("closing %s: test_request not answered", self.peer)
            self.conn.close(1000, "heartbeat timeout")

    def close_for_logout(self) -> None:
        """Close the WebSocket with 1000 ``logout`` (after ``private/logout`` was answered)."""
        if self.conn is not None:
            self.conn.close(1000, "logout")

    @property
    def awaiting_test(self) -> bool:
        """Whether a ``test_request`` was sent and not yet answered with ``public/test``."""
        return self.heartbeat.awaiting

    def require_auth(self, access_token: Any = None) -> Account:
        """The authenticated account, or 13009."""
        if isinstance(access_token, str) and access_token:
            account = self.accounts.check_token(access_token)
            self.account = account  # an HTTP session lives for one request: keep it for the handler
            if self.conn is not None:
                self.token = access_token
            return account
        if self.account is None:
            raise error_for_code(13009, data={"reason": "authentication required"})
        if self.token is not None:
            self.accounts.check_token(self.token)
        return self.account

    @property
    def credit_pools(self) -> CreditPools:
        """The credit pools requests are charged to: the account's once authenticated, else the connection's."""
        return self.account.pools if self.account is not None else self.pools

    def close(self) -> None:
        """Stop the session's heartbeat timer."""
        self.heartbeat.stop()


class Simulator(Endpoint, ExchangeParts):
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
        super().__init__(host, port, ssl_context)
        self.exchange = Exchange(seed=seed, clock=clock, tick_interval=tick_interval, option_requote=option_requote,
                                 trade_rate=trade_rate, token_ttl=token_ttl)
        self.tick_interval = tick_interval
        self.autostep = autostep
        self.min_heartbeat_interval = min_heartbeat_interval
        self.control = control
        # Deribit answers 10028 and then terminates the session; False keeps the connection open
        self.rate_limit_ends_session = rate_limit_ends_session
        cid = client_id or os.environ.get("DERIBIT_CLIENT_ID") or DEMO_CLIENT_ID
        secret = client_secret or os.environ.get("DERIBIT_CLIENT_SECRET") or DEMO_CLIENT_SECRET
        self.demo_account = self.exchange.accounts.create(cid, secret)
        self.faults = Faults(self)
        self.sessions: set[Session] = set()
        self.stats = {"notifications": 0, "requests": 0, "errors": 0, "slow_disconnects": 0,
                      "rate_limit_session_ends": 0}
        self.pubsub = PubSub(self.exchange, skip=self.faults.skip, max_send_buffer=max_send_buffer, stats=self.stats)
        self.rpc = RpcServer(METHODS, testnet=testnet, rate_limits=rate_limits, authorize=_authorize,
                             gate=self._storm, stats=self.stats)
        self._ticker: asyncio.Task[None] | None = None
        self._http_pools: dict[str, CreditPools] = {}
        self.step_listeners: list[Callable[[StepResult], None]] = []
        self.session_closed_listeners: list[Callable[[Session], None]] = [self._cancel_on_disconnect]

    # ------------------------------------------------------------ the parts, by their old names (and ExchangeParts')
    @property
    def max_send_buffer(self) -> int:
        """Bytes a connection may have unsent before it is cut off (``connection_too_slow``)."""
        return self.pubsub.max_send_buffer

    def fund(self, account: Account | str, currency: str, amount: float) -> float:
        """Credit (or debit, with a negative ``amount``) an account (or a client_id's); the new balance."""
        acct = self.exchange.accounts.by_client_id[account] if isinstance(account, str) else account
        return self.exchange.fund(acct, currency, amount)

    def subscriber_count(self, channel: str) -> int:
        """How many connections receive ``channel`` (tests use it to check sharing upstream)."""
        return self.pubsub.subscriber_count(channel)

    def now_ms(self) -> int:
        """The exchange's clock, in milliseconds since the epoch."""
        return self.exchange.now_ms()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> Simulator:
        """Listen on ``host:port`` (port 0: a free one; see ``ws_url``, ``http_url``) and, with
        ``autostep``, advance the market every ``tick_interval`` seconds."""
        await self.listen()
        if self.autostep and self.tick_interval > 0:
            self._ticker = asyncio.get_running_loop().create_task(self._run_clock())
        log.info("embedded exchange listening on %s", self.ws_url)
        return self

    async def stop(self) -> None:
        """Stop the market clock, end every session and close the listener."""
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None
        for s in list(self.sessions):
            s.close()
        await self.close_listener()

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ the market clock
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
        exchange, pubsub = self.exchange, self.pubsub
        for _ in range(n):
            result = exchange.market.step()
            self.publish(result)
            pubsub.commit_step(exchange.engine.after_step(result))
            for listener in self.step_listeners:
                listener(result)
        assert result is not None
        return result

    def publish(self, result: StepResult) -> None:
        """Send one tick's public changes to the channels that have subscribers."""
        self.pubsub.publish(result)

    # ------------------------------------------------------------ sessions (Endpoint)
    def ws_open(self, conn: WsConnection) -> None:
        """A new connection gets its :class:`Session` (``conn.state``)."""
        s = Session(self, conn, conn.peer)
        conn.state = s
        self.sessions.add(s)

    def ws_close(self, conn: WsConnection) -> None:
        """Drop the session's subscriptions and timer, then run ``session_closed_listeners``
        (cancel-on-disconnect among them)."""
        s: Session = conn.state
        self.sessions.discard(s)
        self.pubsub.remove_all(s)
        s.close()
        for listener in self.session_closed_listeners:
            listener(s)
        s.conn = None

    def context(self, peer: Any) -> Context:
        """The session's handler :class:`~deribit_kit.sim.rpc.context.Context`."""
        return peer.context

    def admit(self, peer: Any) -> bool:
        """False once the exchange ended the session (after 10028 with ``rate_limit_ends_session``)."""
        return peer.ended is None  # the session is over: what arrives before the close is not answered

    def reply_delay(self) -> float:
        """The latency fault, in seconds (:meth:`Faults.set_latency`)."""
        return self.faults.latency

    def answered(self, peer: Any, answer: Answer) -> None:
        """A 10028 answer ends the session, as on Deribit: nothing more is answered and the
        connection closes with 1008 ``too_many_requests`` after the reply (unless
        ``rate_limit_ends_session`` is false)."""
        err = answer.error
        if err is not None and err.code == 10028 and self.rate_limit_ends_session:
            s: Session = peer
            s.ended = "too_many_requests"
            self.stats["rate_limit_session_ends"] += 1
            log.info("ending the session of %s: 10028 too_many_requests", s.peer)
            answer.after = lambda: s.conn.close(1008, "too_many_requests") if s.conn is not None else None

    def _storm(self, cx: Context, req: jsonrpc.Request, pools: CreditPools) -> None:
        if self.faults.storm > 0 and pools.charged(req.method):
            self.faults.storm -= 1
            raise error_for_code(10028)

    def _cancel_on_disconnect(self, s: Session) -> None:
        """The connection closed: cancel its orders if cancel-on-disconnect applies (not on logout)."""
        if s.account is None or s.logout_requested:
            return
        st = s.account.state
        if not isinstance(st, AccountState) or not (s.cancel_on_disconnect or st.cod_account):
            return
        with self.pubsub.changes() as ch:
            for o in list(st.open.values()):
                if o.session is s:
                    self.exchange.engine.cancel(o, ch, "cancel_on_disconnect")

    # ------------------------------------------------------------ HTTP (Endpoint)
    def health(self) -> dict[str, Any]:
        """``/healthz``: ``status`` and the number of open sessions."""
        return {"status": "ok", "connections": len(self.sessions)}

    async def route_http(self, request: HttpRequest) -> HttpResponse | None:
        """Answer ``/api/v2/{method}`` (GET with query params or a JSON-RPC POST) in a one-request
        session whose account is the ``Authorization`` header's (bearer token, basic or
        ``deri-hmac-sha256``; 401 when it does not check out), credits per client host: 200, 400
        for a Deribit error, 401 for 13009. Other paths: None (a 404)."""
        if not request.path.startswith("/api/v2"):
            return None
        testnet = self.rpc.testnet
        host = request.peer.rsplit(":", 1)[0]
        pools = self._http_pools.setdefault(host, CreditPools())
        s = Session(self, None, request.peer, pools)
        us_in = jsonrpc.now_us()
        try:
            req, with_id = http_request(request.path, request.query, request.body)
        except DeribitError as exc:
            return HttpResponse(400, jsonrpc.encode_error(jsonrpc.request_id_of(exc), exc, us_in, testnet))
        try:
            s.account = self.exchange.accounts.http_account(request.headers.get("authorization"), request.method,
                                                            request.target, request.body)
        except DeribitError as exc:
            return HttpResponse(401, jsonrpc.encode_error(req.id, exc, us_in, testnet, with_id=with_id))
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        answer = self.rpc.answer(s.context, b"", s.credit_pools, websocket=False, with_id=with_id, request=req)
        err = answer.error
        status = 200 if err is None else 401 if err.code == 13009 else 400
        return HttpResponse(status, answer.payload or b"")


def _authorize(cx: Context, params: dict[str, Any]) -> None:
    cx.session.require_auth(params.get("access_token"))
