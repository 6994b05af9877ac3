"""The operations page without a browser: the Prometheus text it reads, parsed back into the
broker's and the port's numbers (upstream, channels, books, consumers, port clients, components),
from a broker port over HTTP and from a broker in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("panel", reason="needs the dashboards extra (pip install -e '.[dashboards]')")

from conftest import RawPeer, connect_peer

from deribit_kit import Deribit
from deribit_kit.broker.port import BrokerServer
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator
from deribit_kit.ui.ops import HttpMetrics, LocalMetrics, OpsDashboard, OpsSnapshot, parse_prometheus

BOOK = "book.BTC-PERPETUAL.100ms"


class Counter:
    """A component with a flat stats dict, as the recorder and the Kafka sink attach themselves."""

    def __init__(self) -> None:
        self.frames = 0

    def stats(self) -> dict[str, Any]:
        return {"frames": self.frames, "dropped": 0, "running": True, "state": "writing", "nested": {"a": 1}}


@pytest.fixture
async def port(sim: Simulator) -> AsyncIterator[BrokerServer]:
    dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    async with BrokerServer(dk.broker) as srv:
        yield srv
    await dk.close()


async def _port_client(srv: BrokerServer) -> RawPeer:
    """A client of the port holding the book (so the broker holds a live book for it)."""
    peer = await connect_peer(srv.ws_url)
    assert await peer.result("public/subscribe", {"channels": [BOOK]}) == [BOOK]
    await peer.next_notification(BOOK, timeout=10)
    return peer


def test_parse_prometheus_reads_labels_escapes_and_skips_comments() -> None:
    text = ('# HELP x_total a counter\n# TYPE x_total counter\nx_total{a="1",b="q\\"uote\\\\"} 3\n'
            "y 2.5\nnot a metric line\nz{a=\"1\"} NaN\n")
    s = parse_prometheus(text)
    assert s["x_total"] == [({"a": "1", "b": 'q"uote\\'}, 3.0)]
    assert s["y"] == [({}, 2.5)]
    assert "z" in s and "not" not in s


async def test_the_snapshot_has_the_port_metrics_numbers(port: BrokerServer) -> None:
    broker = port.broker
    counter = Counter()
    broker.attach("counter", counter)
    peer = await _port_client(port)
    try:
        live = broker.hold_book(BOOK)
        await live.wait_live(10)
        counter.frames = 7
        snap = OpsSnapshot.from_text(await HttpMetrics(port.http_url).text())
        m = broker.metrics()
        assert snap.upstream["state"] == "open" == m["upstream"]["state"]
        assert snap.upstream["epoch"] == m["upstream"]["epoch"] >= 1
        assert snap.upstream["reconnects"] == m["upstream"]["reconnects"]
        assert snap.upstream["rate_limited"] == 0 and snap.upstream["rate_limit_wait_s"] == 0
        assert BOOK in set(snap.channels["channel"]) and set(snap.channels["channel"]) == set(m["channels"])
        row = snap.books.set_index("channel").loc[BOOK]
        assert row["state"] == "live" and row["changes"] >= 0 and row["gaps"] == 0 and row["change_id"] > 0
        assert snap.port["clients"] == 1
        assert len(snap.clients) == 1
        client = snap.clients.iloc[0]
        assert client["channels"] == 1 and client["drops"] == 0 and client["lagging"] == 0
        assert client["snapshots"] >= 1
        assert set(snap.consumers["consumer"]) == set(m["consumers"])
        comp = snap.components.set_index("component").loc["counter"]
        assert comp["frames"] == 7 and comp["running"] == 1 and comp["state"] == "writing"
        assert "nested" not in snap.components  # nested values stay in broker.metrics()
        live.release()
    finally:
        broker.detach("counter")
        await peer.close()


async def test_the_dashboard_shows_books_and_port_clients_in_process(port: BrokerServer) -> None:
    peer = await _port_client(port)
    try:
        ops = OpsDashboard(server=port, autostart=False)
        snap = await ops.update()
        assert snap is not None and ops.error is None and ops.updates == 1
        assert BOOK in list(ops.tables["books"].value["channel"])
        assert len(ops.tables["clients"].value) == 1
        assert 'data-upstream="open"' in ops.header.object and "port clients" in ops.header.object
        assert isinstance(LocalMetrics(port.broker), LocalMetrics)
        ops.__panel__()  # the layout builds
    finally:
        await peer.close()


async def test_the_dashboard_says_when_the_metrics_cannot_be_read(sim: Simulator) -> None:
    dk = await Deribit.connect(sim.ws_url)
    srv = await BrokerServer(dk.broker).start()
    url = srv.http_url
    await srv.stop()
    await dk.close()
    ops = OpsDashboard(url=url, autostart=False)
    assert await asyncio.wait_for(ops.update(), 10) is None
    assert ops.error is not None and "metrics unavailable" in ops.header.object


async def test_10028s_their_waits_and_the_reconnects_show(sim: Simulator) -> None:
    """A rate-limit storm ends sessions (as Deribit does): the page shows the 10028s, the seconds
    sending was held after them, the reconnects and the grown epoch."""
    dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET,
                               backoff_initial=0.02, backoff_max=0.2)
    try:
        ops = OpsDashboard(broker=dk.broker, autostart=False)
        before = await ops.update()
        assert before is not None and before.upstream["rate_limited"] == 0 and before.upstream["epoch"] == 1
        sim.faults.rate_limit_storm(2)
        assert await dk.get_time() > 0  # refused twice, sent again each time
        snap = await ops.update()
        assert snap is not None
        assert snap.upstream["rate_limited"] == 2 and snap.upstream["rate_limit_wait_s"] >= 2 * 0.02
        assert snap.upstream["reconnects"] == 2 and snap.upstream["epoch"] == 3
        assert "10028s" in ops.header.object
    finally:
        await dk.close()


def test_http_metrics_takes_the_port_url_in_any_of_its_forms() -> None:
    for url in ("http://127.0.0.1:9000", "http://127.0.0.1:9000/", "http://127.0.0.1:9000/metrics",
                "ws://127.0.0.1:9000/ws/api/v2"):
        assert HttpMetrics(url).url == "http://127.0.0.1:9000", url
    assert HttpMetrics("wss://broker.example:443/ws/api/v2").url == "https://broker.example:443"
