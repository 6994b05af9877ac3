"""Book ingest benchmark: deribit_kit.live.OrderBook against ccxt.pro and cryptofeed, side by side.

Run: ``.venv/bin/python bench/book_ingest.py [--messages 2000] [--reps 5] [--seed 7]``

Generates a consistent ``book.BTC-PERPETUAL.100ms`` stream (one snapshot with 1000 levels per side,
then change messages touching 20 levels per side with new/change/delete, prev_change_id chained),
encoded as JSON text exactly as a WebSocket text frame delivers it, and measures per message:

* ours: orjson decode + ``OrderBook.apply`` + top-10 read of both sides, with the book as a tick
  ladder (``OrderBook(..., tick_size=0.5)``, what the broker builds for a future; with its compiled
  loops from ``deribit_kit.live._speedups`` and, to show the fallback, without them) and as a dict +
  bisect-sorted price list (no tick size: options, or unknown); also decoded by msgspec (typed
  ``Struct`` envelope with the book ``data`` as a typed dict, and ``Raw`` envelope + typed data,
  two stages), without the decode, and apply alone;
* the broker's real path, minus the socket: ``WsTransport._on_frame`` -> the broker's sink
  -> the broker's channel -> ``LiveBook`` (``OrderBook.apply``) + top-10 read;
* ccxt.pro deribit: ``Client.handle_text_or_binary_message`` (ccxt's own orjson decode) ->
  ``deribit.handle_message`` -> ``handle_order_book``, then ``orderbook.limit()`` and a top-10
  read, which is what ``watch_order_book`` hands back; also on pre-decoded dicts;
* cryptofeed Deribit (if importable): ``message_handler`` (its own yapic decode with
  ``parse_float=Decimal``) with a no-op callback and with a callback reading the top 10; also
  ``_book_update`` on pre-decoded messages.

CPU per message = ``process_time_ns`` over a whole chain / messages; the median over repetitions
is printed with [the best repetition]. p50/p99 are wall ``perf_counter_ns`` per single message,
over all repetitions. Implementations are interleaved within each repetition (each runs the whole
chain in turn, or ``--chunk N`` messages at a time) so machine noise hits them alike; compare
ratios from one run, not absolute times across runs. Finer interleaving (``--chunk 100``) leaves
less time between a variant's turns but mixes the caches and the heap of all of them: on the
shared machine ours came out ~10 % slower and the anchors ~15 % faster that way.

Then the issue-5 check: ours and the broker path against each anchor fed the same text frames
(ccxt, cryptofeed), met when the anchor costs at least 4x as much CPU per message in this run.
The last section times an in-process fan-out: one book update delivered to N plain callbacks.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deribit_kit.live import ladder as book_module
from deribit_kit.live.orderbook import OrderBook

INSTRUMENT = "BTC-PERPETUAL"
CHANNEL = f"book.{INSTRUMENT}.100ms"
TICK = 0.5
MID = 60_000.0
LEVELS = 1000
PER_SIDE = 20

Handler = Callable[[Any], None]
INSTRUMENT_INFO: dict[str, Any] = {  # public/get_instrument, as the broker and cryptofeed look it up
    "instrument_name": INSTRUMENT, "kind": "future", "base_currency": "BTC", "quote_currency": "USD",
    "settlement_period": "perpetual", "tick_size": TICK, "tick_size_steps": [], "min_trade_amount": 10.0,
    "contract_size": 10.0, "creation_timestamp": 1534167754000, "expiration_timestamp": 32503708800000,
}


# ---------------------------------------------------------------------------- message generator


def generate(n_changes: int, seed: int) -> tuple[str, list[str]]:
    """A snapshot and ``n_changes`` chained change notifications, as JSON text."""
    rng = random.Random(seed)
    span = int(LEVELS * 1.6)

    def amount() -> float:
        return float(10 * max(1, int(rng.lognormvariate(6.0, 1.6))))

    def price(side: str, k: int) -> float:
        return MID - k * TICK if side == "bids" else MID + k * TICK

    books: dict[str, dict[int, float]] = {}
    for side in ("bids", "asks"):
        ks = set(range(1, 21)) | set(rng.sample(range(21, span + 1), LEVELS - 20))
        books[side] = {k: amount() for k in ks}

    ts = 1_700_000_000_000
    change_id = 70_000_000_000

    def envelope(data: dict[str, Any]) -> str:
        msg = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": CHANNEL, "data": data}}
        return orjson.dumps(msg).decode()

    snap = {
        "type": "snapshot",
        "timestamp": ts,
        "instrument_name": INSTRUMENT,
        "change_id": change_id,
        "bids": [["new", price("bids", k), a] for k, a in sorted(books["bids"].items())],
        "asks": [["new", price("asks", k), a] for k, a in sorted(books["asks"].items())],
    }
    out: list[str] = []
    for _ in range(n_changes):
        ts += 100
        prev, change_id = change_id, change_id + rng.randint(1, 40)
        data: dict[str, Any] = {
            "type": "change",
            "timestamp": ts,
            "prev_change_id": prev,
            "instrument_name": INSTRUMENT,
            "change_id": change_id,
        }
        for side in ("bids", "asks"):
            book = books[side]
            ks_touched: set[int] = set()
            while len(ks_touched) < PER_SIDE:
                ks_touched.add(min(span, 1 + int(rng.expovariate(1 / 60))))
            p_delete = 0.25 if len(book) < LEVELS else 0.45
            entries = []
            for k in sorted(ks_touched):
                if k in book:
                    if rng.random() < p_delete and len(book) > 30:
                        del book[k]
                        entries.append(["delete", price(side, k), 0.0])
                    else:
                        book[k] = amount()
                        entries.append(["change", price(side, k), book[k]])
                else:
                    book[k] = amount()
                    entries.append(["new", price(side, k), book[k]])
            data[side] = entries  # bids descending, asks ascending (k ascending)
        out.append(envelope(data))
    return envelope(snap), out


# ---------------------------------------------------------------------------- variants


class Variant:
    """``make(snapshot)`` returns a fresh per-message handler; ``top(handler)`` the final top 10."""

    def __init__(
        self,
        group: str,
        name: str,
        make: Callable[[], tuple[Handler, Callable[[], tuple[list[Any], list[Any]]]]],
        pre_decoded: Callable[[str], Any] | None = None,
        baseline: str | None = None,
        key: str | None = None,
    ) -> None:
        self.group = group
        self.name = name
        self.make = make
        self.pre_decoded = pre_decoded
        self.baseline = baseline  # the key of the "ours" variant this one is compared with
        self.key = key  # set on the "ours" variants that serve as baselines
        self.cpu_us: list[float] = []
        self.samples_ns: list[int] = []
        self.final_top: tuple[list[Any], list[Any]] | None = None


def _norm(levels: list[Any]) -> list[tuple[float, float]]:
    return [(float(p), float(a)) for p, a, *_ in levels]


class _BookData(TypedDict, total=False):
    """A book notification's ``data``, typed for msgspec (decodes to a plain dict: ``apply`` takes it)."""

    type: str
    timestamp: int
    prev_change_id: int
    change_id: int
    instrument_name: str
    bids: list[tuple[str, float, float]]
    asks: list[tuple[str, float, float]]


class _Params(msgspec.Struct):
    channel: str
    data: _BookData


class _Envelope(msgspec.Struct):
    params: _Params


class _RawParams(msgspec.Struct):
    channel: str
    data: msgspec.Raw


class _RawEnvelope(msgspec.Struct):
    params: _RawParams


def _book_variant(
    snapshot: str,
    group: str,
    name: str,
    decode: Callable[[Any], Any],
    tick_size: float | None,
    *,
    read_top: bool = True,
    pre_decoded: Callable[[str], Any] | None = None,
    baseline: str | None = None,
    key: str | None = None,
    pure: bool = False,
) -> Variant:
    """``decode(msg)`` -> the notification's ``data``; then ``OrderBook.apply`` (+ a top-10 read).
    ``pure``: with the ladder's compiled loops switched off around each message (the fallback
    without a C compiler; switching costs ~0.1 µs)."""

    def make() -> tuple[Handler, Callable[[], Any]]:
        book = OrderBook(INSTRUMENT, tick_size=tick_size)
        book.apply(orjson.loads(snapshot)["params"]["data"])
        apply, bids, asks = book.apply, book.bids, book.asks
        if pure:
            compiled = book_module._ladder_apply, book_module._ladder_head

            def handle(msg: Any) -> None:
                book_module._ladder_apply = book_module._ladder_head = None  # type: ignore[assignment]
                try:
                    apply(decode(msg))
                    bids(10)
                    asks(10)
                finally:
                    book_module._ladder_apply, book_module._ladder_head = compiled
        elif read_top:
            def handle(msg: Any) -> None:
                apply(decode(msg))
                bids(10)
                asks(10)
        else:
            def handle(msg: Any) -> None:
                apply(decode(msg))

        return handle, lambda: (book.bids(10), book.asks(10))

    return Variant(group, name, make, pre_decoded, baseline, key)


def ours_variants(snapshot: str) -> list[Variant]:
    """The book layouts and decoders side by side. The references ("ours") are orjson + tick ladder
    for text frames and the tick ladder for pre-decoded messages: what the broker runs for a future."""
    loads = orjson.loads
    typed = msgspec.json.Decoder(_Envelope).decode
    raw_env, raw_data = msgspec.json.Decoder(_RawEnvelope).decode, msgspec.json.Decoder(_BookData).decode

    def pre(msg: str) -> Any:
        return loads(msg)["params"]["data"]

    def data(msg: Any) -> Any:
        return msg

    return [
        _book_variant(snapshot, "ours", "orjson + tick ladder + top-10", lambda m: loads(m)["params"]["data"], TICK,
                      baseline="ours-full", key="ours-full"),
        _book_variant(snapshot, "ours", "orjson + tick ladder (pure Python) + top-10",
                      lambda m: loads(m)["params"]["data"], TICK, baseline="ours-full", pure=True),
        _book_variant(snapshot, "ours", "orjson + dict/bisect + top-10", lambda m: loads(m)["params"]["data"], None,
                      baseline="ours-full"),
        _book_variant(snapshot, "ours", "msgspec typed Struct + tick ladder + top-10", lambda m: typed(m).params.data,
                      TICK, baseline="ours-full"),
        _book_variant(snapshot, "ours", "msgspec Raw envelope + typed data + ladder + top-10",
                      lambda m: raw_data(raw_env(m).params.data), TICK, baseline="ours-full"),
        _book_variant(snapshot, "ours", "tick ladder + top-10 (pre-decoded)", data, TICK, pre_decoded=pre,
                      baseline="ours-decoded", key="ours-decoded"),
        _book_variant(snapshot, "ours", "dict/bisect + top-10 (pre-decoded)", data, None, pre_decoded=pre,
                      baseline="ours-decoded"),
        _book_variant(snapshot, "ours", "tick ladder, apply only (pre-decoded)", data, TICK, read_top=False,
                      pre_decoded=pre, baseline="ours-decoded"),
        _book_variant(snapshot, "ours", "dict/bisect, apply only (pre-decoded)", data, None, read_top=False,
                      pre_decoded=pre, baseline="ours-decoded"),
    ]


def broker_variants(snapshot: str) -> list[Variant]:
    """The broker's real path, without the socket: ``WsTransport._on_frame`` (orjson decode of the
    whole frame, routing) -> the client's sink, which is the broker's -> its channel -> the LiveBook's
    ``OrderBook.apply`` (a tick ladder: the tick size comes from the client's instrument cache, as
    in production), then a top-10 read; also with one ``live.updated`` callback doing the read."""
    from deribit_kit.broker.broker import Broker, _Channel
    from deribit_kit.client import Client
    from deribit_kit.models import Instrument
    from deribit_kit.transport.ws import WsTransport

    def factory(callback: bool) -> Callable[[], tuple[Handler, Callable[[], Any]]]:
        def make() -> tuple[Handler, Callable[[], Any]]:
            client = Client("ws://bench.invalid", "http://bench.invalid")
            client._instruments[INSTRUMENT] = msgspec.convert(INSTRUMENT_INFO, Instrument)
            transport = client._transport = WsTransport("ws://bench.invalid", on_notification=client._sink)
            broker = Broker(client)  # its sink is now the transport's notification handler
            st = broker._channels[CHANNEL] = _Channel(CHANNEL)  # subscribed, as after the reply
            st.on_wire, st.refs = True, 1
            live = broker._ensure_book(st)
            on_frame = transport._on_frame
            on_frame(snapshot)
            assert live.book.layout == "ladder" and live.book.is_live
            book = live.book
            if callback:
                def on_update(lb: Any) -> None:
                    b = lb.book
                    b.bids(10)
                    b.asks(10)

                live.updated += on_update

                def handle(msg: Any) -> None:
                    on_frame(msg)
            else:
                bids, asks = book.bids, book.asks

                def handle(msg: Any) -> None:
                    on_frame(msg)
                    bids(10)
                    asks(10)

            return handle, lambda: (book.bids(10), book.asks(10))

        return make

    return [
        Variant("broker", "frame -> client -> broker -> LiveBook + top-10", factory(False),
                baseline="ours-full", key="broker"),
        Variant("broker", "same, top-10 read in a live.updated callback", factory(True), baseline="ours-full"),
    ]


def ccxt_variants(snapshot: str) -> list[Variant]:
    try:
        import ccxt.pro
    except Exception as exc:  # pragma: no cover - depends on the environment
        print(f"ccxt.pro not importable ({exc!r}): skipped")
        return []

    from _ccxt_offline import OfflineClient as FakeClient

    exchange_cls = ccxt.pro.deribit
    # building an exchange object is slow (~1 s): one per variant (they run interleaved), books reset
    templates = [exchange_cls(), exchange_cls()]

    def fresh(ex: Any) -> tuple[Any, FakeClient]:
        ex.orderbooks = {}
        client = FakeClient(ex)
        client.handle_text_or_binary_message(snapshot)
        return ex, client

    def top(ex: Any) -> Callable[[], Any]:
        def read() -> Any:
            ob = ex.orderbooks[INSTRUMENT].limit()
            return ob["bids"][:10], ob["asks"][:10]

        return read

    def make_full() -> tuple[Handler, Callable[[], Any]]:
        ex, client = fresh(templates[0])
        books = ex.orderbooks
        on_text = client.handle_text_or_binary_message

        def handle(msg: str) -> None:
            on_text(msg)
            ob = books[INSTRUMENT].limit()
            ob["bids"][:10]
            ob["asks"][:10]

        return handle, top(ex)

    def make_decoded() -> tuple[Handler, Callable[[], Any]]:
        ex, client = fresh(templates[1])
        books = ex.orderbooks
        on_message = ex.handle_message

        def handle(msg: dict[str, Any]) -> None:
            on_message(client, msg)
            ob = books[INSTRUMENT].limit()
            ob["bids"][:10]
            ob["asks"][:10]

        return handle, top(ex)

    return [
        Variant("ccxt", "text frame -> handle_message + limit() + top-10", make_full, baseline="ours-full"),
        Variant("ccxt", "handle_message + limit() + top-10 (pre-decoded)", make_decoded,
                orjson.loads, "ours-decoded"),
    ]


def cryptofeed_variants(snapshot: str) -> list[Variant]:
    try:
        from cryptofeed.defines import L2_BOOK
        from cryptofeed.exchanges.deribit import Deribit
        from cryptofeed.symbols import Symbols
        from yapic import json as yjson
    except Exception as exc:  # pragma: no cover - depends on the environment
        print(f"cryptofeed not importable ({exc!r}): skipped (pip install cryptofeed to include it)")
        return []

    syms, info = Deribit._parse_symbol_data([{"result": [INSTRUMENT_INFO]}])
    Symbols.set(Deribit.id, syms, info)  # no REST symbol download

    def run(coro: Any) -> None:
        try:
            coro.send(None)
        except StopIteration:
            return
        raise RuntimeError("cryptofeed handler suspended")  # pragma: no cover

    def top10(book: Any) -> tuple[list[Any], list[Any]]:
        bids, asks = book.book.bids, book.book.asks
        return ([bids.index(i) for i in range(min(10, len(bids)))],
                [asks.index(i) for i in range(min(10, len(asks)))])

    def factory(read_top: bool, decoded: bool) -> Callable[[], tuple[Handler, Callable[[], Any]]]:
        def make() -> tuple[Handler, Callable[[], Any]]:
            last: list[Any] = [None]

            async def noop(book: Any, receipt_timestamp: float) -> None:
                last[0] = book

            async def reader(book: Any, receipt_timestamp: float) -> None:
                last[0] = book
                top10(book)

            feed = Deribit(callbacks={L2_BOOK: reader if read_top else noop})
            feed._Deribit__reset()  # what subscribe() does before the first message
            run(feed.message_handler(snapshot, None, time.time()))
            if decoded:
                book_update = feed._book_update

                def handle(msg: Any) -> None:
                    run(book_update(msg, 0.0))
            else:
                message_handler = feed.message_handler

                def handle(msg: Any) -> None:
                    run(message_handler(msg, None, 0.0))

            return handle, lambda: top10(last[0])

        return make

    def decode(msg: str) -> Any:
        return yjson.loads(msg, parse_float=Decimal)

    return [
        Variant("cryptofeed", "message_handler, no-op callback", factory(False, False), baseline="ours-full"),
        Variant("cryptofeed", "message_handler, callback reads top-10", factory(True, False),
                baseline="ours-full"),
        Variant("cryptofeed", "_book_update, no-op callback (pre-decoded)", factory(False, True), decode,
                "ours-decoded"),
        Variant("cryptofeed", "_book_update, callback reads top-10 (pre-decoded)", factory(True, True),
                decode, "ours-decoded"),
    ]


# ---------------------------------------------------------------------------- timing


def measure(variants: list[Variant], messages: list[str], reps: int, chunk: int) -> None:
    """Each repetition feeds every variant the whole chain, ``chunk`` messages at a time in turn
    (the first variant of each turn rotates), so that load on a shared machine hits all alike."""
    inputs = {id(v): [v.pre_decoded(m) for m in messages] if v.pre_decoded else messages for v in variants}
    pc, cpu = time.perf_counter_ns, time.process_time_ns
    n, k = len(messages), len(variants)
    for rep in range(reps + 1):  # repetition 0 warms up and is not recorded
        handlers = [v.make() for v in variants]
        samples = [[0] * n for _ in variants]
        spent = [0] * k
        gc.collect()
        for turn, start in enumerate(range(0, n, chunk)):
            stop = min(n, start + chunk)
            for j in [(turn + x) % k for x in range(k)]:
                handle, msgs, times = handlers[j][0], inputs[id(variants[j])], samples[j]
                c0 = cpu()
                for i in range(start, stop):
                    t0 = pc()
                    handle(msgs[i])
                    times[i] = pc() - t0
                spent[j] += cpu() - c0
        for j, v in enumerate(variants):
            if rep:
                v.cpu_us.append(spent[j] / n / 1000)
                v.samples_ns.extend(samples[j])
            v.final_top = handlers[j][1]()


def pct(sorted_values: list[int], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1000


def report(variants: list[Variant]) -> None:
    baselines = {v.key: v for v in variants if v.key}
    base_cpu = {k: statistics.median(v.cpu_us) for k, v in baselines.items()}
    header = (f"{'impl':<11} {'variant':<52} {'CPU µs/msg [best]':>18} {'msgs/s':>8} "
              f"{'p50 µs':>7} {'p99 µs':>7} {'vs ours':>9}")
    print(header)
    print("-" * len(header))
    for v in variants:
        med = statistics.median(v.cpu_us)
        s = sorted(v.samples_ns)
        ratio = med / base_cpu[v.baseline] if v.baseline in base_cpu else float("nan")
        print(f"{v.group:<11} {v.name:<52} {med:>10.1f} [{min(v.cpu_us):5.1f}] {1e6 / med:>8,.0f} "
              f"{pct(s, 0.5):>7.1f} {pct(s, 0.99):>7.1f} {ratio:>8.2f}x")
    print("'vs ours' = CPU per message / ours with the same input (text frame, or pre-decoded);"
          " >1 is slower than ours.")


def check_target(variants: list[Variant], factor: float = 4.0) -> bool:
    """Issue 5: ours at least ``factor`` times cheaper per message than every anchor fed the same
    text frames (ccxt, cryptofeed), in this run: the median over repetitions of the paired ratio."""
    ours = [v for v in variants if v.key in ("ours-full", "broker")]
    anchors = [v for v in variants if v.group in ("ccxt", "cryptofeed") and v.pre_decoded is None]
    if not anchors:
        print("no ccxt/cryptofeed anchors importable: the target cannot be checked")
        return False
    print(f"\n{factor:g}x target: anchor CPU per message / ours on the same text frames, per repetition: "
          "median [min-max]")
    met = True
    for o in ours:
        for a in anchors:
            ratios = sorted(x / y for x, y in zip(a.cpu_us, o.cpu_us, strict=True))
            ratio = statistics.median(ratios)
            met &= ratio >= factor
            verdict = "met" if ratio >= factor else "NOT met"
            print(f"  {o.group:<6} vs {a.group:<10} {a.name:<48} {ratio:5.2f}x [{ratios[0]:4.2f}-{ratios[-1]:4.2f}] "
                  f"{verdict}")
    print(f"{factor:g}x target vs ccxt and cryptofeed:", "MET" if met else "NOT MET")
    return met


def check_consistency(variants: list[Variant]) -> None:
    ref = variants[0].final_top
    assert ref is not None
    bad = [v.group + ": " + v.name for v in variants
           if v.final_top is None or (_norm(v.final_top[0]), _norm(v.final_top[1])) != (ref[0], ref[1])]
    print("final top-10 identical across implementations:", "yes" if not bad else f"NO: {bad}")


# ---------------------------------------------------------------------------- fan-out


def fan_out(snapshot: str, message: str, reps: int) -> None:
    book = OrderBook(INSTRUMENT)
    book.apply(orjson.loads(snapshot)["params"]["data"])
    book.apply(orjson.loads(message)["params"]["data"])

    class Consumer:
        __slots__ = ("latest",)

        def __init__(self) -> None:
            self.latest: OrderBook | None = None

        def on_book(self, b: OrderBook) -> None:
            self.latest = b

    class Reader(Consumer):
        __slots__ = ()

        def on_book(self, b: OrderBook) -> None:
            self.latest = b
            b.best_bid  # noqa: B018

    print()
    print("in-process fan-out: one book update to N callbacks (for cb in callbacks: cb(book)), "
          "wall ns per delivery, median [best] of reps")
    print(f"{'consumer':<40} {'N=1':>14} {'N=10':>14} {'N=100':>14}")
    pc = time.perf_counter_ns
    for label, cls in (("stores the object (bound method)", Consumer),
                       ("stores it and reads best_bid", Reader)):
        cells = []
        for n in (1, 10, 100):
            callbacks = [cls().on_book for _ in range(n)]
            updates = max(2_000, 400_000 // n)
            per: list[float] = []
            for _ in range(reps):
                t0 = pc()
                for _ in range(updates):
                    for cb in callbacks:
                        cb(book)
                per.append((pc() - t0) / (updates * n))
            cells.append(f"{statistics.median(per):6.1f} [{min(per):5.1f}]")
        print(f"{label:<40} " + " ".join(f"{c:>14}" for c in cells))


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="change messages per chain")
    ap.add_argument("--reps", type=int, default=7, help="recorded repetitions (plus one warm-up)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=0,
                    help="messages per variant per turn (default 0: the whole chain, as the baselines were measured)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    compiled = book_module._ladder_apply is not None
    snapshot, messages = generate(args.messages, args.seed)
    avg = statistics.mean(len(m.encode()) for m in messages)
    print(f"Python {sys.version.split()[0]}, orjson {orjson.__version__}; stream: {CHANNEL}, snapshot "
          f"{LEVELS} levels/side ({len(snapshot) / 1024:.0f} KB), {len(messages)} changes x {PER_SIDE} "
          f"levels/side, avg {avg:.0f} B; {args.reps} reps + 1 warm-up; the ladder's compiled loops "
          f"(deribit_kit.live._speedups): {'built' if compiled else 'NOT built (pure Python)'}")
    variants = (ours_variants(snapshot) + broker_variants(snapshot) + ccxt_variants(snapshot)
                + cryptofeed_variants(snapshot))
    measure(variants, messages, args.reps, args.chunk or len(messages))
    print()
    report(variants)
    check_consistency(variants)
    check_target(variants)
    fan_out(snapshot, messages[0], args.reps)
    print(f"\ntotal run time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
