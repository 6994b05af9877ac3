"""The operations page in a real browser (headless Debian Chromium through Playwright) against
``deribit-kit demo``: two clients of the demo's broker port hold books, and the page lists them,
their books' states and counters, filters and sorts the tables, with no console error and no
request leaving 127.0.0.1. Saves tests/artifacts/ops.png (docs/screenshots/ with UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

import pytest

pytest.importorskip("panel", reason="needs the dashboards extra (pip install -e '.[dashboards]')")
pytest.importorskip("playwright.sync_api", reason="needs playwright (the test extra)")

# the browser suite's demo and browser fixtures (one instance per module), its page helper and marks
from test_ui_browser import WAIT, Page, browser, demo, expect, pytestmark  # noqa: F401
from websockets.sync.client import ClientConnection, connect

from deribit_kit.ui.demo import DemoProcess

BOOKS = ["book.BTC-PERPETUAL.100ms", "book.ETH-PERPETUAL.100ms"]


class PortClient:
    """A client of the broker port that subscribes to ``channels`` and keeps reading, on a thread."""

    def __init__(self, url: str, channels: list[str]) -> None:
        self.url = url
        self.channels = channels
        self.ws: ClientConnection | None = None
        self.subscribed = threading.Event()
        self.notes = 0
        self.thread = threading.Thread(target=self._run, name="port-client", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception), connect(self.url, open_timeout=10, close_timeout=5) as ws:
            self.ws = ws
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                                "params": {"channels": self.channels}}))
            for raw in ws:
                msg = json.loads(raw)
                if msg.get("id") == 1:
                    self.subscribed.set()
                elif msg.get("method") == "subscription":
                    self.notes += 1

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.thread.join(5)


def test_ops_page_lists_books_and_port_clients(demo: DemoProcess, browser: Any) -> None:  # noqa: F811
    clients = [PortClient(demo.urls["Broker"], BOOKS), PortClient(demo.urls["Broker"], BOOKS[:1])]
    try:
        assert all(c.subscribed.wait(15) for c in clients)
        tab = Page(browser, demo.urls["Ops"])
        page = tab.page
        expect(page.locator("[data-upstream='open']")).to_be_visible(timeout=WAIT)
        books = page.locator(".dk-ops-books .tabulator-row")
        expect(books).to_have_count(2, timeout=WAIT)
        for channel in BOOKS:
            row = page.locator(".dk-ops-books .tabulator-row", has_text=channel)
            expect(row).to_contain_text("live", timeout=WAIT)
        expect(page.locator(".dk-ops-clients .tabulator-row")).to_have_count(2, timeout=WAIT)
        expect(page.locator(".dk-ops-clients .tabulator-row").first).to_contain_text("127.0.0.1")
        expect(page.locator(".dk-ops-channels .tabulator-row", has_text=BOOKS[0])).to_be_visible(timeout=WAIT)
        expect(page.locator(".dk-ops-consumers .tabulator-row")).not_to_have_count(0, timeout=WAIT)
        expect(page.locator(".dk-ops-summary")).to_contain_text("port clients")
        tab.shot("ops")
        # the tables filter (a header filter) and sort (a click on a header)
        box = page.locator(".dk-ops-books .tabulator-header-filter input").first
        box.press_sequentially("ETH")
        expect(books).to_have_count(1, timeout=WAIT)
        expect(books.first).to_contain_text("ETH-PERPETUAL")
        box.fill("")
        box.press("Backspace")
        expect(books).to_have_count(2, timeout=WAIT)
        header = page.locator(".dk-ops-books .tabulator-col[tabulator-field='channel'] .tabulator-col-title")
        header.click()
        header.click()  # descending: ETH before BTC
        expect(books.first).to_contain_text("ETH-PERPETUAL", timeout=WAIT)
        assert all(c.notes > 0 for c in clients)
        tab.close()
    finally:
        for c in clients:
            c.close()
