"""``deribit-kit demo``: starts the embedded exchange, the broker's port and the dashboards, prints
the URLs, and stops everything on Ctrl-C."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

pytest.importorskip("panel", reason="the demo serves the dashboards: needs the dashboards extra")

from conftest import book_messages

from deribit_kit.ui.demo import DemoProcess, free_port, panel_command

pytestmark = pytest.mark.timeout(150)


def _port_open(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) == 0


def test_demo_serves_dashboards_and_broker_port_and_stops_cleanly() -> None:
    demo = DemoProcess(free_port()).start()
    try:
        urls = demo.urls
        assert set(urls) >= {"Market", "Options", "Trading", "Ops", "Index", "Broker", "Exchange"}, demo.output
        assert all(u.startswith(("http://127.0.0.1:", "ws://127.0.0.1:")) for k, u in urls.items() if k != "Log")
        children = demo.children()
        assert len(children) == 1  # the panel serve process
        for name in ("Market", "Options", "Trading", "Ops"):
            r = httpx.get(urls[name], timeout=10)
            assert r.status_code == 200 and "bokeh" in r.text.lower(), name
        index = httpx.get(urls["Index"], timeout=10, follow_redirects=True)
        assert index.status_code == 200 and "market" in index.text
        # the broker's port serves a book like Deribit does: subscribe, get a snapshot, then changes
        seen = book_messages(urls["Broker"], "book.BTC-PERPETUAL.100ms", 2)
        assert seen[0]["type"] == "snapshot" and seen[0]["bids"] and seen[0]["asks"]
        assert seen[1]["type"] == "change" and seen[1]["prev_change_id"] == seen[0]["change_id"]
    finally:
        code = demo.stop()
    assert code == 0, demo.output
    assert "deribit-kit demo: stopped." in demo.output
    for pid in children:  # the panel server went with it
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    for name in ("Market", "Broker", "Exchange"):
        assert not _port_open(demo.urls[name]), f"{name} still listening after the demo stopped"


def test_demo_refuses_a_missing_dashboards_folder(tmp_path: Path) -> None:
    demo = DemoProcess(free_port(), "--dashboards", str(tmp_path))
    with pytest.raises(RuntimeError, match="dashboards not found"):
        demo.start(timeout=60)
    assert demo.proc is not None and demo.proc.returncode not in (0, None)


def test_panel_command_binds_loopback_and_allows_its_own_origin() -> None:
    cmd = panel_command([Path("dashboards/market.py")], "127.0.0.1", 5006)
    assert cmd[1:4] == ["-m", "panel", "serve"]
    assert "--allow-websocket-origin=127.0.0.1:5006" in cmd and "--allow-websocket-origin=localhost:5006" in cmd
    assert cmd[cmd.index("--address") + 1] == "127.0.0.1"
