"""``deribit-kit demo --certfile --keyfile``: the embedded exchange and the broker port over wss:// and
https:// with a self-signed certificate, and the dashboards (plain http://) trusting it through
``DERIBIT_KIT_CA_FILE``."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("panel", reason="the demo serves the dashboards: needs the dashboards extra")

from test_cli_sim import _self_signed
from websockets.asyncio.client import connect

from deribit_kit.ui.demo import DemoProcess, free_port

pytestmark = pytest.mark.timeout(150)


def test_demo_serves_wss_and_https_with_a_certificate_its_dashboards_trust(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))
    demo = DemoProcess(free_port(), "--certfile", str(cert), "--keyfile", str(key)).start()
    try:
        urls = demo.urls
        assert urls["Broker"].startswith("wss://127.0.0.1:") and urls["Exchange"].startswith("wss://127.0.0.1:")
        seen, answer = asyncio.run(_over_wss(urls["Broker"], urls["Exchange"], ctx))
        assert seen[0]["type"] == "snapshot" and seen[1]["prev_change_id"] == seen[0]["change_id"]
        assert answer["id"] == 7 and "version" in answer["result"]
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


async def _over_wss(port_url: str, exchange_url: str, ctx: ssl.SSLContext) -> tuple[list[Any], dict[str, Any]]:
    """Two notifications of a book from the port and ``public/test`` at the exchange, both over wss.

    The asyncio client, not the threaded one: that one reads and writes one TLS object from two
    threads, which OpenSSL does not support (it fails at random with "[SSL] internal error")."""
    async def run() -> tuple[list[Any], dict[str, Any]]:
        seen: list[Any] = []
        async with connect(port_url, ssl=ctx, open_timeout=10) as ws:  # the port: a book over wss
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                                      "params": {"channels": ["book.BTC-PERPETUAL.100ms"]}}))
            while len(seen) < 2:
                msg = json.loads(await ws.recv())
                if msg.get("method") == "subscription":
                    seen.append(msg["params"]["data"])
                elif msg.get("id") == 1:
                    assert msg["result"] == ["book.BTC-PERPETUAL.100ms"], msg
        async with connect(exchange_url, ssl=ctx, open_timeout=10) as ws:  # the exchange over wss
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "public/test"}))
            answer = json.loads(await ws.recv())
        return seen, answer
    return await asyncio.wait_for(run(), 30)
