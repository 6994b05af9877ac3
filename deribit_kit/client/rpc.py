"""``Client``: one Deribit-compatible connection — requests, the session, token refresh,
reconnects and session restore — with one notification sink and a primitive to subscribe and
unsubscribe channels upstream. No fan-out and no subscription registry: the broker
(:mod:`deribit_kit.broker`) is the only fan-out, fed through :mod:`deribit_kit.upstream.live`.

Where a frame arrives and is parsed: :class:`~deribit_kit.transport.ws.WsTransport`; a reply
resolves its request here (:meth:`Client.call`); a notification goes to the sink that
:meth:`Client.set_sink` installed (called with ``channel, data, raw``), straight from the
transport's read loop.

After a reconnect the transport holds user requests while :meth:`Client._restore_session` sends
hello, auth, heartbeat and cancel-on-disconnect and subscribes again every channel that was on
the wire; then :attr:`Client.epoch` grows and ``reconnected`` fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from ..config import Settings, trust_context
from ..errors import DeribitError, DeribitKitError, TransportError, ValidationError
from ..events import Event
from ..models import AuthResult, convert
from ..transport.http import HttpTransport
from ..transport.ws import NotificationHandler, RequestFn, WsTransport
from ..wire import auth as wire_auth
from ..wire.channels import chunk_channels, parse_channel
from .methods import Methods

__all__ = ["Client"]

log = logging.getLogger("deribit_kit.client")


def _nowhere(channel: str, data: Any, raw: str | bytes | None) -> None:
    """The sink before anyone installs one: notifications go nowhere."""


class Client(Methods):
    """Async client for one Deribit-compatible endpoint (WebSocket JSON-RPC or HTTP).

    Most users want the :class:`~deribit_kit.Deribit` facade, which composes a client with the
    broker and live objects; a bare ``Client`` is for requests and the session alone.
    """

    def __init__(self, ws_url: str, http_url: str, settings: Settings | None = None, *, transport: str = "ws",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.transport_kind = transport
        self.ws_url, self.http_url = ws_url, http_url
        self.ssl_context = ssl_context or trust_context(self.settings.ca_file)
        self.epoch = 0  # grows with every connection whose session is restored
        self.connected = Event("connected")
        self.disconnected = Event("disconnected")  # with the reason
        self.reconnected = Event("reconnected")  # after re-auth and every channel restored
        self.authenticated = Event("authenticated")  # each new access token: AuthResult
        self.rate_limited = Event("rate_limited")  # a 10028 (the exchange ends the session): (method, hold s)
        self._transport: WsTransport | HttpTransport | None = None
        self._sink: NotificationHandler = _nowhere
        self._wire: set[str] = set()  # channels subscribed on the current connection
        self._auth: AuthResult | None = None
        self._refresh_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> Client:
        """Open the connection and the session (hello, auth, heartbeat, cancel-on-disconnect)."""
        s = self.settings
        try:
            if self.transport_kind == "http":
                self._transport = HttpTransport(self.http_url, client_id=s.client_id, client_secret=s.client_secret,
                                                request_timeout=s.request_timeout,
                                                client_rate_limit=s.client_rate_limit,
                                                rate_limit_retries=s.rate_limit_retries,
                                                verify=self.ssl_context or True)
            elif self.transport_kind == "ws":
                ws = WsTransport(self.ws_url, on_notification=self._sink, request_timeout=s.request_timeout,
                                 connect_timeout=s.connect_timeout, reconnect=s.reconnect,
                                 backoff_initial=s.backoff_initial, backoff_max=s.backoff_max,
                                 client_rate_limit=s.client_rate_limit, rate_limit_retries=s.rate_limit_retries,
                                 ping_interval=s.ws_ping_interval, ssl_context=self.ssl_context)
                ws.reconnect_hooks.append(self._restore_session)
                ws.disconnected += self.disconnected.emit
                ws.rate_limited += self.rate_limited.emit
                ws.connected += self._on_reconnected
                self._transport = ws
            else:
                raise ValueError(f"transport must be 'ws' or 'http', not {self.transport_kind!r}")
            await self._transport.connect()
            await self._open_session()
        except BaseException:
            await self.close()
            raise
        self.epoch += 1
        self.connected.emit(self)
        return self

    async def close(self) -> None:
        """Close the connection: requests in flight fail, nothing reconnects."""
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            self._refresh_task = None
        if self._transport is not None:
            await self._transport.close()

    def __repr__(self) -> str:
        state = self._transport.state if self._transport else "new"
        auth = "authenticated" if self._auth else "public"
        return f"<Client {self.ws_url} {self.transport_kind} {state} {auth}>"

    @property
    def is_authenticated(self) -> bool:
        """True once ``public/auth`` succeeded on this connection."""
        return self._auth is not None

    @property
    def transport(self) -> WsTransport | HttpTransport:
        """The connected transport (WebSocket or HTTP); raises when the client is not connected."""
        if self._transport is None:
            raise DeribitKitError("not connected: use `await Deribit.connect()`")
        return self._transport

    @property
    def state(self) -> str:
        """The transport's state: ``new``, ``open``, ``reconnecting``, ``restoring`` or ``closed``."""
        return self._transport.state if self._transport is not None else "new"

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
        """After a reconnect: auth, heartbeat, cancel-on-disconnect, then every channel that was on the wire."""
        self._auth = None
        await self._open_session(request)
        channels, self._wire = sorted(self._wire), set()
        if channels:
            accepted = await self._subscribe(channels, request)
            lost = set(channels) - set(accepted)
            if lost:
                log.warning("after reconnect the exchange refused %d channel(s): %s", len(lost), sorted(lost)[:5])
        log.info("session restored with %d channel(s)", len(channels))

    def _on_reconnected(self, _transport: Any) -> None:
        self.epoch += 1
        self.reconnected.emit(self)

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
        if self._refresh_task is not None and self._refresh_task is not asyncio.current_task():
            self._refresh_task.cancel()
        self._refresh_task = None
        if ttl > 0:
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_later(ttl))
        self.authenticated.emit(result)

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

    # ------------------------------------------------------------ channels (the upstream primitive)
    def set_sink(self, sink: NotificationHandler | None) -> None:
        """Where every notification goes: ``sink(channel, data, raw)``, from the read loop."""
        self._sink = sink or _nowhere
        if isinstance(self._transport, WsTransport):
            self._transport.on_notification = self._sink

    @property
    def channels(self) -> frozenset[str]:
        """Channels subscribed on the current connection."""
        return frozenset(self._wire)

    async def subscribe_channels(self, channels: list[str]) -> list[str]:
        """``public/subscribe`` (``private/subscribe`` for private channels) in calls of at most 100
        names and 32 kB; returns the accepted channels, which are restored after a reconnect."""
        if isinstance(self._transport, HttpTransport):
            raise ValidationError("subscriptions need the WebSocket transport (HTTP cannot stream)")
        return await self._subscribe(channels, self.transport.request)

    async def _subscribe(self, channels: list[str], send: RequestFn) -> list[str]:
        accepted: list[str] = []
        for method, group in _by_scope(channels, "subscribe"):
            for chunk in chunk_channels(group):
                got = await send(method, {"channels": chunk})
                self._wire.update(got)
                accepted += got
        return accepted

    async def unsubscribe_channels(self, channels: list[str]) -> None:
        """Unsubscribe ``channels`` (at once forgotten: a reconnect does not restore them)."""
        self._wire.difference_update(channels)
        transport = self._transport
        if transport is None or transport.state == "closed":
            return
        try:
            for method, group in _by_scope(channels, "unsubscribe"):
                for chunk in chunk_channels(group):
                    await transport.request(method, {"channels": chunk})
        finally:  # a restore that ran meanwhile may have subscribed them again on the new link
            self._wire.difference_update(channels)


def _by_scope(channels: list[str], verb: str) -> list[tuple[str, list[str]]]:
    """``(public/{verb}, public channels), (private/{verb}, private channels)``, the empty ones left out."""
    private = [c for c in channels if parse_channel(c).private]
    public = [c for c in channels if c not in set(private)]
    return [(f"{scope}/{verb}", group) for scope, group in (("public", public), ("private", private)) if group]


def _version() -> str:
    from .. import __version__

    return __version__
