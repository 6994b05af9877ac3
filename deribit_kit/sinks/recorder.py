"""``Recorder``: a broker consumer that writes every frame it is given to a recording on disk.

    rec = await Recorder(dk.broker, "rec/", channels=["book.BTC-PERPETUAL.100ms"], books="ETH").start()
    ...
    manifest = await rec.stop()

Where a frame arrives: the broker calls :meth:`Recorder._on_item` (a callback consumer, so once
per frame, synchronously, right after the broker folded it into its live book). The callback only
encodes one line (:mod:`deribit_kit.recording.format`: the frame's raw text as received, its
receive time in ns, the direction and the upstream's epoch) and appends it to an in-memory buffer:
it never waits for the disk, so it never slows the feed. The writer task hands the buffer, about
once a second, to one worker thread that compresses and writes it
(:class:`~deribit_kit.recording.writer.SegmentWriter`: one zstd block per write, so what is on disk
always decodes); that is where a record leaves.

* **events**: the upstream's ``connected``/``disconnected``, the broker's ``resyncing`` and each
  book ``snapshot`` are written as event records, so a replay goes through what the books went
  through, gaps included.
* **checkpoints**: every ``snapshot_interval`` s, at the start of each segment and when a book
  channel joins, a snapshot of every recorded live book (from the broker's
  :class:`~deribit_kit.live.LiveBook`) goes into the stream: a replay can start anywhere.
* **falling behind**: when more than ``max_buffer`` bytes wait for the disk, frames are dropped and
  counted per channel; once the buffer is under half of it, a ``gap`` event names what was lost
  and a checkpoint of each affected book follows (the replayed books resync there), with a
  warning in the log. Nothing is dropped silently.
* **option chains** (``books="BTC"``): the book channel of every instrument of the currency and
  kind, re-listed every ``chain_refresh`` s: new expiries join, expired ones leave.
* **a failing disk** (``ENOSPC``, any ``OSError``): the recorder stops at once with a
  :class:`~deribit_kit.errors.RecorderError` (``recorder.error``, and :meth:`run`/:meth:`stop`
  raise it); the segment is closed as far as the disk allows and what was written stays readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from ..broker.broker import Broker
from ..broker.consumer import Consumer, Item, Notification
from ..errors import DeribitKitError, RecorderError
from ..live.chain import OptionChain
from ..recording import manifest as _manifest
from ..recording.format import SCHEMA_VERSION, checkpoint_line, event_line, notification_frame
from ..recording.writer import SEGMENT_GLOB, SegmentWriter, segment_header
from ..wire.channels import ChannelError, parse_channel
from ._chain import (
    KINDS,
    BrokerEvents,
    ChainChannels,
    HeldBooks,
    check_kind,
    checked_channels,
    consumer_channels,
    sink_broker,
)

__all__ = ["Recorder"]

log = logging.getLogger("deribit_kit.sinks.recorder")



class Recorder:
    """Records broker channels (and whole currencies' books) to ``out``; see the module docs.

    ``broker`` is a :class:`~deribit_kit.broker.Broker` (or anything with a ``.broker``: the
    facade). ``opener(path)`` opens a segment file for writing (default: ``open(path, "xb")``).
    """

    def __init__(self, broker: Broker | Any, out: str | os.PathLike[str], *, channels: Iterable[str] = (),
                 books: str | Iterable[str] | None = None, kind: str = "future", book_interval: str = "100ms",
                 segment_seconds: float = 300.0, segment_bytes: int = 64 << 20, snapshot_interval: float = 60.0,
                 flush_interval: float = 1.0, max_buffer: int = 64 << 20, level: int = 3,
                 chain_refresh: float = 60.0, opener: Callable[[Path], IO[bytes]] | None = None,
                 name: str = "recorder") -> None:
        broker = sink_broker(broker, "Recorder")
        self.broker = broker
        self.directory = Path(out)
        self.requested = checked_channels(channels)
        self.currencies = [books] if isinstance(books, str) else list(books or [])
        check_kind(kind)
        self.kind = kind
        self.book_interval = book_interval
        self.segment_seconds = segment_seconds
        self.segment_bytes = segment_bytes
        self.snapshot_interval = snapshot_interval
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.chain_refresh = chain_refresh
        self.name = name
        self._writer = SegmentWriter(self.directory, level=level, opener=opener, kit_version=_manifest.kit_version())
        # counts
        self.frames = 0
        self.counts: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.checkpoints = 0
        self.dropped: dict[str, int] = {}
        self.gaps: list[dict[str, Any]] = []
        self.reminified = 0  # frames with a newline inside, written minified
        self.encoded = 0  # frames without raw text, encoded by the recorder
        self.error: RecorderError | None = None
        self.ended = "new"
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.instruments: dict[str, dict[str, Any]] = {}
        self.segments: list[dict[str, Any]] = []
        # the buffer (the callback appends; the writer task takes)
        self._lines: list[bytes] = []
        self._pending = 0  # bytes appended and not yet on disk
        self._kick = max(64 << 10, min(8 << 20, max_buffer // 4))  # wake the writer early past this
        self._overflow = False
        self._lost: dict[str, int] = {}
        self._overflow_since = 0
        # per channel
        self._prefix: dict[str, bytes] = {}
        self._held = HeldBooks(broker)
        self._books = self._held.books  # the held book channels (the hot path asks)
        self._missing: set[str] = set()
        self._epoch = 0
        self._ep = b""
        self._seg_start = 0
        self._seg_bytes = 0
        self._seg_lines = 0
        self._last_ck = 0
        self._manifest_at = 0.0
        self._manifest_dirty = True
        # plumbing
        self._consumer: Consumer | None = None
        self._chains: list[OptionChain] = []
        self._chain_consumers: list[Consumer] = []
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._started = False
        self._stopping = False
        self._events = BrokerEvents(broker, self._on_connected, self._on_disconnected, self._on_resyncing)

    # ------------------------------------------------------------ the hot path
    def _on_item(self, n: Item) -> None:
        """One frame from the broker: encode one line and append it (never waits)."""
        if type(n) is not Notification:
            return
        ch = n.channel
        if self._overflow:
            self._lost[ch] = self._lost.get(ch, 0) + 1
            return
        got = n.raw
        if got is None:
            raw = notification_frame(ch, n.data)
            self.encoded += 1
        elif isinstance(got, str):
            raw = got.encode()
        else:
            raw = got
        if b"\n" in raw:  # one record per line: a pretty-printed frame is written minified (and counted)
            raw = orjson.dumps(orjson.loads(raw))
            self.reminified += 1
        pre = self._prefix.get(ch)
        if pre is None:
            pre = self._new_channel(ch)
        t = time.time_ns()
        line = b"".join((b'{"t":%19d' % t, self._ep, pre, raw, b"}\n"))
        self._lines.append(line)
        self.end_ns = t
        self.frames += 1
        self.counts[ch] += 1
        size = self._pending = self._pending + len(line)
        if ch in self._books:
            data = n.data
            if type(data) is dict and data.get("type") == "snapshot":
                self._event("snapshot", ch=ch, change_id=data.get("change_id"))
        if size > self.max_buffer:
            self._start_overflow()
        if size >= self._kick:
            self._wake.set()

    def _new_channel(self, ch: str) -> bytes:
        pre = self._prefix[ch] = f'"d":"i","ch":"{ch}","f":'.encode()
        if '"' in ch or "\\" in ch:
            pre = self._prefix[ch] = b'"d":"i","ch":' + orjson.dumps(ch) + b',"f":'
        self.counts.setdefault(ch, 0)
        self._manifest_dirty = True
        try:
            inst = parse_channel(ch).instrument
        except ChannelError:
            inst = None
        if inst and inst not in self.instruments:
            known = self.broker.upstream.cached_instrument(inst)
            if known is not None:
                self.instruments[inst] = msgspec.to_builtins(known)
            else:
                self._missing.add(inst)
        return pre

    def _event(self, name: str, *, epoch: int | None = None, **fields: Any) -> None:
        t = time.time_ns()
        line = event_line(t, self._epoch if epoch is None else epoch, name, **fields)
        self._lines.append(line)
        self._pending += len(line)
        self.events[name] = self.events.get(name, 0) + 1
        self.end_ns = t

    def _start_overflow(self) -> None:
        self._overflow = True
        self._overflow_since = time.time_ns()
        log.warning("recorder %s is behind: %d bytes wait for the disk (max_buffer %d); dropping frames until it "
                    "catches up (a gap marker and checkpoints will follow)", self.name, self._pending, self.max_buffer)

    # ------------------------------------------------------------ events of the upstream and the broker
    def _on_connected(self, epoch: Any = None) -> None:
        if isinstance(epoch, int):
            self._set_epoch(epoch)
        self._event("connected")

    def _on_disconnected(self, reason: Any = "") -> None:
        self._event("disconnected", reason=str(reason))

    def _on_resyncing(self, channel: str) -> None:
        if channel in self.counts:
            self._event("resync", ch=channel)

    def _set_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        self._ep = b',"e":%8d,' % epoch

    # ------------------------------------------------------------ books: holds and checkpoints
    def _hold(self, channels: Iterable[str]) -> None:
        """Hold the broker's live book of each book channel (checkpoints are built from it)."""
        for ch in self._held.hold(channels):
            if self._held.live(ch) is not None:  # the broker had it live: its snapshot went by before us
                self._checkpoint([ch])

    def _joined(self, channels: list[str]) -> None:
        self._manifest_dirty = True

    def _checkpoint_lines(self, channels: Iterable[str], t: int) -> list[bytes]:
        """A checkpoint line for each live book of ``channels``, as the books are now."""
        out = []
        for ch in channels:
            live = self._held.live(ch)
            if live is None:
                continue
            data = live.snapshot()
            if data is None:
                continue
            if ch not in self._prefix:
                self._new_channel(ch)
            out.append(checkpoint_line(t, self._epoch, ch, notification_frame(ch, data)))
        self.checkpoints += len(out)
        return out

    def _checkpoint(self, channels: Iterable[str]) -> None:
        """Append a checkpoint of each live book of ``channels`` to the stream."""
        t = time.time_ns()
        out = self._checkpoint_lines(channels, t)
        if out:
            seg = self.segments[-1] if self.segments else None
            if seg is not None:
                seg["checkpoints"].append([t, self._seg_lines + len(self._lines)])
            self._lines += out
            self._pending += sum(map(len, out))
            self.end_ns = t

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> Recorder:
        """Open the recording and join the channels; returns once the upstream answered."""
        if self._started:
            return self
        self._started = True
        d = self.directory
        if d.exists() and ((d / _manifest.MANIFEST).exists() or any(d.glob(SEGMENT_GLOB))):
            raise RecorderError(f"{d} already holds a recording: record into a new folder")
        d.mkdir(parents=True, exist_ok=True)
        up = self.broker.upstream
        self._set_epoch(int(up.epoch))
        now = time.time_ns()
        self.start_ns = self._seg_start = self._last_ck = now
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="deribit-kit-recorder")
        self.ended = "running"
        try:
            self._writer.open(1, self._new_segment(now))
            _manifest.write_atomic(d, self.manifest())  # a reader knows the folder from now on
        except OSError as exc:
            raise RecorderError(f"cannot record into {d}: {exc}") from exc
        self._event("recorder_start", schema=SCHEMA_VERSION, source=up.name, upstream_state=up.state,
                    channels=self.requested, books=self.currencies, kind=self.kind, kit=self._writer.kit_version)
        self._events.hook()
        attach = getattr(self.broker, "attach", None)  # listed on the broker's metrics and ops page
        if attach is not None:
            attach(self.name, self)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        try:
            if self.requested:
                self._hold(self.requested)
                self._consumer = self.broker.consumer(self.requested, "drop_oldest", 1, callback=self._on_item,
                                                      name=f"{self.name}:channels")
                await self._consumer.start()
                missing = sorted(set(self.requested) - set(self._consumer.accepted))
                if missing:
                    log.warning("recorder %s: the upstream refused %s", self.name, ", ".join(missing))
                    self._held.release(missing)
                self._joined(self._consumer.accepted)
            for currency in self.currencies:
                for kind in (KINDS if self.kind == "any" else (self.kind,)):
                    await self._add_chain(currency, kind)
            if self.currencies and self.chain_refresh > 0:
                self._refresh_task = loop.create_task(self._refresh_loop())
        except BaseException:
            await self.stop("failed to start")
            raise
        self._manifest_dirty = True
        self._wake.set()
        return self

    async def _add_chain(self, currency: str, kind: str) -> None:
        cons = self.broker.consumer([], "drop_oldest", 1, callback=self._on_item,
                                    name=f"{self.name}:{currency}-{kind}")
        await cons.start()
        self._chain_consumers.append(cons)
        chain = OptionChain(self.broker.upstream, currency, None, kind, None,
                            f"book.{{name}}.{self.book_interval}", ChainChannels(cons, self._hold, self._joined,
                                                                                self._held.release))
        self._chains.append(chain)
        added, _ = await chain.refresh()
        log.info("recorder %s: %d %s %s book channel(s)", self.name, len(added), currency, kind)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.chain_refresh)
            for chain in list(self._chains):
                try:
                    added, removed = await chain.refresh()
                except DeribitKitError as exc:
                    log.warning("recorder %s: chain refresh failed: %s", self.name, exc)
                    continue
                if added or removed:
                    self._event("channels", added=added, removed=removed)
                    log.info("recorder %s: %s %s: %d joined, %d left", self.name, chain.currency, chain.kind,
                             len(added), len(removed))

    @property
    def channels(self) -> list[str]:
        """Every channel recorded now."""
        return consumer_channels(self._consumer, self._chain_consumers)

    async def run(self, seconds: float | None = None) -> dict[str, Any]:
        """Start (if needed), record for ``seconds`` (``None``: until cancelled or failed), then stop;
        returns the manifest (raises :class:`~deribit_kit.errors.RecorderError` if the disk failed)."""
        await self.start()
        try:
            await asyncio.wait_for(self._done.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            manifest = await self.stop("seconds" if seconds is not None else "stopped")
        return manifest

    async def wait_stopped(self, timeout: float | None = None) -> None:
        """Wait until the recorder stopped (by :meth:`stop` or a failure)."""
        await asyncio.wait_for(self._done.wait(), timeout)

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the recorder has stopped."""
        return self._started and not self._done.is_set()

    def _unhook(self) -> None:
        """Stop receiving: close the consumers, let go of the books, leave the events."""
        if self._consumer is not None:
            self._consumer.close_nowait()
        for c in self._chain_consumers:
            c.close_nowait()
        for chain in self._chains:
            if chain.on_close is not None:
                chain.on_close(chain)
        self._held.release_all()
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        if self._events.unhook():
            detach = getattr(self.broker, "detach", None)
            if detach is not None:
                detach(self.name, self)

    async def stop(self, reason: str = "stopped") -> dict[str, Any]:
        """Stop recording: write what is buffered, close the segment, write the final manifest.
        Returns the manifest; raises :class:`~deribit_kit.errors.RecorderError` if the disk failed."""
        if not self._started:
            raise RecorderError("the recorder was not started")
        if not self._stopping:
            self._stopping = True
            if self.error is None:
                self.ended = reason
            self._unhook()
            if self.error is None:
                self._event("recorder_stop", reason=reason, frames=self.frames, dropped=sum(self.dropped.values()))
            self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with contextlib.suppress(DeribitKitError):
            await self.broker.synced(5.0)
        if self.error is not None:
            raise self.error
        return self.manifest()

    async def __aenter__(self) -> Recorder:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ the writer task
    def _new_segment(self, t_ns: int) -> bytes:
        """Book-keep the next segment (on the loop); returns its first line for the writer."""
        index = len(self.segments) + 1
        first = segment_header(index, t_ns, self._epoch, self._writer.kit_version)
        self.segments.append({"name": f"segment-{index:06d}.ndjson.zst", "index": index, "start_ns": t_ns,
                              "end_ns": t_ns, "records": 1, "bytes": len(first), "compressed_bytes": 0,
                              "checkpoints": [], "closed": False})
        self._seg_start = t_ns
        self._seg_bytes = len(first)
        self._seg_lines = 1
        return first

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                    self._wake.clear()
                final = self._stopping
                await self._cycle(loop, final)
                if final or self.error is not None:
                    break
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            await self._fail(loop, exc)
        except Exception as exc:  # a bug here must still stop the recorder visibly
            log.exception("recorder %s failed", self.name)
            await self._fail(loop, exc)
        finally:
            self._done.set()

    async def _cycle(self, loop: asyncio.AbstractEventLoop, final: bool) -> None:
        """One write: the buffered lines (and a rotation, checkpoints, the manifest when due)."""
        assert self._pool is not None
        now = time.time_ns()
        if not final and now - self._last_ck >= self.snapshot_interval * 1e9:
            self._last_ck = now
            self._checkpoint(list(self._books))
        lines, self._lines = self._lines, []
        data = b"".join(lines)
        seg = self.segments[-1]
        self._seg_bytes += len(data)
        self._seg_lines += len(lines)
        seg["records"] = self._seg_lines
        seg["bytes"] = self._seg_bytes
        if self.end_ns is not None:
            seg["end_ns"] = self.end_ns
        rotate = not final and (now - self._seg_start >= self.segment_seconds * 1e9
                                or self._seg_bytes >= self.segment_bytes)
        head = first = b""
        n_head = 0
        if rotate:  # taken now, with the lines above: the next segment starts with every live book as it is
            self._last_ck = now
            ck = self._checkpoint_lines(list(self._books), now)
            first = self._new_segment(now)
            head, n_head = b"".join(ck), len(ck)
            new = self.segments[-1]
            if ck:
                new["checkpoints"].append([now, 1])
            self._seg_bytes += len(head)
            self._seg_lines += n_head
            new["records"], new["bytes"] = self._seg_lines, self._seg_bytes
        writer = self._writer

        def job() -> None:
            writer.write(data, len(lines))
            if final or rotate:
                writer.close()
            if rotate:
                writer.open(writer.index + 1, first)
                writer.write(head, n_head)

        try:
            await loop.run_in_executor(self._pool, job)
        except OSError as exc:
            self._pending -= len(data)
            await self._fail(loop, exc)
            return
        self._pending -= len(data)
        if final or rotate:
            seg["closed"] = True
            seg["compressed_bytes"] = _size(self.directory / seg["name"])
        if self._overflow and self._pending <= self.max_buffer // 2:
            self._end_overflow()
        await self._resolve_instruments()
        wall = time.monotonic()
        if final or rotate or (self._manifest_dirty and wall - self._manifest_at >= 5.0):
            self._manifest_dirty = False
            self._manifest_at = wall
            snapshot = self.manifest()
            try:
                await loop.run_in_executor(self._pool, _manifest.write_atomic, self.directory, snapshot)
            except OSError as exc:
                await self._fail(loop, exc)

    def _end_overflow(self) -> None:
        lost, self._lost = self._lost, {}
        self._overflow = False
        total = sum(lost.values())
        for ch, n in lost.items():
            self.dropped[ch] = self.dropped.get(ch, 0) + n
        gap = {"t_ns": time.time_ns(), "since_ns": self._overflow_since, "channels": sorted(lost), "dropped": lost}
        self.gaps.append(gap)
        self._event("gap", channels=sorted(lost), dropped=lost, since=self._overflow_since)
        self._checkpoint([ch for ch in lost if ch in self._held])
        self._manifest_dirty = True
        log.warning("recorder %s caught up: %d frame(s) of %d channel(s) were dropped; a gap marker and checkpoints "
                    "of the affected books are in the recording", self.name, total, len(lost))

    async def _resolve_instruments(self) -> None:
        if not self._missing:
            return
        missing, self._missing = self._missing, set()
        for name in missing:
            try:
                inst = await asyncio.wait_for(self.broker.upstream.instrument(name), 5.0)
            except Exception as exc:  # any source: a lookup that fails costs the manifest one entry, no more
                log.debug("recorder %s: no instrument data for %s (%s)", self.name, name, exc)
                continue
            self.instruments[name] = msgspec.to_builtins(inst)
            self._manifest_dirty = True

    async def _fail(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        """The disk failed: stop at once, close what can be closed, keep what was written."""
        if self.error is not None:
            return
        code = getattr(exc, "errno", None)
        what = "the disk is full" if code == errno.ENOSPC else f"writing failed ({exc})"
        seg = self.segments[-1]["name"] if self.segments else "?"
        self.error = RecorderError(f"recording to {self.directory} stopped: {what} while writing {seg}; "
                                   f"{self.frames} frames were recorded before, and what reached the disk stays "
                                   "readable")
        self.ended = f"error: {exc}"
        log.error("%s", self.error)
        self._lines = []
        self._unhook()
        pool = self._pool
        if pool is not None:
            try:
                await loop.run_in_executor(pool, self._writer.close)
            except OSError:
                await loop.run_in_executor(pool, self._writer.abandon)
            with contextlib.suppress(OSError):
                await loop.run_in_executor(pool, _manifest.write_atomic, self.directory, self.manifest())
        self._done.set()

    # ------------------------------------------------------------ what it holds
    def manifest(self) -> dict[str, Any]:
        """The manifest as it is now (written to ``manifest.json`` as the recording goes)."""
        chans = sorted(self.counts)
        return {
            "format": _manifest.FORMAT, "schema": SCHEMA_VERSION, "kit_version": self._writer.kit_version,
            "source": self.broker.upstream.name, "recorder": self.name,
            "requested": {"channels": self.requested, "books": self.currencies, "kind": self.kind},
            "channels": chans, "instruments": dict(sorted(self.instruments.items())),
            "start_ns": self.start_ns, "end_ns": self.end_ns, "frames": self.frames, "counts": dict(self.counts),
            "events": dict(self.events), "checkpoints": self.checkpoints,
            "segments": [dict(s) for s in self.segments], "gaps": list(self.gaps), "dropped": dict(self.dropped),
            "reminified": self.reminified, "encoded": self.encoded, "ended": self.ended,
        }

    def stats(self) -> dict[str, Any]:
        """Flat figures for the broker's metrics and the ops page: frames, pending bytes, drops,
        gaps, checkpoints, segments, how it ended."""
        return {"frames": self.frames, "channels": len(self.counts), "pending_bytes": self._pending,
                "overflow": self._overflow, "dropped": sum(self.dropped.values()) + sum(self._lost.values()),
                "gaps": len(self.gaps), "checkpoints": self.checkpoints, "segments": len(self.segments),
                "ended": self.ended, "error": str(self.error) if self.error else None}

    def __repr__(self) -> str:
        return (f"<Recorder {self.directory} {self.ended} frames={self.frames} channels={len(self.counts)} "
                f"segments={len(self.segments)}>")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
