"""Fan-out through the broker's WebSocket port vs a bare ``websockets.broadcast`` relay of the same frames.

    .venv/bin/python bench/broker_port.py                       # N = 1 10 100 500, ~2 minutes
    .venv/bin/python bench/broker_port.py --clients 100 --seconds 2

Processes (all on 127.0.0.1, each with its own deadline, all killed at the end of each run):

* **upstream**: a tiny Deribit-compatible exchange (``LoopbackServer``) with one instrument
  (``public/get_instrument(s)`` answer it, so the broker keeps its book as a tick ladder, as it does
  against Deribit or the embedded exchange). On ``public/subscribe`` of
  ``book.BTC-PERPETUAL.100ms`` it sends a 1000-level snapshot, then ``change`` messages chained by
  ``change_id`` (24 levels changed per side, ~1.5 KB on the wire). Each change carries its send time
  as the first field of ``data``: ``"us": time.time_ns() // 1000``. Rate per phase: 1,000 msgs/s,
  then as fast as TCP lets it (it stops writing while its send buffer is over 256 kB).
* **server**, one of:
  ``broker``: ``Deribit.connect(upstream)`` + ``Broker`` + ``BrokerServer`` with its defaults (live
  book, chain checks, frame-once fan-out, a 100ms channel may wait 2 ms to share a write; the broker
  forwards ``data`` as is, so ``us`` reaches the clients), ``broker0``: the same with
  ``flush_interval=0`` (a write per client per loop turn), or
  ``relay``: a ``websockets`` client on the upstream and a ``websockets`` server that relays every
  upstream frame unchanged with ``websockets.broadcast`` (no decode, no book). It stops reading the
  upstream while a client's write buffer is over ``--max-buffer`` (``broadcast`` itself has no
  backpressure); the broker instead conflates a client past ``max_buffer`` (= ``--max-buffer``).
  ``floor`` (fixed rate only): the least any relay does on this machine, each upstream frame framed
  once and ``transport.write`` to every client on uvloop, no decode, no book, no backpressure; its
  CPU is mostly the kernel's loopback TCP path, which bounds what the broker can reach.
* **clients**: picows on uvloop (websockets if picows is missing), spread over 2 processes; each
  frame's receive time minus its ``us`` is the one-way latency (upstream send -> client receive).

Each (server, N, rate) is measured on fresh processes (a backlog never leaks into the next phase):
``--warmup`` s of warm-up, then ``--seconds`` s measured. Deliveries are change messages received in
the window. CPU and run-queue wait come from /proc/<pid>/schedstat over the window, as shares of one
core; ``wait`` is time runnable but not running (CPU contention: other work on the machine, or our own
processes when they all want a core), so a high ``wait`` flags latencies that measure the scheduler.
Under saturation latency is queueing (upstream, kernel and server buffers), not service time.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson

INSTRUMENT = "BTC-PERPETUAL"
CHANNEL = f"book.{INSTRUMENT}.100ms"
LEVELS = 24  # changed per side per message
DEPTH = 1000  # snapshot levels per side
VARIANTS = 64  # distinct change bodies, cycled
MID, TICK = 60_000.0, 0.5
UPSTREAM_HWM = 256 * 1024  # the upstream stops writing above this (max-rate phase)
INSTRUMENT_INFO = {  # public/get_instrument, as Deribit answers it (the broker learns the tick: a ladder book)
    "instrument_name": INSTRUMENT, "kind": "future", "base_currency": "BTC", "quote_currency": "USD",
    "settlement_period": "perpetual", "tick_size": 0.5, "tick_size_steps": [], "min_trade_amount": 10.0,
    "contract_size": 10.0, "creation_timestamp": 1534167754000, "expiration_timestamp": 32503708800000,
    "is_active": True, "instrument_type": "reversed"}
SUBSCRIBE = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": [CHANNEL]}})
US_KEY = b'"us":'
FIXED_RATE = 1000.0

# (rate msgs/s or 0 for max, start, measure_start, end) in wall-clock seconds (time.time())
Phase = tuple[float, float, float, float]


def cpu_and_wait(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, seconds spent runnable but waiting for a CPU) of process ``pid`` so far.

    /proc/<pid>/schedstat (ns) when present, else utime+stime from /proc/<pid>/stat (no wait time).
    """
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            run_ns, wait_ns, _ = f.read().split()
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 0.0
    except (OSError, IndexError, ValueError):
        return None


def kernel_cpu(pid: int) -> float | None:
    """CPU seconds process ``pid`` has spent in the kernel so far (stime in /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[12]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run_child(main: Any, deadline: float) -> None:
    """Run one child's ``main()`` until ``deadline``; report a failure in one line, not a log flood."""
    import logging
    import traceback

    logging.disable(logging.CRITICAL)  # slow-client closes and resets at teardown are expected here
    try:
        asyncio.run(asyncio.wait_for(main(), max(1.0, deadline - time.time())))
    except (Exception, asyncio.CancelledError) as exc:
        line = traceback.format_exception_only(type(exc), exc)[-1].strip()
        print(f"[{mp.current_process().name}] {line}", file=sys.stderr, flush=True)


async def _wait_readable(conn: Connection, timeout: float) -> Any:
    """Next object from ``conn`` without blocking the loop (None on timeout or EOF).

    A thread waits, not ``add_reader``: uvloop would leave the pipe non-blocking and a large
    ``send`` would then fail with EAGAIN.
    """
    try:
        if await asyncio.get_running_loop().run_in_executor(None, conn.poll, max(0.0, timeout)):
            return conn.recv()
    except (EOFError, OSError):
        pass
    return None


# ---------------------------------------------------------------- upstream: a tiny Deribit-compatible exchange


class Feed:
    """The book of one instrument as Deribit would publish it: a snapshot, then chained changes."""

    def __init__(self) -> None:
        self.change_id = 1_000_000
        self.n = 0
        head = (b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"' + CHANNEL.encode()
                + b'","data":{"us":%d,"type":"change","timestamp":%d,"prev_change_id":%d,"change_id":%d,'
                b'"instrument_name":"' + INSTRUMENT.encode() + b'","bids":')
        self.templates: list[bytes] = []
        for v in range(VARIANTS):
            bids = [["change", MID - (i + 1) * TICK, 10.0 * (i + 1 + v)] for i in range(LEVELS)]
            asks = [["change", MID + (i + 1) * TICK, 10.0 * (i + 1 + v)] for i in range(LEVELS)]
            self.templates.append(head + orjson.dumps(bids) + b',"asks":' + orjson.dumps(asks) + b"}}}")

    def snapshot(self) -> bytes:
        from deribit_kit.wire import jsonrpc

        ms = time.time_ns() // 1_000_000
        return jsonrpc.encode_notification(CHANNEL, {
            "type": "snapshot", "timestamp": ms, "instrument_name": INSTRUMENT, "change_id": self.change_id,
            "bids": [["new", MID - (i + 1) * TICK, 10.0 * (i + 1)] for i in range(DEPTH)],
            "asks": [["new", MID + (i + 1) * TICK, 10.0 * (i + 1)] for i in range(DEPTH)]})

    def changes(self, k: int) -> list[bytes]:
        from deribit_kit.transport.server import text_frame

        out: list[bytes] = []
        for _ in range(k):
            us = time.time_ns() // 1000
            prev = self.change_id
            self.change_id += 1
            out.append(text_frame(self.templates[self.n % VARIANTS] % (us, us // 1000, prev, self.change_id)))
            self.n += 1
        return out


class _WsOnly:
    """The parts of a ``LoopbackServer`` handler these tiny servers share: any path, no HTTP.
    ``subs``: the connections that get the stream."""

    def __init__(self) -> None:
        self.subs: set[Any] = set()

    def ws_path_ok(self, path: str) -> bool:
        return True

    def ws_open(self, conn: Any) -> None:
        pass

    def ws_close(self, conn: Any) -> None:
        self.subs.discard(conn)

    async def http(self, request: Any) -> Any:
        from deribit_kit.transport.server import HttpResponse

        return HttpResponse(404, b"{}")


class Upstream(_WsOnly):
    """WsHandler for ``LoopbackServer``: the few methods a Deribit client and the broker call."""

    def __init__(self) -> None:
        super().__init__()
        self.feed = Feed()

    def ws_message(self, conn: Any, data: bytes) -> None:
        req = orjson.loads(data)
        m, rid, params = req.get("method"), req.get("id"), req.get("params") or {}
        us_in = time.time_ns() // 1000
        result: Any = "ok"
        snapshot = False
        if m in ("public/subscribe", "private/subscribe"):
            result = [ch for ch in params.get("channels", []) if ch == CHANNEL]
            if result:
                self.subs.add(conn)
                snapshot = True
        elif m in ("public/unsubscribe", "private/unsubscribe"):
            result = [ch for ch in params.get("channels", []) if ch == CHANNEL]
            if result:
                self.subs.discard(conn)
        elif m in ("public/unsubscribe_all", "private/unsubscribe_all"):
            self.subs.discard(conn)
        elif m in ("public/hello", "public/test"):
            result = {"version": "1.2.26"}
        elif m == "public/get_time":
            result = us_in // 1000
        elif m == "public/get_instrument" and params.get("instrument_name") == INSTRUMENT:
            result = INSTRUMENT_INFO
        elif m == "public/get_instruments":
            result = [INSTRUMENT_INFO]
        elif m not in ("public/set_heartbeat", "public/disable_heartbeat"):
            conn.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601,
                                                                            "message": "Method not found"}}))
            return
        us_out = time.time_ns() // 1000
        conn.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": result, "usIn": us_in, "usOut": us_out,
                                "usDiff": us_out - us_in, "testnet": True}))
        if snapshot:
            conn.send(self.feed.snapshot())

    def buffered(self) -> int:
        return max((c.buffered for c in self.subs if not c.closed), default=0)

    def write(self, frames: list[bytes]) -> None:
        for c in self.subs:
            if not c.closed:
                c.transport.writelines(frames)

    async def run(self, phases: list[Phase]) -> list[int]:
        """Publish per the schedule; returns the number of changes sent in each measured window."""
        sent_in_window = [0] * len(phases)
        for i, (rate, start, m0, end) in enumerate(phases):
            await asyncio.sleep(max(0.0, start - time.time()))
            sent = 0
            while True:
                now = time.time()
                if now >= end:
                    break
                if rate > 0:
                    due = int((now - start) * rate) + 1 - sent
                    if due > 0:
                        self.write(self.feed.changes(due))
                        sent += due
                        if now >= m0:
                            sent_in_window[i] += due
                    await asyncio.sleep(max(0.0, start + sent / rate - time.time()))
                elif self.buffered() > UPSTREAM_HWM:
                    await asyncio.sleep(0.0002)
                else:
                    self.write(self.feed.changes(16))
                    if now >= m0:
                        sent_in_window[i] += 16
                    await asyncio.sleep(0)
        return sent_in_window


def upstream_main(pipe: Connection, deadline: float) -> None:
    # asyncio, not uvloop: LoopbackServer asserts isinstance(transport, asyncio.Transport), which
    # uvloop's TCPTransport is not

    async def main() -> None:
        from deribit_kit.transport.server import LoopbackServer

        up = Upstream()
        srv = LoopbackServer(up, "127.0.0.1", 0)
        await srv.start()
        pipe.send(f"ws://127.0.0.1:{srv.port}/ws/api/v2")
        phases = await _wait_readable(pipe, deadline - time.time())
        if isinstance(phases, list):
            pipe.send(await up.run(phases))
            await _wait_readable(pipe, deadline - time.time())
        await srv.stop()

    _run_child(main, deadline)


# ---------------------------------------------------------------- servers under test


def broker_main(pipe: Connection, deadline: float, max_buffer: int, flush_ms: float | None = None) -> None:
    from deribit_kit import Deribit
    from deribit_kit.broker import Broker
    from deribit_kit.broker.port import BrokerServer
    from deribit_kit.config import Settings

    up_url = _recv(pipe, deadline - time.time(), "parent")  # imports done while the upstream starts
    _use_uvloop()  # the loop `deribit-kit broker` runs on (uvloop is a dependency; --loop asyncio opts out)

    async def main() -> None:
        dk = await Deribit.connect(settings=Settings(target=up_url, client_id=None, client_secret=None))
        kw = {} if flush_ms is None else {"flush_interval": flush_ms / 1000}  # None: the default (2 ms)
        srv = BrokerServer(Broker(dk), max_buffer=max_buffer, **kw)
        await srv.start()
        pipe.send(srv.ws_url)
        await _wait_readable(pipe, deadline - time.time())
        pipe.send(srv.stats)
        await srv.stop()
        await dk.close()

    _run_child(main, deadline)


class _Floor(_WsOnly):
    """WsHandler of the ``floor`` server: answers the subscribe, then only receives frames to write."""

    def ws_message(self, conn: Any, data: bytes) -> None:
        conn.send(orjson.dumps({"jsonrpc": "2.0", "id": orjson.loads(data).get("id"), "result": [CHANNEL]}))
        self.subs.add(conn)


def floor_main(pipe: Connection, deadline: float, max_buffer: int) -> None:
    """The least a relay can do: each upstream frame's payload framed once and written to every
    client's transport (no decode, no book, no backpressure), on uvloop like the broker."""
    import websockets

    up_url = _recv(pipe, deadline - time.time(), "parent")
    _use_uvloop()

    async def main() -> None:
        from deribit_kit.transport.server import LoopbackServer, text_frame

        handler = _Floor()
        srv = LoopbackServer(handler, "127.0.0.1", 0)
        await srv.start()
        up = await websockets.connect(up_url, compression=None, max_size=None, ping_interval=None)
        await up.send(SUBSCRIBE, text=True)

        async def pump() -> None:
            while True:
                frame = text_frame(await up.recv(decode=False))
                for c in handler.subs:
                    c.transport.write(frame)

        task = asyncio.get_running_loop().create_task(pump())
        pipe.send(f"ws://127.0.0.1:{srv.port}/ws/api/v2")
        await _wait_readable(pipe, deadline - time.time())
        pipe.send({})
        task.cancel()
        await srv.stop()

    _run_child(main, deadline)


def relay_main(pipe: Connection, deadline: float, max_buffer: int) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection

    up_url = _recv(pipe, deadline - time.time(), "parent")

    async def main() -> None:
        clients: set[ServerConnection] = set()
        stats = {"relayed": 0, "pauses": 0}

        async def handler(ws: ServerConnection) -> None:
            try:
                async for msg in ws:
                    rid = orjson.loads(msg).get("id")
                    await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": [CHANNEL]}), text=True)
                    clients.add(ws)
            finally:
                clients.discard(ws)

        server = await websockets.serve(handler, "127.0.0.1", 0, compression=None, max_size=None,
                                        ping_interval=None, backlog=1024)
        up = await websockets.connect(up_url, compression=None, max_size=None, ping_interval=None)
        await up.send(SUBSCRIBE, text=True)

        def over() -> bool:
            return any(c.transport.get_write_buffer_size() > max_buffer for c in clients)

        async def pump() -> None:
            broadcast = websockets.broadcast
            n = 0
            while True:
                frame = await up.recv(decode=False)
                broadcast(clients, frame, text=True)
                n += 1
                if not n & 31 and over():  # broadcast has no backpressure: stop reading the upstream
                    stats["pauses"] += 1
                    while over():
                        await asyncio.sleep(0.001)
                stats["relayed"] = n

        task = asyncio.get_running_loop().create_task(pump())
        pipe.send(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        await _wait_readable(pipe, deadline - time.time())
        pipe.send(stats)
        task.cancel()
        server.close()

    _run_child(main, deadline)


# ---------------------------------------------------------------- clients


class Recorder:
    """Counts change messages and their latency per measured window (receive time decides)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.replies = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.windows: list[tuple[int, int, int]] = []  # (phase start, window start, window end) in µs
        self.w = 0  # index of the next/current window
        self.first = self.lo = self.hi = 1 << 62
        self.lat: list[array.array[int]] = []
        self.snapshots: list[int] = []
        self.disconnects = 0

    def schedule(self, phases: list[Phase]) -> None:
        self.windows = [(int(start * 1e6), int(m0 * 1e6), int(end * 1e6)) for _, start, m0, end in phases]
        self.lat = [array.array("q") for _ in phases]
        self.snapshots = [0] * len(phases)
        self.first, self.lo, self.hi = self.windows[0]

    def frame(self, b: bytes) -> None:
        now = time.time_ns() // 1000
        if now >= self.hi:
            self.w += 1
            self.first, self.lo, self.hi = self.windows[self.w] if self.w < len(self.windows) else (1 << 62,) * 3
        i = b.find(US_KEY, 0, 200)
        if i >= 0:
            if now >= self.lo:
                us = int(b[i + 5:b.index(b",", i)])
                if us >= self.first:  # not a backlog of the previous phase
                    self.lat[self.w].append(now - us)
            return
        if b.find(b'"snapshot"', 0, 200) >= 0:
            if now >= self.lo:
                self.snapshots[self.w] += 1
        elif b.find(b'"result"') >= 0:
            self.replies += 1
            if self.replies >= self.n and not self.ready.done():
                self.ready.set_result(None)


async def _connect_picows(url: str, rec: Recorder) -> Any:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Listener(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            transport.send(WSMsgType.TEXT, SUBSCRIBE)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                rec.frame(frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            rec.disconnects += 1

    transport, _ = await ws_connect(Listener, url, max_frame_size=1 << 24)
    return transport


_READERS: set[asyncio.Task[None]] = set()


async def _connect_websockets(url: str, rec: Recorder) -> Any:
    import websockets

    ws = await websockets.connect(url, compression=None, max_size=None, ping_interval=None)
    await ws.send(SUBSCRIBE, text=True)

    async def read() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                rec.frame(await ws.recv(decode=False))
        rec.disconnects += 1

    task = asyncio.get_running_loop().create_task(read())
    _READERS.add(task)
    task.add_done_callback(_READERS.discard)
    return ws


def clients_main(pipe: Connection, n: int, deadline: float) -> None:
    try:
        import picows  # noqa: F401

        connect = _connect_picows
    except ImportError:
        connect = _connect_websockets
    _use_uvloop()
    url = _recv(pipe, deadline - time.time(), "parent")

    async def main() -> None:
        rec = Recorder(n)
        conns: list[Any] = []
        for i in range(0, n, 50):  # in chunks: stay under the listen backlog
            conns += await asyncio.gather(*(connect(url, rec) for _ in range(i, min(n, i + 50))))
        await asyncio.wait_for(rec.ready, 30)
        pipe.send(("ready", os.getpid(), connect.__name__.removeprefix("_connect_")))
        phases = await _wait_readable(pipe, deadline - time.time())
        if not isinstance(phases, list):
            return
        rec.schedule(phases)
        await asyncio.sleep(max(0.0, phases[-1][3] - time.time() + 0.05))
        pipe.send([(lat.tobytes(), snaps) for lat, snaps in zip(rec.lat, rec.snapshots, strict=True)]
                  + [rec.disconnects])
        for c in conns:
            with contextlib.suppress(Exception):
                if hasattr(c, "disconnect"):
                    c.disconnect()
                else:
                    await asyncio.wait_for(c.close(), 0.2)

    _run_child(main, deadline)


# ---------------------------------------------------------------- the parent


@dataclass
class Row:
    server: str
    n: int
    phase: str
    input_rate: float  # changes the upstream sent per second in the window
    deliveries: float  # changes received per second, all clients
    p50_ms: float | None
    p99_ms: float | None
    server_cpu: float | None  # share of one core
    server_us: float | None  # server CPU µs per delivery
    server_sys: float | None  # the part of server_cpu spent in the kernel (socket writes)
    server_wait: float | None  # share of the window the server was runnable but not running
    clients_cpu: float | None
    clients_wait: float | None
    upstream_cpu: float | None
    snapshots: int
    lib: str
    disconnects: int


class Run:
    """Every process of one measurement; ``close()`` stops them all, killing any that linger."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.pipes: list[Connection] = []

    def spawn(self, target: Any, *args: Any) -> tuple[int, Connection]:
        """Start ``target(*args, pipe, deadline...)``: the child's end of a new pipe goes first."""
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=target, args=(child, *args), daemon=True)
        p.start()
        child.close()
        self.procs.append(p)
        self.pipes.append(parent)
        assert p.pid is not None
        return p.pid, parent

    def close(self) -> None:
        for c in self.pipes:
            with contextlib.suppress(OSError):
                c.send("stop")
        end = time.monotonic() + 1.0
        for p in self.procs:
            p.join(max(0.0, end - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(1.0)
            if p.is_alive():
                p.kill()
                p.join(1.0)
        for c in self.pipes:
            c.close()


def _recv(pipe: Connection, timeout: float, what: str) -> Any:
    if not pipe.poll(max(0.0, timeout)):
        raise TimeoutError(f"no answer from the {what} within {timeout:.0f}s")
    return pipe.recv()


def _pct(sorted_lat: Any, q: float) -> float | None:
    if len(sorted_lat) == 0:
        return None
    return float(sorted_lat[min(len(sorted_lat) - 1, int(len(sorted_lat) * q))]) / 1000.0


def _delta(a: list[tuple[float, float] | None], b: list[tuple[float, float] | None], k: int,
           pids: slice, seconds: float) -> float | None:
    """Sum over ``pids`` of field ``k`` (0 CPU, 1 wait) between two samples, per second of window."""
    pa, pb = a[pids], b[pids]
    if any(x is None for x in pa + pb):
        return None
    return sum(y[k] - x[k] for x, y in zip(pa, pb, strict=True) if x is not None and y is not None) / seconds


def run_one(kind: str, n: int, rate: float, args: argparse.Namespace) -> Row:
    """One phase (``rate`` msgs/s, 0 = max) against fresh processes: no backlog carried over."""
    run = Run()
    deadline = time.time() + 30.0 + args.warmup + args.seconds
    try:
        # all spawned at once so that their imports overlap; the URLs follow as they become known
        up_pid, up_pipe = run.spawn(upstream_main, deadline)
        server_main = {"broker": broker_main, "broker0": broker_main, "relay": relay_main, "floor": floor_main}[kind]
        extra = (0.0,) if kind == "broker0" else ()
        srv_pid, srv_pipe = run.spawn(server_main, deadline, args.max_buffer, *extra)
        clients = [run.spawn(clients_main, k, deadline) for k in ([n] if n == 1 else [n - n // 2, n // 2])]
        srv_pipe.send(_recv(up_pipe, 20, "upstream"))
        url = _recv(srv_pipe, 20, kind)
        for _, pipe in clients:
            pipe.send(url)
        pids, lib = [], ""
        for _, pipe in clients:
            _, pid, lib = _recv(pipe, 40, "clients")
            pids.append(pid)
        start = time.time() + 0.1
        m0, end = start + args.warmup, start + args.warmup + args.seconds
        phases: list[Phase] = [(rate, start, m0, end)]
        up_pipe.send(phases)
        for _, pipe in clients:
            pipe.send(phases)
        watched = [srv_pid, up_pid, *pids]
        time.sleep(max(0.0, m0 - time.time()))
        t0, k0 = [cpu_and_wait(p) for p in watched], kernel_cpu(srv_pid)
        time.sleep(max(0.0, end - time.time()))
        t1, k1 = [cpu_and_wait(p) for p in watched], kernel_cpu(srv_pid)
        sent = _recv(up_pipe, 10, "upstream")
        results = [_recv(pipe, 15, "clients") for _, pipe in clients]
    finally:
        run.close()
    import numpy as np

    lat = np.sort(np.concatenate([np.frombuffer(r[0][0], dtype=np.int64) for r in results]))
    secs = args.seconds
    srv_cpu = _delta(t0, t1, 0, slice(0, 1), secs)
    return Row(kind, n, f"{rate / 1000:g}k/s" if rate else "max", sent[0] / secs, len(lat) / secs,
               _pct(lat, 0.5), _pct(lat, 0.99), srv_cpu,
               None if srv_cpu is None or not len(lat) else srv_cpu * secs / len(lat) * 1e6,
               None if k0 is None or k1 is None else (k1 - k0) / secs,
               _delta(t0, t1, 1, slice(0, 1), secs), _delta(t0, t1, 0, slice(2, None), secs),
               _delta(t0, t1, 1, slice(2, None), secs), _delta(t0, t1, 0, slice(1, 2), secs),
               sum(r[0][1] for r in results), lib, sum(r[-1] for r in results))


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


HEADER = (f"{'server':<7}{'N':>4} {'phase':<5}{'in/s':>7}{'deliv/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'srv cpu':>8}{'sys':>5}{'µs/dlv':>7}{'wait':>5}{'cli cpu':>8}{'wait':>5}{'up':>5}{'snap':>5}")


def _line(r: Row) -> str:
    return (f"{r.server:<7}{r.n:>4} {r.phase:<5}{r.input_rate:>7.0f}{r.deliveries:>9.0f}{_f(r.p50_ms, '.2f'):>8}"
            f"{_f(r.p99_ms, '.2f'):>8}{_f(r.server_cpu, '.0%'):>8}{_f(r.server_sys, '.0%'):>5}"
            f"{_f(r.server_us, '.2f'):>7}"
            f"{_f(r.server_wait, '.0%'):>5}{_f(r.clients_cpu, '.0%'):>8}{_f(r.clients_wait, '.0%'):>5}"
            f"{_f(r.upstream_cpu, '.0%'):>5}{r.snapshots:>5}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100, 500])
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=0.6, help="warm-up seconds before the measured window")
    ap.add_argument("--max-buffer", type=int, default=1 << 20,
                    help="per-client send buffer limit: broker max_buffer (conflation) and relay pause threshold")
    ap.add_argument("--servers", nargs="+", default=["broker", "broker0", "relay", "floor"],
                    choices=["broker", "broker0", "relay", "floor"])
    args = ap.parse_args()
    t0 = time.monotonic()
    rows: dict[tuple[str, int, str], Row] = {}
    print(f"book.{INSTRUMENT}.100ms changes, {LEVELS} levels/side (~1.5 KB); {os.cpu_count()} CPUs; load average "
          f"{_loadavg()}\ncpu = share of one core; sys = the server's part of it in the kernel (socket writes); "
          "wait = share of the window runnable but not running (CPU contention, ours or not)", flush=True)
    print(HEADER, flush=True)
    for n in args.clients:
        for rate in (FIXED_RATE, 0.0):
            for kind in args.servers:
                if kind == "floor" and not rate:
                    continue  # no backpressure: its max rate would only measure buffers growing
                try:
                    r = run_one(kind, n, rate, args)
                except Exception as exc:  # one failed run must not lose the others
                    print(f"{kind:<7}{n:>4} {'max' if not rate else 'fixed'} failed: {exc!r}", flush=True)
                    continue
                rows[(kind, n, r.phase)] = r
                note = (f"  [{r.lib}]" if r.lib != "picows" else "") + (
                    f"  [{r.disconnects} clients disconnected]" if r.disconnects else "")
                print(_line(r) + note, flush=True)
    print()
    fixed_phase = f"{FIXED_RATE / 1000:g}k/s"
    for n in args.clients:
        bmax, rmax = rows.get(("broker", n, "max")), rows.get(("relay", n, "max"))
        bfix, rfix = rows.get(("broker", n, fixed_phase)), rows.get(("relay", n, fixed_phase))
        line = f"N={n:<4}"
        if bmax and rmax and rmax.deliveries:
            line += (f" max delivered: broker {bmax.deliveries:,.0f}/s vs broadcast {rmax.deliveries:,.0f}/s "
                     f"= {bmax.deliveries / rmax.deliveries:.2f}x;")
        if bfix and rfix and bfix.server_us and rfix.server_us:
            line += f" server CPU per delivery at 1k/s: broker {bfix.server_us:.2f} vs {rfix.server_us:.2f} µs"
        print(line, flush=True)
    fixed = rows.get(("broker", 100, fixed_phase))
    if fixed is not None:
        ok = (fixed.deliveries >= 0.99 * 100 * FIXED_RATE and fixed.server_cpu is not None
              and fixed.server_cpu < 0.60 and fixed.p99_ms is not None and fixed.p99_ms < 10.0)
        print(f"target 1 (N=100 x 1,000 msgs/s delivered, broker < 60% of a core, p99 < 10 ms): "
              f"{'MET' if ok else 'NOT MET'} ({fixed.deliveries:,.0f}/s, {_f(fixed.server_cpu, '.0%')}, "
              f"p99 {_f(fixed.p99_ms, '.2f')} ms)")
    cpu = {k: r.server_cpu for k in ("floor", "broker0", "broker") if (r := rows.get((k, 100, fixed_phase)))}
    if len(cpu) == 3 and None not in cpu.values():
        print(f"N=100 x 1,000 msgs/s, share of a core: floor {cpu['floor']:.0%} (a write per client per message, "
              f"nothing else), broker0 {cpu['broker0']:.0%} (the same writes + decode, book, chains), "
              f"broker {cpu['broker']:.0%} (100ms channels share writes over 2 ms)")
    bmax, rmax = rows.get(("broker", 100, "max")), rows.get(("relay", 100, "max"))
    if bmax and rmax and rmax.deliveries:
        ratio = bmax.deliveries / rmax.deliveries
        print(f"target 2 (N=100 max delivered >= 1.5x websockets.broadcast): {'MET' if ratio >= 1.5 else 'NOT MET'} "
              f"({ratio:.2f}x)")
    print(f"total {time.monotonic() - t0:.0f}s; load average {_loadavg()} (other work on the machine skews all of it)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
