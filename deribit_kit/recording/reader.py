"""Reading a recording: segments decompressed in chunks, records sliced without parsing.

Where a record arrives: :func:`segment_chunks` decompresses one segment (zstd's streaming
decoder, ~1 MB at a time) and yields lists of whole lines; :func:`iter_raw` slices each line into
``(t_ns, epoch, kind, channel, payload)`` (:func:`~deribit_kit.recording.format.parse_line`: no JSON
parse); :func:`read` wraps them as :class:`Record` objects whose ``data`` is parsed on demand. The
replay (:mod:`deribit_kit.upstream.replay`) runs its own loop over :func:`segment_chunks` with the
same fixed offsets; :func:`prefix_feeds` is its seek: the newest checkpoint or snapshot of each
book before a point, and the changes after it.

Bad input is reported, never fatal: a segment cut mid-write (the recorder was killed) yields up to
its last complete record and :class:`ReadReport` says where it stopped; a line that is not a record
is counted, reported and skipped; corrupt compressed bytes end that segment (reported) and reading
goes on with the next. An unknown schema version is refused (:class:`~deribit_kit.errors.RecordingError`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zstandard

from ..errors import RecordingError
from . import manifest as _manifest
from .format import CH_AT as _CH_AT
from .format import (
    CK_AT,
    EVENT,
    F_KEY,
    FRAME,
    K_CHECKPOINT,
    K_EVENT,
    K_FRAME,
    KIND_AT,
    KINDS,
    T_SLICE,
    parse_line,
)
from .writer import SEGMENT_GLOB

__all__ = ["CorruptRecord", "CutSegment", "ReadReport", "Record", "iter_raw", "prefix_feeds", "read",
           "scan", "segment_buffers", "segment_chunks", "segment_paths", "to_ns"]

CHUNK = 1 << 15  # compressed bytes read at a time (~200 kB decompressed: the scan stays in the cache)


@dataclass(slots=True)
class CorruptRecord:
    """A line that is not a record (or a frame that is not JSON): skipped."""

    segment: str
    line: int
    reason: str
    text: bytes = b""


@dataclass(slots=True)
class CutSegment:
    """A segment that ends early: its last ``partial`` bytes were not a complete record, or its
    compressed data stopped (the recorder was killed) or was corrupt."""

    segment: str
    records: int  # complete lines read from it
    at_byte: int  # uncompressed offset where reading stopped
    partial: int  # bytes of the incomplete record left out
    reason: str
    last_t_ns: int | None = None  # receive time of the last complete record

    def __str__(self) -> str:
        when = ""
        if self.last_t_ns is not None:
            when = f", last record at {_dt.datetime.fromtimestamp(self.last_t_ns / 1e9, _dt.UTC).isoformat()}"
        return (f"{self.segment}: {self.reason}; read up to the last complete record ({self.records} records, "
                f"{self.at_byte} bytes{when}; {self.partial} bytes of an incomplete record left out)")


@dataclass
class ReadReport:
    """What reading a recording met: segments, records, corrupt records and cut segments."""

    directory: str = ""
    segments: list[str] = field(default_factory=list)
    records: int = 0
    corrupt: list[CorruptRecord] = field(default_factory=list)
    cut: list[CutSegment] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no record was corrupt and no segment was cut."""
        return not self.corrupt and not self.cut

    def add_corrupt(self, segment: str, line: int, reason: str, text: bytes = b"") -> None:
        """Note a corrupt record (its segment, line, why, and the first 120 bytes)."""
        self.corrupt.append(CorruptRecord(segment, line, reason, bytes(text[:120])))

    def summary(self) -> str:
        """One line for a person: segments, records, and where the corrupt records and cut segments are."""
        parts = [f"{len(self.segments)} segment(s), {self.records} records"]
        if self.corrupt:
            where = ", ".join(f"{c.segment} line {c.line}" for c in self.corrupt[:5])
            more = ", ..." if len(self.corrupt) > 5 else ""
            parts.append(f"{len(self.corrupt)} corrupt record(s) skipped ({where}{more})")
        parts += [f"cut: {c}" for c in self.cut]
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.summary()


def segment_paths(directory: str | Path) -> list[Path]:
    """The segment files of a recording, in order."""
    return sorted(Path(directory).glob(SEGMENT_GLOB))


def segment_buffers(path: Path, report: ReadReport | None = None) -> Iterator[tuple[bytes, int, int]]:
    """One segment decompressed a chunk at a time, as ``(buf, start, end)``: ``buf[start:end]`` is
    whole lines, each ending with a newline (the replay's hot loop scans them in place, nothing
    copied; a line split across two chunks comes as its own small buffer).

    A segment that stops mid-frame or mid-record ends with what decoded; ``report`` gets a
    :class:`CutSegment` saying where (its ``records`` are counted by the caller, which reads the
    lines: :func:`cut_records`; nothing here counts lines, which would cost a pass over the bytes).
    """
    name = path.name
    if report is not None:
        report.segments.append(name)
    offset = 0  # uncompressed bytes in complete lines
    pending = b""  # the start of a line the next chunk ends
    last = b""
    reason = ""
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below; a generator)
    except OSError as exc:
        if report is not None:
            report.cut.append(CutSegment(name, 0, 0, 0, f"unreadable ({exc})"))
        return
    try:
        while True:
            comp = fh.read(CHUNK)
            if not comp:
                if not dobj.eof:
                    reason = "the compressed stream stops before its end (the recorder was stopped abruptly)"
                break
            try:
                data = dobj.decompress(comp)
                while dobj.eof and dobj.unused_data:  # another zstd frame follows (concatenated files)
                    rest = dobj.unused_data
                    dobj = zstandard.ZstdDecompressor().decompressobj()
                    data += dobj.decompress(rest)
            except zstandard.ZstdError as exc:
                reason = f"corrupt compressed data ({exc})"
                break
            if not data:
                continue
            start = 0
            if pending:  # finish the line the previous chunk began
                nl = data.find(b"\n")
                if nl < 0:
                    pending += data
                    continue
                head = pending + data[:nl + 1]
                pending = b""
                start = nl + 1
                offset += len(head)
                last = head
                yield head, 0, len(head)
            cut = data.rfind(b"\n") + 1
            if cut <= start:
                pending = data[start:]
                continue
            pending = data[cut:]
            offset += cut - start
            last = data[data.rfind(b"\n", start, cut - 1) + 1:cut]
            yield data, start, cut
    finally:
        fh.close()
    if (pending or reason) and report is not None:
        last_t: int | None
        try:
            last_t = int(last[T_SLICE]) if last else None
        except ValueError:
            last_t = None
        why = reason or "the segment ends inside a record"
        report.cut.append(CutSegment(name, -1, offset, len(pending), why, last_t))


def cut_records(report: ReadReport | None, segment: str, lines: int) -> None:
    """Tell ``report`` how many lines were read from ``segment`` (all of them count as records)."""
    if report is None:
        return
    report.records += lines
    for c in report.cut:
        if c.segment == segment and c.records < 0:
            c.records = lines


def segment_chunks(path: Path, report: ReadReport | None = None) -> Iterator[list[bytes]]:
    """The whole lines of one segment (without their newlines), a decompressed chunk at a time
    (:func:`segment_buffers`, split)."""
    n = 0
    try:
        for buf, start, end in segment_buffers(path, report):
            lines = buf[start:end - 1].split(b"\n")
            n += len(lines)
            yield lines
    finally:
        cut_records(report, path.name, n)


@dataclass(slots=True)
class Record:
    """One record: a ``frame`` (what the exchange sent), an ``event`` (connected, disconnected,
    resync, snapshot, gap, recorder_start, ...) or a ``checkpoint`` (a book's snapshot).

    ``raw`` is the frame's text as received (frames, checkpoints) or the record line (events);
    ``data`` parses it on demand: the notification's ``params.data``, or the event's fields.
    """

    t_ns: int
    epoch: int
    kind: str
    channel: str  # frames and checkpoints: the channel; events: the event's name
    raw: bytes

    @property
    def name(self) -> str:
        """The event's name (``connected``, ``gap``, ...); the channel for frames and checkpoints."""
        return self.channel

    @property
    def time(self) -> _dt.datetime:
        """The receive time (UTC)."""
        return _dt.datetime.fromtimestamp(self.t_ns / 1e9, _dt.UTC)

    @property
    def frame(self) -> Any:
        """The whole frame, parsed (frames and checkpoints)."""
        return orjson.loads(self.raw)

    @property
    def data(self) -> Any:
        """``params.data`` of a frame or checkpoint; the fields of an event."""
        obj = orjson.loads(self.raw)
        if self.kind == EVENT:
            return obj
        params = obj.get("params") if isinstance(obj, dict) else None
        return params.get("data") if isinstance(params, dict) else None


def to_ns(value: Any) -> int | None:
    """A time as ns since the epoch: ``None``, an int (ns), a float (s), a ``datetime`` (naive =
    UTC), a ``pandas.Timestamp`` or a string pandas parses (``"2026-01-05 12:00"``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a time, not a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value * 1e9)
    if isinstance(value, str):
        import pandas as pd

        ts = pd.Timestamp(value)
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        return int(ts.value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        if hasattr(value, "value"):  # pandas.Timestamp: exact ns
            return int(value.value)
        return int(value.timestamp() * 1_000_000) * 1000
    raise TypeError(f"cannot read {value!r} as a time")


def _segments_for(directory: Path, start_ns: int | None, manifest: dict[str, Any] | None) -> list[Path]:
    """The segments to read from ``start_ns`` on: the last one starting at or before it, and after."""
    paths = segment_paths(directory)
    if start_ns is None or manifest is None:
        return paths
    starts = {s.get("name"): s.get("start_ns") for s in manifest.get("segments", []) if isinstance(s, dict)}
    first = 0
    for i, p in enumerate(paths):
        st = starts.get(p.name)
        if isinstance(st, int) and st <= start_ns:
            first = i
    return paths[first:]


def check_recording(directory: str | Path) -> dict[str, Any]:
    """The recording's manifest (schema checked); a clear error for a folder without one."""
    d = Path(directory)
    if not d.is_dir():
        raise RecordingError(f"{directory}: no such recording folder")
    return _manifest.load(d)


def iter_raw(directory: str | Path, *, start: Any = None, end: Any = None, channels: Iterable[str] | None = None,
             kinds: Iterable[str] | None = None, report: ReadReport | None = None
             ) -> Iterator[tuple[int, int, str, str, bytes]]:
    """``(t_ns, epoch, kind, channel_or_event, payload)`` for every record, nothing parsed.

    ``start``/``end`` bound the receive time (see :func:`to_ns`); ``channels`` keeps frames and
    checkpoints of those channels (events always pass); ``kinds`` keeps ``frame``, ``event`` or
    ``checkpoint`` records. Problems go to ``report`` (a :class:`ReadReport`).
    """
    d = Path(directory)
    manifest = check_recording(d)
    rep = report if report is not None else ReadReport(str(d))
    rep.directory = str(d)
    lo, hi = to_ns(start), to_ns(end)
    want = None if channels is None else set(channels)
    kind_set = set(KINDS if kinds is None else kinds)
    unknown = kind_set - set(KINDS)
    if unknown:
        raise ValueError(f"unknown record kinds {sorted(unknown)}: use {list(KINDS)}")
    for path in _segments_for(d, lo, manifest):
        line_no = -1
        for lines in segment_chunks(path, rep):
            for line in lines:
                line_no += 1
                try:
                    rec = parse_line(line)
                except (ValueError, IndexError) as exc:
                    rep.add_corrupt(path.name, line_no, str(exc) or "not a record", line)
                    continue
                t, _e, kind, ch, _payload = rec
                if hi is not None and t > hi:
                    return
                if lo is not None and t < lo:
                    continue
                if kind == EVENT:
                    if ch == "segment":
                        _check_segment(rec, path)
                    if EVENT in kind_set:
                        yield rec
                    continue
                if kind not in kind_set or (want is not None and ch not in want):
                    continue
                yield rec


def _check_segment(rec: tuple[int, int, str, str, bytes], path: Path) -> None:
    try:
        fields = orjson.loads(rec[4])
    except orjson.JSONDecodeError:
        return
    _manifest.check_schema(fields.get("schema"), str(path))


def read(directory: str | Path, *, start: Any = None, end: Any = None, channels: Iterable[str] | None = None,
         kinds: Iterable[str] | None = None, report: ReadReport | None = None) -> Iterator[Record]:
    """Iterate the records of the recording in ``directory`` (see :func:`iter_raw` for the filters)::

        for rec in recording.read("rec/", channels=["trades.BTC-PERPETUAL.100ms"]):
            print(rec.time, rec.data)
    """
    for t, e, kind, ch, payload in iter_raw(directory, start=start, end=end, channels=channels, kinds=kinds,
                                            report=report):
        yield Record(t, e, kind, ch, payload)


def scan(directory: str | Path, report: ReadReport | None = None) -> dict[str, Any]:
    """Channels, frames per channel and the time range, from the segments themselves (for a
    recording whose recorder was killed before its last manifest)."""
    counts: dict[str, int] = {}
    first = last = None
    for t, _e, _kind, ch, _p in iter_raw(directory, kinds=(FRAME,), report=report):
        counts[ch] = counts.get(ch, 0) + 1
        if first is None:
            first = t
        last = t
    return {"channels": sorted(counts), "counts": counts, "start_ns": first, "end_ns": last}


def prefix_feeds(path: Path, channels: Iterable[str], *, upto_line: int | None = None, until_ns: int | None = None
                 ) -> tuple[dict[str, list[bytes]], int]:
    """What makes each book of ``channels`` what it was at a point of segment ``path``: its newest
    checkpoint or snapshot before the point and the chained changes after it (the frames' bytes).

    The point is line ``upto_line`` (the lines before it count) or the first record received at or
    after ``until_ns``. A book whose chain broke after its last snapshot (a gap, a disconnect) gets
    nothing: it waits for the next checkpoint or snapshot. Returns the feeds and the line number
    where the point is.
    """
    want = {c.encode(): c for c in channels}
    feeds: dict[str, list[bytes] | None] = {}
    cids: dict[str, Any] = {}
    line_no = -1
    stop = None
    for lines in segment_chunks(path, None):
        for line in lines:
            line_no += 1
            if upto_line is not None and line_no >= upto_line:
                stop = line_no
                break
            if until_ns is not None:
                try:
                    if int(line[T_SLICE]) >= until_ns:
                        stop = line_no
                        break
                except ValueError:
                    continue
            if len(line) <= _CH_AT:
                continue
            k = line[KIND_AT]
            if k == K_EVENT:
                _prefix_event(line, feeds, want)
                continue
            if k != K_FRAME and k != K_CHECKPOINT:
                continue
            at = _CH_AT if k == K_FRAME else CK_AT
            end = line.find(b'"', at)
            name = want.get(line[at:end])
            if name is None or line[end:end + 6] != F_KEY:
                continue
            frame = line[end + 6:-1]
            try:
                data = orjson.loads(frame)["params"]["data"]
                typ, cid = data["type"], data["change_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                feeds[name] = None
                continue
            if k == K_CHECKPOINT or typ == "snapshot":
                feeds[name] = [frame]
                cids[name] = cid
                continue
            feed = feeds.get(name)
            if feed is None:
                continue
            last = cids.get(name)
            if data.get("prev_change_id") == last:
                feed.append(frame)
                cids[name] = cid
            elif last is None or cid > last:  # a gap: nothing until the next snapshot
                feeds[name] = None
        if stop is not None:
            break
    return {k: v for k, v in feeds.items() if v}, (line_no + 1 if stop is None else stop)


def _prefix_event(line: bytes, feeds: dict[str, list[bytes] | None], want: dict[bytes, str]) -> None:
    if b'"ev":"disconnected"' in line[:60]:
        for name in feeds:
            feeds[name] = None
    elif b'"ev":"gap"' in line[:60]:
        try:
            fields = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        for ch in fields.get("channels") or []:
            if isinstance(ch, str) and ch in feeds:
                feeds[ch] = None
