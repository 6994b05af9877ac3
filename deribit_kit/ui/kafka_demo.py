"""``deribit-kit demo --kafka``: the collect -> Kafka -> serve flow on one machine.

Next to the demo's exchange, broker and dashboards (:mod:`deribit_kit.ui.demo`), this starts:

* a local Kafka-protocol broker (Tansu, :class:`~deribit_kit.transport.kafka.LocalKafka`, on
  127.0.0.1; it dies with this process, like the dashboards' servers) unless ``--bootstrap`` names
  a cluster;
* a :class:`~deribit_kit.sinks.kafka.KafkaSink` on the demo's broker: the perpetuals' books, tickers
  and trades, the index prices, and the book and ticker of every BTC option (following
  the calendar);
* a second broker fed only from Kafka (:meth:`Deribit.from_kafka`) with its own Deribit-compatible
  port, and a second ``panel serve`` of the same dashboards whose target is the topic
  (``DERIBIT_TARGET=kafka://HOST:PORT/PREFIX``), its ops page reading the second broker's metrics.

Both ends are attached to their brokers (``kafka-sink`` and ``kafka-source`` on ``/metrics`` and
the ops page).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..broker import Broker
from ..deribit import Deribit

__all__ = ["KafkaLeg"]

CHANNELS = [f"{family}.{inst}.100ms" for inst in ("BTC-PERPETUAL", "ETH-PERPETUAL")
            for family in ("book", "ticker", "trades")] + ["deribit_price_index.btc_usd", "deribit_price_index.eth_usd"]


class KafkaLeg:
    """The Kafka half of the demo: start it after the first broker, stop it before."""

    def __init__(self, broker: Broker, host: str, *, bootstrap: str | None = None, prefix: str = "deribit",
                 port: int = 0, broker_port: int = 0, linger_ms: float = 5.0) -> None:
        self.broker = broker
        self.host = host
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.port = port
        self.broker_port = broker_port
        self.linger_ms = linger_ms
        self.kafka: Any = None
        self.sink: Any = None
        self.remote: Deribit | None = None
        self.server: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file: Any = None

    async def start(self, files: list[Path], env: dict[str, str], verbose: bool = False) -> KafkaLeg:
        """Start the local Tansu (without ``bootstrap``), the sink, the Kafka-fed broker and its port,
        and ``panel serve`` of the dashboard ``files`` with ``env`` (API keys removed); returns once
        its market page answers (90 s at most)."""
        from ..broker.port import BrokerServer
        from ..sinks.kafka import KafkaSink
        from ..transport.kafka import LocalKafka
        from .demo import BROKER_URL_ENV, _die_with_parent, _wait_http, free_port, panel_command

        if self.bootstrap is None:  # started from the loop's thread: it dies with this process, even killed
            self.kafka = LocalKafka(self.host, die_with_parent=True).spawn()
            await asyncio.to_thread(self.kafka.wait_ready)
            self.bootstrap = self.kafka.bootstrap
        self.sink = await KafkaSink(self.broker, self.bootstrap, prefix=self.prefix, channels=CHANNELS,
                                    books="BTC", kind="option", linger_ms=self.linger_ms,
                                    chain_templates=("book.{name}.100ms", "ticker.{name}.100ms")).start()
        target = f"kafka://{self.bootstrap}/{self.prefix}"
        self.remote = await Deribit.from_kafka(target)
        self.server = await BrokerServer(self.remote.broker, self.host, self.broker_port).start()
        self.port = self.port or free_port(self.host)
        child = {k: v for k, v in env.items() if k not in ("DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET")}
        child["DERIBIT_TARGET"] = target
        child[BROKER_URL_ENV] = self.server.http_url
        self.log_file = None if verbose else tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop)
            prefix="deribit-kit-demo-kafka-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(panel_command(files, self.host, self.port), env=child, stdout=self.log_file,
                                     stderr=subprocess.STDOUT if self.log_file else None,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        await _wait_http(f"http://{self.host}:{self.port}/market", self.proc, 90.0)
        return self

    def lines(self) -> list[str]:
        """The demo banner's lines for this leg: the Kafka bootstrap and topics, and the second
        dashboards' and broker's URLs."""
        base = f"http://{self.host}:{self.port}"
        local = " (a local Tansu, memory storage)" if self.kafka is not None else ""
        out = [f"  Kafka:     {self.bootstrap}{local}   topics {self.prefix}.* "
               f"({len(self.sink.channels) if self.sink else 0} channels published)"]
        if self.server is not None:
            out += [f"  KMarket:   {base}/market   (the same dashboards, fed only from Kafka)",
                    f"  KOps:      {base}/ops",
                    f"  KBroker:   {self.server.ws_url}   (a second broker fed from Kafka; metrics at "
                    f"{self.server.http_url}/metrics)"]
        return out

    async def stop(self) -> None:
        """Stop what :meth:`start` started, in reverse order (the sink flushes for 2 s at most)."""
        if self.proc is not None and self.proc.poll() is None:
            from .demo import _stop_child

            await asyncio.to_thread(_stop_child, self.proc)
        if self.server is not None:
            await self.server.stop()
        if self.remote is not None:
            await self.remote.close()
        if self.sink is not None:
            await self.sink.stop(2.0)
        if self.kafka is not None:
            await asyncio.to_thread(self.kafka.stop)
        if self.log_file is not None:
            self.log_file.close()
            with contextlib.suppress(OSError):
                os.unlink(self.log_file.name)
