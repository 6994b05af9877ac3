"""Kafka pipeline benchmark, side by side in one run.

Run: ``.venv/bin/python bench/kafka_pipeline.py [--changes 200000] [--cryptofeed 20000] [--seconds 8]``

A Kafka-protocol broker is started on loopback (Tansu, :class:`~deribit_kit.transport.kafka.LocalKafka`,
memory storage), pinned to the second core while this process is pinned to the first (on a machine
with two or more), so "one core" is this process: the sink's Python and librdkafka's threads.

* **into Kafka, our sink**: ``--changes`` book changes touching 20 levels per side (four instruments,
  chained by change_id; the exchange's JSON text as the client receives it, decoded once) handed to
  :meth:`KafkaSink._on_item` as the broker hands them (a :class:`Notification`), with the defaults of
  the issue: idempotence, ``acks=all``, Snappy, batches of 100 messages / 100 ms. Timed from the first
  message to the last delivery report; CPU per message is the process CPU over that window.
* **into Kafka, cryptofeed's backend** (``cryptofeed.backends.kafka.BookKafka``, aiokafka under it) on
  the same changes as cryptofeed's own ``OrderBook`` deltas (20 levels per side), to the same broker,
  with its defaults (acks=1, no compression, no linger; aiokafka's idempotent producer does not start
  against Tansu 0.6): ``--cryptofeed`` messages, timed until its writer has sent them all.
* **end to end**: the embedded exchange in its own process, as an exchange is (ticking every 50 ms;
  the ``raw`` books of its futures, so the exchange does not batch them) -> broker -> sink -> Kafka ->
  :class:`KafkaSource` -> a second broker's LiveBooks, for ``--seconds`` at linger 5 ms and 100 ms:
  the latency of each applied change from the exchange's timestamp (ms) to the remote LiveBook,
  p50/p99, and of the pipeline alone (the same change in the local broker -> in the remote one).
  ``--exchange-in-process`` runs the exchange on this process's loop instead (its ticks then hold
  up the pipeline too).

Targets on the development machine: >= 60,000 20-level changes/s into Kafka on one core with
idempotence and Snappy; >= 4x cryptofeed's backend per message; end-to-end p99 < linger + 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _offline_upstream import OfflineUpstream
from book_ingest import INSTRUMENT_INFO

from deribit_kit import Deribit
from deribit_kit.broker import Broker
from deribit_kit.broker.consumer import Item, Notification
from deribit_kit.models import Instrument
from deribit_kit.sim import Simulator
from deribit_kit.sinks.kafka import KafkaSink
from deribit_kit.transport.kafka import LocalKafka
from deribit_kit.upstream.kafka import KafkaSource
from deribit_kit.wire.jsonrpc import encode_notification

INSTRUMENTS = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27MAR26", "ETH-27MAR26"]
LEVELS = 20
VARIANTS = 64


def frames(n: int) -> list[Notification]:
    """``n`` 20-level changes, round robin over the instruments, chained per instrument."""
    out = []
    cids = dict.fromkeys(INSTRUMENTS, 1_000_000)
    datas: dict[tuple[str, int], dict[str, Any]] = {}
    for i in range(n):
        inst = INSTRUMENTS[i % len(INSTRUMENTS)]
        v = (i // len(INSTRUMENTS)) % VARIANTS
        prev = cids[inst]
        cid = cids[inst] = prev + 1
        mid = 90_000.0 if inst.startswith("BTC") else 3_000.0
        data = {"type": "change", "timestamp": 1767600000000 + i, "prev_change_id": prev, "instrument_name": inst,
                "change_id": cid,
                "bids": [["change", round(mid - (k + 1) * 0.5, 1), 10.0 * (k + 1) + v] for k in range(LEVELS)],
                "asks": [["change", round(mid + (k + 1) * 0.5, 1), 10.0 * (k + 1) + v] for k in range(LEVELS)]}
        ch = f"book.{inst}.100ms"
        raw = encode_notification(ch, data).decode()
        shared = datas.setdefault((inst, v), orjson.loads(raw)["params"]["data"])  # decoded once, as the client does
        out.append(Notification(ch, shared, raw))
    return out


def pin(kafka: LocalKafka) -> str:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or kafka.proc is None:
        return f"not pinned ({len(cpus)} cpu)"
    os.sched_setaffinity(0, {cpus[0]})
    os.sched_setaffinity(kafka.proc.pid, set(cpus[1:]))
    return f"this process on cpu {cpus[0]}, Tansu on cpu {','.join(map(str, cpus[1:]))}"


async def ours(kafka: LocalKafka, notes: list[Notification], prefix: str) -> dict[str, float]:
    infos = {i: msgspec.convert({**INSTRUMENT_INFO, "instrument_name": i, "tick_size": 0.5}, Instrument)
             for i in INSTRUMENTS}  # what the broker looks up when a book joins
    broker = Broker(OfflineUpstream(infos))
    sink = KafkaSink(broker, kafka.bootstrap, prefix=prefix, max_buffer=2_000_000, max_buffer_kbytes=4 << 20,
                     channels=[f"book.{i}.100ms" for i in INSTRUMENTS])
    await sink.start()
    await sink.flush(10)
    on_item = sink._on_item
    c0, t0 = time.process_time(), time.perf_counter()
    d0 = sink.delivered
    for k in range(0, len(notes), 2000):
        for n in notes[k:k + 2000]:
            on_item(n)
        await asyncio.sleep(0)  # the supervisor serves delivery reports
    while sink.delivered - d0 < len(notes) and time.perf_counter() - t0 < 120:
        assert sink._producer is not None
        sink._producer.poll(0.01)
        await asyncio.sleep(0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await asyncio.sleep(1.2)  # librdkafka's next statistics (batch sizes, bytes on the wire)
    assert sink._producer is not None
    sink._producer.poll(0)
    stats = sink.stats()
    await sink.stop()
    await broker.close()
    return {"rate": len(notes) / wall, "cpu_us": cpu / len(notes) * 1e6, "lost": stats["lost"],
            "errors": stats["errors"], "ratio": stats["compression_ratio"], "batch": stats["batch_messages_avg"],
            "p50": stats["delivery_p50_ms"] or 0.0, "p99": stats["delivery_p99_ms"] or 0.0,
            "delivered": sink.delivered - d0}


async def cryptofeed_backend(kafka: LocalKafka, notes: list[Notification]) -> dict[str, float] | str:
    try:
        from decimal import Decimal

        from cryptofeed.backends.kafka import BookKafka
        from cryptofeed.types import OrderBook
    except ImportError as exc:
        return f"skipped ({exc}; pip install '.[bench]' aiokafka)"
    cb = BookKafka(bootstrap_servers=kafka.bootstrap, snapshot_interval=1000)
    cb.start(asyncio.get_running_loop())
    books = {i: OrderBook("DERIBIT", i, bids={Decimal(str(90_000 - k)): Decimal(1) for k in range(LEVELS)},
                          asks={Decimal(str(90_001 + k)): Decimal(1) for k in range(LEVELS)}) for i in INSTRUMENTS}
    deltas = []
    for n in notes:  # the same changes as cryptofeed's feed hands them to its backends
        d = n.data
        delta = {side: [(Decimal(str(p)), Decimal(str(a))) for _, p, a in d[f"{side}s"]] for side in ("bid", "ask")}
        deltas.append((books[d["instrument_name"]], delta, d["timestamp"] / 1000.0))
    while not cb.running:
        await asyncio.sleep(0.01)
    c0, t0 = time.process_time(), time.perf_counter()
    for book, delta, ts in deltas:
        book.delta = delta
        book.timestamp = ts
        await cb(book, ts)
    while cb.queue.qsize() and time.perf_counter() - t0 < 300:
        await asyncio.sleep(0.01)
    await cb.stop()
    await asyncio.wait_for(cb.worker, 60)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"rate": len(deltas) / wall, "cpu_us": cpu / len(deltas) * 1e6}


def serve_exchange(conn: Any) -> None:
    """Child process: the embedded exchange until the parent sends anything on ``conn``."""
    asyncio.run(_serve_exchange(conn))


async def _serve_exchange(conn: Any) -> None:
    async with Simulator(seed=2, tick_interval=0.05, rate_limits=False) as sim:
        acct = sim.demo_account
        conn.send((sim.ws_url, acct.client_id, acct.client_secret))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)


@contextlib.asynccontextmanager
async def exchange(in_process: bool) -> Any:
    """(url, client_id, client_secret) of an embedded exchange, in its own process unless ``in_process``."""
    if in_process:
        async with Simulator(seed=2, tick_interval=0.05, rate_limits=False) as sim:
            yield sim.ws_url, sim.demo_account.client_id, sim.demo_account.client_secret
        return
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve_exchange, args=(child,), daemon=True)
    proc.start()
    try:
        if not await asyncio.to_thread(parent.poll, 60):
            raise RuntimeError("the exchange process did not start")
        yield parent.recv()
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()  # only the process this function started


async def end_to_end(kafka: LocalKafka, linger: float, seconds: float, prefix: str,
                     in_process: bool = False) -> dict[str, float]:
    lat: list[float] = []  # exchange timestamp (ms) -> the remote LiveBook
    hop: list[float] = []  # the local broker -> the remote LiveBook (the pipeline alone)
    seen: dict[tuple[str, int], float] = {}
    async with exchange(in_process) as (url, client_id, client_secret):
        # raw channels (no 100 ms batching by the exchange) need a session
        dk = await Deribit.connect(url, client_id=client_id, client_secret=client_secret)
        names = [i.instrument_name for i in await dk.instruments("any", "future")]
        chans = [f"book.{n}.raw" for n in names]
        sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, channels=chans, linger_ms=linger).start()
        source = KafkaSource(kafka.bootstrap, prefix)
        remote = Broker(source)

        def here(n: Item) -> None:
            if type(n) is Notification and type(n.data) is dict and n.data.get("type") == "change":
                seen[(n.channel, n.data["change_id"])] = time.perf_counter()

        def there(n: Item) -> None:
            if type(n) is Notification and type(n.data) is dict and n.data.get("type") == "change":
                lat.append(time.time() * 1000.0 - n.data["timestamp"])
                t = seen.pop((n.channel, n.data["change_id"]), None)
                if t is not None:
                    hop.append((time.perf_counter() - t) * 1000.0)

        local = dk.broker.consumer(chans, "drop_oldest", 100_000, callback=here)
        await local.start()
        books = [remote.hold_book(c) for c in chans]
        cons = remote.consumer(chans, "drop_oldest", 100_000, callback=there)
        await cons.start()
        await asyncio.gather(*(b.wait_live(20) for b in books))
        lat.clear()
        hop.clear()
        await asyncio.sleep(seconds)  # the measurement window
        cons.close_nowait()
        local.close_nowait()
        live = sum(b.state == "live" for b in books)
        await remote.close()
        await source.close()
        await sink.stop(5)
        await dk.close()
    lat.sort()
    hop.sort()
    return {"n": len(lat), "p50": lat[len(lat) // 2] if lat else 0.0,
            "p99": lat[int(len(lat) * 0.99)] if lat else 0.0, "books": len(chans), "live": live,
            "hop50": hop[len(hop) // 2] if hop else 0.0, "hop99": hop[int(len(hop) * 0.99)] if hop else 0.0}


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    with LocalKafka() as kafka:
        where = pin(kafka)
        print(f"Kafka pipeline benchmark (Tansu {kafka.bootstrap}; {where})")
        notes = frames(args.changes)
        size = sum(len(n.raw or "") for n in notes) / len(notes)
        print(f"  input: {len(notes):,} changes of {LEVELS} levels per side, {size:.0f} bytes per frame")
        o = await ours(kafka, notes, "bench-ours")
        print(f"  our sink      : {o['rate']:>9,.0f} changes/s into Kafka, {o['cpu_us']:6.1f} us CPU/message "
              f"(idempotent, acks=all, snappy {o['ratio']:.1f}x, batch {o['batch']:.0f} msgs; delivery p50 "
              f"{o['p50']:.0f} ms p99 {o['p99']:.0f} ms; delivered {o['delivered']:,.0f}, lost {o['lost']:.0f}, "
              f"errors {o['errors']:.0f})")
        cf = await cryptofeed_backend(kafka, notes[:args.cryptofeed])
        if isinstance(cf, str):
            print(f"  cryptofeed    : {cf}")
        else:
            print(f"  cryptofeed    : {cf['rate']:>9,.0f} changes/s into Kafka, {cf['cpu_us']:6.1f} us CPU/message "
                  f"(BookKafka over aiokafka, its defaults: acks=1, no compression; {args.cryptofeed:,} messages)")
            print(f"  ratio         : {cf['cpu_us'] / o['cpu_us']:.1f}x less CPU per message, "
                  f"{o['rate'] / cf['rate']:.1f}x the rate")
        os.sched_setaffinity(0, os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
        for linger in (5.0, 100.0):
            e = await end_to_end(kafka, linger, args.seconds, f"bench-e2e-{linger:g}", args.exchange_in_process)
            print(f"  end to end, linger {linger:>5g} ms: p50 {e['p50']:6.1f} ms, p99 {e['p99']:6.1f} ms "
                  f"(exchange -> sink -> Kafka -> source -> remote LiveBook; {e['n']:,} changes of {e['books']:.0f} "
                  f"raw books, {e['live']:.0f} live at the end; target p99 < {linger + 20:g} ms)")
            print(f"  {'':>20}the pipeline alone (local broker -> remote LiveBook): p50 {e['hop50']:6.1f} ms, "
                  f"p99 {e['hop99']:6.1f} ms")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=200_000)
    p.add_argument("--cryptofeed", type=int, default=20_000, help="messages through cryptofeed's backend")
    p.add_argument("--seconds", type=float, default=8.0, help="end-to-end window per linger")
    p.add_argument("--exchange-in-process", action="store_true",
                   help="end to end: the exchange on this process's loop (default: its own process)")
    asyncio.run(main(p.parse_args()))
