"""``Deribit``: the async facade. One object per exchange connection, typed results, events.

    dk = await Deribit.connect()                 # embedded exchange, started in-process
    dk = await Deribit.connect("test")           # Deribit testnet, keys from the environment
    insts = await dk.instruments("BTC", "option")
    insts.to_frame()
    async for msg in dk.subscribe("ticker.BTC-PERPETUAL.100ms"):
        print(msg.data["mark_price"])

Raw methods mirror the API (``await dk.call("public/get_time")``); intent methods return the typed
values of :mod:`deribit_kit.models`. Sessions (auth, token refresh, heartbeats, cancel on
disconnect) and subscriptions are restored by themselves after a reconnect, and the
``reconnected`` event tells listeners (live books resync on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from .config import Settings
from .errors import DeribitError, DeribitKitError, SubscriptionError, TransportError, ValidationError
from .events import Event
from .models import (
    AccountSummary,
    AuthResult,
    BookSummary,
    Currency,
    FrameList,
    IndexPrice,
    Instrument,
    Order,
    OrderBookSnapshot,
    OrderResult,
    Position,
    PublicTrade,
    Ticker,
    UserTrade,
    convert,
    convert_list,
)
from .orders import PlacedOrder, order_params, place
from .transport.http import HttpTransport
from .transport.ws import RequestFn, WsTransport
from .wire import auth as wire_auth
from .wire.channels import ChannelError, parse_channel

if TYPE_CHECKING:
    from .broker import Broker, LiveBook
    from .portfolio import Portfolio
    from .sim import Simulator

log = logging.getLogger("deribit_kit.client")

SUBSCRIBE_CHUNK = 100  # channels per subscribe call (well under Deribit's 32 kB frame limit)


@dataclass(slots=True, frozen=True)
class Notification:
    """One message of a subscription."""

    channel: str
    data: Any


class Subscription:
    """Channels subscribed for one consumer: an async iterator of :class:`Notification` and/or a callback.

    The buffer is bounded (``maxsize``); when the consumer falls behind, the oldest messages are
    dropped and counted in ``dropped``. Leaving ``async with`` unsubscribes at once; leaving a bare
    ``async for`` (``break``) unsubscribes as soon as the loop finalizes the iterator, which
    ``await sub.wait_closed()`` waits for. A ``callback`` may be a plain function or a coroutine
    function (run as a task).
    """

    def __init__(self, client: Deribit, channels: list[str], callback: Callable[[Notification], Any] | None,
                 maxsize: int) -> None:
        self.client = client
        self.channels = channels
        self.accepted: list[str] = []
        self.callback = callback
        self.dropped = 0
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize)
        self._started = False
        self._closed = False
        self._done = asyncio.Event()

    def _deliver(self, n: Notification) -> None:
        if self.callback is not None:
            result = self.callback(n)
            if inspect.isawaitable(result):
                self.client._spawn(result)
            return
        q = self._queue
        if q.full():
            q.get_nowait()
            self.dropped += 1
        q.put_nowait(n)

    async def start(self) -> list[str]:
        """Subscribe upstream (only channels no other consumer holds yet); returns accepted channels."""
        if not self._started:
            self._started = True
            self.accepted = await self.client._attach(self)
        return self.accepted

    async def close(self) -> None:
        """Unsubscribe (upstream only for channels no other consumer holds)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._started:
                await self.client._detach(self)
        finally:
            self._done.set()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run (the upstream unsubscribe is sent by then)."""
        return self._done.is_set()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the subscription is closed, e.g. after ``break`` out of ``async for``."""
        await asyncio.wait_for(self._done.wait(), timeout)

    async def get(self, timeout: float | None = None) -> Notification:
        """The next message, waiting at most ``timeout`` seconds."""
        if not self._started:
            await self.start()
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def __aenter__(self) -> Subscription:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Notification]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Notification]:
        await self.start()
        try:
            while True:
                yield await self._queue.get()
        finally:
            await self.close()


class Deribit:
    """Async client for Deribit and the embedded exchange (WebSocket JSON-RPC or HTTP)."""

    def __init__(self, settings: Settings | None = None, *, transport: str = "ws") -> None:
        self.settings = settings or Settings()
        self.transport_kind = transport
        self.sim: Simulator | None = None
        self.ws_url = ""
        self.http_url = ""
        self._transport: WsTransport | HttpTransport | None = None
        self._listeners: dict[str, set[Subscription]] = {}
        self._auth: AuthResult | None = None
        self._token_expiry = 0.0
        self._refresh_task: asyncio.Task[None] | None = None
        self._instruments: dict[str, Instrument] = {}
        self._broker: Broker | None = None  # created by order_book(live=True)
        self._portfolio: Portfolio | None = None  # created by portfolio()
        self.connected = Event("connected")
        self.disconnected = Event("disconnected")
        self.reconnected = Event("reconnected")  # after re-auth and every subscription restored
        self.notification = Event("notification")  # every notification: (channel, data)
        self.authenticated = Event("authenticated")  # each new access token (auth, refresh, re-auth): AuthResult
        self.rate_limited = Event("rate_limited")  # a 10028 (the exchange ends the session): (method, hold s)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ lifecycle
    @classmethod
    async def connect(cls, target: str | None = None, *, client_id: str | None = None,
                      client_secret: str | None = None, transport: str = "ws",
                      settings: Settings | None = None, **options: Any) -> Deribit:
        """Connect to ``target`` (``sim`` by default, ``test``, ``prod`` or a ws:// URL).

        With ``sim`` an embedded exchange starts on a free loopback port and stops with the
        client; its demo key is used when no key is given. Extra keyword options override
        :class:`~deribit_kit.config.Settings` fields.
        """
        s = settings or Settings()
        changes: dict[str, Any] = dict(options)
        if target is not None:
            changes["target"] = target
        if client_id is not None:
            changes["client_id"] = client_id
        if client_secret is not None:
            changes["client_secret"] = client_secret
        if changes:
            s = s.with_(**changes)
        self = cls(s, transport=transport)
        await self.start()
        return self

    async def start(self) -> None:
        s = self.settings
        if s.is_sim:
            from .sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator

            self.sim = await Simulator(**s.sim_options).start()
            self.ws_url, self.http_url = self.sim.ws_url, self.sim.http_url
            if not s.has_credentials:
                cid = s.sim_options.get("client_id") or DEMO_CLIENT_ID
                secret = s.sim_options.get("client_secret") or DEMO_CLIENT_SECRET
                self.settings = s = s.with_(client_id=cid, client_secret=secret)
        else:
            self.ws_url, self.http_url = s.urls()
        try:
            if self.transport_kind == "http":
                self._transport = HttpTransport(self.http_url, client_id=s.client_id, client_secret=s.client_secret,
                                                request_timeout=s.request_timeout,
                                                client_rate_limit=s.client_rate_limit,
                                                rate_limit_retries=s.rate_limit_retries)
            elif self.transport_kind == "ws":
                ws = WsTransport(self.ws_url, on_notification=self._on_notification,
                                 request_timeout=s.request_timeout, connect_timeout=s.connect_timeout,
                                 reconnect=s.reconnect, backoff_initial=s.backoff_initial,
                                 backoff_max=s.backoff_max, client_rate_limit=s.client_rate_limit,
                                 rate_limit_retries=s.rate_limit_retries, ping_interval=s.ws_ping_interval)
                ws.reconnect_hooks.append(self._restore_session)
                ws.disconnected += self.disconnected.emit
                ws.rate_limited += self.rate_limited.emit
                ws.connected += lambda _t: self.reconnected.emit(self)
                self._transport = ws
            else:
                raise ValueError(f"transport must be 'ws' or 'http', not {self.transport_kind!r}")
            await self._transport.connect()
            await self._open_session()
        except BaseException:
            await self.close()
            raise
        self.connected.emit(self)

    async def close(self) -> None:
        """Close the connection (and the embedded exchange if this client started it)."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            with contextlib.suppress(DeribitKitError):
                await broker.close()
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            self._refresh_task = None
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            await self._transport.close()
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None

    async def __aenter__(self) -> Deribit:
        if self._transport is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = self._transport.state if self._transport else "new"
        auth = "authenticated" if self._auth else "public"
        return f"<Deribit {self.settings.target} {self.transport_kind} {state} {auth}>"

    @property
    def is_authenticated(self) -> bool:
        return self._auth is not None

    @property
    def transport(self) -> WsTransport | HttpTransport:
        if self._transport is None:
            raise DeribitKitError("not connected: use `await Deribit.connect()`")
        return self._transport

    # ------------------------------------------------------------ session
    async def _open_session(self, request: RequestFn | None = None) -> None:
        """hello, auth, heartbeat and cancel-on-disconnect, sent with ``request`` (the transport's
        restore function after a reconnect, so that they go out before any user request)."""
        s = self.settings
        if isinstance(self._transport, WsTransport):
            send = request or self.transport.request
            await send("public/hello", {"client_name": "deribit_kit", "client_version": _version()})
            if s.has_credentials:
                await self.authenticate(send)
            if s.heartbeat:
                await self.set_heartbeat(s.heartbeat, send)
            if s.cancel_on_disconnect and self._auth is not None:
                await send("private/enable_cancel_on_disconnect", {"scope": "connection"})

    async def _restore_session(self, request: RequestFn) -> None:
        """After a reconnect: auth, heartbeat, cancel-on-disconnect, then every subscription."""
        self._auth = None
        await self._open_session(request)
        channels = sorted(self._listeners)
        if channels:
            accepted = await self._subscribe_upstream(channels, request)
            lost = set(channels) - set(accepted)
            if lost:
                log.warning("after reconnect the exchange refused %d channel(s): %s", len(lost), sorted(lost)[:5])
        log.info("session restored with %d channel(s)", len(channels))

    async def authenticate(self, request: RequestFn | None = None) -> AuthResult:
        """``public/auth`` with the configured key (client_credentials or client_signature)."""
        s = self.settings
        if not s.has_credentials:
            raise ValidationError("no API key: set DERIBIT_CLIENT_ID and DERIBIT_CLIENT_SECRET")
        assert s.client_id is not None and s.client_secret is not None
        if isinstance(self._transport, HttpTransport):
            raise ValidationError("the HTTP transport signs each private request; no session to authenticate")
        if s.auth_method == "client_signature":
            params: dict[str, Any] = wire_auth.signature_params(s.client_id, s.client_secret)
        else:
            params = {"grant_type": "client_credentials", "client_id": s.client_id, "client_secret": s.client_secret}
        result = convert(await (request or self.transport.request)("public/auth", params), AuthResult)
        self._set_token(result)
        return result

    def _set_token(self, result: AuthResult) -> None:
        self._auth = result
        ttl = float(result.expires_in or 0)
        self._token_expiry = time.monotonic() + ttl
        if self._refresh_task is not None and self._refresh_task is not asyncio.current_task():
            self._refresh_task.cancel()
        self._refresh_task = None
        if ttl > 0:
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_later(ttl))
        self.authenticated.emit(result)

    def _spawn(self, aw: Any) -> None:
        """Run an awaitable (a coroutine callback) as a task that is kept alive and cancelled on close."""
        task: asyncio.Task[Any] = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("subscriber callback failed", exc_info=task.exception())

    async def _refresh_later(self, ttl: float) -> None:
        await asyncio.sleep(max(0.05, ttl * 0.8))
        if self._auth is None:  # a reconnect is re-authenticating
            return
        try:
            params = {"grant_type": "refresh_token", "refresh_token": self._auth.refresh_token}
            result = convert(await self.transport.request("public/auth", params), AuthResult)
        except (DeribitError, TransportError) as exc:
            log.warning("token refresh failed (%s); authenticating again", exc)
            with contextlib.suppress(DeribitKitError):
                await self.authenticate()
            return
        log.info("access token refreshed")
        self._set_token(result)

    async def set_heartbeat(self, interval: int, request: RequestFn | None = None) -> None:
        """Ask the exchange for heartbeats every ``interval`` s, answer its test_requests, and
        treat ~2 intervals of silence as a dead link (drop and reconnect)."""
        await (request or self.transport.request)("public/set_heartbeat", {"interval": interval})
        if isinstance(self._transport, WsTransport):
            self._transport.watch_silence(float(interval))

    # ------------------------------------------------------------ raw calls
    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None,
                   **kwargs: Any) -> Any:
        """Call any API method by name and return its raw ``result``."""
        merged = {**(params or {}), **kwargs}
        return await self.transport.request(method, merged, timeout=timeout)

    # ------------------------------------------------------------ public market data
    async def get_time(self) -> int:
        """Exchange time in milliseconds."""
        return int(await self.call("public/get_time"))

    async def test(self) -> str:
        """``public/test``: the API version string."""
        return str((await self.call("public/test"))["version"])

    async def currencies(self) -> FrameList[Currency]:
        return convert_list(await self.call("public/get_currencies"), Currency)

    async def instruments(self, currency: str = "any", kind: str | None = None, *,
                          expired: bool = False) -> FrameList[Instrument]:
        """Instruments of every kind and currency (``currency="any"``), active or recently expired.

        Each call refreshes the client's instrument cache, so new expiries are discovered as
        the exchange lists them.
        """
        params: dict[str, Any] = {"currency": currency, "expired": expired}
        if kind is not None:
            params["kind"] = kind
        items = convert_list(await self.call("public/get_instruments", params), Instrument)
        if not expired:
            for inst in items:
                self._instruments[inst.instrument_name] = inst
        return items

    async def instrument(self, name: str, *, refresh: bool = False) -> Instrument:
        """One instrument (cached; ``refresh=True`` asks the exchange again)."""
        inst = None if refresh else self._instruments.get(name)
        if inst is None:
            inst = convert(await self.call("public/get_instrument", instrument_name=name), Instrument)
            self._instruments[name] = inst
        return inst

    @overload
    async def order_book(self, instrument: str, depth: int | None = None, *,
                         live: Literal[False] = False) -> OrderBookSnapshot: ...

    @overload
    async def order_book(self, instrument: str, depth: int | None = None, *, live: Literal[True]) -> LiveBook: ...

    async def order_book(self, instrument: str, depth: int | None = None, *,
                         live: bool = False) -> OrderBookSnapshot | LiveBook:
        """A snapshot of the order book (``depth`` levels per side), or with ``live=True`` a
        :class:`~deribit_kit.broker.LiveBook` kept up to date by the client's broker."""
        if live:
            return await self.broker.book(instrument)
        params: dict[str, Any] = {"instrument_name": instrument}
        if depth is not None:
            params["depth"] = depth
        return convert(await self.call("public/get_order_book", params), OrderBookSnapshot)

    async def ticker(self, instrument: str) -> Ticker:
        return convert(await self.call("public/ticker", instrument_name=instrument), Ticker)

    async def index_price(self, index_name: str) -> IndexPrice:
        return convert(await self.call("public/get_index_price", index_name=index_name), IndexPrice)

    async def trades(self, instrument: str, count: int = 100, *, sorting: str = "desc") -> FrameList[PublicTrade]:
        """The most recent public trades of an instrument."""
        page = await self.call("public/get_last_trades_by_instrument", instrument_name=instrument, count=count,
                               sorting=sorting)
        return convert_list(page["trades"], PublicTrade)

    async def book_summary(self, currency: str, kind: str | None = None) -> FrameList[BookSummary]:
        params: dict[str, Any] = {"currency": currency}
        if kind is not None:
            params["kind"] = kind
        return convert_list(await self.call("public/get_book_summary_by_currency", params), BookSummary)

    # ------------------------------------------------------------ trading (rules in orders.py)
    async def buy(self, instrument: str, amount: float | None = None, price: float | None = None, *,
                  type: str = "limit", label: str | None = None, time_in_force: str = "good_til_cancelled",
                  post_only: bool = False, reject_post_only: bool = False, reduce_only: bool = False,
                  trigger_price: float | None = None, trigger: str | None = None, contracts: float | None = None,
                  strict: bool = True, **extra: Any) -> PlacedOrder:
        """Buy ``amount`` (USD for inverse futures, coin otherwise) or ``contracts``; checked before
        sending (see :mod:`deribit_kit.orders`), labelled, and reconciled by label after a drop."""
        inst = await self.instrument(instrument)
        params = order_params(inst, amount, price, type=type, label=label, time_in_force=time_in_force,
                              post_only=post_only, reject_post_only=reject_post_only, reduce_only=reduce_only,
                              trigger_price=trigger_price, trigger=trigger, contracts=contracts, strict=strict,
                              **extra)
        return await place(self, "buy", params)

    async def sell(self, instrument: str, amount: float | None = None, price: float | None = None, *,
                   type: str = "limit", label: str | None = None, time_in_force: str = "good_til_cancelled",
                   post_only: bool = False, reject_post_only: bool = False, reduce_only: bool = False,
                   trigger_price: float | None = None, trigger: str | None = None, contracts: float | None = None,
                   strict: bool = True, **extra: Any) -> PlacedOrder:
        """Sell; the same rules as :meth:`buy`."""
        inst = await self.instrument(instrument)
        params = order_params(inst, amount, price, type=type, label=label, time_in_force=time_in_force,
                              post_only=post_only, reject_post_only=reject_post_only, reduce_only=reduce_only,
                              trigger_price=trigger_price, trigger=trigger, contracts=contracts, strict=strict,
                              **extra)
        return await place(self, "sell", params)

    async def edit(self, order_id: str, amount: float | None, price: float | None, *, instrument: str | None = None,
                   strict: bool = True, **kw: Any) -> OrderResult:
        """``private/edit``: new amount and/or price, checked against the order's instrument."""
        from .orders import check_amount, check_price

        name = instrument or (await self.order_state(order_id)).instrument_name
        inst = await self.instrument(name)
        params: dict[str, Any] = {"order_id": order_id, **{k: v for k, v in kw.items() if v is not None}}
        if amount is not None:
            params["amount"] = check_amount(inst, amount)
        if price is not None:
            params["price"] = check_price(inst, price, strict=strict)
        return convert(await self.call("private/edit", params), OrderResult)

    async def cancel(self, order_id: str) -> Order:
        return convert(await self.call("private/cancel", order_id=order_id), Order)

    async def cancel_all(self, *, instrument: str | None = None, currency: str | None = None, kind: str | None = None,
                         label: str | None = None) -> int:
        """Cancel open orders (all, or of an instrument, a currency [+ kind], or a label); the count."""
        if label is not None:
            return int(await self.call("private/cancel_by_label", _opt(label=label, currency=currency)))
        if instrument is not None:
            return int(await self.call("private/cancel_all_by_instrument", instrument_name=instrument))
        if currency is not None:
            return int(await self.call("private/cancel_all_by_currency", _opt(currency=currency, kind=kind)))
        if kind is not None:
            return int(await self.call("private/cancel_all_by_kind_or_type", currency="any", kind=kind))
        return int(await self.call("private/cancel_all"))

    async def open_orders(self, instrument: str | None = None, currency: str | None = None,
                          kind: str | None = None) -> FrameList[Order]:
        if instrument is not None:
            raw = await self.call("private/get_open_orders_by_instrument", instrument_name=instrument)
        elif currency is not None:
            raw = await self.call("private/get_open_orders_by_currency", _opt(currency=currency, kind=kind))
        else:
            raw = await self.call("private/get_open_orders", _opt(kind=kind))
        return convert_list(raw, Order)

    async def order_state(self, order_id: str) -> Order:
        return convert(await self.call("private/get_order_state", order_id=order_id), Order)

    async def positions(self, currency: str = "any", kind: str | None = None) -> FrameList[Position]:
        return convert_list(await self.call("private/get_positions", _opt(currency=currency, kind=kind)), Position)

    async def account_summary(self, currency: str) -> AccountSummary:
        return convert(await self.call("private/get_account_summary", currency=currency), AccountSummary)

    async def user_trades(self, instrument: str, count: int = 100, *, sorting: str = "desc") -> FrameList[UserTrade]:
        page = await self.call("private/get_user_trades_by_instrument", instrument_name=instrument, count=count,
                               sorting=sorting)
        return convert_list(page["trades"], UserTrade)

    async def close_position(self, instrument: str, type: str = "market", price: float | None = None, *,
                             strict: bool = True) -> OrderResult:
        params: dict[str, Any] = {"instrument_name": instrument, "type": type}
        if price is not None:
            from .orders import check_price

            params["price"] = check_price(await self.instrument(instrument), price, strict=strict)
        return convert(await self.call("private/close_position", params), OrderResult)

    async def portfolio(self) -> Portfolio:
        """The account's live :class:`~deribit_kit.portfolio.Portfolio` (started on first use)."""
        if self._portfolio is None:
            from .portfolio import Portfolio

            self._portfolio = Portfolio(self)
        await self._portfolio.start()
        return self._portfolio

    # ------------------------------------------------------------ subscriptions
    def subscribe(self, *channels: str, callback: Callable[[Notification], Any] | None = None,
                  maxsize: int = 10_000) -> Subscription:
        """A subscription to ``channels``: iterate it (``async for``), use it as a context manager,
        or pass ``callback`` and ``await sub.start()``. Channel names are checked before sending."""
        if not channels:
            raise ValidationError("subscribe needs at least one channel")
        if isinstance(self._transport, HttpTransport):
            raise ValidationError("subscriptions need the WebSocket transport (HTTP cannot stream)")
        for ch in channels:
            try:
                parse_channel(ch)
            except ChannelError as exc:
                raise ValidationError(str(exc)) from None
        return Subscription(self, list(channels), callback, maxsize)

    async def _attach(self, sub: Subscription) -> list[str]:
        new = [ch for ch in sub.channels if ch not in self._listeners]
        for ch in sub.channels:
            self._listeners.setdefault(ch, set()).add(sub)
        if new:
            try:
                accepted = set(await self._subscribe_upstream(new))
            except BaseException:
                for ch in sub.channels:
                    self._drop_listener(ch, sub)
                raise
            refused = [ch for ch in new if ch not in accepted]
            for ch in refused:
                self._drop_listener(ch, sub)
            if refused and len(refused) == len(sub.channels):
                raise SubscriptionError(11052, "subscribe_error_unsubscribed",
                                        {"reason": "the exchange accepted none of the channels", "channels": refused},
                                        method="public/subscribe")
        return [ch for ch in sub.channels if ch in self._listeners and sub in self._listeners[ch]]

    def _drop_listener(self, ch: str, sub: Subscription) -> bool:
        subs = self._listeners.get(ch)
        if subs is None:
            return False
        subs.discard(sub)
        if not subs:
            del self._listeners[ch]
            return True
        return False

    async def _subscribe_upstream(self, channels: list[str], request: RequestFn | None = None) -> list[str]:
        send = request or self.transport.request
        accepted: list[str] = []
        private = [c for c in channels if parse_channel(c).private]
        public = [c for c in channels if c not in private]
        for method, group in (("public/subscribe", public), ("private/subscribe", private)):
            for i in range(0, len(group), SUBSCRIBE_CHUNK):
                accepted += await send(method, {"channels": group[i:i + SUBSCRIBE_CHUNK]})
        return accepted

    async def _detach(self, sub: Subscription) -> None:
        gone = [ch for ch in sub.channels if self._drop_listener(ch, sub)]
        if not gone or self._transport is None or self._transport.state == "closed":
            return
        private = [c for c in gone if parse_channel(c).private]
        public = [c for c in gone if c not in private]
        with contextlib.suppress(DeribitKitError):
            if public:
                await self.call("public/unsubscribe", channels=public)
            if private:
                await self.call("private/unsubscribe", channels=private)

    def _on_notification(self, channel: str, data: Any) -> None:
        subs = self._listeners.get(channel)
        if subs:
            n = Notification(channel, data)
            for sub in subs:
                try:
                    sub._deliver(n)
                except Exception:
                    log.exception("subscriber callback failed on %s", channel)
        if self.notification:
            self.notification.emit(channel, data)

    @property
    def broker(self) -> Broker:
        """The client's own subscription broker (created on first use)."""
        if self._broker is None:
            from .broker import Broker

            self._broker = Broker(self)
        return self._broker

    @property
    def channels(self) -> list[str]:
        """Channels currently subscribed upstream."""
        return sorted(self._listeners)


def _opt(**params: Any) -> dict[str, Any]:
    """Params without the ``None`` ones."""
    return {k: v for k, v in params.items() if v is not None}


def _version() -> str:
    from . import __version__

    return __version__
