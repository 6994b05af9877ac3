"""Order round-trip latency through the client against the embedded exchange, beside ccxt.

    .venv/bin/python bench/order_latency.py            # 500 orders per client
    .venv/bin/python bench/order_latency.py --quick    # 100 orders per client

One round trip = place a limit buy far below the market (it rests) and wait for the
acknowledgement; the order is then cancelled (timed separately). The exchange runs in its own
process with ``rate_limits=False``. Clients, one after the other on the same exchange:

* ``deribit_kit ws``   — ``Deribit.buy`` / ``Deribit.cancel`` over the WebSocket (unit checks and
  label included: that is what a user pays for);
* ``deribit_kit http`` — the same over HTTP (each request signed);
* ``deribit_kit raw``  — ``dk.call("private/buy", ...)`` over the WebSocket: the transport alone;
* ``ccxt rest``        — ``ccxt.async_support.deribit.create_order`` / ``cancel_order`` with the
  demo key, pointed at the exchange through ``urls['api']``.

Printed as a table of p50 / p99 / mean in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

INSTRUMENT = "BTC-PERPETUAL"
SYMBOL = "BTC/USD:BTC"
WARMUP = 20


def serve(conn: Connection) -> None:
    """Child process: run the exchange until the parent sends anything on ``conn``."""
    asyncio.run(_serve(conn))


async def _serve(conn: Connection) -> None:
    from deribit_kit.sim import Simulator

    async with Simulator(seed=7, rate_limits=False) as sim:
        conn.send((sim.ws_url, sim.http_url))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


Place = Callable[[float, str], Awaitable[str]]  # (price, label) -> order id
Cancel = Callable[[str], Awaitable[Any]]


async def measure(place: Place, cancel: Cancel, price: float, n: int) -> tuple[list[float], list[float]]:
    placed: list[float] = []
    cancelled: list[float] = []
    for i in range(WARMUP + n):
        t0 = time.perf_counter()
        oid = await place(price, f"bench-{i}")
        t1 = time.perf_counter()
        await cancel(oid)
        t2 = time.perf_counter()
        if i >= WARMUP:
            placed.append((t1 - t0) * 1000)
            cancelled.append((t2 - t1) * 1000)
    return placed, cancelled


async def run(ws_url: str, http_url: str, n: int) -> list[tuple[str, list[float], list[float]]]:
    from deribit_kit import Deribit
    from deribit_kit.client.rules import round_price
    from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

    key: dict[str, Any] = {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}
    rows: list[tuple[str, list[float], list[float]]] = []
    dk = await Deribit.connect(ws_url, client_rate_limit=False, **key)
    try:
        t = await dk.ticker(INSTRUMENT)
        assert t.best_bid_price
        price = round_price(await dk.instrument(INSTRUMENT), t.best_bid_price * 0.7, "down")

        async def dk_place(p: float, label: str) -> str:
            return (await dk.buy(INSTRUMENT, 10, p, label=label)).order.order_id

        async def dk_cancel(oid: str) -> Any:
            return await dk.cancel(oid)

        rows.append(("deribit_kit ws", *await measure(dk_place, dk_cancel, price, n)))

        async def raw_place(p: float, label: str) -> str:
            res = await dk.call("private/buy", instrument_name=INSTRUMENT, amount=10, price=p, label=label)
            return str(res["order"]["order_id"])

        async def raw_cancel(oid: str) -> Any:
            return await dk.call("private/cancel", order_id=oid)

        rows.append(("deribit_kit raw ws", *await measure(raw_place, raw_cancel, price, n)))
    finally:
        await dk.close()

    dh = await Deribit.connect(ws_url, transport="http", client_rate_limit=False, **key)
    try:
        async def http_place(p: float, label: str) -> str:
            return (await dh.buy(INSTRUMENT, 10, p, label=label)).order.order_id

        async def http_cancel(oid: str) -> Any:
            return await dh.cancel(oid)

        rows.append(("deribit_kit http", *await measure(http_place, http_cancel, price, n)))
    finally:
        await dh.close()

    try:
        import ccxt.async_support as ccxt_async
    except ImportError:  # pragma: no cover - optional
        print("ccxt not installed: skipping the ccxt column")
        return rows
    ex = ccxt_async.deribit({"apiKey": DEMO_CLIENT_ID, "secret": DEMO_CLIENT_SECRET, "enableRateLimit": False})
    ex.urls["api"] = {"rest": http_url, "ws": ws_url}
    # ccxt's nonce is the millisecond clock: two signed requests within one millisecond reuse it,
    # and Deribit (and the embedded exchange) refuse a used nonce (13009). Use a counter instead.
    nonces = itertools.count(time.time_ns())
    ex.nonce = lambda: next(nonces)
    try:
        await ex.load_markets()

        async def ccxt_place(p: float, label: str) -> str:
            order = await ex.create_order(SYMBOL, "limit", "buy", 10, p, {"label": label})
            return str(order["id"])

        async def ccxt_cancel(oid: str) -> Any:
            return await ex.cancel_order(oid, SYMBOL)

        rows.append(("ccxt rest", *await measure(ccxt_place, ccxt_cancel, price, n)))
    finally:
        await ex.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 orders per client")
    ap.add_argument("-n", type=int, default=None, help="orders per client")
    args = ap.parse_args()
    n = args.n or (100 if args.quick else 500)
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the exchange did not start within 30 s")
        ws_url, http_url = parent.recv()
        rows = asyncio.run(run(ws_url, http_url, n))
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    print(f"\norder round trip, {n} orders each (limit far from the market, then cancel), milliseconds\n")
    print(f"{'client':<20}{'place p50':>10}{'place p99':>10}{'place mean':>11}{'cancel p50':>11}{'cancel p99':>11}")
    for name, placed, cancelled in rows:
        print(f"{name:<20}{pct(placed, .5):>10.3f}{pct(placed, .99):>10.3f}{statistics.fmean(placed):>11.3f}"
              f"{pct(cancelled, .5):>11.3f}{pct(cancelled, .99):>11.3f}")


if __name__ == "__main__":
    main()
