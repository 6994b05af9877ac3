"""``manifest.json``: what a recording holds, rewritten atomically (a temporary file, then a rename)
by the recorder at its start, at each segment rotation, when the recorded channels change, and at
its end.

Fields: ``format``, ``schema`` (:data:`~deribit_kit.recording.format.SCHEMA_VERSION`),
``kit_version``, ``source`` (the upstream's name), ``created``; ``channels``, ``instruments``
(the full instrument JSON of every recorded instrument: a replay lays out tick ladders and answers
``public/get_instrument(s)`` from it), ``start_ns``/``end_ns``, ``frames``, ``counts`` (frames per
channel), ``events`` (per name), ``checkpoints``; ``segments`` (name, time range, records,
uncompressed and compressed bytes, the line of each checkpoint batch, whether it was closed);
``gaps`` (what the recorder lost when it fell behind), ``dropped`` per channel, ``reminified``
and ``encoded`` frames, and ``ended`` (``running`` while recording, then why it stopped).

Where it is read: :func:`load` (the reader, the replay), which refuses an unknown schema version.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from ..errors import RecordingError
from .format import SCHEMA_VERSION

__all__ = ["FORMAT", "MANIFEST", "kit_version", "load", "write_atomic"]

MANIFEST = "manifest.json"
FORMAT = "deribit_kit.recording"


def kit_version() -> str:
    """The installed deribit-kit's version (``unknown`` when run from a tree without metadata)."""
    try:
        return metadata.version("deribit-kit")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_atomic(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` so that a reader sees the old one or the new one, never half."""
    tmp = directory / f".{MANIFEST}.tmp"
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / MANIFEST)


def check_schema(version: Any, where: str) -> None:
    """Refuse a layout this kit does not know, with what to do about it."""
    if version != SCHEMA_VERSION:
        raise RecordingError(f"{where}: recording schema version {version!r} is not supported: this deribit_kit "
                             f"reads version {SCHEMA_VERSION} (a recording made by another version of the kit; "
                             "use the version that wrote it)")


def load(directory: str | Path) -> dict[str, Any]:
    """The manifest of the recording in ``directory`` (checked: format and schema version)."""
    path = Path(directory) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(f"{directory}: not a recording (no {MANIFEST})") from None
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RecordingError(f"{path}: not a deribit_kit recording manifest")
    check_schema(manifest.get("schema"), str(path))
    return manifest
