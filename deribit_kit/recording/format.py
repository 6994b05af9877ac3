"""The record line: one NDJSON line per frame, event or checkpoint, laid out so that a reader can
route a frame **without parsing it** and the exchange's bytes stay verbatim.

Where a record arrives and leaves: the recorder (:mod:`deribit_kit.sinks.recorder`) encodes each
line here (:func:`frame_line`, :func:`event_line`, :func:`checkpoint_line`); the reader
(:mod:`deribit_kit.recording.reader`) and the replay (:mod:`deribit_kit.upstream.replay`) slice
them back (:func:`parse_line`, or the fixed offsets below inline on their hot paths).

Every line is valid JSON with a fixed header, the numbers right-aligned in fixed widths (JSON
allows the spaces), so the fields sit at fixed offsets::

    {"t":1700000000123456789,"e":       1,"d":"i","ch":"book.BTC-PERPETUAL.100ms","f":<frame>}
    {"t":1700000000123456789,"e":       1,"ck":"book.BTC-PERPETUAL.100ms","f":<snapshot frame>}
    {"t":1700000000123456789,"e":       1,"ev":"disconnected","reason":"..."}

* ``t``: receive time, ns since the epoch (19 digits); ``e``: the upstream connection's epoch;
* the byte at offset 39 tells the kind: ``d`` a frame (``"d"`` is the direction, ``i`` inbound),
  ``c`` a checkpoint (a snapshot notification built from the recorder's live book), ``e`` an event;
* a frame's channel starts at offset 52, a checkpoint's at 44, and ``,"f":`` follows it; the frame
  is everything from there to the closing brace: the text the exchange sent, as a JSON *value*.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

__all__ = [
    "CHECKPOINT",
    "CH_AT",
    "CK_AT",
    "EVENT",
    "EV_AT",
    "E_SLICE",
    "FRAME",
    "KIND_AT",
    "SCHEMA_VERSION",
    "T_SLICE",
    "checkpoint_line",
    "event_line",
    "frame_line",
    "header",
    "notification_frame",
    "parse_line",
]

SCHEMA_VERSION: Final = 1
"""The version of this layout (and of the manifest); a reader refuses any other."""

FRAME: Final = "frame"
EVENT: Final = "event"
CHECKPOINT: Final = "checkpoint"
KINDS: Final = (FRAME, EVENT, CHECKPOINT)

T_SLICE: Final = slice(5, 24)  # the receive time, 19 digits
E_SLICE: Final = slice(29, 37)  # the epoch, 8 characters, right-aligned
KIND_AT: Final = 39  # b"d"[0] frame, b"c"[0] checkpoint, b"e"[0] event
CH_AT: Final = 52  # a frame's channel
CK_AT: Final = 44  # a checkpoint's channel
EV_AT: Final = 44  # an event's name
K_FRAME: Final = 100  # ord("d")
K_CHECKPOINT: Final = 99  # ord("c")
K_EVENT: Final = 101  # ord("e")
F_KEY: Final = b'","f":'  # after the channel

_MAX_T = 10**19 - 1
_ch_keys: dict[tuple[str, str], bytes] = {}


def header(t_ns: int, epoch: int) -> bytes:
    """``{"t":<19 digits>,"e":<8 wide>,`` (fixed width: the fields sit at fixed offsets)."""
    if not 0 <= t_ns <= _MAX_T:
        raise ValueError(f"receive time {t_ns} ns does not fit the record header")
    return b'{"t":%19d,"e":%8d,' % (t_ns, epoch)


def _channel_key(prefix: str, channel: str) -> bytes:
    key = (prefix, channel)
    hit = _ch_keys.get(key)
    if hit is None:
        if '"' in channel or "\\" in channel or not channel.isprintable():
            raise ValueError(f"channel name {channel!r} cannot be recorded")
        hit = _ch_keys[key] = (prefix + channel + '","f":').encode()
    return hit


def frame_line(t_ns: int, epoch: int, channel: str, frame: bytes, direction: str = "i") -> bytes:
    """One frame record; ``frame`` is the exchange's text as bytes (one line: no newline in it)."""
    prefix = '"d":"i","ch":"' if direction == "i" else '"d":"o","ch":"'
    return b"".join((header(t_ns, epoch), _channel_key(prefix, channel), frame, b"}\n"))


def checkpoint_line(t_ns: int, epoch: int, channel: str, frame: bytes) -> bytes:
    """One checkpoint record: ``frame`` is a snapshot notification of ``channel``'s book."""
    return b"".join((header(t_ns, epoch), _channel_key('"ck":"', channel), frame, b"}\n"))


def event_line(t_ns: int, epoch: int, name: str, **fields: Any) -> bytes:
    """One event record (``connected``, ``disconnected``, ``resync``, ``snapshot``, ``gap``, ...)."""
    body = orjson.dumps({"ev": name, **fields})
    return header(t_ns, epoch) + body[1:] + b"\n"


def notification_frame(channel: str, data: Any) -> bytes:
    """A Deribit ``subscription`` notification frame (for sources without the raw text, and
    checkpoints)."""
    return orjson.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})


def parse_line(line: bytes) -> tuple[int, int, str, str, bytes]:
    """``(t_ns, epoch, kind, channel_or_event_name, payload)`` of one line (without its newline).

    ``payload`` is the frame's bytes for frames and checkpoints (sliced, not parsed) and the whole
    line for events. Raises ``ValueError`` for a line that is not a record.
    """
    k = line[KIND_AT] if len(line) > CH_AT else 0
    if k in (K_FRAME, K_CHECKPOINT):
        at = CH_AT if k == K_FRAME else CK_AT
        end = line.find(b'"', at)
        if end < 0 or line[end:end + 6] != F_KEY or line[-1] != 125 or line[:5] != b'{"t":':  # 125: "}"
            return _slow(line)
        return int(line[T_SLICE]), int(line[E_SLICE]), FRAME if k == K_FRAME else CHECKPOINT, \
            line[at:end].decode(), line[end + 6:-1]
    if k == K_EVENT and line[:5] == b'{"t":':
        end = line.find(b'"', EV_AT)
        if end < 0:
            raise ValueError("an event without a name")
        return int(line[T_SLICE]), int(line[E_SLICE]), EVENT, line[EV_AT:end].decode(), line
    return _slow(line)


def _slow(line: bytes) -> tuple[int, int, str, str, bytes]:
    """A line that is valid JSON but not in the fixed layout (another writer, an escaped name)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), int) or not isinstance(obj.get("e"), int):
        raise ValueError("not a record (no t and e)")
    t, e = obj["t"], obj["e"]
    if isinstance(obj.get("ev"), str):
        return t, e, EVENT, obj["ev"], line
    for key, kind in (("ch", FRAME), ("ck", CHECKPOINT)):
        if isinstance(obj.get(key), str) and "f" in obj:
            return t, e, kind, obj[key], orjson.dumps(obj["f"])
    raise ValueError("not a record (no ev, ch or ck)")
