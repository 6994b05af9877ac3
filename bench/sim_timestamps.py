"""Where the time of a book change goes at the embedded exchange: its ``timestamp`` -> the frame
written on the client's socket -> the client's receive.

Run: ``.venv/bin/python bench/sim_timestamps.py [--seconds 8] [--tick 0.05]``

The exchange runs in this process (ticking every ``--tick`` s, ~600 instruments); a client in its own
process subscribes to the ``raw`` books of every future (a session: raw channels need one) and
records when each change arrives (``time.time()``, the same clock as the exchange's). Here, the
publisher's ``send_to`` is wrapped to record when each book change's frame was written, and
``Market.step`` to record how long a tick takes. Printed: p50/p90/p99/max of each hop, in ms (the
exchange's timestamps are whole milliseconds: about 0.5 ms of each figure from its stamp is that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deribit_kit.sim import Simulator


def client(url: str, key: tuple[str, str], channels: list[str], out: Any, seconds: float) -> None:
    """Child process: subscribe, then for ``seconds`` record (channel, change_id, timestamp, received)."""
    from websockets.sync.client import connect

    got: list[tuple[str, int, int, float]] = []
    with connect(url, max_size=None) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "public/auth", "params": {
            "grant_type": "client_credentials", "client_id": key[0], "client_secret": key[1]}}))
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": channels}}))
        end = time.time() + seconds
        while time.time() < end:
            raw = ws.recv(timeout=10)
            t = time.time()
            msg = json.loads(raw)
            if msg.get("method") == "subscription":
                d = msg["params"]["data"]
                if isinstance(d, dict) and d.get("type") == "change":
                    got.append((msg["params"]["channel"], d["change_id"], d["timestamp"], t))
    out.put(got)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


async def main(args: argparse.Namespace) -> None:
    written: dict[tuple[str, int], float] = {}
    ticks: list[float] = []
    async with Simulator(seed=2, tick_interval=args.tick, rate_limits=False) as sim:
        pubsub, market = sim.pubsub, sim.market
        send_to, market_step = pubsub.send_to, market.step

        def timed_send_to(subs: Any, channel: str, data: Any) -> None:
            send_to(subs, channel, data)
            if channel.startswith("book.") and type(data) is dict and data.get("type") == "change":
                written[(channel, data["change_id"])] = time.time()

        def timed_step() -> Any:
            t = time.perf_counter()
            result = market_step()
            ticks.append((time.perf_counter() - t) * 1000.0)
            return result

        pubsub.send_to = timed_send_to  # type: ignore[method-assign]
        market.step = timed_step  # type: ignore[method-assign]
        names = [i.name for i in market.instruments.values() if i.kind == "future"]
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        acct = sim.demo_account
        proc = ctx.Process(target=client, args=(sim.ws_url, (acct.client_id, acct.client_secret),
                                                [f"book.{n}.raw" for n in names], out, args.seconds))
        proc.start()
        got = await asyncio.to_thread(out.get, True, args.seconds + 60)
        proc.join(10)
        n_instruments = len(market.instruments)
    hops: dict[str, list[float]] = {"stamp -> written": [], "written -> received": [], "stamp -> received": []}
    for channel, cid, ts, received in got:
        w = written.get((channel, cid))
        if w is None:
            continue
        hops["stamp -> written"].append(w * 1000.0 - ts)
        hops["written -> received"].append((received - w) * 1000.0)
        hops["stamp -> received"].append(received * 1000.0 - ts)
    print(f"embedded exchange, {n_instruments} instruments, tick {args.tick * 1000:g} ms; {len(names)} futures' raw "
          f"books: {len(hops['stamp -> received']):,} changes, {len(ticks)} ticks")
    for name, xs in (("a tick (Market.step)", ticks), *hops.items()):
        print(f"  {name:22s} p50 {pct(xs, .5):6.2f}  p90 {pct(xs, .9):6.2f}  p99 {pct(xs, .99):6.2f}  "
              f"max {max(xs, default=float('nan')):6.2f} ms")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="how long the client records")
    p.add_argument("--tick", type=float, default=0.05, help="the exchange's tick (s)")
    asyncio.run(main(p.parse_args()))
