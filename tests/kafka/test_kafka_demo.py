"""``deribit-kit demo --kafka`` with no ``--bootstrap``: it starts a local Tansu on 127.0.0.1, the sink
from the embedded exchange, and a second broker and dashboards fed only from Kafka; everything it
printed answers, and Ctrl-C stops all of it (no Tansu and no ``panel serve`` left behind)."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("panel", reason="the demo serves the dashboards: needs the dashboards extra")

from conftest import subscribed_messages
from kafka_fixtures import LocalKafka
from websockets.sync.client import connect

from deribit_kit.ui.demo import DemoProcess, free_port
from deribit_kit.ui.kafka_demo import CHANNELS

pytestmark = pytest.mark.timeout(150)

CHANNEL = "book.BTC-PERPETUAL.100ms"


def _listening(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) == 0


def _host_port(url: str) -> str:
    return url.split("//", 1)[1].split("/", 1)[0]


def _metrics_url(ws_url: str) -> str:
    """A broker port's ``/metrics`` (the same port as its WebSocket)."""
    return f"http://{_host_port(ws_url)}/metrics"


def _component(text: str, component: str, figure: str) -> float:
    m = re.search(rf'^deribit_kit_broker_component_{figure}{{component="{component}"}} (\S+)$', text, re.M)
    assert m is not None, f"no {figure} of {component} on /metrics"
    return float(m.group(1))


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_demo_kafka_serves_books_dashboards_and_metrics_from_kafka_and_stops_cleanly() -> None:
    tansu = LocalKafka()._binary()
    demo = DemoProcess(free_port(), "--kafka").start(timeout=90)
    try:
        urls = demo.urls
        assert set(urls) >= {"Market", "Broker", "Exchange", "Kafka", "KMarket", "KOps", "KBroker"}, demo.output
        bootstrap = urls["Kafka"]
        assert bootstrap.startswith("127.0.0.1:") and "a local Tansu" in demo.output, demo.output
        children = demo.children()
        kinds = sorted("tansu" if _cmdline(p).startswith(tansu) else "panel" if " panel serve " in _cmdline(p)
                       else _cmdline(p) for p in children)
        assert kinds == ["panel", "panel", "tansu"], kinds  # the two dashboards' servers and the local Kafka
        # the broker fed only from Kafka serves a book like Deribit: a snapshot, then chained changes
        with connect(urls["KBroker"], open_timeout=10, close_timeout=5) as ws:
            seen = subscribed_messages(ws, CHANNEL, 4, timeout=30)
            assert seen[0]["type"] == "snapshot" and seen[0]["bids"] and seen[0]["asks"], seen[0]
            assert all(m["type"] == "change" for m in seen[1:]), [m["type"] for m in seen]
            for prev, nxt in itertools.pairwise(seen):  # the chain the exchange made, through Kafka
                assert nxt["prev_change_id"] == prev["change_id"]
            # while this client reads it, the source follows that book: its figures on the second broker
            source = httpx.get(_metrics_url(urls["KBroker"]), timeout=10).text
            assert _component(source, "kafka-source", "messages") > 0
            assert _component(source, "kafka-source", "books_live") >= 1
            assert _component(source, "kafka-source", "malformed") == 0
            assert _component(source, "kafka-source", "lost") == 0
        # the Kafka-fed side's dashboards (KMarket and KOps printed; the same apps on that server)
        base = urls["KMarket"].rsplit("/", 1)[0]
        assert urls["KOps"] == f"{base}/ops" and base != urls["Market"].rsplit("/", 1)[0]
        for page in ("market", "options", "trading", "ops"):
            r = httpx.get(f"{base}/{page}", timeout=20)
            assert r.status_code == 200 and "bokeh" in r.text.lower(), page
        # the sink's figures on the first broker's /metrics
        sink = httpx.get(_metrics_url(urls["Broker"]), timeout=10).text
        assert _component(sink, "kafka-sink", "produced") > 0 and _component(sink, "kafka-sink", "delivered") > 0
        assert _component(sink, "kafka-sink", "channels") > len(CHANNELS)  # the BTC options too (the calendar)
        assert _component(sink, "kafka-sink", "errors") == 0 and _component(sink, "kafka-sink", "lost") == 0
    finally:
        code = demo.stop()
    assert code == 0, demo.output
    assert "deribit-kit demo: stopped." in demo.output
    left = [(p, _cmdline(p)) for p in children if _alive(p)]
    assert not left, f"left running after the demo stopped: {left}"
    for name in ("Market", "KMarket", "Broker", "KBroker", "Exchange"):
        assert not _listening(_host_port(urls[name])), f"{name} still listening after the demo stopped"
    assert not _listening(bootstrap), "the local Kafka still listening after the demo stopped"


def test_demo_kafka_killed_takes_its_tansu_and_dashboards_with_it() -> None:
    demo = DemoProcess(free_port(), "--kafka").start(timeout=90)
    try:
        children = demo.children()
        bootstrap = demo.urls["Kafka"]
        assert len(children) == 3 and _listening(bootstrap), demo.output  # two panel serve, one Tansu
    finally:
        assert demo.proc is not None
        demo.proc.kill()  # no Ctrl-C, no cleanup: only the pid this test started
        demo.proc.wait(10)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting (bounded) for the parent-death signals to take the children down
    left = [(p, _cmdline(p)) for p in children if _alive(p)]
    for pid, _ in left:  # not left running if this fails: they are the killed demo's
        os.kill(pid, signal.SIGTERM)
    assert not left, "orphaned after the demo was killed"
    assert not _listening(bootstrap)
