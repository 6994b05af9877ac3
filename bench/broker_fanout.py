"""Broker benchmarks, printed as tables.

1. In-process fan-out cost per delivery (µs) for 1, 10 and 100 consumers of one channel: the
   upstream's sink -> broker channel -> consumers, for callback consumers and for buffered
   (``drop_oldest`` / ``conflate``) consumers. Target < 2 µs per delivery.
2. CPU share of the broker process with every instrument of the embedded exchange subscribed
   (``book.{instrument}.100ms``, each fed into a live OrderBook) while the exchange runs in a
   separate process. Target < 25 % of one core.

    .venv/bin/python bench/broker_fanout.py [--seconds 10] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from _offline_upstream import OfflineUpstream

from deribit_kit import Deribit
from deribit_kit.broker import Broker, Policy
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

CHANNEL = "ticker.BTC-PERPETUAL.100ms"
MESSAGE: dict[str, Any] = {"instrument_name": "BTC-PERPETUAL", "timestamp": 1_700_000_000_000,
                           "best_bid_price": 50_000.0, "best_ask_price": 50_000.5, "mark_price": 50_000.2}


async def fanout(n: int, mode: str, messages: int, reps: int) -> float:
    """Median µs per delivery for ``n`` consumers in ``mode`` (callback | drop_oldest | conflate)."""
    upstream = OfflineUpstream()
    broker = Broker(upstream)
    sink: list[Any] = []
    policy: Policy = "conflate" if mode == "conflate" else "drop_oldest"
    consumers = [
        broker.consumer([CHANNEL], policy, maxsize=messages,
                        callback=sink.append if mode == "callback" else None)
        for _ in range(n)
    ]
    await asyncio.gather(*(c.start() for c in consumers))
    dispatch = upstream.sink
    assert dispatch is not None
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(messages):
            dispatch(CHANNEL, MESSAGE, None)
        dt = time.perf_counter() - t0
        samples.append(dt / (messages * n) * 1e6)
        sink.clear()
        for c in consumers:
            c.drain()
    await broker.close()
    return statistics.median(samples)


SIM_SCRIPT = """
import asyncio, sys
from deribit_kit.sim import Simulator
async def main():
    async with Simulator(seed=1, tick_interval=0.1, rate_limits=False) as sim:
        print(sim.ws_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


async def cpu_share(seconds: float) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", SIM_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        dk = await Deribit.connect(url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
        broker = dk.broker
        names = [i.instrument_name for i in await dk.instruments("any")]
        books = await asyncio.gather(*(broker.book(n, timeout=60) for n in names))
        await asyncio.sleep(1.0)  # let the stream settle after the snapshots
        msgs0 = sum(st.messages for st in broker._channels.values())
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        msgs = sum(st.messages for st in broker._channels.values()) - msgs0
        live = sum(b.state == "live" for b in books)
        gaps = sum(b.book.gaps for b in books)
        await broker.close()
        await dk.close()
        return {"instruments": len(names), "live": live, "gaps": gaps, "msgs_per_s": msgs / wall,
                "cpu_pct": 100 * cpu / wall, "us_per_msg": cpu / max(msgs, 1) * 1e6}
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()

    print("In-process fan-out, µs per delivery (median of reps; target < 2 µs)")
    print(f"| {'consumers':>9} | {'callback':>9} | {'drop_oldest':>11} | {'conflate':>9} |")
    print(f"|{'-' * 11}|{'-' * 11}|{'-' * 13}|{'-' * 11}|")
    for n in (1, 10, 100):
        r = [await fanout(n, mode, max(args.messages // n, 50), args.reps)
             for mode in ("callback", "drop_oldest", "conflate")]
        print(f"| {n:>9} | {r[0]:>9.3f} | {r[1]:>11.3f} | {r[2]:>9.3f} |")

    if not args.skip_cpu:
        print(f"\nBroker CPU with every instrument's book.*.100ms subscribed (sim in another process, "
              f"{args.seconds:g} s; target < 25 %)")
        r2 = await cpu_share(args.seconds)
        print("| instruments | live | gaps | msgs/s | CPU % of one core | CPU µs/msg |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {r2['instruments']} | {r2['live']} | {r2['gaps']} | {r2['msgs_per_s']:.0f} | "
              f"{r2['cpu_pct']:.1f} | {r2['us_per_msg']:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
