"""``Deribit``: the facade. One object composes a client, its upstream, the broker and the live
objects, and resolves where to connect (``sim`` | ``test`` | ``prod`` | a ``ws://`` URL).

    dk = await Deribit.connect()                 # embedded exchange, started in-process
    dk = await Deribit.connect("test")           # Deribit testnet, keys from the environment
    insts = await dk.instruments("BTC", "option")
    insts.to_frame()
    async for msg in dk.subscribe("ticker.BTC-PERPETUAL.100ms"):
        print(msg.data["mark_price"])
    book = await dk.order_book("BTC-PERPETUAL", live=True)    # a LiveBook, updated in place

Raw methods mirror the API (``await dk.call("public/get_time")``); intent methods return the typed
values of :mod:`deribit_kit.models` (:class:`~deribit_kit.client.methods.Methods`). Every stream
comes from the broker (:meth:`Deribit.subscribe` is a broker consumer), so notebooks, dashboards,
the port, recorders and sinks see the same contract. Sessions (auth, token refresh, heartbeats,
cancel on disconnect) and channels are restored by the client after a reconnect; ``reconnected``
tells listeners, and live books resync.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload

from .broker import Broker, Consumer
from .broker.consumer import Item
from .client import Client, Methods
from .config import Settings
from .errors import DeribitKitError, ValidationError
from .events import Event
from .live.candles import LiveCandles
from .live.livebook import LiveBook
from .live.portfolio import Portfolio
from .models import Candle, FrameList, Instrument, OrderBookSnapshot
from .transport.http import HttpTransport
from .transport.ws import WsTransport
from .upstream.live import LiveUpstream
from .upstream.protocol import Upstream

if TYPE_CHECKING:
    from .sim import Simulator

__all__ = ["Deribit"]


class Deribit(Methods):
    """Async facade for Deribit and the embedded exchange: requests, streams and live objects."""

    def __init__(self, settings: Settings | None = None, *, transport: str = "ws") -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.transport_kind = transport
        self.sim: Simulator | None = None
        self.ws_url = ""
        self.http_url = ""
        self.client: Client | None = None  # None when the upstream is a recording or a topic
        self.upstream: Upstream | None = None
        self._broker: Broker | None = None
        self._portfolio: Portfolio | None = None
        self.connected = Event("connected")
        self.disconnected = Event("disconnected")
        self.reconnected = Event("reconnected")  # after re-auth and every channel restored
        self.authenticated = Event("authenticated")  # each new access token (auth, refresh, re-auth): AuthResult
        self.rate_limited = Event("rate_limited")  # a 10028 (the exchange ends the session): (method, hold s)
        self.notification = Event("notification")  # every notification the broker routes: (channel, data)

    # ------------------------------------------------------------ lifecycle
    @classmethod
    async def connect(cls, target: str | None = None, *, client_id: str | None = None,
                      client_secret: str | None = None, transport: str = "ws",
                      settings: Settings | None = None, **options: Any) -> Deribit:
        """Connect to ``target`` (``sim`` by default, ``test``, ``prod`` or a ws:// URL).

        With ``sim`` an embedded exchange starts on a free loopback port and stops with the
        client; its demo key is used when no key is given. Extra keyword options override
        :class:`~deribit_kit.config.Settings` fields. ``replay:DIR`` (``replay:DIR?speed=10``)
        is :meth:`replay` of the recording in ``DIR``; ``kafka://HOST:PORT/PREFIX`` is
        :meth:`from_kafka` (the Kafka pipeline's topics).
        """
        s = settings or Settings()
        where = target if target is not None else s.target
        if where.startswith("replay:"):
            path, _, query = where[len("replay:"):].partition("?")
            opts = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
            return await cls.replay(path, **opts)
        if where.startswith("kafka://"):
            return await cls.from_kafka(where, **options)
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
        """Start the embedded exchange (``sim``), connect and open the session."""
        s = self.settings
        try:
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
            client = Client(self.ws_url, self.http_url, s, transport=self.transport_kind)
            self.client = client
            for name in ("connected", "disconnected", "reconnected", "authenticated", "rate_limited"):
                getattr(client, name).connect(getattr(self, f"_emit_{name}"))
            await client.start()
        except BaseException:
            await self.close()
            raise
        self.upstream = LiveUpstream(client)

    # the facade's events carry the facade (the client's carry the client)
    def _emit_connected(self, _client: Any) -> None:
        self.connected.emit(self)

    def _emit_reconnected(self, _client: Any) -> None:
        self.reconnected.emit(self)

    def _emit_disconnected(self, reason: str) -> None:
        self.disconnected.emit(reason)

    def _emit_authenticated(self, result: Any) -> None:
        self.authenticated.emit(result)

    def _emit_rate_limited(self, method: str, hold: float) -> None:
        self.rate_limited.emit(method, hold)

    async def close(self) -> None:
        """Close the broker, the connection, and the embedded exchange if this facade started it."""
        if self._portfolio is not None:
            portfolio, self._portfolio = self._portfolio, None
            with contextlib.suppress(DeribitKitError):
                await portfolio.close()
        if self._broker is not None:
            broker, self._broker = self._broker, None
            with contextlib.suppress(DeribitKitError):
                await broker.close()
        if self.upstream is not None:
            await self.upstream.close()
        if self.client is not None:
            await self.client.close()
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None

    async def __aenter__(self) -> Deribit:
        if self.client is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = self.client.state if self.client is not None else "new"
        auth = "authenticated" if self.is_authenticated else "public"
        return f"<Deribit {self.settings.target} {self.transport_kind} {state} {auth}>"

    @classmethod
    async def over(cls, upstream: Upstream, settings: Settings | None = None) -> Deribit:
        """A facade over an upstream that is not a live connection (a recording, a Kafka topic):
        the same streams, live books and public lookups; no account (private methods are refused)."""
        self = cls(settings or Settings(target="sim"))
        self.upstream = upstream
        self.ws_url = self.http_url = ""
        return self

    @classmethod
    async def replay(cls, path: str, **options: Any) -> Deribit:
        """A facade over a recording (:class:`~deribit_kit.upstream.replay.Replay`; ``options``:
        ``speed="max"`` | 1.0 | 10.0, ``start=``, ``end=``, ``instruments=``, ``autoplay=``): the
        same streams, live books and public lookups as live; private methods are refused (a replay
        has no account). Playback starts with the first subscribe (``autoplay=False``:
        ``await dk.upstream.play()``); ``await dk.upstream.wait_done()`` waits for its end."""
        from .upstream.replay import Replay

        replay = Replay(path, **options)
        self = await cls.over(replay, Settings(target=f"replay:{path}"))

        def book(name: str) -> dict[str, Any] | None:
            live = self._broker.books.get(name) if self._broker is not None else None
            return live.snapshot() if live is not None else None

        replay.book_source = book
        return self

    @classmethod
    async def from_kafka(cls, bootstrap: str, prefix: str = "deribit", **options: Any) -> Deribit:
        """A facade over the Kafka pipeline's topics (:class:`~deribit_kit.upstream.kafka.KafkaSource`):
        ``bootstrap`` is ``HOST:PORT[,...]`` or a ``kafka://HOST:PORT/PREFIX`` URL; ``options`` go to the
        source (``config=`` for librdkafka settings). Books start from the latest snapshot on the topic
        and keep Deribit's continuity; public lookups come from the topics; private methods are refused."""
        from .upstream.kafka import KafkaSource, parse_kafka_url

        if bootstrap.startswith("kafka://"):
            bootstrap, prefix = parse_kafka_url(bootstrap)
        source = await KafkaSource(bootstrap, prefix, **options).start()
        self = await cls.over(source, Settings(target=f"kafka://{bootstrap}/{prefix}"))

        def book(name: str) -> dict[str, Any] | None:
            live = self._broker.books.get(name) if self._broker is not None else None
            return live.snapshot() if live is not None else None

        source.book_source = book
        self.broker.attach("kafka-source", source)  # its figures on /metrics and the ops page
        return self

    @property
    def is_authenticated(self) -> bool:
        """Whether the session holds an access token (private methods and channels work)."""
        return self.client is not None and self.client.is_authenticated

    @property
    def transport(self) -> WsTransport | HttpTransport:
        """The client's transport (its ``stats``, ``state``, ``rtt_ms``)."""
        return self._client.transport

    @property
    def _client(self) -> Client:
        if self.client is None:
            raise DeribitKitError("not connected: use `await Deribit.connect()`")
        return self.client

    # ------------------------------------------------------------ requests
    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None,
                   **kwargs: Any) -> Any:
        """Call any API method by name and return its raw ``result`` (through the upstream: the
        exchange for a live connection; a recording or a topic answers what it can, and refuses
        private methods with a clear error)."""
        merged = {**(params or {}), **kwargs}
        if self.client is not None:
            return await self.client.call(method, merged, timeout=timeout)
        return await self._upstream.call(method, merged, timeout=timeout)

    async def instruments(self, currency: str = "any", kind: str | None = None, *,
                          expired: bool = False) -> FrameList[Instrument]:
        """Instruments of every kind and currency (``currency="any"``), active or recently expired.

        Each call refreshes the instrument cache, so new expiries are discovered as the exchange
        lists them.
        """
        if self.client is not None:
            return await self.client.instruments(currency, kind, expired=expired)
        return FrameList(await self._upstream.instruments(currency, kind), item_type=Instrument)

    async def instrument(self, name: str, *, refresh: bool = False) -> Instrument:
        """One instrument (cached; ``refresh=True`` asks the exchange again)."""
        if self.client is not None:
            return await self.client.instrument(name, refresh=refresh)
        return await self._upstream.instrument(name)

    @property
    def _upstream(self) -> Upstream:
        if self.upstream is None:
            raise DeribitKitError("not connected: use `await Deribit.connect()`")
        return self.upstream

    async def authenticate(self) -> Any:
        """``public/auth`` with the configured key (client_credentials or client_signature)."""
        return await self._client.authenticate()

    async def set_heartbeat(self, interval: int) -> None:
        """Ask the exchange for heartbeats every ``interval`` s and treat silence as a dead link."""
        await self._client.set_heartbeat(interval)

    @overload
    async def order_book(self, instrument: str, depth: int | None = None, *,
                         live: Literal[False] = False) -> OrderBookSnapshot: ...

    @overload
    async def order_book(self, instrument: str, depth: int | None = None, *, live: Literal[True]) -> LiveBook: ...

    async def order_book(self, instrument: str, depth: int | None = None, *,
                         live: bool = False) -> OrderBookSnapshot | LiveBook:
        """A snapshot of the order book (``depth`` levels per side), or with ``live=True`` a
        :class:`~deribit_kit.live.LiveBook` kept up to date by the broker."""
        if live:
            return await self.broker.book(instrument)
        return await super().order_book(instrument, depth)

    @overload
    async def candles(self, instrument: str, resolution: str | int = "1", start: datetime | int | None = None,
                      end: datetime | int | None = None, *, live: Literal[False] = False) -> FrameList[Candle]: ...

    @overload
    async def candles(self, instrument: str, resolution: str | int = "1", start: datetime | int | None = None,
                      end: datetime | int | None = None, *, live: Literal[True]) -> LiveCandles: ...

    async def candles(self, instrument: str, resolution: str | int = "1", start: datetime | int | None = None,
                      end: datetime | int | None = None, *, live: bool = False) -> FrameList[Candle] | LiveCandles:
        """OHLCV candles from ``start`` to ``end`` (see :meth:`Methods.candles`), or with ``live=True``
        a started :class:`~deribit_kit.live.candles.LiveCandles`: the history from ``start`` (else the
        last 200 periods) plus the open candle from ``chart.trades.{instrument}.{resolution}``,
        updated in place (``await live.close()`` leaves the channel)."""
        if live:
            return await LiveCandles(self, instrument, resolution, start=start).start()
        return await super().candles(instrument, resolution, start, end)

    # ------------------------------------------------------------ streams and live objects
    @property
    def broker(self) -> Broker:
        """The facade's subscription broker (created on first use): the only fan-out."""
        if self._broker is None:
            if self.client is not None and isinstance(self.client.transport, HttpTransport):
                raise ValidationError("streams need the WebSocket transport (HTTP cannot stream)")
            self._broker = Broker(self._upstream)
            self._broker.notification += self.notification.emit
        return self._broker

    def subscribe(self, *channels: str, callback: Callable[[Item], Any] | None = None,
                  maxsize: int = 10_000) -> Consumer:
        """A broker consumer of ``channels`` (``drop_oldest``: a :class:`~deribit_kit.broker.Gap`
        marks what a slow reader lost): iterate it (``async for``), use it as a context manager,
        or pass ``callback`` (a function or a coroutine function) and ``await sub.start()``.
        Channel names are checked before anything is sent."""
        if not channels:
            raise ValidationError("subscribe needs at least one channel")
        return self.broker.consumer(list(channels), "drop_oldest", maxsize, callback=callback)

    @property
    def channels(self) -> list[str]:
        """Channels currently subscribed upstream."""
        return sorted(self.client.channels) if self.client is not None else []

    async def portfolio(self) -> Portfolio:
        """The account's live :class:`~deribit_kit.live.Portfolio` (started on first use)."""
        if self._portfolio is None:
            self._portfolio = Portfolio(self)
        await self._portfolio.start()
        return self._portfolio
