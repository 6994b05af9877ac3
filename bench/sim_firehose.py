"""Serving throughput of the embedded exchange (``deribit_kit.sim``) to one WebSocket connection.

    .venv/bin/python bench/sim_firehose.py            # or: make bench
    .venv/bin/python bench/sim_firehose.py --quick    # smaller counts, a few seconds

The exchange runs in its own process (so client and server do not share a core); the client is
``websockets`` and, when ``picows`` is installed, also a picows receiver (a faster client: if the
rate rises with it, the client was the limit, not the server). Two modes:

(a) firehose: ``sim/firehose`` blasts ``count`` chained ``book.BTC-PERPETUAL.100ms`` changes
    (``levels`` levels per side, about 1.5 KB each) at the connection: serving + transport only.
(b) live generator: ``Simulator(autostep=False)`` with ``book.{instrument}.100ms`` subscribed for
    every instrument; the client drives the market with pipelined ``sim/step`` requests, so this
    measures the market generator + the publisher: book-change notifications per second to one
    connection.

Server CPU is read from /proc/<pid>/stat (psutil when /proc is absent). Target: at least 20,000
notifications/s in each mode.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson
import websockets

try:  # optional, faster receiver
    import picows
except ImportError:  # pragma: no cover - depends on the machine
    picows = None

TARGET = 20_000
SUB_PREFIX = b'{"jsonrpc":"2.0","method":"subscription"'
FIREHOSE_INSTRUMENT = "BTC-PERPETUAL"
MAX_CHANNELS_PER_CALL = 500


# ---------------------------------------------------------------- the exchange, in its own process


def serve(conn: Connection, seed: int) -> None:
    """Child process: run the exchange until the parent sends anything on ``conn``."""
    asyncio.run(_serve(conn, seed))


async def _serve(conn: Connection, seed: int) -> None:
    from deribit_kit.sim import Simulator

    async with Simulator(seed=seed, autostep=False, rate_limits=False) as sim:
        # where a tick's time goes: the market generator vs the publisher (thread CPU time)
        split = {"generate": 0.0, "publish": 0.0, "ticks": 0, "changes": 0}
        market_step, publish = sim.market.step, sim.publish

        def timed_step() -> Any:
            t = time.thread_time()
            result = market_step()
            split["generate"] += time.thread_time() - t
            split["ticks"] += 1
            split["changes"] += len(result.book_changes)
            return result

        def timed_publish(result: Any) -> None:
            t = time.thread_time()
            publish(result)
            split["publish"] += time.thread_time() - t

        sim.market.step = timed_step  # type: ignore[method-assign]
        sim.publish = timed_publish  # type: ignore[method-assign]
        conn.send((sim.ws_url, os.getpid(), len(sim.market.instruments)))
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, conn.recv) == "split":
            conn.send(dict(split))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        import psutil  # type: ignore[import-untyped]

        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)


# ---------------------------------------------------------------- receivers


class Sink:
    """Counts notifications without parsing them; parses and routes everything else."""

    def __init__(self) -> None:
        self.notifications = 0
        self.nbytes = 0
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.done: asyncio.Future[dict[str, Any]] | None = None
        self.ids = 0

    def frame(self, head: bytes, size: int, payload: Callable[[], bytes]) -> None:
        if head.startswith(SUB_PREFIX):
            self.notifications += 1
            self.nbytes += size
            return
        msg = orjson.loads(payload())
        if msg.get("method") == "sim/firehose_done":
            if self.done is not None and not self.done.done():
                self.done.set_result(msg)
            return
        fut = self.replies.pop(msg.get("id"), None)  # heartbeats and the like have no id
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def request(self, method: str, params: dict[str, Any]) -> tuple[bytes, asyncio.Future[dict[str, Any]]]:
        self.ids += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[self.ids] = fut
        return orjson.dumps({"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}), fut


class Client:
    """One WebSocket connection to the exchange feeding a :class:`Sink`."""

    name = ""

    def __init__(self) -> None:
        self.sink = Sink()

    async def connect(self, url: str) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def start(self, method: str, params: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        data, fut = self.sink.request(method, params)
        self.send(data)
        return fut

    async def call(self, method: str, params: dict[str, Any], timeout: float = 30.0) -> Any:
        reply = await asyncio.wait_for(self.start(method, params), timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


class WebsocketsClient(Client):
    name = "websockets"

    async def connect(self, url: str) -> None:
        self.ws = await websockets.connect(url, max_size=2**24, compression=None)
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        frame_ = self.sink.frame
        try:
            while True:
                data = await self.ws.recv(decode=False)
                frame_(data[:48], len(data), lambda d=data: d)
        except websockets.ConnectionClosed:
            pass

    def send(self, data: bytes) -> None:
        asyncio.get_running_loop().create_task(self.ws.send(data.decode(), text=True))

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


class PicowsClient(Client):
    name = "picows"

    async def connect(self, url: str) -> None:
        assert picows is not None
        sink = self.sink

        class Listener(picows.WSListener):  # type: ignore[misc]
            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                if frame.msg_type == picows.WSMsgType.TEXT:
                    mv = frame.get_payload_as_memoryview()
                    sink.frame(bytes(mv[:48]), frame.payload_size, frame.get_payload_as_bytes)
                elif frame.msg_type == picows.WSMsgType.CLOSE:
                    transport.disconnect()

        self.transport, _ = await picows.ws_connect(Listener, url, max_frame_size=2**24)

    def send(self, data: bytes) -> None:
        self.transport.send(picows.WSMsgType.TEXT, data)

    async def close(self) -> None:
        self.transport.send_close(picows.WSCloseCode.OK)
        self.transport.disconnect()
        await self.transport.wait_disconnected()


# ---------------------------------------------------------------- the two modes


@dataclass
class Row:
    mode: str
    receiver: str
    notifications: int
    seconds: float
    nbytes: int
    server_cpu: float
    note: str = ""
    breakdown: str = ""

    @property
    def rate(self) -> float:
        return self.notifications / self.seconds if self.seconds else 0.0


async def firehose(client: Client, url: str, pid: int, count: int, levels: int) -> Row:
    await client.connect(url)
    sink = client.sink
    sink.done = asyncio.get_running_loop().create_future()
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await client.call("sim/firehose", {"instrument_name": FIREHOSE_INSTRUMENT, "count": count, "levels": levels})
    await asyncio.wait_for(sink.done, 120)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    await client.close()
    assert sink.notifications == count + 1, (sink.notifications, count)  # + the snapshot
    return Row("(a) firehose", client.name, sink.notifications, seconds, sink.nbytes, cpu,
               f"{levels} levels/side")


async def live(client: Client, url: str, pid: int, duration: float, steps_per_call: int,
               split: Callable[[], dict[str, float]]) -> Row:
    await client.connect(url)
    sink = client.sink
    names = [i["instrument_name"] for i in await client.call("public/get_instruments", {"currency": "any"})]
    channels = [f"book.{n}.100ms" for n in names]
    for i in range(0, len(channels), MAX_CHANNELS_PER_CALL):
        got = await client.call("public/subscribe", {"channels": channels[i : i + MAX_CHANNELS_PER_CALL]})
        assert len(got) == len(channels[i : i + MAX_CHANNELS_PER_CALL])
    await client.call("sim/step", {"count": 2})  # warm up; snapshots and these changes are not counted
    n0, b0 = sink.notifications, sink.nbytes
    split0 = split()
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    ticks = 0
    in_flight = [client.start("sim/step", {"count": steps_per_call}) for _ in range(2)]
    while True:
        reply = await asyncio.wait_for(in_flight.pop(0), 60)
        assert "result" in reply, reply
        ticks += steps_per_call
        if time.perf_counter() - t0 >= duration:
            break
        in_flight.append(client.start("sim/step", {"count": steps_per_call}))
    for fut in in_flight:
        await asyncio.wait_for(fut, 60)
        ticks += steps_per_call
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    split1 = split()
    n, nbytes = sink.notifications - n0, sink.nbytes - b0
    await client.close()
    gen, pub = (split1[k] - split0[k] for k in ("generate", "publish"))
    per = 1e6 / max(n, 1)
    return Row("(b) live generator", client.name, n, seconds, nbytes, cpu,
               f"{len(channels)} books, {ticks} ticks, {n / max(ticks, 1):.0f} changes/tick",
               f"server CPU per notification ({client.name}): market generator {gen * per:.0f} µs, publisher "
               f"(encode + frame + write) {pub * per:.0f} µs, requests/loop/rest {(cpu - gen - pub) * per:.0f} µs")


# ---------------------------------------------------------------- main


def table(rows: list[Row]) -> str:
    head = ("mode", "receiver", "notifications", "seconds", "notif/s", "MB/s", "server CPU µs/notif",
            "server core %", "target 20k/s", "")
    lines = [head]
    for r in rows:
        lines.append((r.mode, r.receiver, f"{r.notifications:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}",
                      f"{r.nbytes / r.seconds / 1e6:.1f}", f"{r.server_cpu / max(r.notifications, 1) * 1e6:.1f}",
                      f"{100 * r.server_cpu / r.seconds:.0f}", "met" if r.rate >= TARGET else "NOT met", r.note))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


async def run(args: argparse.Namespace, url: str, pid: int, split: Callable[[], dict[str, float]]) -> list[Row]:
    clients: list[type[Client]] = [WebsocketsClient]
    if picows is not None and not args.no_picows:
        clients.append(PicowsClient)
    rows = []
    for cls in clients:
        rows.append(await firehose(cls(), url, pid, args.count, args.levels))
    for cls in clients:
        rows.append(await live(cls(), url, pid, args.duration, args.steps, split))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200_000, help="firehose notifications (default 200000)")
    ap.add_argument("--levels", type=int, default=20, help="levels per side in each firehose change")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of live-generator driving per receiver")
    ap.add_argument("--steps", type=int, default=5, help="ticks per sim/step request (2 requests in flight)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-picows", action="store_true", help="websockets receiver only")
    ap.add_argument("--quick", action="store_true", help="20k firehose, 2 s live: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.count, args.duration = 20_000, 2.0

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(child, args.seed), daemon=True)
    proc.start()
    try:
        if not parent.poll(60):
            sys.exit("the exchange process did not start")
        url, pid, n_instruments = parent.recv()
        print(f"embedded exchange pid {pid} at {url}, {n_instruments} instruments; "
              f"python {sys.version.split()[0]}, websockets {websockets.__version__}, "
              f"picows {picows.__version__ if picows is not None else 'not installed'}; {os.cpu_count()} CPUs")

        def split() -> dict[str, float]:
            parent.send("split")
            result: dict[str, float] = parent.recv()
            return result

        rows = asyncio.run(run(args, url, pid, split))
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    print(table(rows))
    for r in rows:
        if r.breakdown:
            print(r.breakdown)
    best = {}
    for r in rows:
        best[r.mode] = max(best.get(r.mode, 0.0), r.rate)
    for mode, rate in best.items():
        verdict = "met" if rate >= TARGET else "NOT met"
        print(f"{mode}: best {rate:,.0f} notifications/s -> target {TARGET:,}/s {verdict}")


if __name__ == "__main__":
    main()
