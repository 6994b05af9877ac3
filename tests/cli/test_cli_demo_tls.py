"""``deribit-kit demo --certfile --keyfile``: the embedded exchange and the broker port over wss:// and
https:// with a self-signed certificate, and the dashboards (plain http://) trusting it through
``DERIBIT_KIT_CA_FILE``."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("panel", reason="the demo serves the dashboards: needs the dashboards extra")

from conftest import subscribed_messages
from test_cli_sim import _self_signed
from websockets.sync.client import connect

from deribit_kit.ui.demo import DemoProcess, free_port

pytestmark = pytest.mark.timeout(150)


def test_demo_serves_wss_and_https_with_a_certificate_its_dashboards_trust(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))
    demo = DemoProcess(free_port(), "--certfile", str(cert), "--keyfile", str(key)).start()
    try:
        urls = demo.urls
        assert urls["Broker"].startswith("wss://127.0.0.1:") and urls["Exchange"].startswith("wss://127.0.0.1:")
        with connect(urls["Broker"], ssl=ctx, open_timeout=10) as ws:  # the port: a book over wss
            seen = subscribed_messages(ws, "book.BTC-PERPETUAL.100ms", 2)
        assert seen[0]["type"] == "snapshot" and seen[1]["prev_change_id"] == seen[0]["change_id"]
        with connect(urls["Exchange"], ssl=ctx, open_timeout=10) as ws:  # the exchange over wss
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "public/test"}))
            assert json.loads(ws.recv(timeout=10))["id"] == 7
        port_https = urls["Broker"].replace("wss://", "https://").removesuffix("/ws/api/v2")
        assert httpx.get(f"{port_https}/metrics", verify=ctx, timeout=10).status_code == 200
        with pytest.raises(httpx.ConnectError):  # and a client that does not trust it is refused
            httpx.get(f"{port_https}/metrics", timeout=10)
        for name in ("Market", "Ops"):  # the dashboards (http://) answer
            r = httpx.get(urls[name], timeout=30)
            assert r.status_code == 200 and "bokeh" in r.text.lower(), name
        # and their process reached the exchange over wss: a second session beside the demo's own client
        exchange_https = urls["Exchange"].replace("wss://", "https://").removesuffix("/ws/api/v2")
        deadline = time.monotonic() + 30
        while (health := httpx.get(f"{exchange_https}/healthz", verify=ctx, timeout=10).json())["connections"] < 2:
            assert time.monotonic() < deadline, f"the dashboards never connected to the exchange: {health}"
            time.sleep(0.2)
    finally:
        code = demo.stop()
    assert code == 0, demo.output
