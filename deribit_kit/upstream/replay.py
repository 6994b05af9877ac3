"""``Replay``: a recording on disk as the broker's upstream — books, chains, consumers and the
port run on a recorded market exactly as they ran live.

    replay = Replay("rec/", speed="max")            # or 1.0 (realtime), 10.0, ...
    broker = Broker(replay)
    book = await broker.book("BTC-PERPETUAL")       # playback starts with the first subscribe
    await replay.wait_done()

Where a record arrives: :meth:`Replay._play` decompresses the segments
(:func:`~deribit_kit.recording.reader.segment_chunks`) and slices each line at its fixed offsets
(:mod:`deribit_kit.recording.format`): a frame of a channel nobody subscribed is skipped without
being parsed; a subscribed one is parsed once and leaves through the broker's sink
``sink(channel, data, raw)`` with ``raw`` the bytes the exchange sent. Recorded ``disconnected``
and ``connected`` events are this upstream's events (with the recorded epoch), so the broker marks
its books resyncing exactly where it did live; a recorder's ``gap`` marker is ``interrupted``.

* **checkpoints** (snapshots the recorder took of its live books) are fed only to books that need
  one: subscribed mid-stream, after a gap or a record the replay had to skip, or at a seek. A book
  that is live never gets one (it would count as a resync the live book never had), so a
  sequential replay reproduces every state, gap and resync of the live books, change by change.
  The replay follows each book's ``change_id`` chain itself (the rules of
  :class:`~deribit_kit.live.OrderBook`) to know which books those are: the decision depends on the
  recording alone, never on timing.
* **a channel subscribed mid-stream** gets what a live exchange gives: its book as it is now (the
  newest checkpoint or snapshot of the current segment and the changes after it,
  :func:`~deribit_kit.recording.reader.prefix_feeds`), then every change.
* **resync** is a no-op on the wire: the next recorded snapshot or checkpoint serves the book.
* **pacing**: ``speed="max"`` goes as fast as the broker takes it (yielding to the loop every
  ``batch`` records, so the port and consumers run); a number paces the records to their recorded
  receive times (``10.0``: ten times faster). ``start=`` seeks (from the newest checkpoint before
  it), ``end=`` stops early, ``instruments=`` keeps those instruments' channels.
* **lookups and calls**: instruments from the manifest (as of the replay's clock: the calendar
  moves with it), ``public/get_time`` (the replay's clock), ``ticker``, index prices, recent
  trades and ``get_order_book`` (from the broker's live book, :attr:`Replay.book_source`);
  ``private/*`` is refused: a replay has no account.
* **bad input**: a segment cut mid-write plays up to its last complete record, a corrupt record is
  skipped (the book it belonged to resyncs at the next checkpoint); both are counted in
  :attr:`Replay.report` and logged at the end. An unknown schema version is refused at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from ..errors import DeribitKitError, RecordingError, error_for_code
from ..events import Event
from ..models import Instrument
from ..recording import format as fmt
from ..recording.manifest import check_schema
from ..recording.reader import (
    ReadReport,
    check_recording,
    cut_records,
    iter_raw,
    prefix_feeds,
    scan,
    segment_buffers,
    segment_chunks,
    segment_paths,
    to_ns,
)
from ..wire.channels import ChannelError, parse_channel
from ._offline import UNANSWERED, OfflineUpstream, instrument_name, matches, order_book_reply
from .protocol import Sink

__all__ = ["Replay"]

log = logging.getLogger("deribit_kit.upstream.replay")

PLAIN, BOOK, TICKER, TRADES, INDEX = range(5)
TRADES_KEPT = 1000
ANSWERED = ("public/get_time", "public/test", "public/hello", "public/get_instruments", "public/get_instrument",
            "public/get_order_book", "public/ticker", "public/get_index_price", "public/get_last_trades_by_instrument",
            "public/status")


class _Route:
    """A recorded channel: where its frames go, and (books) the chain as the replay follows it."""

    __slots__ = ("cid", "instrument", "kind", "name", "snap_batch", "sub", "synced")

    def __init__(self, name: str, kind: int, instrument: str | None) -> None:
        self.name = name
        self.kind = kind
        self.instrument = instrument
        self.sub = False  # subscribed: frames go to the sink
        self.synced = False  # books: a snapshot was fed and the chain has not broken since
        self.cid: Any = None
        self.snap_batch = -10


def _kind_of(channel: str) -> tuple[int, str | None]:
    try:
        info = parse_channel(channel)
    except ChannelError:
        return PLAIN, None
    kind = {"book": BOOK, "ticker": TICKER, "trades": TRADES, "price_index": INDEX}.get(info.family, PLAIN)
    return kind, info.instrument or info.index_name


def _speed(speed: str | float) -> float | None:
    if isinstance(speed, str):
        text = speed.strip().lower()
        text = text if text == "max" else text.rstrip("x")
        if text == "max":
            return None
        if text == "realtime":
            return 1.0
        try:
            speed = float(text)
        except ValueError:
            raise ValueError(f"speed must be 'max' or a positive number, not {speed!r}") from None
    if not speed > 0:
        raise ValueError(f"speed must be 'max' or a positive number, not {speed!r}")
    return float(speed)


class Replay(OfflineUpstream):
    """A recording as an :class:`~deribit_kit.upstream.Upstream` (see the module docs)."""

    _what = "this replay"

    def __init__(self, path: str | Path, *, speed: str | float = "max", start: Any = None, end: Any = None,
                 instruments: Iterable[str] | None = None, autoplay: bool = True, batch: int = 256) -> None:
        self.path = Path(path)
        self.manifest = check_recording(self.path)
        self.speed = _speed(speed)
        self.start_ns = to_ns(start)
        self.end_ns = to_ns(end)
        self.instrument_filter = None if instruments is None else set(instruments)
        self.autoplay = autoplay
        self.batch = max(1, batch)
        self.name = f"replay {self.path}"
        self.connected = Event("connected")
        self.disconnected = Event("disconnected")
        self.interrupted = Event("interrupted")  # (channels, gap): the recorder lost messages of these books
        self.ended = Event("ended")  # the replay reached its end (or end=): (report)
        self.report = ReadReport(str(self.path))
        self.book_source: Callable[[str], dict[str, Any] | None] | None = None  # the broker's book, by instrument
        self.frames = 0  # frames given to the sink
        self.events = 0  # events replayed
        self.checkpoints_fed = 0
        self.skipped = 0  # frames of channels nobody subscribed
        self.resyncs_asked = 0
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self.error: RecordingError | None = None
        m = self.manifest
        if m.get("ended") in (None, "running") or not m.get("segments"):
            found = scan(self.path)  # the recorder was stopped abruptly: what the segments hold
            m = self.manifest = {**m, "channels": sorted(set(m.get("channels") or []) | set(found["channels"])),
                                 "start_ns": m.get("start_ns") or found["start_ns"],
                                 "end_ns": found["end_ns"] or m.get("end_ns")}
        self._instruments: dict[str, Instrument] = {}
        for name, raw in (m.get("instruments") or {}).items():
            try:
                self._instruments[name] = msgspec.convert(raw, Instrument)
            except msgspec.ValidationError as exc:
                log.warning("%s: instrument %s unreadable (%s)", self.path, name, exc)
        self._routes: dict[bytes, _Route] = {}
        self._by_name: dict[str, _Route] = {}
        self._recorded: set[str] = set()
        for ch in m.get("channels") or []:
            kind, inst = _kind_of(ch)
            if kind != INDEX and inst is not None and self.instrument_filter is not None \
                    and inst not in self.instrument_filter:
                continue
            self._recorded.add(ch)
            if kind == INDEX:  # index prices are kept (chains pick strikes around them) even unsubscribed
                self._route(ch)
        self._sink: Sink | None = None
        self._state = "open"
        self._epoch = self._first_epoch()
        self._t_ns: int = self.start_ns or int(m.get("start_ns") or 0)
        self._tickers: dict[str, Any] = {}
        self._trades: dict[str, deque[Any]] = {}
        self._index: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._pause: asyncio.Future[None] | None = None
        self._pausers = 0
        self._batch = 0
        self._seg_path: Path | None = None
        self._line_no = 0
        self._base: float | None = None  # realtime: loop time of the anchor record
        self._t0 = 0
        self._kick_scheduled = False

    # ------------------------------------------------------------ the protocol
    @property
    def state(self) -> str:
        """``open`` until the recording ends (``ended``) or :meth:`close` (``closed``)."""
        return self._state

    @property
    def epoch(self) -> int:
        """The recorded upstream's epoch at the current position."""
        return self._epoch

    @property
    def channels(self) -> frozenset[str]:
        """The recorded channels subscribed now."""
        return frozenset(r.name for r in self._by_name.values() if r.sub)

    def _route(self, name: str) -> _Route:
        r = self._by_name.get(name)
        if r is None:
            kind, inst = _kind_of(name)
            r = self._by_name[name] = self._routes[name.encode()] = _Route(name, kind, inst)
        return r

    async def subscribe(self, channels: list[str]) -> list[str]:
        """The recorded channels of ``channels`` (others are left out, as Deribit does with names it
        does not know). A book subscribed while playing gets its current state first."""
        accepted = [c for c in dict.fromkeys(channels) if c in self._recorded]
        new = []
        for c in accepted:
            r = self._route(c)
            if not r.sub:
                r.sub = True
                r.synced = False
                new.append(r)
        if self._task is None:
            if self.autoplay and accepted and not self._kick_scheduled and self._state == "open":
                self._kick_scheduled = True  # the next loop turn: consumers created together all get the start
                asyncio.get_running_loop().call_soon(self._autostart)
        elif self._seg_path is not None and not self._task.done():  # playing: the books as they are now
            books = [r.name for r in new if r.kind == BOOK]
            if books:
                await self._catch_up(books)
        return accepted

    async def unsubscribe(self, channels: list[str]) -> None:
        """Stop delivering ``channels``."""
        for c in channels:
            r = self._by_name.get(c)
            if r is not None:
                r.sub = False
                r.synced = False

    async def resync(self, channels: list[str]) -> None:
        """No-op on the wire: the next recorded snapshot or checkpoint serves each book. A break the
        replay did not see in the chain (a malformed change) makes the book take the next checkpoint
        (unless a snapshot went by just now: that one served it)."""
        self.resyncs_asked += 1
        for c in channels:
            r = self._by_name.get(c)
            if r is not None and r.kind == BOOK and r.synced and self._batch - r.snap_batch > 1:
                r.synced = False

    async def instruments(self, currency: str = "any", kind: str | None = None) -> list[Instrument]:
        """The recorded instruments of ``currency`` and ``kind`` listed at the replay's clock."""
        return self._list(currency, kind, expired=False)

    def _list(self, currency: str, kind: str | None, expired: bool) -> list[Instrument]:
        now = self.clock_ms()
        out = []
        for name, inst in sorted(self._instruments.items()):
            if self.instrument_filter is not None and name not in self.instrument_filter:
                continue
            if not matches(inst, currency, kind):
                continue
            gone = inst.expiration_timestamp <= now
            if gone != expired or (inst.creation_timestamp > now and not expired):
                continue
            out.append(inst)
        return out

    def _not_held(self) -> str:
        """An instrument the recording does not have (13020)."""
        return "not in this recording"

    async def index_price(self, index_name: str) -> float:
        """The last replayed price of an index."""
        value = self._index.get(index_name)
        if value is not None:
            return value
        ch = f"deribit_price_index.{index_name}"
        if ch in self._by_name:
            for _t, _e, _k, _ch, payload in iter_raw(self.path, channels=[ch], kinds=(fmt.FRAME,)):
                try:
                    return float(orjson.loads(payload)["params"]["data"]["price"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
        raise DeribitKitError(f"{self.path}: no {ch} frames in this recording (record that channel to pick "
                              "option strikes around the index)")

    def clock_ms(self) -> int:
        """The replay's clock: the receive time of the newest record played (realtime: running)."""
        if self.speed is not None and self._base is not None and self._state == "open":
            try:
                now = asyncio.get_running_loop().time()
            except RuntimeError:
                now = time.monotonic()
            return int((self._t0 + (now - self._base) * self.speed * 1e9) // 1_000_000)
        return self._t_ns // 1_000_000

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Answer a JSON-RPC method from the recording (lookups, the replay's clock, replayed
        tickers and books); ``private/*`` is ``13021``."""
        p = params or {}
        if method.startswith("private/"):
            raise error_for_code(13021, data={"reason": "a replay has no account"}, method=method)
        answer = await self._answer(method, p)
        if answer is not UNANSWERED:
            return answer
        if method == "public/get_instruments":
            insts = self._list(str(p.get("currency", "any")), p.get("kind"), bool(p.get("expired", False)))
            return [msgspec.to_builtins(i) for i in insts]
        if method == "public/get_order_book":
            return self._order_book(instrument_name(p), p.get("depth"))
        if method == "public/ticker":
            name = instrument_name(p)
            if name in self._tickers:
                return self._tickers[name]
            why = f"no ticker of {name} replayed yet: subscribe ticker.{name}.100ms"
            raise error_for_code(13020, data={"param": "instrument_name", "reason": why}, method=method)
        if method == "public/get_last_trades_by_instrument":
            name = instrument_name(p)
            count = p.get("count", 10)
            kept = list(self._trades.get(name, ()))
            n = count if isinstance(count, int) and count > 0 else 10
            page = kept[-n:]
            if p.get("sorting", "desc") != "asc":
                page.reverse()
            return {"trades": page, "has_more": len(kept) > n}
        raise error_for_code(-32601, data={"reason": f"a replay answers {', '.join(ANSWERED)} and refuses private "
                                                     "methods"}, method=method)

    def _order_book(self, name: str, depth: Any) -> dict[str, Any]:
        snap = self.book_source(name) if self.book_source is not None else None
        if snap is None:
            raise error_for_code(13020, data={"param": "instrument_name",
                                              "reason": f"no live book of {name} in this replay: subscribe "
                                                        f"book.{name}.100ms (order_book(..., live=True))"},
                                 method="public/get_order_book")
        n = depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else None
        return order_book_reply(name, snap, n)

    def stats(self) -> dict[str, Any]:
        """State, epoch, position, frames and events played, checkpoints fed, corrupt and cut records, lag."""
        t = self.clock_ms()
        return {"state": self._state, "epoch": self._epoch, "path": str(self.path),
                "speed": "max" if self.speed is None else self.speed,
                "position": {"segment": self._seg_path.name if self._seg_path else None, "line": self._line_no,
                             "t_ms": t},
                "frames": self.frames, "events": self.events, "checkpoints_fed": self.checkpoints_fed,
                "skipped": self.skipped, "records": self.report.records, "corrupt": len(self.report.corrupt),
                "cut": len(self.report.cut), "lag_s": self.lag_s, "max_lag_s": self.max_lag_s,
                "subscribed": len(self.channels), "rtt_ms": None, "rate_limited": 0}

    async def close(self) -> None:
        """Stop playing and release the recording."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._state = "closed"
        self._sink = None
        self._done.set()

    def __repr__(self) -> str:
        speed = "max" if self.speed is None else f"{self.speed:g}x"
        return f"<Replay {self.path} {self._state} speed={speed} frames={self.frames}>"

    # ------------------------------------------------------------ playback
    def _autostart(self) -> None:
        if self._task is None and self._state == "open":
            self._start()

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def play(self) -> Replay:
        """Start playing (with ``autoplay=False``; else the first subscribe starts it). The broker
        this replay feeds first sends the subscribes it was asked for, so every consumer and book
        created before ``play()`` gets the recording from its start."""
        if self._state == "closed":
            raise DeribitKitError("the replay is closed")
        owner = getattr(self._sink, "__self__", None)  # the sink is the broker's bound method
        synced = getattr(owner, "synced", None)
        if callable(synced):
            await synced(10.0)
        if self._task is None:
            self._start()
        return self

    async def wait_done(self, timeout: float | None = None) -> ReadReport:
        """Wait until the replay reached its end; returns its :class:`ReadReport` (raises the
        :class:`~deribit_kit.errors.RecordingError` that stopped it, if one did)."""
        await asyncio.wait_for(self._done.wait(), timeout)
        if self.error is not None:
            raise self.error
        return self.report

    @property
    def done(self) -> bool:
        """True once the replay reached its end (or was closed)."""
        return self._done.is_set()

    def _first_epoch(self) -> int:
        for path in segment_paths(self.path)[:1]:
            for lines in segment_chunks(path, None):
                for line in lines[:1]:
                    try:
                        return int(line[fmt.E_SLICE])
                    except ValueError:
                        return 0
        return 0

    def _plan(self) -> list[Path]:
        paths = segment_paths(self.path)
        if self.start_ns is None:
            return paths
        starts = {s.get("name"): s.get("start_ns") for s in self.manifest.get("segments") or []
                  if isinstance(s, dict)}
        first = 0
        for i, p in enumerate(paths):
            st = starts.get(p.name)
            if st is None:  # a segment the manifest does not list (written after its last update)
                st = _first_t(p)
            if isinstance(st, int) and st <= self.start_ns:
                first = i
        return paths[first:]

    async def _pause_point(self) -> None:
        self._batch += 1
        while self._pause is not None:
            await asyncio.shield(self._pause)

    async def _run(self) -> None:
        try:
            await self._play()
        except RecordingError as exc:  # a segment of an unknown schema version
            self.error = exc
            log.error("replay of %s stopped: %s", self.path, exc)
        finally:
            if self._state == "open":
                self._state = "ended"
            if self.report.corrupt or self.report.cut:
                log.warning("replay of %s: %s", self.path, self.report.summary())
            self._done.set()
            self.ended.emit(self.report)

    async def _play(self) -> None:
        """The hot loop: each decompressed chunk is scanned in place (a newline, the kind byte, the
        channel at its fixed offset, one dict lookup); only frames somebody reads are sliced out and
        parsed. Kept in one frame, with locals, for speed."""
        loop = asyncio.get_running_loop()
        paths = self._plan()
        skip = 0
        if self.start_ns is not None and paths:
            skip = await self._seek(paths[0], self.start_ns)
        loads = orjson.loads
        routes = self._routes
        report = self.report
        end_ns = self.end_ns
        speed = self.speed
        batch = self.batch
        pace = speed is not None
        timed = pace or end_ns is not None
        inv = 1.0 / (speed * 1e9) if speed is not None else 0.0
        n = 0
        sent = 0  # frames given to the sink since the last yield (counted in self.frames at each one)
        for path in paths:
            self._seg_path = path
            seg = path.name
            line_no = -1
            for buf, pos, size in segment_buffers(path, report):
                find = buf.find
                first = pos
                while pos < size:
                    eol = find(b"\n", pos)
                    line_no += 1
                    if skip:
                        skip -= 1
                        pos = eol + 1
                        continue
                    if timed:
                        try:
                            t = int(buf[pos + 5:pos + 24])
                        except ValueError:
                            t = self._t_ns
                        if end_ns is not None and t > end_ns:
                            self._line_no = line_no
                            cut_records(report, seg, line_no)
                            self.frames += sent
                            return
                        if pace:
                            if self._base is None:
                                self._base, self._t0 = loop.time(), t
                            due = self._base + (t - self._t0) * inv
                            now = loop.time()
                            if due > now + 0.0005:
                                self._line_no = line_no
                                n = 0
                                if sent:
                                    self.frames += sent
                                    sent = 0
                                await asyncio.sleep(due - now)
                                await self._pause_point()
                            else:
                                lag = now - due
                                self.lag_s = lag
                                if lag > self.max_lag_s:
                                    self.max_lag_s = lag
                            self._t_ns = t
                    k = buf[pos + 39] if eol - pos > 52 else 0
                    if k == 100:  # a frame
                        c1 = find(b'"', pos + 52, eol)
                        r = routes.get(buf[pos + 52:c1])
                        if r is None:
                            self.skipped += 1
                            pos = eol + 1
                            continue
                        frame = buf[c1 + 6:eol - 1]
                        try:
                            data = loads(frame)["params"]["data"]
                        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                            self._corrupt(seg, line_no, f"{r.name}: frame is not a notification ({exc})",
                                          buf[pos:eol], r)
                            pos = eol + 1
                            continue
                        kind = r.kind
                        if kind == BOOK:
                            if type(data) is dict:
                                if data.get("type") == "snapshot":
                                    r.synced = True
                                    r.cid = data.get("change_id")
                                    r.snap_batch = self._batch
                                elif r.synced:
                                    cid = data.get("change_id")
                                    if data.get("prev_change_id") == r.cid:
                                        r.cid = cid
                                    elif r.cid is not None and cid is not None and cid > r.cid:
                                        r.synced = False  # a gap: the next snapshot or checkpoint serves it
                        elif kind == TICKER:
                            if type(data) is dict and r.instrument:
                                self._tickers[r.instrument] = data
                        elif kind == TRADES:
                            if r.instrument and type(data) is list:
                                q = self._trades.get(r.instrument)
                                if q is None:
                                    q = self._trades[r.instrument] = deque(maxlen=TRADES_KEPT)
                                q.extend(data)
                        elif kind == INDEX and type(data) is dict and r.instrument:
                            price = data.get("price")
                            if isinstance(price, int | float):
                                self._index[r.instrument] = float(price)
                        if r.sub:
                            sink = self._sink
                            if sink is not None:
                                sink(r.name, data, frame)
                                sent += 1
                    elif k == 99:  # a checkpoint
                        c1 = find(b'"', pos + 44, eol)
                        r = routes.get(buf[pos + 44:c1])
                        if r is not None and r.sub and r.kind == BOOK and not r.synced:
                            frame = buf[c1 + 6:eol - 1]
                            try:
                                data = loads(frame)["params"]["data"]
                            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                                self._corrupt(seg, line_no, f"{r.name}: checkpoint is not a notification ({exc})",
                                              buf[pos:eol], r)
                            else:
                                self._feed(r, data, frame)
                    elif k == 101:  # an event
                        self._event(seg, line_no, buf[pos:eol])
                    else:
                        self._other(seg, line_no, buf[pos:eol])
                    n += 1
                    if n >= batch:  # let the port and the consumers run (also when realtime falls behind)
                        n = 0
                        self._line_no = line_no + 1
                        if sent:
                            self.frames += sent
                            sent = 0
                        if not pace:
                            try:
                                self._t_ns = int(buf[pos + 5:pos + 24])
                            except ValueError:
                                pass
                        await asyncio.sleep(0)
                        await self._pause_point()
                    pos = eol + 1
                if not pace and size > first:
                    last = buf.rfind(b"\n", first, size - 1) + 1 or first
                    try:
                        self._t_ns = max(self._t_ns, int(buf[last + 5:last + 24]))
                    except ValueError:
                        pass
            self._line_no = line_no + 1
            cut_records(report, seg, line_no + 1)
            if sent:
                self.frames += sent
                sent = 0

    def _feed(self, r: _Route, data: Any, frame: bytes) -> None:
        """Give a book a snapshot (a checkpoint, or a catch-up's first frame)."""
        r.synced = True
        r.cid = data.get("change_id") if type(data) is dict else None
        r.snap_batch = self._batch
        sink = self._sink
        if sink is not None:
            sink(r.name, data, frame)
            self.checkpoints_fed += 1

    def _corrupt(self, seg: str, line_no: int, reason: str, line: bytes, r: _Route | None) -> None:
        self.report.add_corrupt(seg, line_no, reason, line)
        log.warning("replay of %s: %s line %d skipped: %s", self.path, seg, line_no, reason)
        if r is not None and r.kind == BOOK and r.sub:  # its chain is broken: the next checkpoint serves it
            was = r.synced
            r.synced = False
            if was:
                self.interrupted.emit([r.name], True)

    def _event(self, seg: str, line_no: int, line: bytes) -> None:
        try:
            ev = orjson.loads(line)
            name = ev["ev"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self._corrupt(seg, line_no, f"event is not JSON ({exc})", line, None)
            return
        self.events += 1
        epoch = ev.get("e")
        if name == "disconnected":
            for route in self._by_name.values():
                if route.kind == BOOK:
                    route.synced = False
            self.disconnected.emit(str(ev.get("reason") or "recorded disconnect"))
        elif name == "connected":
            if isinstance(epoch, int):
                self._epoch = epoch
            self.connected.emit(self._epoch)
        elif name == "gap":
            hit = []
            for ch in ev.get("channels") or []:
                r = self._by_name.get(ch) if isinstance(ch, str) else None
                if r is not None and r.sub:
                    if r.kind == BOOK:
                        r.synced = False
                    hit.append(r.name)
            if hit:
                log.info("replay of %s: the recorder lost frames of %d channel(s) here (its gap marker)",
                         self.path, len(hit))
                self.interrupted.emit(hit, True)
        elif name == "segment":
            check_schema(ev.get("schema"), f"{self.path / seg}")

    def _other(self, seg: str, line_no: int, line: bytes) -> None:
        """A line not in the fixed layout: a record another writer laid out differently, or garbage."""
        try:
            _t, _e, kind, ch, payload = fmt.parse_line(line)
        except (ValueError, IndexError) as exc:
            self._corrupt(seg, line_no, str(exc) or "not a record", line, None)
            return
        if kind == fmt.EVENT:
            self._event(seg, line_no, payload)
            return
        r = self._by_name.get(ch)
        if r is None or not r.sub:
            return
        try:
            data = orjson.loads(payload)["params"]["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self._corrupt(seg, line_no, f"{ch}: not a notification ({exc})", line, r)
            return
        if kind == fmt.CHECKPOINT:
            if r.kind == BOOK and not r.synced:
                self._feed(r, data, payload)
            return
        sink = self._sink
        if sink is not None:
            sink(ch, data, payload)
            self.frames += 1

    async def _seek(self, path: Path, start_ns: int) -> int:
        """Feed each subscribed book as it was at ``start_ns``; returns the lines of ``path`` to skip."""
        books = [r.name for r in self._by_name.values() if r.sub and r.kind == BOOK]
        loop = asyncio.get_running_loop()
        feeds, line = await loop.run_in_executor(None, lambda: prefix_feeds(path, books, until_ns=start_ns))
        self._t_ns = start_ns
        self._seg_path = path
        self._line_no = line
        if self.speed is not None:
            self._base, self._t0 = loop.time(), start_ns
        self._emit_feeds(feeds)
        return line

    async def _catch_up(self, books: list[str]) -> None:
        """Books subscribed mid-stream: their state at the current position, fed now."""
        loop = asyncio.get_running_loop()
        self._pausers += 1
        if self._pause is None:
            self._pause = loop.create_future()
        try:
            path, upto = self._seg_path, self._line_no
            if path is None:
                return
            feeds, _ = await loop.run_in_executor(None, lambda: prefix_feeds(path, books, upto_line=upto))
            self._emit_feeds(feeds)
        finally:
            self._pausers -= 1
            if self._pausers == 0 and self._pause is not None:
                pause, self._pause = self._pause, None
                if not pause.done():
                    pause.set_result(None)

    def _emit_feeds(self, feeds: dict[str, list[bytes]]) -> None:
        for name, frames in feeds.items():
            r = self._by_name.get(name)
            if r is None or not r.sub:
                continue
            for i, frame in enumerate(frames):
                try:
                    data = orjson.loads(frame)["params"]["data"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    break
                if i == 0:
                    self._feed(r, data, frame)
                    continue
                r.cid = data.get("change_id")
                sink = self._sink
                if sink is not None:
                    sink(name, data, frame)
                    self.frames += 1


def _first_t(path: Path) -> int | None:
    """The receive time of the first record of a segment."""
    for buf, start, _end in segment_buffers(path, None):
        try:
            return int(buf[start + 5:start + 24])
        except ValueError:
            return None
    return None

