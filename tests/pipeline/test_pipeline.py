"""The pipeline's pure parts: the envelope (the exchange's bytes spliced in, decoded back, refused
when malformed or of another version), topics and keys, murmur2 against Kafka's own test vectors,
and the source side's continuity rules verdict by verdict."""

from __future__ import annotations

import orjson
import pytest

from deribit_kit.pipeline import continuity as cont
from deribit_kit.pipeline import schema
from deribit_kit.pipeline.murmur2 import murmur2, partition_for
from deribit_kit.wire.jsonrpc import encode_notification

CH = "book.BTC-PERPETUAL.100ms"


def change(cid: int, prev: int) -> dict[str, object]:
    return {"type": "change", "timestamp": 1, "instrument_name": "BTC-PERPETUAL", "change_id": cid,
            "prev_change_id": prev, "bids": [["new", 100.0, 1.0]], "asks": []}


def snapshot(cid: int) -> dict[str, object]:
    return {"type": "snapshot", "timestamp": 1, "instrument_name": "BTC-PERPETUAL", "change_id": cid,
            "bids": [["new", 100.0, 1.0]], "asks": [["new", 101.0, 2.0]]}


def test_the_exchange_bytes_are_spliced_in_and_decoded_back() -> None:
    frame = encode_notification(CH, change(5, 4))
    data = schema.splice_data(frame.decode(), schema.data_prefix(CH))
    assert data is not None and orjson.loads(data) == change(5, 4)
    assert schema.splice_data(frame, schema.data_prefix(CH)) == data  # bytes frames too
    value = schema.envelope("change", 123, 2, "abcd", 7, CH, data)
    assert value.startswith(b'{"v":1,"k":"change","t":123,"e":2,"sid":"abcd","s":7,"ch":"' + CH.encode())
    env = schema.decode(value)
    assert (env.kind, env.t_ns, env.epoch, env.sid, env.seq, env.channel) == ("change", 123, 2, "abcd", 7, CH)
    assert env.data == change(5, 4) and env.data_bytes == data  # the same bytes, not re-encoded
    assert orjson.loads(schema.notification_frame(CH, data)) == orjson.loads(frame)


def test_frames_laid_out_otherwise_are_not_spliced() -> None:
    pretty = '{"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "CH", "data": {}}}'.replace("CH", CH)
    assert schema.splice_data(pretty, schema.data_prefix(CH)) is None
    assert schema.splice_data(None, schema.data_prefix(CH)) is None


def test_markers_and_extra_fields() -> None:
    value = schema.marker("gap", 1, 1, "s", 3, CH, lost=12)
    env = schema.decode(value)
    assert env.kind == "gap" and env.data is None and env.extra == {"lost": 12} and env.data_bytes is None
    with pytest.raises(ValueError):
        schema.marker("change", 1, 1, "s", 1, CH)
    snap = schema.envelope("snapshot", 1, 1, "s", 1, CH, orjson.dumps(snapshot(9)), {"src": [2, 40]})
    assert schema.decode(snap).extra == {"src": [2, 40]}


@pytest.mark.parametrize(("value", "why"), [
    (b"", "empty"), (b"{no", "not JSON"), (b"[1]", "not a JSON object"),
    (b'{"v":2,"k":"change"}', "unknown schema version 2"),
    (b'{"v":1,"k":"weird","t":1,"e":1,"sid":"s","s":1,"ch":"x","d":1}', "unknown kind"),
    (b'{"v":1,"k":"change","t":"1","e":1,"sid":"s","s":1,"ch":"x","d":1}', "integers"),
    (b'{"v":1,"k":"change","t":1,"e":1,"sid":"s","s":1,"ch":"x","d":{"type":"change"}}', "change_id"),
    (b'{"v":1,"k":"change","t":1,"e":1,"sid":"s","s":1,"ch":"x","d":{"type":"change","change_id":2}}',
     "prev_change_id"),
    (b'{"v":1,"k":"data","t":1,"e":1,"sid":"s","s":1,"ch":""}', "ch must be"),
])
def test_malformed_values_are_refused(value: bytes, why: str) -> None:
    with pytest.raises(schema.SchemaError, match=why) as info:
        schema.decode(value)
    assert (info.value.version == 2) == (why.startswith("unknown schema"))


def test_topics_and_keys() -> None:
    assert schema.family_topic("d", CH) == "d.book"
    assert schema.family_topic("d", "trades.option.BTC.100ms") == "d.trades"
    assert schema.family_topic("d", "ticker.ETH-PERPETUAL.100ms") == "d.ticker"
    assert schema.family_topic("d", "deribit_price_index.btc_usd") == "d.price_index"
    assert schema.channel_key(CH) == "BTC-PERPETUAL"
    assert schema.channel_key("deribit_price_index.btc_usd") == "btc_usd"
    assert schema.channel_key("trades.option.BTC.100ms") == "trades.option.BTC.100ms"
    assert schema.topics("d")["snapshots"] == "d.book.snapshots"
    with pytest.raises(schema.SchemaError):
        schema.family_topic("d", "nope")


@pytest.mark.parametrize(("key", "hashed"), [  # Kafka's own test vectors (UtilsTest.testMurmur2)
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829), (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_is_kafkas(key: bytes, hashed: int) -> None:
    assert murmur2(key) == hashed
    assert partition_for(key, 7) == (hashed & 0x7FFFFFFF) % 7


def test_a_book_waits_for_a_snapshot_then_follows_the_chain() -> None:
    b = cont.BookContinuity()
    assert b.change(change(2, 1), 1) == cont.DROP and b.state == cont.SYNCING
    assert b.snapshot(snapshot(2), 1) == cont.FORWARD and b.state == cont.LIVE
    assert b.change(change(3, 2), 1) == cont.FORWARD
    assert b.change(change(3, 2), 1) == cont.DUPLICATE  # delivered twice
    assert b.change(change(2, 1), 1) == cont.DUPLICATE  # older
    assert b.snapshot(snapshot(3), 1) == cont.REDUNDANT  # the sink's periodic snapshot of what it holds
    assert b.snapshot(snapshot(2), 1) == cont.DUPLICATE
    assert b.change(change(9, 7), 1) == cont.BREAK and b.state == cont.RESYNCING  # forwarded once
    assert b.change(change(10, 9), 1) == cont.DROP
    assert b.snapshot(snapshot(12), 1) == cont.FORWARD and b.change(change(13, 12), 1) == cont.FORWARD
    assert b.counts[cont.FORWARD] == 4 and b.counts[cont.BREAK] == 1 and b.counts[cont.DUPLICATE] == 3


def test_markers_and_new_epochs_resync_a_live_book() -> None:
    b = cont.BookContinuity()
    assert b.interrupt() == cont.IGNORE
    b.snapshot(snapshot(5), 1)
    assert b.interrupt() == cont.INTERRUPT and b.state == cont.RESYNCING
    assert b.interrupt() == cont.IGNORE
    b.snapshot(snapshot(6), 1)
    assert b.change(change(8, 6), 2) == cont.FORWARD  # the chain is the instrument's, whatever the connection
    assert b.change(change(9, 7), 2) == cont.BREAK
    assert b.snapshot(snapshot(4), 2) == cont.FORWARD  # the snapshot a resyncing book waits for
    assert b.snapshot(snapshot(5), 3) == cont.FORWARD  # a new epoch's snapshot serves a live book, whatever its id
    b.reset()
    assert b.state == cont.SYNCING and b.change_id is None


def test_the_partition_sequence() -> None:
    seq = cont.PartitionSequence()
    assert seq.see("a", 5) == 0  # the first message: numbering starts there
    assert seq.see("a", 6) == 0
    assert seq.see("a", 6) == -1 and seq.duplicates == 1
    assert seq.see("a", 10) == 3 and seq.lost == 3
    assert seq.see("b", 1) == 0  # a new sink run numbers from 1 again


def test_the_exchanges_snapshots_are_taken_as_they_come() -> None:
    """The live book takes every snapshot the exchange sends (a resync's, a reconnect's), even one at
    the change_id it holds; the sink's own snapshots and ones read again only serve a book in need."""
    b = cont.BookContinuity()
    assert b.snapshot(snapshot(7), 1, exchange=True) == cont.FORWARD
    assert b.snapshot(snapshot(7), 1) == cont.REDUNDANT
    assert b.snapshot(snapshot(7), 1, exchange=True) == cont.FORWARD
