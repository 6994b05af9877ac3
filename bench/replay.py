"""Recording and replay benchmark, side by side in one run.

Run: ``.venv/bin/python bench/replay.py [--changes 20000] [--reps 5] [--sim-seconds 3]``

The stream: two books (``book.BTC-PERPETUAL.100ms`` and ``book.ETH-PERPETUAL.100ms``, each the
generator of ``bench/book_ingest.py``: a 1000-level snapshot, then changes touching 20 levels per
side, chained by change_id) interleaved with a ticker frame every 10 changes, as the exchange's
JSON text. Measured, per repetition (the median is printed with [the best]):

* **recording**: a :class:`~deribit_kit.sinks.Recorder` on a broker over an offline upstream (the
  frames are fed into the broker's sink with their raw text, decoded once, as the client does):
  bytes on disk per recorded frame, the compression ratio, and the recorder's CPU per frame (the
  process CPU of the run with the recorder minus the same run without it: the callback, the zstd
  compression in its thread and the writes); also a few seconds recorded from the embedded
  exchange (its books, tickers and trades) for the ratio on a market's own data;
* **replay, read**: decompress into chunks of whole records (``segment_buffers``), counted;
* **replay, routed without parsing**: each record sliced at the fixed offsets (kind, channel,
  frame) and handed to its channel's handler, nothing JSON-parsed; also the :class:`Replay`
  itself with nothing subscribed (every frame looked up and skipped);
* **replay with books**: :class:`~deribit_kit.upstream.replay.Replay` at ``speed="max"`` into a
  :class:`~deribit_kit.broker.Broker` holding both live books (each frame parsed once, folded into
  its LiveBook, top-10 read in a ``live.updated`` callback) — changes per second and CPU per
  change — against the **live broker path** measured the way ``bench/book_ingest.py``'s broker
  variant does (``WsTransport._on_frame`` -> the client's sink -> the broker -> the LiveBook, the
  same top-10 callback) on the same frames, in the same run.

Targets on the development machine: routing >= 500,000 frames/s; with books >= 60,000 20-level
changes/s on one core, at most 1.3x the live broker path per change. For reference, tardis-machine
publishes about 700,000 messages/s for its HTTP replay on a desktop CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _offline_upstream import OfflineUpstream
from book_ingest import INSTRUMENT_INFO, generate

from deribit_kit import recording
from deribit_kit.broker import Broker
from deribit_kit.models import Instrument
from deribit_kit.recording.reader import segment_buffers
from deribit_kit.sinks import Recorder
from deribit_kit.upstream.replay import Replay

NAMES = ("BTC-PERPETUAL", "ETH-PERPETUAL")
BOOKS = [f"book.{n}.100ms" for n in NAMES]
TICKER = "ticker.BTC-PERPETUAL.100ms"
TARGET_ROUTE = 500_000
TARGET_BOOKS = 60_000
TARGET_RATIO = 1.3
TARDIS = 700_000


def stream(changes: int, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(snapshots, frames): per book a snapshot, then the changes interleaved, a ticker every 10."""
    snaps, per_book = [], []
    for k, name in enumerate(NAMES):
        snap, msgs = generate(changes, seed + k)
        if name != "BTC-PERPETUAL":
            snap = snap.replace("BTC-PERPETUAL", name)
            msgs = [m.replace("BTC-PERPETUAL", name) for m in msgs]
        snaps.append((BOOKS[k], snap))
        per_book.append(msgs)
    frames: list[tuple[str, str]] = []
    for i in range(changes):
        for k in range(len(NAMES)):
            frames.append((BOOKS[k], per_book[k][i]))
        if i % 10 == 0:
            tick = {"timestamp": 1_700_000_000_000 + i, "instrument_name": "BTC-PERPETUAL", "mark_price": 60_000.5,
                    "best_bid_price": 60_000.0, "best_ask_price": 60_000.5, "index_price": 60_001.0,
                    "stats": {"volume": 123.4, "high": 61_000.0, "low": 59_000.0}, "open_interest": 1.2e9,
                    "funding_8h": 0.0001, "state": "open"}
            frames.append((TICKER, orjson.dumps({"jsonrpc": "2.0", "method": "subscription",
                                                 "params": {"channel": TICKER, "data": tick}}).decode()))
    return snaps, frames


def instruments() -> dict[str, Instrument]:
    out = {}
    for name in NAMES:
        out[name] = msgspec.convert({**INSTRUMENT_INFO, "instrument_name": name}, Instrument)
    return out


# ---------------------------------------------------------------------------- recording


async def _feed(out: Path | None, snaps: list[tuple[str, str]], frames: list[tuple[str, str]],
                decoded: list[Any], level: int = 3) -> tuple[float, dict[str, Any] | None]:
    """Feed every frame into a broker's sink (with or without a recorder); the process CPU spent."""
    up = OfflineUpstream(instruments())
    broker = Broker(up, stale_after=None)
    held = [broker.hold_book(ch) for ch in BOOKS]
    channels = [*BOOKS, TICKER]
    rec = None
    if out is not None:
        rec = Recorder(broker, out, channels=channels, flush_interval=0.05, level=level)
        await rec.start()
    else:
        await broker.consumer(channels, callback=lambda n: None).start()
    await broker.settle()
    sink = up.sink
    assert sink is not None
    for ch, text in snaps:
        sink(ch, orjson.loads(text)["params"]["data"], text)
    gc.collect()
    c0 = time.process_time()
    for i, (ch, text) in enumerate(frames):
        sink(ch, decoded[i], text)
        if i % 2000 == 1999:
            await asyncio.sleep(0)  # the event loop turns, as it does between socket reads
    manifest = await rec.stop() if rec is not None else None
    cpu = time.process_time() - c0
    for live in held:
        live.release()
    await broker.close()
    return cpu, manifest


def bench_recording(snaps: list[tuple[str, str]], frames: list[tuple[str, str]], reps: int,
                    work: Path) -> tuple[dict[int, dict[str, Any]], dict[int, list[float]], Path]:
    """Per zstd level (3, the default, and 1): the manifest and the recorder's CPU per frame."""
    decoded = [orjson.loads(text)["params"]["data"] for _, text in frames]
    per_frame: dict[int, list[float]] = {3: [], 1: []}
    manifests: dict[int, dict[str, Any]] = {}
    keep = work / "rec"
    for rep in range(reps + 1):
        base, _ = asyncio.run(_feed(None, snaps, frames, decoded))
        for level in per_frame:
            target = work / f"rec-{rep}-{level}"
            with_rec, m = asyncio.run(_feed(target, snaps, frames, decoded, level))
            assert m is not None
            if rep:
                per_frame[level].append((with_rec - base) / len(frames) * 1e6)
            manifests[level] = m
            if level == 3 and not keep.exists():
                target.rename(keep)
            else:
                shutil.rmtree(target)
    return manifests, per_frame, keep


async def _record_sim(out: Path, seconds: float) -> dict[str, Any]:
    from deribit_kit import Deribit
    from deribit_kit.sim import Simulator

    async with Simulator(seed=3, rate_limits=False) as sim:
        dk = await Deribit.connect(sim.ws_url)
        futures = [i.instrument_name for i in await dk.instruments("BTC", "future")]
        chans = [f"book.{n}.100ms" for n in futures] + [f"ticker.{n}.100ms" for n in futures] + \
            [f"trades.{n}.100ms" for n in futures] + ["deribit_price_index.btc_usd"]
        rec = await Recorder(dk.broker, out, channels=chans).start()
        await asyncio.sleep(seconds)  # a fixed stretch of the exchange's market
        manifest = await rec.stop()
        await dk.close()
    return manifest


def sizes(m: dict[str, Any]) -> tuple[int, int, int]:
    raw = sum(s["bytes"] for s in m["segments"])
    comp = sum(s["compressed_bytes"] for s in m["segments"])
    return m["frames"], raw, comp


# ---------------------------------------------------------------------------- replay


def read_only(path: Path) -> int:
    """Decompress every segment and count its records (``segment_buffers``: whole lines per chunk)."""
    n = 0
    for seg in recording.segment_paths(path):
        for buf, start, end in segment_buffers(seg):
            n += buf.count(b"\n", start, end)
    return n


def routed(path: Path) -> int:
    """Every record scanned in place at the fixed offsets (a newline, the kind byte, the channel) and
    its frame handed, as a zero-copy ``memoryview``, to its channel's handler: nothing parsed."""
    seen = [0]

    def handler(frame: memoryview) -> None:
        seen[0] += 1

    handlers: dict[bytes, Callable[[memoryview], None]] = dict.fromkeys([c.encode() for c in (*BOOKS, TICKER)],
                                                                        handler)
    get = handlers.get
    for seg in recording.segment_paths(path):
        for buf, pos, size in segment_buffers(seg):
            find, view = buf.find, memoryview(buf)
            while pos < size:
                eol = find(b"\n", pos)
                if buf[pos + 39] == 100:  # a frame
                    c1 = find(b'"', pos + 52, eol)
                    h = get(buf[pos + 52:c1])
                    if h is not None:
                        h(view[c1 + 6:eol - 1])
                pos = eol + 1
    return seen[0]


async def replay_skip(path: Path) -> int:
    rp = Replay(path, autoplay=False)
    rp._start()  # nothing subscribed: every frame looked up and skipped
    await rp.wait_done()
    return rp.skipped


def noop(item: Any) -> None:
    pass


def top10_callback(live: Any) -> None:
    b = live.book
    b.bids(10)
    b.asks(10)


async def replay_books(path: Path) -> tuple[int, tuple[Any, ...]]:
    rp = Replay(path, autoplay=False)
    broker = Broker(rp, stale_after=None)
    held = [broker.hold_book(ch) for ch in BOOKS]
    for live in held:
        live.updated += top10_callback
    await broker.consumer([TICKER], callback=noop).start()
    await broker.settle()
    await rp.play()
    await rp.wait_done()
    final = tuple((live.book.change_id, live.book.best_bid, live.book.best_ask) for live in held)
    changes = sum(live.book.changes for live in held)
    assert all(live.book.layout == "ladder" and live.state == "live" for live in held)
    for live in held:
        live.release()
    await broker.close()
    await rp.close()
    return changes, final


def live_broker_path(snaps: list[tuple[str, str]], frames: list[tuple[str, str]]) -> tuple[float, tuple[Any, ...]]:
    """``WsTransport._on_frame`` -> client sink -> broker -> LiveBook + top-10 callback (bench/book_ingest's
    broker variant), for the whole stream (the tickers go to no one, as in the replay): CPU s."""
    from deribit_kit.broker.broker import _Channel
    from deribit_kit.client import Client
    from deribit_kit.transport.ws import WsTransport

    client = Client("ws://bench.invalid", "http://bench.invalid")
    client._instruments.update(instruments())
    transport = client._transport = WsTransport("ws://bench.invalid", on_notification=client._sink)
    broker = Broker(client, stale_after=None)
    held = []
    for ch in BOOKS:
        st = broker._channels[ch] = _Channel(ch)
        st.on_wire, st.refs = True, 1
        live = broker._ensure_book(st)
        live.updated += top10_callback
        held.append(live)
    on_frame = transport._on_frame
    broker._channels[TICKER] = tick = _Channel(TICKER)
    tick.on_wire, tick.refs = True, 1
    tick.pushes.append(noop)  # a reader of the tickers, as in the replay
    for _, text in snaps:
        on_frame(text)
    texts = [text for _, text in frames]  # the same stream as the replay: the tickers too
    gc.collect()
    c0 = time.process_time()
    for text in texts:
        on_frame(text)
    cpu = time.process_time() - c0
    assert all(live.book.layout == "ladder" for live in held)
    return cpu, tuple((live.book.change_id, live.book.best_bid, live.book.best_ask) for live in held)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=20_000, help="changes per book")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sim-seconds", type=float, default=3.0, help="seconds recorded from the embedded exchange")
    args = ap.parse_args()
    t_start = time.perf_counter()
    snaps, frames = stream(args.changes, args.seed)
    n_books = sum(1 for ch, _ in frames if ch != TICKER)
    avg = statistics.mean(len(t) for _, t in frames)
    print(f"Python {sys.version.split()[0]}; stream: {len(frames):,} frames ({n_books:,} 20-level book changes on "
          f"2 books of 1000 levels/side, {len(frames) - n_books:,} tickers), avg {avg:.0f} B/frame; "
          f"{args.reps} reps + 1 warm-up, median [best]")
    work = Path(tempfile.mkdtemp(prefix="deribit-kit-bench-replay-"))
    try:
        manifests, rec_cpu, path = bench_recording(snaps, frames, args.reps, work)
        n_frames, raw, comp = sizes(manifests[3])
        _, raw1, comp1 = sizes(manifests[1])
        sim_m = asyncio.run(_record_sim(work / "sim", args.sim_seconds)) if args.sim_seconds > 0 else None

        read_r: list[float] = []
        route_r: list[float] = []
        skip_r: list[float] = []
        books_r: list[float] = []
        books_cpu: list[float] = []
        live_cpu: list[float] = []
        for rep in range(args.reps + 1):  # interleaved: machine noise hits every variant alike
            w_read, _, n_read = timed(lambda: read_only(path))
            w_route, _, n_route = timed(lambda: routed(path))
            w_skip, _, n_skip = timed(lambda: asyncio.run(replay_skip(path)))
            w_books, c_books, (changes, final_replay) = timed(lambda: asyncio.run(replay_books(path)))
            c_live, final_live = live_broker_path(snaps, frames)
            assert final_replay == final_live, (final_replay, final_live)  # the same books at the end
            if rep:
                read_r.append(n_read / w_read)
                route_r.append(n_route / w_route)
                skip_r.append(n_skip / w_skip)
                books_r.append(changes / w_books)
                books_cpu.append(c_books / changes * 1e6)
                live_cpu.append(c_live / n_books * 1e6)  # both per book change, over the same stream
        ratios = sorted(b / lv for b, lv in zip(books_cpu, live_cpu, strict=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'recording':<58} {'value':>22}")
    print("-" * 81)
    print(f"{'bench stream: bytes on disk per recorded frame':<58} {comp / n_frames:>20.1f} B")
    print(f"{'bench stream: compression ratio (zstd level 3)':<58} {raw / comp:>20.2f}x")
    print(f"{'bench stream: uncompressed record size per frame':<58} {raw / n_frames:>20.1f} B")
    if sim_m is not None:
        sf, sraw, scomp = sizes(sim_m)
        print(f"{f'embedded exchange, {args.sim_seconds:g} s ({sf:,} frames): bytes per frame':<58} "
              f"{scomp / max(sf, 1):>20.1f} B")
        print(f"{'embedded exchange: compression ratio':<58} {sraw / max(scomp, 1):>20.2f}x")
    print(f"{'recorder CPU per frame (callback + zstd 3 + write)':<58} {med(rec_cpu[3]):>13.2f} "
          f"[{min(rec_cpu[3]):.2f}] µs")
    print(f"{'  with zstd level 1: bytes per frame / ratio':<58} {comp1 / n_frames:>12.1f} B {raw1 / comp1:>6.2f}x")
    print(f"{'  with zstd level 1: recorder CPU per frame':<58} {med(rec_cpu[1]):>13.2f} "
          f"[{min(rec_cpu[1]):.2f}] µs")
    print()
    print(f"{'replay throughput':<58} {'frames/s [best]':>22}")
    print("-" * 81)
    rows = [
        ("read: decompress into whole records (counted, not split)", read_r),
        ("read + routed without parsing (fixed offsets, a handler per channel)", route_r),
        ("Replay, nothing subscribed (every frame looked up, skipped)", skip_r),
        ("Replay -> broker -> 2 LiveBooks + top-10 (book changes/s)", books_r),
    ]
    for label, xs in rows:
        print(f"{label:<72} {med(xs):>12,.0f} [{max(xs):,.0f}]")
    print()
    print(f"{'per 20-level book change, CPU':<58} {'µs [best]':>22}")
    print("-" * 81)
    print(f"{'replay: decompress + slice + parse + broker + LiveBook + top-10':<64} {med(books_cpu):>9.2f} "
          f"[{min(books_cpu):.2f}]")
    print(f"{'live broker path: frame -> client -> broker -> LiveBook + top-10':<64} {med(live_cpu):>9.2f} "
          f"[{min(live_cpu):.2f}]")
    ratio = statistics.median(ratios)
    print(f"{'replay / live, per repetition':<64} {ratio:>9.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}]")
    print(f"reference: tardis-machine publishes ~{TARDIS:,} messages/s for its HTTP replay on a desktop CPU")
    print()
    route_ok = med(route_r) >= TARGET_ROUTE
    books_ok = 1e6 / med(books_cpu) >= TARGET_BOOKS
    ratio_ok = ratio <= TARGET_RATIO
    print(f"target: routing >= {TARGET_ROUTE:,} frames/s: {med(route_r):,.0f} ->", "met" if route_ok else "NOT met")
    per_core = 1e6 / med(books_cpu)
    print(f"target: >= {TARGET_BOOKS:,} book changes/s on one core (1 / CPU per change): {per_core:,.0f} ->",
          "met" if books_ok else "NOT met")
    print(f"target: <= {TARGET_RATIO}x the live broker path per change: {ratio:.2f}x ->",
          "met" if ratio_ok else "NOT met")
    print("targets:", "MET" if route_ok and books_ok and ratio_ok else "NOT MET")
    print(f"\ntotal run time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
