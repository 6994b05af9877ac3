"""The recorder against the embedded exchange: frames kept verbatim with their events, segments
that rotate and decode alone, checkpoints, a recorder that falls behind (gap markers, then the
replayed books resync), a full disk, a taken folder, option chains that follow the calendar, and
sources that send no raw text or pretty-printed frames."""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
import websockets
import zstandard
from conftest import StubUpstream

from deribit_kit import Deribit, recording
from deribit_kit.broker import Broker
from deribit_kit.broker.consumer import Item, Notification
from deribit_kit.errors import RecorderError
from deribit_kit.recording.format import CH_AT, CK_AT, KIND_AT, T_SLICE
from deribit_kit.sim import Simulator
from deribit_kit.sinks import Recorder
from deribit_kit.upstream.replay import Replay

BTC = "BTC-PERPETUAL"
BOOK = f"book.{BTC}.100ms"
TICKER = f"ticker.{BTC}.100ms"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def dk(sim: Simulator) -> AsyncIterator[Deribit]:
    client = await Deribit.connect(sim.ws_url, backoff_initial=0.01, backoff_max=0.2)
    yield client
    await client.close()


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    async def run() -> None:
        while not pred():
            await asyncio.sleep(0.01)  # bounded poll of the recorder's counters
    await asyncio.wait_for(run(), timeout)


def lines_of(path: Path) -> list[bytes]:
    """One segment decoded on its own."""
    with open(path, "rb") as fh:
        data = zstandard.ZstdDecompressor().stream_reader(fh).read()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


async def test_frames_are_kept_as_received_with_the_kit_events(sim: Simulator, dk: Deribit, tmp_path: Path) -> None:
    broker = dk.broker
    seen: list[tuple[str, bytes]] = []

    def probe(n: Item) -> None:
        assert isinstance(n, Notification) and isinstance(n.raw, bytes)  # the frame's bytes as they came
        seen.append((n.channel, n.raw))

    rec = Recorder(broker, tmp_path / "rec", channels=[BOOK, TICKER], segment_seconds=0.5, snapshot_interval=0.3,
                   flush_interval=0.1)
    watch = broker.consumer([BOOK, TICKER], callback=probe)
    await asyncio.gather(rec.start(), watch.start())
    await until(lambda: rec.counts.get(BOOK, 0) >= 5)
    reconnected = asyncio.ensure_future(dk.reconnected.wait(10))
    sim.faults.drop_connections()
    await reconnected
    await until(lambda: rec.events.get("snapshot", 0) >= 2 and rec.frames >= len(seen) - 1 and rec.counts[BOOK] >= 12)
    watch.close_nowait()
    listed = broker.metrics()["components"][rec.name]  # the recorder reports on the broker's metrics
    assert listed["frames"] == rec.frames and listed["ended"] == "running"
    assert f'deribit_kit_broker_component_frames{{component="{rec.name}"}} {rec.frames}' in broker.prometheus()
    manifest = await rec.stop()
    assert rec.name not in broker.metrics()["components"]
    frames = [(r.channel, r.raw) for r in recording.read(tmp_path / "rec", kinds=["frame"])]
    assert frames == seen  # every frame, in order, the exchange's own bytes
    assert all(r.direction_ok for r in _lines(tmp_path / "rec"))
    events = [r for r in recording.read(tmp_path / "rec", kinds=["event"])]
    names = [e.name for e in events]
    assert names[:2] == ["segment", "recorder_start"] and names[-1] == "recorder_stop"
    i, j = names.index("disconnected"), names.index("connected")
    assert i < j and events[i].epoch == 1 and events[j].epoch == 2
    assert "connection closed" in events[i].data["reason"]
    snaps = [e for e in events if e.name == "snapshot"]
    assert len(snaps) >= 2 and all(e.data["ch"] == BOOK for e in snaps)
    assert manifest["counts"] == {BOOK: len([f for f in frames if f[0] == BOOK]),
                                  TICKER: len([f for f in frames if f[0] == TICKER])}
    assert manifest["events"]["disconnected"] == 1 and manifest["frames"] == len(frames)
    assert manifest["kit_version"] and manifest["schema"] == recording.SCHEMA_VERSION


class _Line:
    def __init__(self, line: bytes) -> None:
        self.line = line

    @property
    def direction_ok(self) -> bool:
        k = self.line[KIND_AT]
        return k != ord("d") or self.line[43:44] == b"i"


def _lines(d: Path) -> list[_Line]:
    return [_Line(ln) for p in recording.segment_paths(d) for ln in lines_of(p)]


async def test_segments_rotate_decode_alone_and_start_with_checkpoints(dk: Deribit, tmp_path: Path) -> None:
    rec = Recorder(dk.broker, tmp_path / "rec", channels=[BOOK, TICKER, "book.ETH-PERPETUAL.100ms"],
                   segment_seconds=0.4, snapshot_interval=0.25, flush_interval=0.1)
    await rec.start()
    await until(lambda: len(rec.segments) >= 4)
    manifest = await rec.stop()
    segs = manifest["segments"]
    paths = recording.segment_paths(tmp_path / "rec")
    assert [p.name for p in paths] == [s["name"] for s in segs]
    prev_end = 0
    for k, (path, seg) in enumerate(zip(paths, segs, strict=True)):
        lines = lines_of(path)  # each segment decodes on its own
        assert len(lines) == seg["records"] and sum(len(ln) + 1 for ln in lines) == seg["bytes"]
        assert seg["closed"] and seg["compressed_bytes"] == path.stat().st_size
        head = orjson.loads(lines[0])
        assert head["ev"] == "segment" and head["schema"] == recording.SCHEMA_VERSION and head["index"] == k + 1
        assert seg["start_ns"] >= prev_end
        prev_end = seg["end_ns"]
        times = [int(ln[T_SLICE]) for ln in lines]
        assert times == sorted(times) and seg["start_ns"] <= times[0] and times[-1] <= seg["end_ns"]
        for t_ns, at in seg["checkpoints"]:
            assert lines[at][KIND_AT] == ord("c") and int(lines[at][T_SLICE]) == t_ns
        if k:  # a new segment starts with a checkpoint of every live book
            cks = [ln[CK_AT:ln.index(b'"', CK_AT)].decode() for ln in lines[1:3]]
            assert sorted(cks) == sorted([BOOK, "book.ETH-PERPETUAL.100ms"]), cks
    assert manifest["checkpoints"] >= 2 * len(segs)
    ck = next(recording.read(tmp_path / "rec", kinds=["checkpoint"]))
    assert ck.data["type"] == "snapshot" and ck.data["bids"] and ck.frame["method"] == "subscription"


async def test_a_recorder_that_falls_behind_writes_gaps_and_the_replay_resyncs(
        dk: Deribit, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "rec"
    rec = Recorder(dk.broker, out, channels=[BOOK, TICKER], max_buffer=3000, flush_interval=0.25,
                   snapshot_interval=60)
    with caplog.at_level(logging.WARNING, "deribit_kit.sinks.recorder"):
        await rec.start()
        await until(lambda: len(rec.gaps) >= 2)
        manifest = await rec.stop()
    assert sum(manifest["dropped"].values()) > 0 and len(manifest["gaps"]) >= 2
    assert any("is behind" in r.message for r in caplog.records)
    assert any("caught up" in r.message and "dropped" in r.message for r in caplog.records)
    recs = list(recording.read(out))
    gaps = [i for i, r in enumerate(recs) if r.kind == "event" and r.name == "gap"]
    for i in gaps:  # a gap marker, then a checkpoint of the book it cost
        assert recs[i].data["dropped"] and recs[i].data["channels"]
        if BOOK in recs[i].data["channels"]:
            assert recs[i + 1].kind == "checkpoint" and recs[i + 1].channel == BOOK
    # the replayed book goes resyncing at each gap marker and live at the checkpoint after it
    rp = Replay(out)
    broker = Broker(rp)
    live = broker.hold_book(BOOK)
    states: list[tuple[str, int]] = []
    live.updated += lambda lb: states.append((lb.book.state, lb.book.gaps))
    await broker.consumer([BOOK], callback=lambda n: None).start()
    await rp.wait_done(30)
    book_gaps = sum(1 for i in gaps if BOOK in recs[i].data["channels"])
    assert book_gaps >= 1 and live.book.gaps == book_gaps and rp.checkpoints_fed == book_gaps
    pairs = list(itertools.pairwise(states))
    assert sum(1 for a, b in pairs if a[0] == "resyncing" and b[0] == "live" and b[1] == a[1]) >= book_gaps
    assert states[-1][0] == "live"
    await broker.close()
    await rp.close()


class FullDisk:
    """A segment file on a disk that fills up after ``room`` bytes: ENOSPC from then on."""

    def __init__(self, path: Path, room: int) -> None:
        self.fh = open(path, "xb")  # noqa: SIM115 (closed by close())
        self.room = room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.fh.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def tell(self) -> int:
        return self.fh.tell()

    def close(self) -> None:
        self.fh.close()


async def test_a_full_disk_stops_the_recorder_and_what_was_written_stays_readable(dk: Deribit,
                                                                                  tmp_path: Path) -> None:
    out = tmp_path / "rec"

    def opener(path: Path) -> IO[bytes]:
        return FullDisk(path, 4_000)  # type: ignore[return-value]

    rec = Recorder(dk.broker, out, channels=[BOOK, TICKER], opener=opener, flush_interval=0.1)
    await rec.start()
    await rec.wait_stopped(20)
    assert isinstance(rec.error, RecorderError) and not rec.running
    assert "the disk is full" in str(rec.error) and "stays readable" in str(rec.error)
    with pytest.raises(RecorderError, match="the disk is full"):
        await rec.stop()
    assert dk.broker.channels == []  # it let go of its channels
    report = recording.ReadReport()
    frames = list(recording.read(out, kinds=["frame"], report=report))
    assert frames and all(f.data for f in frames)  # what reached the disk decodes
    assert report.corrupt == []
    manifest = recording.read_manifest(out)
    assert manifest["ended"].startswith("error:") and "No space left" in manifest["ended"]


async def test_a_folder_that_holds_a_recording_is_refused(dk: Deribit, tmp_path: Path) -> None:
    out = tmp_path / "rec"
    async with Recorder(dk.broker, out, channels=[TICKER], flush_interval=0.1) as rec:
        await until(lambda: rec.frames >= 1)
    with pytest.raises(RecorderError, match="already holds a recording"):
        await Recorder(dk.broker, out, channels=[TICKER]).start()


async def test_a_refused_channel_is_reported_and_its_book_let_go(dk: Deribit, tmp_path: Path) -> None:
    nope = "book.NOPE-PERPETUAL.100ms"
    async with Recorder(dk.broker, tmp_path / "rec", channels=[BOOK, nope], flush_interval=0.1) as rec:
        assert rec.channels == [BOOK]  # the exchange refused the unknown instrument; the rest is recorded
        await until(lambda: "NOPE-PERPETUAL" not in dk.broker.books)  # let go (the broker forgets it next turn)
        assert BTC in dk.broker.books
        await until(lambda: rec.counts.get(BOOK, 0) >= 2)
    assert dk.broker.books == {}


class FakeClock:
    def __init__(self, when: datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t


async def test_option_chains_follow_the_calendar_while_recording(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2025, 1, 6, 7, 59, 59, tzinfo=UTC))  # a Monday, a second before the daily expiry
    out = tmp_path / "rec"
    async with Simulator(seed=5, clock=clock, autostep=False, rate_limits=False) as sim:
        dk = await Deribit.connect(sim.ws_url)
        rec = Recorder(dk.broker, out, books="ETH", kind="option", chain_refresh=0.2, flush_interval=0.1)
        await rec.start()
        daily = [c for c in rec.channels if "-6JAN25-" in c]
        assert daily and all(c.startswith("book.ETH-") for c in rec.channels)
        sim.step()
        clock.t += 2.0  # 08:00:01: the daily expires, the next one is listed
        sim.step()
        await until(lambda: not any("-6JAN25-" in c for c in rec.channels)
                    and any("-9JAN25-" in c for c in rec.counts)  # subscribed, its snapshot recorded
                    and rec.events.get("channels", 0) >= 1, timeout=15)  # written once the refresh has finished
        manifest = await rec.stop()
        await dk.close()
    assert set(daily) <= set(manifest["channels"]) and any("-9JAN25-" in c for c in manifest["channels"])
    assert manifest["events"]["channels"] >= 1
    moved = [r.data for r in recording.read(out, kinds=["event"]) if r.name == "channels"]
    assert any("-9JAN25-" in c for m in moved for c in m["added"])
    assert set(daily) <= {c for m in moved for c in m["removed"]}
    insts = manifest["instruments"]  # the full instrument of every recorded channel, old and new expiries
    assert all(c.split(".")[1] in insts for c in manifest["channels"])
    rp = Replay(out)
    gone = daily[0].split(".")[1]
    assert (await rp.instrument(gone)).expiration_timestamp == insts[gone]["expiration_timestamp"]
    await rp.close()


class Source(StubUpstream):
    """An upstream with no exchange behind it whose notifications have no raw text (a topic, a
    translated feed): the recorder encodes each frame itself."""

    name = "no-raw"
    epoch = 7


async def test_frames_without_raw_text_are_encoded_once(tmp_path: Path) -> None:
    src = Source()
    broker = Broker(src)
    rec = await Recorder(broker, tmp_path / "rec", channels=[TICKER], flush_interval=0.1).start()
    data = {"timestamp": 1, "instrument_name": BTC, "mark_price": 1.5}
    src.sink(TICKER, data, None)
    manifest = await rec.stop()
    [frame] = list(recording.read(tmp_path / "rec", kinds=["frame"]))
    assert frame.data == data and frame.epoch == 7 and frame.frame["params"]["channel"] == TICKER
    assert manifest["encoded"] == 1
    await broker.close()


async def test_a_pretty_printed_frame_is_written_on_one_line(tmp_path: Path) -> None:
    """A generic Deribit-compatible server that pretty-prints its JSON: the frame is minified
    (and counted), so every record stays one line."""
    async def serve(ws: Any) -> None:
        async for text in ws:
            req = json.loads(text)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": req["params"].get("channels", [])
                                      if req["method"].endswith("subscribe") else {"version": "1"}}))
            if req["method"] == "public/subscribe":
                note = {"jsonrpc": "2.0", "method": "subscription",
                        "params": {"channel": TICKER, "data": {"timestamp": 2, "mark_price": 3.25}}}
                await ws.send(json.dumps(note, indent=2))

    async with websockets.serve(serve, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        dk = await Deribit.connect(f"ws://127.0.0.1:{port}/ws/api/v2", client_rate_limit=False, reconnect=False)
        rec = await Recorder(dk.broker, tmp_path / "rec", channels=[TICKER], flush_interval=0.1).start()
        await until(lambda: rec.frames >= 1)
        manifest = await rec.stop()
        await dk.close()
    [frame] = list(recording.read(tmp_path / "rec", kinds=["frame"]))
    assert frame.data == {"timestamp": 2, "mark_price": 3.25} and b"\n" not in frame.raw
    assert manifest["reminified"] == 1
    lines = lines_of(recording.segment_paths(tmp_path / "rec")[0])
    assert lines[2][CH_AT:].startswith(TICKER.encode())
