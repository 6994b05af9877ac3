"""The on-disk format without an exchange: the record line and its fixed offsets, segments written
by the writer and read back (filters, times, cut and corrupt segments, schema versions), the seek
primitive, and the pandas helpers checked against deribit_kit.live.OrderBook."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from deribit_kit import recording
from deribit_kit.errors import RecordingError
from deribit_kit.live.orderbook import OrderBook
from deribit_kit.recording import format as fmt
from deribit_kit.recording.manifest import FORMAT, write_atomic
from deribit_kit.recording.reader import prefix_feeds
from deribit_kit.recording.writer import SegmentWriter, segment_header

BOOK = "book.BTC-PERPETUAL.100ms"
T0 = 1_767_225_600_000_000_000  # 2026-01-01 00:00 UTC, in ns


def note(channel: str, data: Any) -> bytes:
    return fmt.notification_frame(channel, data)


def test_the_line_has_fixed_offsets_and_keeps_the_frame_verbatim() -> None:
    frame = b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.X.100ms","data":{"a":1.10}}}'
    line = fmt.frame_line(T0 + 5, 3, "book.X.100ms", frame)
    assert line.endswith(b"}\n") and orjson.loads(line)["f"]["params"]["data"] == {"a": 1.1}
    assert int(line[fmt.T_SLICE]) == T0 + 5 and int(line[fmt.E_SLICE]) == 3
    assert line[fmt.KIND_AT] == ord("d") and line[fmt.CH_AT:].startswith(b"book.X.100ms")
    assert fmt.parse_line(line[:-1]) == (T0 + 5, 3, "frame", "book.X.100ms", frame)  # 1.10 as sent
    ck = fmt.checkpoint_line(T0, 12345678, "book.X.100ms", frame)
    assert fmt.parse_line(ck[:-1]) == (T0, 12345678, "checkpoint", "book.X.100ms", frame)
    ev = fmt.event_line(T0, 1, "gap", channels=["a"], dropped={"a": 2})
    t, e, kind, name, payload = fmt.parse_line(ev[:-1])
    assert (t, e, kind, name) == (T0, 1, "event", "gap") and orjson.loads(payload)["dropped"] == {"a": 2}
    # another writer's layout (keys in another order) still reads, through a full parse
    other = orjson.dumps({"e": 2, "t": 7, "ch": "x", "f": {"k": [1]}})
    assert fmt.parse_line(other) == (7, 2, "frame", "x", b'{"k":[1]}')
    for bad in (b"garbage", b"{}", b'{"t":1,"e":2}', b'{"t":1,"e":2,"d":"i","ch":"x"'):
        with pytest.raises(ValueError):
            fmt.parse_line(bad)
    with pytest.raises(ValueError):
        fmt.header(10**19, 1)
    with pytest.raises(ValueError):
        fmt.frame_line(T0, 1, 'bad"name', frame)


class Book:
    """A consistent book stream: a snapshot, then chained changes (new/change/delete)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.bids = {100.0 - i * 0.5: float(self.rng.randint(1, 9)) for i in range(30)}
        self.asks = {100.5 + i * 0.5: float(self.rng.randint(1, 9)) for i in range(30)}
        self.cid = 1000
        self.ts = 1_767_225_600_000

    def snapshot(self) -> dict[str, Any]:
        return {"type": "snapshot", "timestamp": self.ts, "instrument_name": "BTC-PERPETUAL", "change_id": self.cid,
                "bids": [["new", p, a] for p, a in sorted(self.bids.items(), reverse=True)],
                "asks": [["new", p, a] for p, a in sorted(self.asks.items())]}

    def change(self) -> dict[str, Any]:
        prev, self.cid = self.cid, self.cid + self.rng.randint(1, 5)
        self.ts += 100
        out: dict[str, Any] = {"type": "change", "timestamp": self.ts, "instrument_name": "BTC-PERPETUAL",
                               "prev_change_id": prev, "change_id": self.cid, "bids": [], "asks": []}
        for side, book, sign in (("bids", self.bids, -1), ("asks", self.asks, 1)):
            p = (100.0 if sign < 0 else 100.5) + sign * 0.5 * self.rng.randint(0, 40)
            if p in book and self.rng.random() < 0.4 and len(book) > 5:
                del book[p]
                out[side].append(["delete", p, 0.0])
            else:
                book[p] = float(self.rng.randint(1, 9))
                out[side].append(["change" if p in book else "new", p, book[p]])
        return out


def write_recording(d: Path, records: list[bytes], *, per_segment: int = 40, schema: int = 1) -> dict[str, Any]:
    d.mkdir(parents=True)
    w = SegmentWriter(d)
    segs = []
    for k in range(0, len(records), per_segment):
        chunk = records[k:k + per_segment]
        t0 = int(chunk[0][fmt.T_SLICE])
        head = segment_header(k // per_segment + 1, t0, 1, "test")
        if schema != 1:
            head = head.replace(b'"schema":1', b'"schema":%d' % schema)
        w.open(k // per_segment + 1, head)
        for line in chunk:  # a block per write, as the recorder flushes them: a cut leaves a decodable prefix
            w.write(line, 1)
        w.close()
        segs.append({"name": w.name, "start_ns": t0, "end_ns": int(chunk[-1][fmt.T_SLICE])})
    manifest = {"format": FORMAT, "schema": 1, "channels": [BOOK], "instruments": {}, "segments": segs,
                "start_ns": int(records[0][fmt.T_SLICE]), "end_ns": int(records[-1][fmt.T_SLICE]), "ended": "stopped"}
    write_atomic(d, manifest)
    return manifest


def book_stream(n: int = 120, seed: int = 3) -> tuple[list[bytes], list[tuple[int, dict[str, Any]]]]:
    """Records of one book with a gap (a change lost) and a checkpoint after it, plus the frames."""
    b = Book(seed)
    recs: list[bytes] = []
    sent: list[tuple[int, dict[str, Any]]] = []
    t = T0
    for i in range(n):
        t += 100_000_000
        if i == 60:  # the book as it is, before the next change
            recs.append(fmt.checkpoint_line(t, 1, BOOK, note(BOOK, b.snapshot())))
        data = b.change() if i else b.snapshot()
        if i == 50:
            continue  # lost on the way: a gap in the chain
        recs.append(fmt.frame_line(t, 1, BOOK, note(BOOK, data)))
        sent.append((t, data))
    return recs, sent


def test_read_filters_by_time_channel_and_kind(tmp_path: Path) -> None:
    recs, sent = book_stream()
    recs.insert(10, fmt.frame_line(int(recs[9][fmt.T_SLICE]), 1, "ticker.BTC-PERPETUAL.100ms",
                                   note("ticker.BTC-PERPETUAL.100ms", {"timestamp": 1, "mark_price": 2.0})))
    recs.insert(20, fmt.event_line(int(recs[19][fmt.T_SLICE]), 1, "disconnected", reason="test"))
    write_recording(tmp_path / "r", recs)
    everything = list(recording.read(tmp_path / "r"))
    assert [r.kind for r in everything].count("event") == 1 + 4  # one per segment header + the disconnect
    frames = list(recording.read(tmp_path / "r", channels=[BOOK], kinds=["frame"]))
    assert [r.data for r in frames] == [d for _, d in sent]
    start, end = sent[30][0], sent[40][0]
    window = list(recording.read(tmp_path / "r", start=start, end=end, kinds=["frame"], channels=[BOOK]))
    assert [r.t_ns for r in window] == [t for t, _ in sent if start <= t <= end]
    iso = dt.datetime.fromtimestamp(start / 1e9, dt.UTC)
    assert [r.t_ns for r in recording.read(tmp_path / "r", start=iso, end=pd.Timestamp(end, tz="UTC"),
                                           channels=[BOOK], kinds=["frame"])] == [r.t_ns for r in window]
    assert recording.to_ns(iso.strftime("%Y-%m-%d %H:%M:%S.%f")) == start
    assert recording.to_ns(start / 1e9) == pytest.approx(start, abs=1000)
    assert window[0].time == iso and window[0].name == BOOK
    with pytest.raises(ValueError, match="unknown record kinds"):
        list(recording.read(tmp_path / "r", kinds=["frames"]))


def test_a_cut_and_a_corrupt_segment_are_reported_and_reading_goes_on(tmp_path: Path) -> None:
    recs, _ = book_stream()
    write_recording(tmp_path / "r", recs, per_segment=30)
    segs = recording.segment_paths(tmp_path / "r")
    assert len(segs) == 4
    data = segs[1].read_bytes()
    segs[1].write_bytes(data[: int(len(data) * 0.7)])  # cut mid-write
    broken = bytearray(segs[2].read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    segs[2].write_bytes(bytes(broken))  # corrupt compressed bytes
    report = recording.ReadReport()
    got = list(recording.read(tmp_path / "r", report=report))
    assert got and got[-1].t_ns == int(recs[-1][fmt.T_SLICE])  # the last segment is whole
    cut = {c.segment: c for c in report.cut}
    assert set(cut) == {segs[1].name, segs[2].name}
    assert cut[segs[1].name].records > 0 and "last complete record" in str(cut[segs[1].name])
    assert "corrupt compressed data" in cut[segs[2].name].reason
    assert "cut:" in report.summary() and not report.ok


def test_corrupt_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    recs, sent = book_stream(30)
    recs.insert(5, b"not a record at all\n")
    recs.insert(9, b'{"t":1,"e":1}\n')
    write_recording(tmp_path / "r", recs, per_segment=100)
    report = recording.ReadReport()
    frames = list(recording.read(tmp_path / "r", kinds=["frame"], report=report))
    assert len(frames) == len(sent)
    assert [(c.segment, c.line) for c in report.corrupt] == [("segment-000001.ndjson.zst", 6),
                                                             ("segment-000001.ndjson.zst", 10)]
    assert "2 corrupt record(s) skipped" in report.summary() and report.corrupt[0].text.startswith(b"not a")


def test_unknown_schema_versions_are_refused(tmp_path: Path) -> None:
    recs, _ = book_stream(10)
    write_recording(tmp_path / "seg", recs, schema=3)  # a segment written by another version
    with pytest.raises(RecordingError, match="schema version 3 is not supported"):
        list(recording.read(tmp_path / "seg"))
    m = recording.read_manifest(tmp_path / "seg")
    write_atomic(tmp_path / "seg", {**m, "schema": 2})
    with pytest.raises(RecordingError, match="schema version 2 is not supported: this deribit_kit reads version 1"):
        recording.read_manifest(tmp_path / "seg")
    with pytest.raises(RecordingError, match="no such recording folder"):
        list(recording.read(tmp_path / "nowhere"))


def test_prefix_feeds_is_the_newest_snapshot_and_the_chain_after_it(tmp_path: Path) -> None:
    recs, sent = book_stream(120)
    write_recording(tmp_path / "r", recs, per_segment=1000)
    seg = recording.segment_paths(tmp_path / "r")[0]
    feeds, line = prefix_feeds(seg, [BOOK], until_ns=sent[45][0])
    assert line == 1 + 45 and len(feeds[BOOK]) == 45  # the header line, then the snapshot and 44 changes
    feeds, _ = prefix_feeds(seg, [BOOK], until_ns=sent[55][0])
    assert feeds == {}  # after the gap: nothing until a snapshot
    until = sent[70][0]
    feeds, _ = prefix_feeds(seg, [BOOK], until_ns=until)
    [ck] = [fmt.parse_line(r[:-1]) for r in recs if r[fmt.KIND_AT] == ord("c")]
    after = [d for t, d in sent if ck[0] <= t < until]
    assert feeds[BOOK][0] == ck[4] and len(feeds[BOOK]) == 1 + len(after)  # the checkpoint, then the changes
    book = OrderBook("BTC-PERPETUAL")
    for frame in feeds[BOOK]:
        assert book.apply(orjson.loads(frame)["params"]["data"])
    ref = OrderBook("BTC-PERPETUAL")
    ref.apply(orjson.loads(ck[4])["params"]["data"])
    for d in after:
        assert ref.apply(d)
    assert book.snapshot_levels() == ref.snapshot_levels() and book.change_id == after[-1]["change_id"]
    _, line = prefix_feeds(seg, [BOOK], upto_line=10)
    assert line == 10


def test_book_tops_match_deribit_kits_order_book(tmp_path: Path) -> None:
    recs, _sent = book_stream(120)
    write_recording(tmp_path / "r", recs)
    tops = recording.book_tops(tmp_path / "r", interval="500ms", depth=3)
    assert list(tops.columns[:5]) == ["instrument", "bid_price_1", "bid_amount_1", "ask_price_1", "ask_amount_1"]
    # the reference: every record folded into live.OrderBook, sampled at the same grid points
    step = 500_000_000
    books: dict[int, Any] = {}
    book = OrderBook("BTC-PERPETUAL")
    grid = (T0 // step + 1) * step
    for line in recs:
        t, _e, kind, _ch, payload = fmt.parse_line(line[:-1])
        while t >= grid:
            if book.state == "live":
                books[grid] = (book.bids(3), book.asks(3), book.change_id)
            grid += step
        data = orjson.loads(payload)["params"]["data"]
        if kind == "checkpoint":
            if book.state != "live":
                book.apply(data)
        else:
            book.apply(data)
    assert len(tops) == len(books) and len(books) > 10
    for when, row in tops.iterrows():
        bids, asks, cid = books[int(when.value)]  # type: ignore[union-attr]
        assert row.change_id == cid
        assert [(row[f"bid_price_{k}"], row[f"bid_amount_{k}"]) for k in (1, 2, 3)] == [tuple(x) for x in bids]
        assert [(row[f"ask_price_{k}"], row[f"ask_amount_{k}"]) for k in (1, 2, 3)] == [tuple(x) for x in asks]
        assert row.spread == asks[0][0] - bids[0][0] and row.mid == (asks[0][0] + bids[0][0]) / 2
    one = recording.book_tops(tmp_path / "r", interval="1s")
    assert {"bid_price", "ask_price", "mid", "spread"} <= set(one.columns) and one.index.tz is not None


def test_trades_and_tickers_frames(tmp_path: Path) -> None:
    tr = "trades.BTC-PERPETUAL.100ms"
    kind = "trades.future.BTC.100ms"
    tk = "ticker.BTC-PERPETUAL.100ms"
    trade = {"trade_id": "1", "price": 10.0, "amount": 2.0, "direction": "buy", "timestamp": 1_767_225_600_100,
             "instrument_name": "BTC-PERPETUAL"}
    recs = [
        fmt.frame_line(T0 + 1, 1, tr, note(tr, [trade])),
        fmt.frame_line(T0 + 2, 1, kind, note(kind, [trade])),  # the same trade on the kind channel
        fmt.frame_line(T0 + 3, 1, tr, note(tr, [{**trade, "trade_id": "2", "direction": "sell"}])),
        fmt.frame_line(T0 + 4, 1, tk, note(tk, {"timestamp": 1_767_225_600_200, "instrument_name": "BTC-PERPETUAL",
                                                "mark_price": 5.0, "stats": {"volume": 7.0}})),
    ]
    write_recording(tmp_path / "r", recs)
    trades = recording.trades(tmp_path / "r")
    assert list(trades.trade_id) == ["1", "2"] and list(trades.direction) == ["buy", "sell"]
    assert trades.index[0] == pd.Timestamp(1_767_225_600_100, unit="ms", tz="UTC")
    assert trades.received.iloc[0] == pd.Timestamp(T0 + 1, unit="ns", tz="UTC")
    tickers = recording.tickers(tmp_path / "r")
    assert tickers.stats_volume.tolist() == [7.0] and tickers.mark_price.tolist() == [5.0]
    assert recording.trades(tmp_path / "r", instruments=["ETH-PERPETUAL"]).empty
