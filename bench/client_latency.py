"""Client benchmark: request round trips and notification parsing, each side by side in one run.

Run: ``.venv/bin/python bench/client_latency.py [--requests 4000] [--messages 2000] [--reps 5] [--uvloop]``

1. **Round trip of ``public/test``** against the embedded exchange running in a separate process
   (``multiprocessing``, ``rate_limits=False``, market clock stopped so the server only answers):
   ``Deribit.test()`` (request id, future, timeout, orjson encode/decode, typed result) against a
   bare ``websockets`` connection that sends the same JSON text and awaits the reply frame.
   Sequential requests, one in flight; the two variants alternate in blocks so machine noise hits
   both alike. Client overhead = p50(client) - p50(bare); target: under 50 µs.

2. **Notification parsing**: real frames captured from the same exchange (``book.*.100ms``
   changes with 20 levels per side from ``sim/firehose``, ``ticker.*.100ms``,
   ``trades.*.100ms``), fed as text frames to

   * the client: ``WsTransport._on_frame`` — the very function its reader calls per frame:
     orjson decode, routing by channel, the broker's channel, a :class:`~deribit_kit.Notification`
     delivered to a consumer's callback;
   * ccxt.pro 4.5.90 ``deribit``, markets loaded from the same exchange:
     ``Client.handle_text_or_binary_message`` (ccxt's own decode) -> ``deribit.handle_message``,
     which for these channels updates its order book / parses its ticker / its trades and
     resolves the waiting futures — what ``watch_*`` runs per message.

   CPU per message = ``process_time`` over a whole batch / messages; median over repetitions with
   [the best]. Target: the client at least 3x faster than ccxt. (ccxt also maintains unified
   structures; for books a row adds the kit's ``OrderBook.apply`` to the client's side.)

Compare ratios from one run, not absolute times across runs (see perf-baselines.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deribit_kit import Consumer, Deribit, Notification
from deribit_kit.live.orderbook import OrderBook
from deribit_kit.transport.ws import WsTransport

PERP = "BTC-PERPETUAL"
TARGET_OVERHEAD_US = 50.0
TARGET_RATIO = 3.0


# ---------------------------------------------------------------------------- the exchange process


def serve(conn: Any, trade_rate: float) -> None:
    """Run the embedded exchange in this process until the parent says stop."""
    from deribit_kit.sim import Simulator

    async def main() -> None:
        sim = await Simulator(seed=5, rate_limits=False, autostep=False, trade_rate=trade_rate).start()
        conn.send(sim.ws_url)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # any message: stop
        await sim.stop()

    asyncio.run(main())


# ---------------------------------------------------------------------------- helpers


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def fmt(us: float) -> str:
    return f"{us:8.1f} µs"


# ---------------------------------------------------------------------------- 1. round trips


async def round_trips(url: str, n: int, blocks: int) -> dict[str, list[float]]:
    dk = await Deribit.connect(url, client_rate_limit=False)
    bare = await websockets.connect(url, compression=None, max_size=2**24, ping_interval=None)
    ids = iter(range(10**9, 2 * 10**9))

    async def client_once() -> float:
        t0 = time.perf_counter_ns()
        await dk.test()
        return (time.perf_counter_ns() - t0) / 1000

    async def bare_once() -> float:
        t0 = time.perf_counter_ns()
        await bare.send(orjson.dumps({"jsonrpc": "2.0", "id": next(ids), "method": "public/test",
                                      "params": {}}).decode())
        await bare.recv()
        return (time.perf_counter_ns() - t0) / 1000

    out: dict[str, list[float]] = {"client": [], "bare": []}
    for _ in range(200):  # warm up both paths
        await client_once()
        await bare_once()
    per_block = max(1, n // blocks)
    gc.disable()
    try:
        for b in range(blocks):
            order = (("client", client_once), ("bare", bare_once))
            for name, once in order if b % 2 == 0 else order[::-1]:
                samples = out[name]
                for _ in range(per_block):
                    samples.append(await once())
    finally:
        gc.enable()
    await bare.close()
    await dk.close()
    return out


# ---------------------------------------------------------------------------- 2. capture frames


async def capture(url: str, n_book: int, n_other: int) -> dict[str, list[str]]:
    """Real notification frames from the exchange, as text exactly as they arrive."""
    frames: dict[str, list[str]] = {"book": [], "ticker": [], "trades": []}
    async with websockets.connect(url, compression=None, max_size=2**24) as ws:
        rid = 0

        async def call(method: str, params: dict[str, Any]) -> Any:
            nonlocal rid
            rid += 1
            await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).decode())
            while True:
                msg = orjson.loads(raw := await ws.recv())
                if msg.get("id") == rid:
                    return msg["result"]
                keep(raw, msg)

        def keep(raw: Any, msg: dict[str, Any]) -> None:
            if msg.get("method") != "subscription":
                return
            family = msg["params"]["channel"].split(".")[0]
            if family in frames:
                frames[family].append(raw if isinstance(raw, str) else raw.decode())

        names = [i["instrument_name"] for i in await call("public/get_instruments", {"currency": "any"})
                 if i["kind"] in ("future", "option")][:40]
        channels = [f"ticker.{n}.100ms" for n in names] + [f"trades.{n}.100ms" for n in names]
        await call("public/subscribe", {"channels": channels})
        while len(frames["ticker"]) < n_other or len(frames["trades"]) < min(n_other, 200):
            await call("sim/step", {"count": 5})
        await call("public/unsubscribe_all", {})
        frames["ticker"], frames["trades"] = [], frames["trades"][:n_other]
        # tickers of one step again, now for a clean list; trades as captured
        await call("public/subscribe", {"channels": [f"ticker.{n}.100ms" for n in names]})
        while len(frames["ticker"]) < n_other:
            await call("sim/step", {"count": 1})
        await call("public/unsubscribe_all", {})
        frames["ticker"] = frames["ticker"][:n_other]
        # book: a snapshot and chained 20-level changes from the firehose
        await call("sim/firehose", {"instrument_name": PERP, "count": n_book, "levels": 20})
        while True:
            raw = await ws.recv()
            msg = orjson.loads(raw)
            if msg.get("method") == "sim/firehose_done":
                break
            keep(raw, msg)
    return frames


# ---------------------------------------------------------------------------- 2. parsers


def ours(sub: Consumer, transport: WsTransport, with_book: bool) -> tuple[Callable[[str], None], list[int]]:
    """The client's frame path through the broker into a consumer's callback; optionally the kit's OrderBook too."""
    got = [0]
    book = OrderBook(PERP)

    def on_notification(n: Notification) -> None:
        got[0] += 1
        if with_book and n.channel.startswith("book."):
            book.apply(n.data)

    sub.callback = on_notification
    return transport._on_frame, got


def ccxt_parser(url: str) -> Callable[[], tuple[Any, Any]]:
    import ccxt.pro
    from _ccxt_offline import OfflineClient as FakeClient

    http = url.replace("ws://", "http://").split("/ws/api/v2")[0]
    ex = ccxt.pro.deribit({"enableRateLimit": False})
    ex.urls["api"] = {"rest": http, "ws": url}

    async def load() -> None:
        await ex.load_markets()
        await ex.close()

    asyncio.run(load())

    def fresh() -> tuple[Any, Any]:
        ex.orderbooks = {}
        ex.tickers = {}
        ex.trades = {}
        return ex, FakeClient(ex)

    return fresh


def measure(handler: Callable[[str], None], msgs: list[str]) -> float:
    """CPU µs per message over the whole batch (no garbage collection pauses inside)."""
    gc.disable()
    try:
        t0 = time.process_time_ns()
        for m in msgs:
            handler(m)
        return (time.process_time_ns() - t0) / 1000 / len(msgs)
    finally:
        gc.enable()


# ---------------------------------------------------------------------------- main


async def client_side(url: str, channels: list[str]) -> tuple[Deribit, Consumer, WsTransport]:
    dk = await Deribit.connect(url, client_rate_limit=False)
    sub = dk.subscribe(*channels, callback=lambda n: None)
    await sub.start()
    assert isinstance(dk.transport, WsTransport)
    return dk, sub, dk.transport


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="round trips per variant")
    ap.add_argument("--messages", type=int, default=2000, help="book changes (and tickers/trades) per repetition")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--uvloop", action="store_true", help="run the client side on uvloop")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    started = time.monotonic()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(child, 20.0), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the embedded exchange did not start")
        url = parent.recv()
        loop_name = "uvloop" if args.uvloop else "asyncio"
        print(f"deribit_kit client benchmark — exchange in a separate process at {url}, client on {loop_name}, "
              f"Python {sys.version.split()[0]}")

        # 1. round trips
        t_ready = time.monotonic()
        rt = asyncio.run(round_trips(url, args.requests, blocks=10))
        t_rt = time.monotonic()
        c50, c99 = pct(rt["client"], 0.5), pct(rt["client"], 0.99)
        b50, b99 = pct(rt["bare"], 0.5), pct(rt["bare"], 0.99)
        overhead = c50 - b50
        print(f"\n1. public/test round trip, {len(rt['client'])} sequential requests per variant (wall time)")
        print(f"   {'variant':<44}{'p50':>12}{'p99':>12}")
        print(f"   {'bare websockets, same JSON text':<44}{fmt(b50):>12}{fmt(b99):>12}")
        print(f"   {'Deribit.test() (id, future, timeout, typed)':<44}{fmt(c50):>12}{fmt(c99):>12}")
        ok1 = overhead < TARGET_OVERHEAD_US
        print(f"   client overhead at p50: {overhead:.1f} µs (target < {TARGET_OVERHEAD_US:.0f} µs): "
              f"{'MET' if ok1 else 'NOT MET'}")

        # 2. parsing
        frames = asyncio.run(capture(url, args.messages, min(args.messages, 1000)))
        t_cap = time.monotonic()
        fresh_ccxt = ccxt_parser(url)
        t_ccxt = time.monotonic()
        snapshot, changes = frames["book"][0], frames["book"][1:]
        channels = sorted({orjson.loads(f)["params"]["channel"] for fs in frames.values() for f in fs})

        async def run_parsing() -> dict[str, dict[str, list[float]]]:
            dk, sub, transport = await client_side(url, channels)
            results: dict[str, dict[str, list[float]]] = {}
            try:
                for kind, msgs in (("book", changes), ("ticker", frames["ticker"]), ("trades", frames["trades"])):
                    res: dict[str, list[float]] = {"ours": [], "ccxt": [], "ours+book": []}
                    gc.collect()
                    for _ in range(args.reps):
                        on_frame, got = ours(sub, transport, with_book=False)
                        on_frame(snapshot)
                        res["ours"].append(measure(on_frame, msgs))
                        assert got[0] == len(msgs) + 1, (kind, got[0])
                        _, client = fresh_ccxt()
                        client.handle_text_or_binary_message(snapshot)
                        res["ccxt"].append(measure(client.handle_text_or_binary_message, msgs))
                        if kind == "book":
                            on_frame, got = ours(sub, transport, with_book=True)
                            on_frame(snapshot)
                            res["ours+book"].append(measure(on_frame, msgs))
                    results[kind] = res
                assert transport.stats["protocol_errors"] == 0
            finally:
                await dk.close()
            return results

        parsed = asyncio.run(run_parsing())
        sizes = {k: statistics.mean(len(f) for f in (changes if k == "book" else v)) for k, v in frames.items()}
        print(f"\n2. notification parsing, CPU per message, median of {args.reps} [best]")
        print(f"   {'messages':<34}{'client':>18}{'ccxt.pro':>18}{'ccxt / client':>16}")
        ok2 = True
        for kind, label in (("book", f"book change, 20+20 levels ({len(changes)})"),
                            ("ticker", f"ticker ({len(frames['ticker'])})"),
                            ("trades", f"trades ({len(frames['trades'])})")):
            r = parsed[kind]
            o, c = statistics.median(r["ours"]), statistics.median(r["ccxt"])
            ratio = c / o
            ok2 = ok2 and ratio >= TARGET_RATIO
            print(f"   {label:<34}{o:9.2f} [{min(r['ours']):5.2f}]{c:9.2f} [{min(r['ccxt']):5.2f}]{ratio:15.1f}x"
                  f"   ~{sizes[kind]:.0f} B")
            if r["ours+book"]:
                ob = statistics.median(r["ours+book"])
                print(f"   {'  + OrderBook.apply in the callback':<34}{ob:9.2f} [{min(r['ours+book']):5.2f}]"
                      f"{'':>18}{c / ob:15.1f}x")
        print(f"   notification parsing at least {TARGET_RATIO:.0f}x faster than ccxt on every message type: "
              f"{'MET' if ok2 else 'NOT MET'}")
        print(f"\nTargets: overhead {'MET' if ok1 else 'NOT MET'}, parsing {'MET' if ok2 else 'NOT MET'}")
        now = time.monotonic()
        print(f"(run time {now - started:.0f} s: exchange start {t_ready - started:.1f}, "
              f"round trips {t_rt - t_ready:.1f}, capture {t_cap - t_rt:.1f}, "
              f"ccxt markets {t_ccxt - t_cap:.1f}, parsing {now - t_ccxt:.1f})")
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


if __name__ == "__main__":
    main()
