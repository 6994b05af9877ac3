"""The ``deribit-kit`` command.

    deribit-kit sim [--host 127.0.0.1] [--port 0] [--seed 0] [--certfile F --keyfile F]  the embedded exchange
    deribit-kit watch [INSTRUMENT] [--target sim|test|prod|URL]  a live terminal view of a book
    deribit-kit broker [--upstream sim|test|prod|URL|replay:DIR] [--port N] [--certfile F --keyfile F]  the port
    deribit-kit record [--upstream sim|test|prod|URL] --channels CH... | --books CURRENCY [--kind K] --out DIR
    deribit-kit fault URL drop|skip INSTR|stop-heartbeats|latency MS|halt INSTR|resume INSTR|storm N
    deribit-kit demo [--port 5006] [--replay DIR] [--certfile F --keyfile F]  exchange + broker port + live dashboards
    deribit-kit kafka publish --bootstrap HOST:PORT [--prefix deribit] [--books CUR --kind K] [--channels CH...]
    deribit-kit broker --upstream kafka://HOST:PORT/PREFIX          a broker (port, dashboards) fed from Kafka
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Coroutine
from typing import Any

from .deribit import Deribit
from .errors import DeribitKitError
from .live.orderbook import OrderBook


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# ---------------------------------------------------------------- TLS
def tls_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """A server TLS context from a certificate (and its key, when not in the same file); ``None``
    without a certificate (plain ws:// and http://)."""
    if not certfile:
        if keyfile:
            raise SystemExit("--keyfile needs --certfile")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


# ---------------------------------------------------------------- sim
async def run_sim(args: argparse.Namespace) -> None:
    """``deribit-kit sim``: run the embedded exchange, print its URLs and API key, until SIGINT or SIGTERM."""
    from .sim import Simulator

    sim = Simulator(args.host, args.port, seed=args.seed, tick_interval=args.tick,
                    client_id=args.client_id, client_secret=args.client_secret,
                    rate_limits=not args.no_rate_limits,
                    rate_limit_ends_session=not args.keep_session_on_rate_limit,
                    ssl_context=tls_context(args.certfile, args.keyfile))
    await sim.start()
    acct = sim.demo_account
    print(f"deribit-kit embedded exchange ({len(sim.market.instruments)} instruments, seed {args.seed})")
    print(f"WebSocket: {sim.ws_url}")
    print(f"HTTP:      {sim.http_url}/api/v2/")
    secret_hint = "(from DERIBIT_CLIENT_SECRET)" if os.environ.get("DERIBIT_CLIENT_SECRET") and not args.client_secret \
        else acct.client_secret
    print(f"API key:   client_id={acct.client_id} client_secret={secret_hint}")
    print("Ctrl-C stops it.", flush=True)
    try:
        await _until_stopped()
    finally:
        await sim.stop()


# ---------------------------------------------------------------- watch
def render_book(book: OrderBook, ticker: dict[str, Any] | None, levels: int, width: int = 72) -> str:
    """A text ladder: asks above, bids below, with cumulative sizes."""
    lines = []
    head = f" {book.instrument_name}  state={book.state}  change_id={book.change_id}  gaps={book.gaps}"
    lines.append(head[:width])
    if ticker:
        mark, index = ticker.get("mark_price"), ticker.get("index_price")
        lines.append(f" mark {mark}  index {index}  last {ticker.get('last_price')}  OI {ticker.get('open_interest')}")
    lines.append(f" {'':>14} {'price':>14} {'size':>12} {'cum':>12}")
    asks = book.asks(levels)
    cum = 0.0
    rows = []
    for price, amount in asks:
        cum += amount
        rows.append(f" {'ask':>14} {price:>14,.4f} {amount:>12,.4f} {cum:>12,.4f}")
    lines.extend(reversed(rows))
    spread = book.spread
    lines.append(f" {'spread':>14} {spread if spread is not None else '-':>14}")
    cum = 0.0
    for price, amount in book.bids(levels):
        cum += amount
        lines.append(f" {'bid':>14} {price:>14,.4f} {amount:>12,.4f} {cum:>12,.4f}")
    return "\n".join(lines)


async def run_watch(args: argparse.Namespace) -> None:
    """A book kept by the broker (a LiveBook resyncs itself on a gap) and its ticker, redrawn."""
    dk = await Deribit.connect(args.target)
    ticker: dict[str, Any] | None = None
    dirty = asyncio.Event()

    def on_ticker(n: Any) -> None:
        nonlocal ticker
        ticker = n.data
        dirty.set()

    stop = asyncio.get_running_loop().create_task(_until_stopped())
    deadline = time.monotonic() + args.seconds if args.seconds else None
    tick = dk.subscribe(f"ticker.{args.instrument}.100ms", callback=on_ticker)
    try:
        live = await dk.order_book(args.instrument, live=True)
        live.updated += lambda _live: dirty.set()
        await tick.start()
        print(f"watching {args.instrument} on {dk.ws_url} (Ctrl-C stops)", flush=True)
        while not stop.done() and (deadline is None or time.monotonic() < deadline):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dirty.wait(), 0.5)
            dirty.clear()
            screen = render_book(live.book, ticker, args.levels)
            try:
                sys.stdout.write(("\x1b[H\x1b[2J" + screen + "\n") if sys.stdout.isatty() else screen + "\n\n")
            except BrokenPipeError:
                return
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                return
            await asyncio.sleep(args.refresh)  # screen refresh rate, not synchronisation
    finally:
        stop.cancel()
        await tick.close()
        await dk.close()


# ---------------------------------------------------------------- broker
async def run_broker(args: argparse.Namespace) -> None:
    """``deribit-kit broker``: serve a shared broker on its own Deribit-compatible port, fed from
    ``--upstream`` (a URL, or ``replay:DIR``), until SIGINT or SIGTERM."""
    from .broker.port import BrokerServer

    ctx = tls_context(args.certfile, args.keyfile)
    if args.upstream and args.upstream.startswith("replay:"):
        opts: dict[str, Any] = {"speed": args.speed}
        if args.start:
            opts["start"] = args.start
        if args.end:
            opts["end"] = args.end
        dk = await Deribit.replay(args.upstream[len("replay:"):], **opts)
    else:
        dk = await Deribit.connect(args.upstream)
    broker = dk.broker
    token = args.token or os.environ.get("DERIBIT_KIT_BROKER_TOKEN")
    server = BrokerServer(broker, args.host, args.port, ctx, token=token, max_connections=args.max_connections,
                          flush_interval=args.flush_ms / 1000)
    try:
        await server.start()
        if dk.sim is not None:
            print(f"embedded exchange: {dk.ws_url}")
        if dk.client is None and dk.upstream is not None and args.upstream.startswith("replay:"):
            print(f"{dk.upstream.name} (speed {args.speed}; it starts with the first subscribe)")
        elif dk.client is None and dk.upstream is not None:
            print(f"upstream: {dk.upstream.name}")
        print(f"broker: {server.ws_url}  (health {server.http_url}/healthz, metrics {server.http_url}/metrics)")
        print(f"event loop: {type(asyncio.get_running_loop()).__module__.split('.')[0]}", flush=True)
        await _until_stopped()
    finally:
        await server.stop()
        await dk.close()


# ---------------------------------------------------------------- record
async def run_record(args: argparse.Namespace) -> None:
    """Record channels (and whole currencies' books) from an upstream into a folder."""
    from .sinks import Recorder

    if not args.channels and not args.books:
        raise SystemExit("deribit-kit record: give --channels CH... and/or --books CURRENCY")
    dk = await Deribit.connect(args.upstream)
    rec = Recorder(dk.broker, args.out, channels=args.channels or (), books=args.books or None, kind=args.kind,
                   book_interval=args.interval, segment_seconds=args.segment_seconds,
                   segment_bytes=int(args.segment_mb * (1 << 20)), snapshot_interval=args.snapshot_interval,
                   level=args.level)
    stop = asyncio.get_running_loop().create_task(_until_stopped())
    try:
        await rec.start()
        print(f"recording {len(rec.channels)} channel(s) from {dk.upstream.name if dk.upstream else args.upstream} "
              f"into {args.out}" + (f" for {args.seconds:g} s" if args.seconds else " (Ctrl-C stops)"), flush=True)
        for ch in rec.channels[:20]:
            print(f"  {ch}")
        if len(rec.channels) > 20:
            print(f"  ... and {len(rec.channels) - 20} more")
        waits = {stop, asyncio.ensure_future(rec.wait_stopped())}
        await asyncio.wait(waits, timeout=args.seconds or None, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        manifest = await rec.stop("seconds" if args.seconds and not stop.done() else "stopped")
    finally:
        stop.cancel()
        await dk.close()
    print(summary(manifest), flush=True)


def summary(manifest: dict[str, Any]) -> str:
    """What a recording holds, in a few lines (the record command's last words)."""
    start, end = manifest.get("start_ns"), manifest.get("end_ns")
    secs = (end - start) / 1e9 if isinstance(start, int) and isinstance(end, int) else 0.0
    segs = manifest.get("segments") or []
    raw = sum(s.get("bytes", 0) for s in segs)
    comp = sum(s.get("compressed_bytes", 0) for s in segs)
    frames = manifest.get("frames", 0)
    lines = [f"recorded {frames} frames of {len(manifest.get('channels') or [])} channel(s) in {secs:.1f} s: "
             f"{len(segs)} segment(s), {comp:,} bytes on disk ({raw:,} uncompressed, "
             f"{raw / comp if comp else 0:.1f}x; {comp / frames if frames else 0:.0f} bytes/frame); "
             f"{manifest.get('checkpoints', 0)} checkpoints; ended: {manifest.get('ended')}"]
    events = manifest.get("events") or {}
    shown = {k: v for k, v in events.items() if k not in ("segment",)}
    if shown:
        lines.append("  events: " + ", ".join(f"{k} {v}" for k, v in sorted(shown.items())))
    gaps = manifest.get("gaps") or []
    dropped = sum((manifest.get("dropped") or {}).values())
    lines.append(f"  gaps: {len(gaps)} ({dropped} frames dropped while the recorder was behind)" if gaps
                 else "  gaps: none (nothing dropped)")
    counts = sorted((manifest.get("counts") or {}).items(), key=lambda kv: -kv[1])
    for ch, n in counts[:10]:
        lines.append(f"  {n:>8}  {ch}")
    if len(counts) > 10:
        lines.append(f"  ... {len(counts) - 10} more channel(s)")
    return "\n".join(lines)


# ---------------------------------------------------------------- kafka
async def run_kafka_publish(args: argparse.Namespace) -> None:
    """Publish channels (and whole currencies' books, following the calendar) to Kafka."""
    from .sinks.kafka import KafkaSink

    if not args.channels and not args.books:
        raise SystemExit("deribit-kit kafka publish: give --channels CH... and/or --books CURRENCY")
    dk = await Deribit.connect(args.upstream)
    config = dict(kv.split("=", 1) for kv in args.set)
    sink = KafkaSink(dk.broker, args.bootstrap, prefix=args.prefix, channels=args.channels or (),
                     books=args.books or None, kind=args.kind, book_interval=args.interval,
                     snapshot_every=args.snapshot_every, compression=args.compression, linger_ms=args.linger_ms,
                     batch_messages=args.batch_messages, max_buffer=args.max_buffer, partitions=args.partitions,
                     idempotence=not args.no_idempotence, acks=args.acks, config=config)
    stop = asyncio.get_running_loop().create_task(_until_stopped())
    try:
        await sink.start()
        print(f"publishing {len(sink.channels)} channel(s) from {dk.upstream.name if dk.upstream else args.upstream} "
              f"to {args.bootstrap} (topics {args.prefix}.*)" + (f" for {args.seconds:g} s" if args.seconds
                                                                   else " (Ctrl-C stops)"), flush=True)
        for ch in sink.channels[:20]:
            print(f"  {ch}")
        if len(sink.channels) > 20:
            print(f"  ... and {len(sink.channels) - 20} more")
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while not stop.done() and (deadline is None or time.monotonic() < deadline):
            wait = args.report or None
            if deadline is not None:
                wait = max(0.0, min(wait or args.seconds, deadline - time.monotonic()))
            await asyncio.wait({stop}, timeout=wait)
            if args.report and not stop.done():
                s = sink.stats()
                print(f"  {s['state']}: {s['produced']} produced ({s['messages_per_s']:.0f}/s), {s['delivered']} "
                      f"delivered, queue {s['queue_depth']}, p99 {s['delivery_p99_ms'] or 0:.1f} ms, lost "
                      f"{s['lost']}, errors {s['errors']}", flush=True)
    finally:
        stop.cancel()
        await sink.stop()
        await dk.close()
    s = sink.stats()
    print(f"published {s['produced']} message(s), {s['delivered']} delivered, {s['snapshots']} snapshot(s), "
          f"{s['gap_markers']} gap marker(s) ({s['lost']} lost), {s['errors']} error(s)", flush=True)


# ---------------------------------------------------------------- fault
FAULTS = {
    "drop": ("sim/drop_connections", []),
    "skip": ("sim/skip_change_id", ["instrument_name"]),
    "stop-heartbeats": ("sim/stop_heartbeats", []),
    "resume-heartbeats": ("sim/stop_heartbeats", []),
    "latency": ("sim/set_latency", ["ms"]),
    "halt": ("sim/halt", ["instrument_name"]),
    "resume": ("sim/halt", ["instrument_name"]),
    "storm": ("sim/rate_limit_storm", ["requests"]),
}


async def run_fault(args: argparse.Namespace) -> None:
    """``deribit-kit fault``: call one ``sim/*`` fault method on a running embedded exchange and print its result."""
    method, names = FAULTS[args.fault]
    if len(args.values) != len(names):
        raise SystemExit(f"fault {args.fault} takes {len(names)} argument(s): {' '.join(names) or '-'}")
    params: dict[str, Any] = dict(zip(names, args.values, strict=True))
    if args.fault == "resume":
        params["halted"] = False
    if args.fault == "resume-heartbeats":
        params["stopped"] = False
    dk = await Deribit.connect(args.url, client_rate_limit=False, reconnect=False)
    try:
        print(json.dumps(await dk.call(method, params)))
    finally:
        await dk.close()


def build_parser() -> argparse.ArgumentParser:
    """The ``deribit-kit`` argument parser: ``sim``, ``watch``, ``broker``, ``record``, ``kafka publish``,
    ``fault`` and ``demo``, each with its ``func``."""
    p = argparse.ArgumentParser(prog="deribit-kit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                   help="event loop: uvloop when it is installed (auto, the default), or asyncio's own")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sim", help="run the embedded Deribit-compatible exchange")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0, help="0 picks a free port")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tick", type=float, default=0.1, help="market tick in seconds")
    s.add_argument("--client-id", default=None, help="API key to create (default: env or the demo key)")
    s.add_argument("--client-secret", default=None)
    s.add_argument("--no-rate-limits", action="store_true")
    s.add_argument("--keep-session-on-rate-limit", action="store_true",
                   help="answer 10028 and keep the connection open (Deribit ends the session)")
    s.add_argument("--certfile", default=None, help="TLS certificate (serves wss:// and https://)")
    s.add_argument("--keyfile", default=None, help="its private key, when not in the certificate file")
    s.set_defaults(func=run_sim)

    w = sub.add_parser("watch", help="a live terminal view of an order book")
    w.add_argument("instrument", nargs="?", default="BTC-PERPETUAL")
    w.add_argument("--target", default=None, help="sim (default), test, prod or a ws:// URL")
    w.add_argument("--levels", type=int, default=10)
    w.add_argument("--refresh", type=float, default=0.25, help="screen refresh in seconds")
    w.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until Ctrl-C)")
    w.set_defaults(func=run_watch)

    b = sub.add_parser("broker", help="serve a shared broker on its own Deribit-compatible port")
    b.add_argument("--upstream", default=None,
                   help="sim (default: starts an embedded exchange), test, prod, a URL, replay:DIR (a recording) or "
                        "kafka://HOST:PORT/PREFIX (the Kafka pipeline's topics)")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, default=0, help="0 picks a free port")
    b.add_argument("--certfile", default=None, help="TLS certificate (serves wss://)")
    b.add_argument("--keyfile", default=None)
    b.add_argument("--token", default=None, help="enables private forwarding (env DERIBIT_KIT_BROKER_TOKEN)")
    b.add_argument("--max-connections", type=int, default=1000)
    b.add_argument("--flush-ms", type=float, default=2.0,
                   help="interval channels (100ms, agg2) may wait this long to share a write (0: never wait)")
    b.add_argument("--speed", default="1.0", help="replay:DIR only: max, or a factor of the recorded pace (1.0)")
    b.add_argument("--start", default=None, help="replay:DIR only: start at this time (e.g. '2026-01-05 12:00')")
    b.add_argument("--end", default=None, help="replay:DIR only: stop at this time")
    b.set_defaults(func=run_broker)

    r = sub.add_parser("record", help="record channels (or whole currencies' books) into a folder")
    r.add_argument("--upstream", default=None, help="sim (default), test, prod, a ws:// URL (a broker port too)")
    r.add_argument("--channels", nargs="+", default=[], metavar="CH", help="channels to record")
    r.add_argument("--books", nargs="+", default=[], metavar="CURRENCY",
                   help="the book of every instrument of these currencies (follows the calendar)")
    r.add_argument("--kind", default="future", choices=["future", "option", "spot", "any"], help="with --books")
    r.add_argument("--interval", default="100ms", help="book interval with --books (100ms, agg2, raw)")
    r.add_argument("--out", required=True, help="a new folder for the recording")
    r.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until Ctrl-C)")
    r.add_argument("--segment-seconds", type=float, default=300.0, help="rotate segments after this long")
    r.add_argument("--segment-mb", type=float, default=64.0, help="... or this many MB (uncompressed)")
    r.add_argument("--snapshot-interval", type=float, default=60.0, help="checkpoint every book this often (s)")
    r.add_argument("--level", type=int, default=3, help="zstd level")
    r.set_defaults(func=run_record)

    k = sub.add_parser("kafka", help="the Kafka pipeline: publish streams to a Kafka cluster")
    ksub = k.add_subparsers(dest="kafka_command", required=True)
    kp = ksub.add_parser("publish", help="publish channels (or whole currencies' books) to Kafka")
    kp.add_argument("--upstream", default=None, help="sim (default), test, prod, a ws:// URL (a broker port too)")
    kp.add_argument("--bootstrap", required=True, help="the Kafka cluster: HOST:PORT[,HOST:PORT...]")
    kp.add_argument("--prefix", default="deribit", help="topic prefix ({prefix}.book, .trades, ...)")
    kp.add_argument("--channels", nargs="+", default=[], metavar="CH", help="channels to publish")
    kp.add_argument("--books", nargs="+", default=[], metavar="CURRENCY",
                    help="the book of every instrument of these currencies (follows the calendar)")
    kp.add_argument("--kind", default="option", choices=["future", "option", "spot", "any"], help="with --books")
    kp.add_argument("--interval", default="100ms", help="book interval with --books (100ms, agg2, raw)")
    kp.add_argument("--snapshot-every", default="1000", metavar="N|SECONDS",
                    help="a snapshot per book every N changes (1000) or SECONDS (30s)")
    kp.add_argument("--compression", default="snappy", choices=["snappy", "zstd", "lz4", "gzip", "none"])
    kp.add_argument("--linger-ms", type=float, default=100.0, help="batch for this long (100)")
    kp.add_argument("--batch-messages", type=int, default=100, help="... or this many messages (100)")
    kp.add_argument("--max-buffer", type=int, default=100_000, help="messages queued at most (then gap markers)")
    kp.add_argument("--partitions", type=int, default=4, help="partitions of the topics it creates")
    kp.add_argument("--acks", default="all")
    kp.add_argument("--no-idempotence", action="store_true")
    kp.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="any librdkafka setting")
    kp.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until Ctrl-C)")
    kp.add_argument("--report", type=float, default=10.0, help="print the figures this often (s; 0: never)")
    kp.set_defaults(func=run_kafka_publish)

    f = sub.add_parser("fault", help="inject a fault into a running embedded exchange")
    f.add_argument("url", help="the exchange's ws:// URL")
    f.add_argument("fault", choices=sorted(FAULTS))
    f.add_argument("values", nargs="*")
    f.set_defaults(func=run_fault)

    from .ui.demo import add_parser as add_demo_parser  # no Panel import: the dashboards run in a child

    add_demo_parser(sub)
    return p


def run(coro: Coroutine[Any, Any, None], loop: str = "auto") -> None:
    """Run ``coro`` on uvloop (``auto`` when it is installed, or ``uvloop``) or on asyncio's loop.

    uvloop's transports cost less CPU per write than asyncio's (the broker port writes one frame
    per client per message: ``bench/broker_port.py``)."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                coro.close()
                raise SystemExit("deribit-kit: --loop uvloop, but uvloop is not installed") from None
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    """The ``deribit-kit`` entry point: run the command ``argv`` names; the exit status (1 after a
    DeribitKitError, printed to stderr; 0 otherwise, Ctrl-C included)."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        run(args.func(args), args.loop)
    except KeyboardInterrupt:
        pass
    except DeribitKitError as exc:
        print(f"deribit-kit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
