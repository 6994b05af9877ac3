"""WebSocket JSON-RPC transport (``websockets``): requests matched to replies by id with per-call
timeouts, notifications routed by channel, heartbeats answered, silence detected, reconnects with
exponential backoff and jitter, and client-side pacing by Deribit's credit model.

Where a frame arrives: :meth:`WsTransport._read`, as bytes (never decoded to ``str``); parsed:
``orjson`` into a dict once; replies resolve the future of their id; notifications go to
``on_notification(channel, data, raw)`` (the client's one sink, which is the broker's; ``raw`` the
frame's bytes as they arrived). A 10028 answer holds every request until the credit model has room
(Deribit ends the session on it); the reconnect waits for that too. A request in flight when the
link drops fails with :class:`~deribit_kit.errors.ConnectionClosed` (retryable);
nothing waits past its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from ..errors import (
    ConnectError,
    ConnectionClosed,
    DeribitError,
    RequestTimeout,
    TransportError,
)
from ..events import Event
from ..wire import jsonrpc
from ..wire.auth import redact
from ..wire.credits import CreditPools
from .pacing import ClientCredits, retry_rate_limited, spend
from .wslog import websockets_logger

log = logging.getLogger("deribit_kit.transport.ws")

NotificationHandler = Callable[[str, Any, "str | bytes | None"], None]
"""``handler(channel, data, raw)``: a notification's channel, its decoded ``data`` and the frame as it arrived."""
RequestFn = Callable[[str, dict[str, Any]], Awaitable[Any]]
ReconnectHook = Callable[[RequestFn], Awaitable[None]]
"""Restores the session on a new link. It gets the one request function that may use the link
before it is open to everyone else; every other request waits until the hooks are done."""


class WsTransport:
    """One logical connection to a Deribit-compatible WebSocket endpoint that survives drops."""

    def __init__(
        self,
        url: str,
        *,
        on_notification: NotificationHandler,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        reconnect: bool = True,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        client_rate_limit: bool = True,
        rate_limit_retries: int = 6,
        ping_interval: float | None = 20.0,
        ssl_context: ssl.SSLContext | None = None,
        max_size: int = 2**24,
    ) -> None:
        self.url = url
        self.on_notification = on_notification
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_enabled = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rate_limit_retries = rate_limit_retries
        self.ping_interval = ping_interval
        self.ssl_context = ssl_context
        self.max_size = max_size
        self.credits: CreditPools | None = ClientCredits() if client_rate_limit else None
        self.state = "new"  # new | open | reconnecting | restoring | closed
        self.reconnect_hooks: list[ReconnectHook] = []
        self.connected = Event("connected")  # after each (re)connect and its hooks
        self.disconnected = Event("disconnected")  # with the reason
        self.protocol_error = Event("protocol_error")  # a frame that was not Deribit JSON-RPC
        self.heartbeat = Event("heartbeat")  # each heartbeat message from the exchange, with its type
        self.rate_limited = Event("rate_limited")  # a 10028 answer: (method, seconds sending is held)
        self.stats: dict[str, float] = {
            "requests": 0, "notifications": 0, "reconnects": 0, "protocol_errors": 0, "rate_limited": 0,
            "test_requests": 0, "rate_limit_wait_s": 0.0}
        self.stable_after = 5.0  # a link that lived shorter than this keeps the reconnect backoff growing
        self._hold_until = 0.0  # after a 10028 nothing is sent before this (monotonic) time
        self._opened_at = 0.0
        self._delay = backoff_initial
        self.last_rx = 0.0
        self.rtt_ms: float | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], str]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._open = asyncio.Event()
        self._closing = False
        self._heartbeat: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Open the connection (raises :class:`ConnectError`); reconnects by itself afterwards."""
        await self._dial()
        self.state = "open"
        self._opened_at = time.monotonic()
        self._open.set()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _dial(self) -> None:
        try:
            ws = await asyncio.wait_for(
                websockets.connect(self.url, max_size=self.max_size, ping_interval=self.ping_interval,
                                   ssl=self.ssl_context, compression=None, open_timeout=self.connect_timeout,
                                   logger=websockets_logger("client")),
                self.connect_timeout,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {exc}") from exc
        self._ws = ws
        self.last_rx = time.monotonic()
        self._reader = asyncio.get_running_loop().create_task(self._read(ws))
        log.info("connected to %s", self.url)

    async def _supervise(self) -> None:
        """Wait for the link to drop; then reconnect with backoff and run the reconnect hooks."""
        while not self._closing:
            assert self._reader is not None
            await asyncio.shield(self._reader)
            if self._closing:
                return
            if not self.reconnect_enabled:
                self.state = "closed"
                return
            self.state = "reconnecting"
            if time.monotonic() - self._opened_at >= self.stable_after:
                self._delay = self.backoff_initial  # the last link was healthy: start the backoff afresh
            while not self._closing:
                # jitter: between half and the full delay; never before a 10028's credits are back
                delay = self._delay
                pause = max(delay * (0.5 + random.random() / 2), self._hold_until - time.monotonic())
                await asyncio.sleep(pause)
                self._delay = delay = min(delay * 2, self.backoff_max)
                try:
                    await self._dial()
                except ConnectError as exc:
                    log.warning("reconnect failed (%s); next try in ~%.1fs", exc, delay)
                    continue
                self.stats["reconnects"] += 1
                # user requests keep waiting until the session is restored; the hooks' own go through
                self.state = "restoring"
                try:
                    for hook in self.reconnect_hooks:
                        await hook(self._restore_request)
                except Exception as exc:
                    log.warning("restoring the session after reconnect failed (%s); next try in ~%.1fs", exc, delay)
                    self.state = "reconnecting"
                    self.abort()
                    continue
                if self._ws is None:  # dropped again while restoring
                    self.state = "reconnecting"
                    continue
                self.state = "open"
                self._opened_at = time.monotonic()
                self._open.set()
                self.connected.emit(self)
                break

    async def close(self) -> None:
        """Close for good: pending requests fail, no reconnect."""
        self._closing = True
        self.state = "closed"
        self._open.set()  # wake requests waiting for a reconnection: they fail at once
        self._stop_watchdog()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
        for task in (self._reader, self._supervisor, *self._tasks):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._fail_pending("client closed")

    def abort(self) -> None:
        """Drop the TCP connection now (the supervisor reconnects if enabled)."""
        if self._ws is not None and self._ws.transport is not None:
            self._ws.transport.abort()

    # ------------------------------------------------------------ statistics hook
    def time_notifications(self, enabled: bool = True) -> None:
        """Count the CPU time spent handling notifications (the handler and all it calls; the JSON
        decode before it is not included) in ``stats["notification_cpu_s"]``. Off by default: it
        costs two clock reads per notification."""
        handler = self.on_notification
        inner = getattr(handler, "_dk_inner", handler)
        if not enabled:
            self.on_notification = inner
            return
        if inner is not handler:
            return
        stats = self.stats
        stats.setdefault("notification_cpu_s", 0.0)
        clock = time.thread_time

        def timed(channel: str, data: Any, raw: str | bytes | None) -> None:
            t0 = clock()
            try:
                inner(channel, data, raw)
            finally:
                stats["notification_cpu_s"] += clock() - t0

        timed._dk_inner = inner  # type: ignore[attr-defined]
        self.on_notification = timed

    # ------------------------------------------------------------ receiving
    async def _read(self, ws: ClientConnection) -> None:
        reason = "connection closed"
        try:
            on_frame = self._on_frame
            recv = ws.recv
            while True:  # frames as bytes (no str decode): parsed once, and forwarded as they came
                on_frame(await recv(decode=False))
        except websockets.ConnectionClosedOK:
            pass
        except websockets.ConnectionClosed as exc:
            reason = f"connection closed ({exc.rcvd.code if exc.rcvd else 1006}"
            reason += f" {exc.rcvd.reason})" if exc.rcvd and exc.rcvd.reason else ")"
        except Exception as exc:  # never let the reader die silently
            log.exception("reader failed")
            reason = f"reader failed: {exc}"
        finally:
            if self._ws is ws:
                self._ws = None
                self._open.clear()
                if self.state != "restoring":
                    self.state = "reconnecting" if self.reconnect_enabled and not self._closing else "closed"
            self._fail_pending(reason)
            log.info("disconnected from %s: %s", self.url, reason)
            self.disconnected.emit(reason)

    def _on_frame(self, frame: str | bytes) -> None:
        """One frame from the exchange: decode once, then a reply, a notification or a heartbeat."""
        self.last_rx = time.monotonic()
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._bad_frame(frame, "not JSON")
            return
        if type(msg) is dict and msg.get("method") == "subscription":  # the hot path, routed here at once
            params = msg.get("params")
            if type(params) is dict and type(channel := params.get("channel")) is str:
                self.stats["notifications"] += 1
                try:
                    self.on_notification(channel, params.get("data"), frame)
                except Exception:
                    log.exception("notification handler failed for %s", channel)
                return
        if not isinstance(msg, dict):
            self._bad_frame(frame, "not a JSON object")
            return
        self._dispatch(msg, frame)

    def _dispatch(self, msg: dict[str, Any], frame: str | bytes) -> None:
        method = msg.get("method")
        if method == "subscription":
            params = msg.get("params")
            if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
                self._bad_frame(frame, "subscription without channel")
                return
            self.stats["notifications"] += 1
            try:
                self.on_notification(params["channel"], params.get("data"), frame)
            except Exception:
                log.exception("notification handler failed for %s", params["channel"])
            return
        if method == "heartbeat":
            params = msg.get("params")
            kind = params.get("type") if isinstance(params, dict) else None
            if kind == "test_request":
                self.stats["test_requests"] += 1
                task = asyncio.get_running_loop().create_task(self._answer_test_request())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self.heartbeat.emit(kind)
            return
        rid = msg.get("id")
        entry = self._pending.pop(rid, None) if type(rid) is int else None
        if entry is None:
            if "id" in msg:
                log.debug("reply to unknown id %r", rid)
            else:
                self._bad_frame(frame, "neither a reply nor a notification")
            return
        fut, req_method = entry
        if "error" in msg:
            err = DeribitError.from_wire(msg["error"], req_method)
            if err.code == 10028:
                self._on_rate_limited(req_method)
            if not fut.done():
                fut.set_exception(err)
            return
        if fut.done():
            return
        if "result" in msg:
            fut.set_result(msg)
        else:
            fut.set_exception(DeribitError.from_wire(None, req_method))

    def _on_rate_limited(self, method: str) -> None:
        """10028: Deribit ends the session. Send nothing until the credit model has room again;
        the supervisor reconnects no sooner (and restores the session) once the exchange closes."""
        wait = self.credits.exhausted(method) if self.credits is not None else self.backoff_initial
        wait = max(wait, self.backoff_initial)
        self._hold_until = max(self._hold_until, time.monotonic() + wait)
        self.stats["rate_limit_wait_s"] += wait
        log.warning("%s: 10028 too_many_requests; holding requests for %.2fs (the exchange ends the session)",
                    method, wait)
        self.rate_limited.emit(method, wait)

    def _bad_frame(self, frame: str | bytes, why: str) -> None:
        self.stats["protocol_errors"] += 1
        text = frame[:200] if isinstance(frame, str) else frame[:200].decode(errors="replace")
        log.warning("ignoring malformed frame from server (%s): %r", why, text)
        self.protocol_error.emit(why, text)

    async def _answer_test_request(self) -> None:
        with contextlib.suppress(TransportError, DeribitError):
            await self.request("public/test", {}, timeout=self.request_timeout)

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for fut, method in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(f"{reason}; the request's outcome is unknown", method=method))

    # ------------------------------------------------------------ heartbeats
    def watch_silence(self, interval: float) -> None:
        """After ``public/set_heartbeat(interval)``: if nothing arrives for ~2 intervals, drop and reconnect."""
        self._heartbeat = interval
        self._stop_watchdog()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(interval))

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def _watch(self, interval: float) -> None:
        limit = interval * 2 + 1.0
        while not self._closing:
            await asyncio.sleep(interval / 2)
            if self.state == "open" and time.monotonic() - self.last_rx > limit:
                log.warning("no message from %s for %.1fs: dropping the connection", self.url, limit)
                self.abort()

    # ------------------------------------------------------------ requests
    async def request(self, method: str, params: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        """Send one request and return its ``result``; raise the mapped error otherwise.

        Waits for a (re)connection within the timeout; paces itself with the credit model; on
        10028 backs off and retries (the request was refused, so it is safe to resend).
        """
        return await self._request(method, params or {}, timeout, restoring=False)

    async def _restore_request(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        """What the reconnect hooks send with: uses the new link while the session is being restored."""
        return await self._request(method, params, timeout, restoring=True)

    async def _request(self, method: str, params: dict[str, Any], timeout: float | None, *, restoring: bool) -> Any:
        timeout = self.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        return await retry_rate_limited(lambda: self._request_once(method, params, deadline, restoring), method,
                                        retries=self.rate_limit_retries, deadline=deadline, stats=self.stats)

    async def _ready(self, method: str, deadline: float, restoring: bool) -> None:
        """Wait until this request may go out: the link is open (or being restored, for the
        restore's own requests) and the credit model has room. A user request that was pacing
        while the link dropped waits again for the restored session: it never reaches a new
        connection before the re-authentication."""
        while True:
            if self._closing:
                raise ConnectionClosed("the client is closed", method=method)
            if self.state == "closed":
                raise ConnectionClosed("the connection was lost and reconnecting is off", method=method)
            if not restoring and not self._open.is_set():
                try:
                    await asyncio.wait_for(self._open.wait(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise RequestTimeout(f"not connected to {self.url} within the timeout", method=method) from None
                continue
            hold = self._hold_until - time.monotonic()
            if hold > 0 and not restoring:  # after a 10028: the session is ending, send nothing
                if time.monotonic() + hold >= deadline:
                    raise RequestTimeout("holding after a 10028 would exceed the timeout", method=method)
                await asyncio.sleep(hold)
                continue
            await spend(self.credits, method, deadline)
            if restoring or self._open.is_set():
                return

    async def _request_once(self, method: str, params: dict[str, Any], deadline: float, restoring: bool) -> Any:
        await self._ready(method, deadline, restoring)
        ws = self._ws
        if ws is None:
            raise ConnectionClosed("not connected", method=method)
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, method)
        frame = jsonrpc.encode_request(rid, method, params)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("> %s %s", method, orjson.dumps(redact(params)).decode())
        sent = time.monotonic()
        try:
            await ws.send(frame.decode())
        except websockets.ConnectionClosed:
            self._pending.pop(rid, None)
            raise ConnectionClosed("connection closed while sending", method=method) from None
        self.stats["requests"] += 1
        try:
            reply = await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._pending.pop(rid, None)
            raise RequestTimeout(f"no answer within {deadline - sent:.1f}s", method=method) from None
        self.rtt_ms = (time.monotonic() - sent) * 1000
        if log.isEnabledFor(logging.DEBUG):
            log.debug("< %s in %.2fms", method, self.rtt_ms)
        return reply["result"]

    async def wait_open(self, timeout: float) -> None:
        """Wait until the connection is open (or closed for good), at most ``timeout`` seconds
        (TimeoutError then)."""
        await asyncio.wait_for(self._open.wait(), timeout)
