"""Shared fixtures: the embedded exchange on an ephemeral loopback port, and a raw WebSocket
JSON-RPC peer for talking to it without the client."""

from __future__ import annotations

import asyncio
import itertools
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from deribit_kit import Deribit
from deribit_kit.events import Event
from deribit_kit.models import Instrument
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPEC_PATH = SHARED / "deribit" / "deribit_api_v2.json"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A running embedded exchange, ticking every 50 ms, no rate limits, short heartbeats allowed."""
    async with Simulator(seed=1, tick_interval=0.05, rate_limits=False, min_heartbeat_interval=1) as s:
        yield s


class RawPeer:
    """A bare WebSocket JSON-RPC peer: send requests, await replies by id, collect notifications."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.other: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                try:
                    msg = orjson.loads(frame)
                except orjson.JSONDecodeError:  # injected garbage: keep it for the test to see
                    self.other.put_nowait({"unparsable": frame})
                    continue
                if not isinstance(msg, dict):
                    self.other.put_nowait({"unparsable": frame})
                    continue
                rid = msg.get("id")
                if not isinstance(rid, dict | list) and rid in self.replies:
                    self.replies.pop(msg["id"]).set_result(msg)
                elif msg.get("method") == "subscription":
                    self.notifications.put_nowait(msg["params"])
                else:
                    self.other.put_nowait(msg)
        except websockets.ConnectionClosed:
            pass

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send a request and return the whole reply (``result`` or ``error``)."""
        rid = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        await self.ws.send(orjson.dumps(msg).decode())
        return await asyncio.wait_for(fut, timeout)

    async def result(self, method: str, params: dict[str, Any] | None = None) -> Any:
        reply = await self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]

    async def barrier(self) -> None:
        """A round trip: every notification the server sent before it is now in ``notifications``."""
        assert (await self.result("public/test"))["version"]

    def drain(self) -> list[dict[str, Any]]:
        """Every notification received so far, removed from the queue."""
        out = []
        while not self.notifications.empty():
            out.append(self.notifications.get_nowait())
        return out

    async def send_raw(self, text: str | bytes) -> dict[str, Any]:
        """Send a frame as is and return the next message that is not a notification."""
        await self.ws.send(text)
        return await asyncio.wait_for(self.other.get(), 5.0)

    async def next_notification(self, channel: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The next notification (on ``channel`` if given), waiting at most ``timeout``."""
        async def get() -> dict[str, Any]:
            while True:
                n = await self.notifications.get()
                if channel is None or n["channel"] == channel:
                    return n
        return await asyncio.wait_for(get(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


@pytest.fixture
async def peer(sim: Simulator) -> AsyncIterator[RawPeer]:
    """A raw WebSocket connection to the ``sim`` fixture."""
    ws = await websockets.connect(sim.ws_url, max_size=2**24)
    p = RawPeer(ws)
    yield p
    await p.close()


async def connect_peer(url: str) -> RawPeer:
    return RawPeer(await websockets.connect(url, max_size=2**24))


@pytest.fixture
async def peer2(sim: Simulator) -> AsyncIterator[RawPeer]:
    """A second raw WebSocket connection to the ``sim`` fixture (to show another one is unaffected)."""
    p = await connect_peer(sim.ws_url)
    yield p
    await p.close()


@pytest.fixture
async def sim_http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the ``sim`` fixture (``base_url`` = its ``http_url``)."""
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=5.0) as client:
        yield client


async def authenticate(p: RawPeer, sim: Simulator) -> dict[str, Any]:
    """``public/auth`` with the exchange's demo key (client_credentials); returns the result."""
    acct = sim.demo_account
    return await p.result("public/auth", {"grant_type": "client_credentials", "client_id": acct.client_id,
                                          "client_secret": acct.client_secret})


# ---------------------------------------------------------------- client helpers shared by the client tests

DEMO_KEY: dict[str, Any] = {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}


def expect(event: Event) -> asyncio.Future[Any]:
    """A future for the next emission of ``event``, registered now (no race with the emitter)."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def handler(*args: Any) -> None:
        event.disconnect(handler)
        if not fut.done():
            fut.set_result(args[0] if len(args) == 1 else args)

    event.connect(handler)
    return fut


async def reconnecting_client(sim: Simulator) -> Deribit:
    """An authenticated client on ``sim`` that reconnects quickly (backoff 0.01 s, at most 0.2 s)."""
    return await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET,
                                 backoff_initial=0.01, backoff_max=0.2)


@pytest.fixture
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys or a target in the developer's environment must not leak into a test."""
    for var in ("DERIBIT_TARGET", "DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
async def dk(sim: Simulator, no_env_credentials: None) -> AsyncIterator[Deribit]:
    """An authenticated async client on the ``sim`` fixture."""
    client = await Deribit.connect(sim.ws_url, request_timeout=5.0, **DEMO_KEY)
    yield client
    await client.close()


def book_messages(url: str, channel: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Subscribe to ``channel`` at the Deribit-compatible ``url`` (a blocking client, for tests of
    commands running in a child process) and return the ``data`` of its first ``count`` notifications."""
    from websockets.sync.client import connect

    with connect(url, open_timeout=10, close_timeout=5) as ws:
        return subscribed_messages(ws, channel, count, timeout)


def subscribed_messages(ws: Any, channel: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Subscribe the open blocking WebSocket ``ws`` to ``channel`` and return the ``data`` of its
    first ``count`` notifications (the subscription stays: the caller closes ``ws``)."""
    import json
    import time

    seen: list[dict[str, Any]] = []
    ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": [channel]}}))
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if msg.get("id") == 1:
            assert msg["result"] == [channel], msg
        elif msg.get("method") == "subscription" and msg["params"]["channel"] == channel:
            seen.append(msg["params"]["data"])
    return seen


class ManualClock:
    """A clock that moves only when told (seconds since the epoch), for ``Simulator(clock=...)``
    with ``autostep=False``: the test decides when time passes."""

    def __init__(self, ms: int) -> None:
        self.t = ms / 1000

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Command:
    """``python -m deribit_kit.cli ARGS`` in a child (the CLI's and the Kafka pipeline's tests); its stdout
    lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "deribit_kit.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line_starting(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"exited before printing {prefix!r}: {self.output}")
            self.output.append(line)
            if line.startswith(prefix):
                return line

    def stop(self) -> int:
        """Ctrl-C, wait, then every line it printed is in ``output``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # only the pid this object started
        try:
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
        return code


class StubUpstream:
    """An upstream with no exchange behind it (a unit test of the upstream seam): it accepts every
    channel, has no reference data, and the test feeds ``sink`` itself."""

    name = "stub"
    state = "open"
    epoch = 1
    authenticated = False

    def __init__(self) -> None:
        self.connected = Event("connected")
        self.disconnected = Event("disconnected")
        self.sink: Any = None
        self.wire: set[str] = set()

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self.wire)

    def set_sink(self, sink: Any) -> None:
        self.sink = sink

    async def subscribe(self, channels: list[str]) -> list[str]:
        self.wire.update(channels)
        return list(channels)

    async def unsubscribe(self, channels: list[str]) -> None:
        self.wire.difference_update(channels)

    async def resync(self, channels: list[str]) -> None:
        pass

    async def instruments(self, currency: str = "any", kind: str | None = None) -> list[Instrument]:
        return []

    async def instrument(self, name: str) -> Instrument:
        raise KeyError(name)

    def cached_instrument(self, name: str) -> Instrument | None:
        return None

    async def index_price(self, index_name: str) -> float:
        return 0.0

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        pass
