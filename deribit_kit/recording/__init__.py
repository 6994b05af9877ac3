"""Recordings on disk: the format, the reader and pandas helpers (pure: no I/O but files, no broker).

A recording is a folder::

    manifest.json                  what it holds (channels, instruments, time range, counts, segments)
    segment-000001.ndjson.zst      NDJSON records, one zstd frame per segment, decodable on its own
    segment-000002.ndjson.zst      ...

Each record is one line: a frame exactly as the exchange sent it (with its receive time in ns,
direction and the connection's epoch), an event of the kit (connected, disconnected, resync,
snapshot, gap, recorder_start/stop) or a checkpoint (a snapshot of a recorded book, every
``snapshot_interval`` and at the start of each segment): see :mod:`~deribit_kit.recording.format`.

Where a record arrives and leaves here: written by :class:`~deribit_kit.sinks.Recorder` through
:class:`~deribit_kit.recording.writer.SegmentWriter`; read back by :func:`read` (typed
:class:`Record` values, ``data`` parsed on demand) or :func:`iter_raw` (tuples, nothing parsed);
replayed through a broker by :class:`deribit_kit.upstream.replay.Replay`; folded into pandas by
:func:`book_tops`, :func:`trades` and :func:`tickers`.

This package imports only ``wire``, ``errors``, ``models`` and ``events`` of the kit.
"""

from .format import CHECKPOINT, EVENT, FRAME, SCHEMA_VERSION
from .manifest import load as read_manifest
from .reader import CorruptRecord, CutSegment, ReadReport, Record, iter_raw, read, scan, segment_paths, to_ns
from .research import book_tops, tickers, trades

__all__ = [
    "CHECKPOINT",
    "EVENT",
    "FRAME",
    "SCHEMA_VERSION",
    "CorruptRecord",
    "CutSegment",
    "ReadReport",
    "Record",
    "book_tops",
    "iter_raw",
    "read",
    "read_manifest",
    "scan",
    "segment_paths",
    "tickers",
    "to_ns",
    "trades",
]
