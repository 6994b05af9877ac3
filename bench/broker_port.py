"""Fan-out through the broker's port vs a bare ``websockets.broadcast`` relay of the same frames.

    .venv/bin/python bench/broker_port.py [--clients 1 10 100] [--seconds 5]

The embedded exchange + broker (or + relay) run in one process, the clients in another. Each
client subscribes the book and ticker channels of a few instruments; latency is the message's
exchange ``timestamp`` (ms resolution) to client receive. Server CPU share is the server process's
CPU time over wall time during the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
from typing import Any

import orjson
import websockets

INSTRUMENTS = ["BTC-PERPETUAL", "ETH-PERPETUAL"]
CHANNELS = [f"{f}.{i}.100ms" for i in INSTRUMENTS for f in ("book", "ticker")]


def serve(kind: str, tick: float, q: Any, stop: Any) -> None:
    async def main() -> None:
        from deribit_kit.broker import Broker
        from deribit_kit.broker.server import BrokerServer
        from deribit_kit.client import Deribit
        from deribit_kit.sim import Simulator

        async with Simulator(seed=1, tick_interval=tick, rate_limits=False) as sim:
            if kind == "broker":
                dk = await Deribit.connect(sim.ws_url)
                srv = BrokerServer(Broker(dk), rate_limits=False, max_buffer=64 * 1024 * 1024)
                await srv.start()
                url = srv.ws_url
            else:
                clients: set[Any] = set()

                async def handler(ws: Any) -> None:
                    clients.add(ws)
                    try:
                        async for _ in ws:
                            pass
                    finally:
                        clients.discard(ws)

                relay = await websockets.serve(handler, "127.0.0.1", 0, max_size=2**24)
                up = await websockets.connect(sim.ws_url, max_size=2**24)
                await up.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                                            "params": {"channels": CHANNELS}}).decode())

                async def pump() -> None:
                    async for frame in up:
                        websockets.broadcast(clients, frame)
                asyncio.get_running_loop().create_task(pump())
                url = f"ws://127.0.0.1:{relay.sockets[0].getsockname()[1]}"
            q.put(url)
            while not stop.is_set():
                await asyncio.sleep(0.2)
                q.put(("cpu", time.process_time(), time.monotonic()))

    asyncio.run(main())


def clients(url: str, n: int, seconds: float, q: Any) -> None:
    async def main() -> None:
        lat: list[float] = []
        count = 0

        async def one() -> None:
            nonlocal count
            async with websockets.connect(url, max_size=2**24) as ws:
                await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                                            "params": {"channels": CHANNELS}}).decode())
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    try:
                        frame = await asyncio.wait_for(ws.recv(), end - time.monotonic())
                    except TimeoutError:
                        break
                    msg = orjson.loads(frame)
                    data = msg.get("params", {}).get("data")
                    if isinstance(data, dict) and "timestamp" in data:
                        count += 1
                        lat.append(time.time() * 1000 - data["timestamp"])
        await asyncio.gather(*(one() for _ in range(n)))
        q.put((count, lat))

    asyncio.run(main())


def run(kind: str, n: int, seconds: float, tick: float) -> dict[str, Any]:
    q: Any = mp.Queue()
    stop = mp.Event()
    sp = mp.Process(target=serve, args=(kind, tick, q, stop), daemon=True)
    sp.start()
    url = q.get(timeout=30)
    cq: Any = mp.Queue()
    cp = mp.Process(target=clients, args=(url, n, seconds, cq), daemon=True)
    cp.start()
    cpu0 = None
    while cpu0 is None:
        item = q.get(timeout=10)
        cpu0 = item
    count, lat = cq.get(timeout=seconds + 60)
    cpu1 = cpu0
    while not q.empty():
        cpu1 = q.get()
    stop.set()
    sp.join(5)
    cp.join(5)
    if sp.is_alive():
        sp.terminate()
    lat.sort()
    share = (cpu1[1] - cpu0[1]) / max(cpu1[2] - cpu0[2], 1e-9)
    return {"kind": kind, "clients": n, "deliveries/s": count / seconds,
            "p50_ms": statistics.median(lat) if lat else None,
            "p99_ms": lat[int(len(lat) * 0.99)] if lat else None, "server_cpu": share}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--tick", type=float, default=0.01, help="exchange tick (input rate); 0.001 ~ max")
    args = ap.parse_args()
    print(f"{'server':>8} {'N':>5} {'deliv/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'cpu':>6}")
    for n in args.clients:
        for kind in ("broker", "relay"):
            r = run(kind, n, args.seconds, args.tick)
            print(f"{kind:>8} {n:>5} {r['deliveries/s']:>10.0f} {r['p50_ms'] or 0:>8.2f} {r['p99_ms'] or 0:>8.2f} "
                  f"{r['server_cpu']:>6.0%}", flush=True)


if __name__ == "__main__":
    main()
