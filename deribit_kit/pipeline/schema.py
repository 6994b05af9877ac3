"""The Kafka message schema of the pipeline: topics, keys, the envelope around Deribit's ``data``.

Pure (no I/O): the sink (:mod:`deribit_kit.sinks.kafka`) builds values with :func:`envelope`
and :func:`splice_data`; the source (:mod:`deribit_kit.upstream.kafka`) reads them back with
:func:`decode`, and so can a consumer in any language (one JSON object per Kafka value).

A value is one JSON object, its fields in this order (the sink writes them so; readers must not
depend on the order)::

    {"v":1,"k":"change","t":1767600000123456789,"e":1,"sid":"5f0c2a9e","s":812,
     "ch":"book.BTC-PERPETUAL.100ms","d":{...Deribit's data, the exchange's bytes...}}

* ``v`` schema version (:data:`SCHEMA_VERSION`); a reader skips (and counts) other versions.
* ``k`` kind: ``snapshot`` / ``change`` (book channels: the exchange's ``type``), ``data`` (any
  other channel: a ticker, trades, an index price), or a marker of the sink: ``resync`` (the
  sink's book broke its chain; a snapshot follows), ``gap`` (the sink lost messages of this
  channel: ``lost`` says how many; a snapshot follows for books), ``epoch_end`` (the sink's
  upstream connection ended: every book resyncs from the next snapshot). Markers have ``"d":null``.
* ``t`` receive time at the sink in ns (wall clock); ``e`` the sink's upstream epoch (it grows with
  every reconnect to the exchange).
* ``sid`` the sink's run id and ``s`` a sequence per topic partition within that run (1, 2, ...):
  a reader that sees ``s`` jump knows messages of that partition were lost (say, a cluster that
  came back empty), a repeated ``s`` is a duplicate.
* ``ch`` the Deribit channel; ``d`` its ``data`` exactly as the exchange sent it.
* ``by``: ``"sink"`` on a snapshot the sink built from its book (when a channel joins, every N
  changes or T seconds, after a gap); the exchange's own snapshots have no ``by``.

Topics, all named from one prefix (``deribit`` by default): ``{prefix}.book`` (``book.*`` changes,
snapshots and markers), ``{prefix}.trades``, ``{prefix}.ticker``, ``{prefix}.price_index``, ... (one
per channel family), ``{prefix}.book.snapshots`` (compacted: the latest snapshot per instrument,
with ``src``: ``[partition, offset]`` of its copy in ``{prefix}.book``), ``{prefix}.instruments``
(compacted: ``k`` ``instrument``, ``d`` the instrument as ``public/get_instrument`` answers) and
``{prefix}.channels`` (compacted, keyed by channel: ``k`` ``channel``, ``d`` ``{"on": bool}``).
The key of every message is the instrument name (the index name for index prices, the channel
for channels without either); partitions are murmur2 of the key (:mod:`.murmur2`).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ..errors import SchemaError  # defined in errors.py (the one tree); importable from here too
from ..wire.channels import ChannelError, parse_channel

__all__ = [
    "BOOK_KINDS",
    "KINDS",
    "MARKERS",
    "SCHEMA_VERSION",
    "Envelope",
    "SchemaError",
    "channel_key",
    "decode",
    "envelope",
    "family_topic",
    "marker",
    "notification_frame",
    "splice_data",
    "topics",
]

SCHEMA_VERSION: Final = 1
BOOK_KINDS: Final = ("snapshot", "change")
MARKERS: Final = ("resync", "gap", "epoch_end")
KINDS: Final = (*BOOK_KINDS, "data", *MARKERS, "instrument", "channel")

FAMILY_TOPIC: Final = {"trades_kind": "trades", "book": "book"}


def topics(prefix: str) -> dict[str, str]:
    """The fixed topics of a prefix: ``book``, ``snapshots``, ``instruments``, ``channels``."""
    return {"book": f"{prefix}.book", "snapshots": f"{prefix}.book.snapshots",
            "instruments": f"{prefix}.instruments", "channels": f"{prefix}.channels"}


def family_topic(prefix: str, channel: str) -> str:
    """The topic of a channel's messages: ``{prefix}.{family}`` (``trades.option.BTC.100ms`` goes
    with the instruments' trades, in ``{prefix}.trades``)."""
    try:
        family = parse_channel(channel).family
    except ChannelError as exc:
        raise SchemaError(str(exc)) from None
    return f"{prefix}.{FAMILY_TOPIC.get(family, family)}"


def channel_key(channel: str) -> str:
    """The Kafka key of a channel's messages: its instrument, else its index, else the channel."""
    try:
        info = parse_channel(channel)
    except ChannelError:
        return channel
    return info.instrument or info.index_name or channel


def _header(kind: str, t_ns: int, epoch: int, sid: str, seq: int, channel: str) -> bytes:
    return b'{"v":%d,"k":"%s","t":%d,"e":%d,"sid":"%s","s":%d,"ch":%s,"d":' % (
        SCHEMA_VERSION, kind.encode(), t_ns, epoch, sid.encode(), seq, orjson.dumps(channel))


def envelope(kind: str, t_ns: int, epoch: int, sid: str, seq: int, channel: str, data: bytes,
             extra: dict[str, Any] | None = None) -> bytes:
    """One value: the envelope around ``data`` (JSON bytes, spliced in as they are)."""
    tail = b"}" if not extra else b"," + orjson.dumps(extra)[1:]
    return b"".join((_header(kind, t_ns, epoch, sid, seq, channel), data, tail))


def marker(kind: str, t_ns: int, epoch: int, sid: str, seq: int, channel: str, **fields: Any) -> bytes:
    """A marker of the sink (``resync``, ``gap``, ``epoch_end``): ``"d":null`` plus ``fields``."""
    if kind not in MARKERS:
        raise ValueError(f"not a marker kind: {kind!r}")
    return envelope(kind, t_ns, epoch, sid, seq, channel, b"null", fields or None)


def data_prefix(channel: str) -> str:
    """What precedes ``data`` in a Deribit notification frame of ``channel`` (compact JSON)."""
    return f'"channel":"{channel}","data":'


def splice_data(raw: str | bytes | None, prefix: str) -> bytes | None:
    """The ``data`` of a Deribit notification frame, as the exchange's bytes, without parsing it:
    ``{"jsonrpc":"2.0","method":"subscription","params":{"channel":"...","data":<data>}}``.
    ``None`` when the frame is not laid out so (then the caller encodes the decoded data once)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        i = raw.find(prefix)
        if i < 0 or not raw.endswith("}}"):
            return None
        return raw[i + len(prefix):-2].encode()
    bprefix = prefix.encode()
    i = raw.find(bprefix)
    if i < 0 or not raw.endswith(b"}}"):
        return None
    return bytes(raw[i + len(bprefix):-2])


def notification_frame(channel: str, data: bytes) -> bytes:
    """A Deribit notification frame around ``data`` bytes (what the broker's consumers see as raw)."""
    return b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":%s,"data":%s}}' % (
        orjson.dumps(channel), data)


class Envelope:
    """A decoded value: the envelope's fields, ``data`` decoded, ``data_bytes`` as they came."""

    __slots__ = ("channel", "data", "data_bytes", "epoch", "extra", "kind", "seq", "sid", "t_ns", "version")

    def __init__(self, version: int, kind: str, t_ns: int, epoch: int, sid: str, seq: int, channel: str,
                 data: Any, data_bytes: bytes | None, extra: dict[str, Any]) -> None:
        self.version = version
        self.kind = kind
        self.t_ns = t_ns
        self.epoch = epoch
        self.sid = sid
        self.seq = seq
        self.channel = channel
        self.data = data
        self.data_bytes = data_bytes
        self.extra = extra

    def __repr__(self) -> str:
        return f"<Envelope {self.kind} {self.channel} e={self.epoch} s={self.seq}>"


_FIELDS: Final = ("v", "k", "t", "e", "sid", "s", "ch", "d")


def decode(value: bytes | None) -> Envelope:
    """Parse one value; :class:`SchemaError` when it is malformed or of another schema version."""
    if not value:
        raise SchemaError("empty value")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"not JSON ({exc})") from None
    if type(obj) is not dict:
        raise SchemaError("not a JSON object")
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"unknown schema version {version!r} (this reader knows {SCHEMA_VERSION})",
                          version=version)
    kind, t_ns, epoch, sid, seq, channel = (obj.get(f) for f in _FIELDS[1:7])
    if kind not in KINDS:
        raise SchemaError(f"unknown kind {kind!r}")
    if type(t_ns) is not int or type(epoch) is not int or type(seq) is not int or type(sid) is not str:
        raise SchemaError("t, e and s must be integers, sid a string")
    if type(channel) is not str or not channel:
        raise SchemaError("ch must be a channel name")
    if "d" not in obj:
        raise SchemaError("no d")
    data = obj["d"]
    if kind in BOOK_KINDS:
        if type(data) is not dict or data.get("type") != kind or type(data.get("change_id")) is not int:
            raise SchemaError(f"a book {kind} needs d with type {kind!r} and an integer change_id")
        if kind == "change" and type(data.get("prev_change_id")) is not int:
            raise SchemaError("a book change needs an integer prev_change_id")
    elif kind == "data" and data is None:
        raise SchemaError("a data message needs d")
    raw = None
    if kind in BOOK_KINDS or kind == "data":
        i = value.find(b',"d":')
        j = value.rfind(b"}")
        if i > 0 and j == len(value) - 1 and not any(k not in _FIELDS for k in obj):
            raw = bytes(value[i + 5:j])
    extra = {k: v for k, v in obj.items() if k not in _FIELDS}
    return Envelope(version, kind, t_ns, epoch, sid, seq, channel, data, raw, extra)
