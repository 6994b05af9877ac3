"""Segment files: zstd-compressed NDJSON, each segment one zstd frame, written block by block.

Where a record leaves for the disk: the recorder (:mod:`deribit_kit.sinks.recorder`) hands this
writer whole lines, already encoded (:mod:`deribit_kit.recording.format`), from a worker thread;
:meth:`SegmentWriter.write` compresses them and flushes a zstd *block*, so the bytes on disk always
decode up to the last write even if the process is killed; :meth:`SegmentWriter.close` ends the
frame. Segments are ``segment-000001.ndjson.zst``, ``segment-000002...``; each starts with a
``segment`` event line (the schema version), so every segment decodes on its own.

Nothing here decides when to rotate or what to write: the recorder does, on its event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import zstandard

from .format import SCHEMA_VERSION, event_line

__all__ = ["SEGMENT_GLOB", "SegmentWriter", "segment_header", "segment_name"]

SEGMENT_GLOB = "segment-*.ndjson.zst"
Opener = Callable[[Path], IO[bytes]]


def segment_name(index: int) -> str:
    """The file name of segment ``index`` (``segment-000001.ndjson.zst``)."""
    return f"segment-{index:06d}.ndjson.zst"


def segment_header(index: int, t_ns: int, epoch: int, kit_version: str) -> bytes:
    """The first line of every segment: a ``segment`` event with the schema version."""
    return event_line(t_ns, epoch, "segment", schema=SCHEMA_VERSION, index=index, kit=kit_version)


def _open(path: Path) -> IO[bytes]:
    return open(path, "xb")  # never overwrite a segment


class SegmentWriter:
    """Writes one segment at a time in ``directory``; not thread-safe (one worker thread uses it)."""

    def __init__(self, directory: Path, *, level: int = 3, opener: Opener | None = None, kit_version: str = "") -> None:
        self.directory = directory
        self.level = level
        self.opener = opener or _open
        self.kit_version = kit_version
        self.index = 0
        self.name = ""
        self.raw_bytes = 0  # uncompressed bytes in the open segment
        self.records = 0  # lines in the open segment
        self._file: IO[bytes] | None = None
        self._zw: Any = None

    @property
    def is_open(self) -> bool:
        """True while a segment is being written."""
        return self._zw is not None

    def open(self, index: int, first_line: bytes) -> str:
        """Start segment ``index`` with ``first_line`` (the ``segment`` event: :func:`segment_header`)."""
        self.close()
        self.index = index
        self.name = segment_name(index)
        self.raw_bytes = self.records = 0
        fh = self.opener(self.directory / self.name)
        self._file = fh
        self._zw = zstandard.ZstdCompressor(level=self.level, write_checksum=True).stream_writer(fh, closefd=False)
        self.write(first_line, 1, flush=False)
        return self.name

    def write(self, data: bytes, lines: int, *, flush: bool = True) -> None:
        """Compress ``data`` (``lines`` whole lines); ``flush`` ends a zstd block (decodable on disk)."""
        zw = self._zw
        if zw is None:
            raise RuntimeError("no open segment")
        if data:
            zw.write(data)
            self.raw_bytes += len(data)
            self.records += lines
        if flush:
            zw.flush(zstandard.FLUSH_BLOCK)
            fh = self._file
            if fh is not None:
                fh.flush()

    def compressed_bytes(self) -> int:
        """Bytes of the open segment on disk so far (0 when none is open)."""
        fh = self._file
        try:
            return int(fh.tell()) if fh is not None else 0
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        """End the zstd frame and close the file (after a failure: close what can be closed)."""
        zw, fh = self._zw, self._file
        self._zw = self._file = None
        try:
            if zw is not None:
                zw.flush(zstandard.FLUSH_FRAME)
            if fh is not None:
                fh.flush()
        finally:
            if fh is not None:
                fh.close()

    def abandon(self) -> None:
        """After a write failed: close the file without writing more (what is on disk stays as is)."""
        fh = self._file
        self._zw = self._file = None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass
