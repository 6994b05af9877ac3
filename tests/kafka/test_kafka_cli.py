"""The pipeline's commands: ``deribit-kit kafka publish`` from the embedded exchange into Kafka,
``deribit-kit broker --upstream kafka://...`` serving those books on its Deribit-compatible port,
and ``Deribit.from_kafka`` / ``Deribit.connect("kafka://...")`` in a notebook."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from conftest import book_messages
from kafka_fixtures import Command, kafka, prefix

from deribit_kit import Deribit
from deribit_kit.transport.kafka import LocalKafka

pytestmark = pytest.mark.timeout(90)
__all__ = ["kafka", "prefix"]  # the fixtures

CHANNEL = "book.BTC-PERPETUAL.100ms"


def test_publish_then_a_broker_fed_from_kafka_serves_the_books(kafka: LocalKafka, prefix: str) -> None:
    pub = Command("kafka", "publish", "--bootstrap", kafka.bootstrap, "--prefix", prefix, "--channels",
                        CHANNEL, "ticker.BTC-PERPETUAL.100ms", "--linger-ms", "5", "--report", "0.5")
    serve: Command | None = None
    try:
        pub.line_starting("publishing 2 channel(s)")
        pub.line_starting("  ok: ")  # figures: it produces
        serve = Command("broker", "--upstream", f"kafka://{kafka.bootstrap}/{prefix}")
        url = serve.line_starting("broker: ").split()[1]
        got = book_messages(url, CHANNEL, 4, timeout=30)
        assert got[0]["type"] == "snapshot" and all(m["type"] == "change" for m in got[1:])
        for prev, nxt in itertools.pairwise(got):  # the chain the exchange made, through Kafka
            assert nxt["prev_change_id"] == prev["change_id"]
    finally:
        if serve is not None:
            assert serve.stop() == 0
        assert pub.stop() == 0
    assert any(line.startswith("published ") and "0 error(s)" in line for line in pub.output)


async def test_deribit_from_kafka_in_a_notebook(kafka: LocalKafka, prefix: str) -> None:
    src = await Deribit.connect()  # an embedded exchange to publish from
    from deribit_kit.sinks.kafka import KafkaSink

    sink = await KafkaSink(src.broker, kafka.bootstrap, prefix=prefix, channels=[CHANNEL], linger_ms=5).start()
    try:
        dk = await Deribit.connect(f"kafka://{kafka.bootstrap}/{prefix}")
        try:
            book = await dk.order_book("BTC-PERPETUAL", live=True)
            assert book.state == "live"
            source = dk.upstream
            assert source is not None
            for _ in range(500):  # the instruments topic is read as it comes (bounded poll)
                if source.cached_instrument("BTC-PERPETUAL") is not None:
                    break
                await asyncio.sleep(0.01)
            assert (await dk.instrument("BTC-PERPETUAL")).instrument_name == "BTC-PERPETUAL"
            rest = await dk.call("public/get_order_book", {"instrument_name": "BTC-PERPETUAL", "depth": 5})
            assert rest["change_id"] <= book.book.change_id and len(rest["bids"]) <= 5
            assert "kafka-source" in dk.broker.metrics()["components"]
            with pytest.raises(Exception, match="a topic has no account"):
                await dk.call("private/get_positions", {"currency": "BTC"})
        finally:
            await dk.close()
    finally:
        await sink.stop()
        await src.close()
