"""The dashboards in a real browser: headless Debian Chromium driven by Playwright, against
``deribit-kit demo`` (the embedded exchange, the broker port and ``panel serve`` of dashboards/).

Every page must show live data, log no console error and request nothing but 127.0.0.1. Each test
saves a screenshot to tests/artifacts/ (and to docs/screenshots/ with UPDATE_SCREENSHOTS=1, which
is how the README's pictures are made).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("panel", reason="needs the dashboards extra (pip install -e '.[dashboards]')")
playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (the test extra)")

from deribit_kit import sync  # noqa: E402
from deribit_kit.ui.demo import DemoProcess  # noqa: E402

expect = playwright.expect
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")
NUMBER = re.compile(r"^\d{1,3}(,\d{3})*(\.\d+)?$")
WAIT = 20_000  # ms for anything live to show up

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI needs Debian chromium at {CHROMIUM}: .ci/run installs it (apt-get install chromium)")
    pytestmark = [pytest.mark.ui, pytest.mark.skip(reason="needs Debian chromium (apt-get install chromium)")]
else:
    pytestmark = [pytest.mark.ui, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoProcess]:
    d = DemoProcess().start()
    yield d
    code = d.stop()
    assert code == 0, d.output


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A browser tab that records console errors and any request leaving 127.0.0.1."""

    def __init__(self, browser: Any, url: str) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page = browser.new_page(viewport={"width": 1440, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: None if r.url.startswith(LOCAL) else self.outside.append(r.url))
        self.page.goto(url, wait_until="domcontentloaded")

    def shot(self, name: str, element: Any = None) -> Path:
        """The page (or one ``element`` of it, a locator) as tests/artifacts/{name}.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        (element if element is not None else self.page).screenshot(path=str(path))
        if os.environ.get("UPDATE_SCREENSHOTS"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
        return path

    def close(self) -> None:
        self.page.close()
        assert self.outside == [], f"the page reached outside 127.0.0.1: {self.outside}"
        assert self.errors == [], f"console errors: {self.errors}"


def fill(page: Any, css: str, value: Any) -> None:
    box = page.locator(f"{css} input")
    box.fill(str(value))
    box.press("Enter")


def test_market_dashboard_is_live(demo: DemoProcess, browser: Any) -> None:
    tab = Page(browser, demo.urls["Market"])
    page = tab.page
    best_bid = page.locator(".bid-row .price").first
    expect(best_bid).to_have_text(NUMBER, timeout=WAIT)
    expect(page.locator(".ask-row")).to_have_count(10)
    expect(page.locator("[data-state='live']")).to_be_visible(timeout=WAIT)
    expect(page.get_by_role("heading", name=re.compile(r"BTC-PERPETUAL . perpetual . amounts in USD"))).to_be_visible()
    expect(page.get_by_text("connecting…")).to_be_hidden(timeout=WAIT)
    expect(page.get_by_text(re.compile(r"^2 matches$"))).to_be_visible()
    expect(page.locator(".dk-ticker")).to_contain_text("FUNDING", ignore_case=True, timeout=WAIT)
    expect(page.locator(".dk-trades tbody tr").first).to_contain_text(re.compile(r"buy|sell"), timeout=WAIT)
    first = page.locator(".dk-bookstate").inner_text()
    expect(page.locator(".dk-bookstate")).not_to_have_text(first, timeout=WAIT)  # counters keep moving
    expect(page.locator(".dk-bookstate")).to_contain_text(re.compile(r"updates/s [1-9]"), timeout=WAIT)
    tab.shot("market")
    # search across kinds: an ETH perpetual, then an option shows IV and greeks
    fill(page, ".dk-search", "ETH-PERP")
    expect(page.locator(".dk-instrument select option")).to_have_text(["ETH-PERPETUAL"], timeout=WAIT)
    page.locator(".dk-instrument select").select_option("ETH-PERPETUAL")
    expect(page.get_by_role("heading", name=re.compile("ETH-PERPETUAL"))).to_be_visible(timeout=WAIT)
    expect(best_bid).to_have_text(NUMBER, timeout=WAIT)
    fill(page, ".dk-search", "")
    page.get_by_role("button", name="option", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(r"-[CP]\b"))).to_be_visible(timeout=WAIT)
    expect(page.locator(".dk-ticker")).to_contain_text("mark IV", ignore_case=True, timeout=WAIT)
    expect(page.locator(".dk-ticker")).to_contain_text("delta", ignore_case=True)
    tab.close()


def test_market_candles_update_and_switch_resolution(demo: DemoProcess, browser: Any) -> None:
    tab = Page(browser, demo.urls["Market"])
    page = tab.page
    status = page.locator(".dk-candles .candles")
    expect(status).to_have_attribute("data-resolution", "1", timeout=WAIT)
    expect(status).to_contain_text(re.compile(r"^1m \d+ candles?"), timeout=WAIT)
    chart = page.locator(".dk-candle-chart")
    expect(chart.locator("canvas")).not_to_have_count(0, timeout=WAIT)  # price and volume (Bokeh)
    first = status.inner_text()
    expect(status).not_to_have_text(first, timeout=WAIT)  # the open candle moves with the trades
    expect(status).to_contain_text(re.compile(r"C [\d,]+\.\d+"))
    chart.scroll_into_view_if_needed()
    tab.shot("candles", chart)
    # another resolution: the chart follows it, and keeps updating
    picker = page.locator(".dk-resolution")
    picker.get_by_role("button", name="5m", exact=True).click()
    expect(status).to_have_attribute("data-resolution", "5", timeout=WAIT)
    expect(status).to_contain_text(re.compile(r"^5m \d+ candles?"), timeout=WAIT)
    five = status.inner_text()
    expect(status).not_to_have_text(five, timeout=WAIT)
    picker.get_by_role("button", name="1D", exact=True).click()
    expect(status).to_have_attribute("data-resolution", "1D", timeout=WAIT)
    expect(status).to_contain_text(re.compile(r"^1D \d+ candles? .* UTC"), timeout=WAIT)
    # a new instrument keeps the resolution
    fill(page, ".dk-search", "ETH-PERP")
    page.locator(".dk-instrument select").select_option("ETH-PERPETUAL")
    expect(page.get_by_role("heading", name=re.compile("ETH-PERPETUAL"))).to_be_visible(timeout=WAIT)
    expect(status).to_have_attribute("data-resolution", "1D", timeout=WAIT)
    expect(status).to_contain_text(re.compile(r"^1D \d+ candles?"), timeout=WAIT)
    tab.close()


def test_options_dashboard_chain_smile_and_term(demo: DemoProcess, browser: Any) -> None:
    tab = Page(browser, demo.urls["Options"])
    page = tab.page
    expect(page.locator("table.chain tbody tr")).to_have_count(15, timeout=WAIT)
    expect(page.locator("table.chain tr.atm")).to_have_count(1, timeout=WAIT)
    expect(page.locator("table.chain tr.atm td.strike")).to_have_text(NUMBER)
    expect(page.get_by_role("heading", name=re.compile(r"BTC options .* forward \d"))).to_be_visible(timeout=WAIT)
    expect(page.locator("canvas")).not_to_have_count(0, timeout=WAIT)  # the Bokeh plots
    expect(page.get_by_text("connecting…")).to_be_hidden(timeout=WAIT)
    expiry = page.locator(".dk-expiry select option").nth(3).inner_text()
    page.locator(".dk-expiry select").select_option(expiry)
    expect(page.get_by_role("heading", name=re.compile(f"BTC options . {expiry}"))).to_be_visible(timeout=WAIT)
    expect(page.locator("table.chain tr.atm")).to_have_count(1, timeout=WAIT)
    tab.shot("options")
    tab.close()


class Exchange:
    """The demo's exchange seen by a second client (the blocking facade, on a worker thread: this
    thread runs Playwright's event loop)."""

    def __init__(self, url: str, key: tuple[str, str]) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="exchange")
        self.dk = self._run(lambda: sync.Deribit.connect(url, client_id=key[0], client_secret=key[1]))

    def _run(self, fn: Any) -> Any:
        return self.pool.submit(fn).result(timeout=30)

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **kw: self._run(lambda: getattr(self.dk, name)(*a, **kw))

    def shutdown(self) -> None:
        self._run(self.dk.close)
        self.pool.shutdown()


def test_trading_ticket_orders_modify_cancel_kill_switch_and_rejection(demo: DemoProcess, browser: Any) -> None:
    assert demo.exchange_key is not None
    exchange = Exchange(demo.urls["Exchange"], demo.exchange_key)
    try:
        _trade(demo, browser, exchange)
    finally:
        exchange.cancel_all()
        exchange.shutdown()


def _trade(demo: DemoProcess, browser: Any, exchange: Any) -> None:
    tab = Page(browser, demo.urls["Trading"])
    page = tab.page
    status = page.locator(".dk-ticket-status")
    expect(page.locator(".top-bid")).to_have_text(NUMBER, timeout=WAIT)
    expect(page.locator(".dk-price input")).not_to_have_value("", timeout=WAIT)  # the ticket joined the bid
    expect(page.get_by_text(re.compile("amount in USD, min 10, step 10"))).to_be_visible()
    expect(page.get_by_text("connecting…")).to_be_hidden(timeout=WAIT)

    # a bad order the kit refuses before sending: 15 USD is not a whole number of 10 USD contracts
    fill(page, ".dk-amount", 15)
    page.get_by_role("button", name="Review order").click()
    expect(status).to_contain_text("Not sent", timeout=WAIT)
    expect(status).to_contain_text("not a multiple of contract_size 10")

    # place: review, confirm, see it in open orders (and on the exchange)
    bid = float(page.locator(".top-bid").inner_text().replace(",", ""))
    price = round(bid * 0.97)
    fill(page, ".dk-amount", 20)
    fill(page, ".dk-price", price)
    page.get_by_role("button", name="Review order").click()
    expect(page.locator(".dk-confirmation")).to_be_visible(timeout=WAIT)
    expect(page.locator(".dk-confirmation")).to_contain_text("BUY")
    page.get_by_role("button", name="Confirm buy").click()
    expect(status).to_contain_text(re.compile(r"Placed \d+: buy 20 USD BTC-PERPETUAL limit"), timeout=WAIT)
    row = page.locator(".dk-orders .tabulator-row", has_text=f"{price:,}")
    expect(row).to_have_count(1, timeout=WAIT)
    order = next(o for o in exchange.open_orders(BTC_) if o.price == price)
    assert order.amount == 20 and order.direction == "buy" and order.label.startswith("dk-ui-")

    # modify: a new price through the editor
    row.get_by_role("gridcell", name="Modify", exact=True).click()
    expect(page.locator(".dk-editor")).to_be_visible(timeout=WAIT)
    fill(page, ".dk-edit-price", price - 10)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".dk-orders-status")).to_contain_text(f"Modified {order.order_id}", timeout=WAIT)
    row = page.locator(".dk-orders .tabulator-row", has_text=f"{price - 10:,}")
    expect(row).to_have_count(1, timeout=WAIT)
    assert exchange.order_state(order.order_id).price == price - 10

    # cancel it from its row
    row.get_by_role("gridcell", name="Cancel", exact=True).click()
    expect(page.locator(".dk-orders-status")).to_contain_text(f"Cancelled {order.order_id}", timeout=WAIT)
    expect(page.locator(".dk-orders .tabulator-row")).to_have_count(0, timeout=WAIT)
    assert exchange.order_state(order.order_id).order_state == "cancelled"

    # two more, then the kill switch
    for n in (1, 2):
        page.get_by_role("button", name="Review order").click()
        page.get_by_role("button", name="Confirm buy").click()
        expect(page.locator(".dk-orders .tabulator-row")).to_have_count(n, timeout=WAIT)
    page.get_by_role("button", name="Cancel all orders").click()
    expect(page.locator(".dk-cancel-all-status")).to_contain_text("2 orders cancelled", timeout=WAIT)
    expect(page.locator(".dk-orders .tabulator-row")).to_have_count(0, timeout=WAIT)
    assert exchange.open_orders(BTC_) == []

    # a bad order the exchange refuses: reduce-only with no position to reduce
    page.get_by_role("button", name="sell", exact=True).click()
    page.locator(".dk-reduce-only input").check()
    fill(page, ".dk-price", round(bid * 1.03))
    page.get_by_role("button", name="Review order").click()
    page.get_by_role("button", name="Confirm sell").click()
    expect(status).to_contain_text("Rejected by the exchange", timeout=WAIT)
    assert exchange.open_orders(BTC_) == []

    # a market buy fills at once: a position with its PnL; then one resting order for the picture
    page.locator(".dk-reduce-only input").uncheck()
    page.get_by_role("button", name="buy", exact=True).click()
    page.locator(".dk-type select").select_option("market")
    page.get_by_role("button", name="Review order").click()
    page.get_by_role("button", name="Confirm buy").click()
    expect(status).to_contain_text("filled", timeout=WAIT)
    positions = page.locator(".dk-positions .tabulator-row", has_text=BTC_)
    expect(positions).to_have_count(1, timeout=WAIT)
    assert any(p.instrument_name == BTC_ and p.size > 0 for p in exchange.positions("BTC"))
    page.locator(".dk-type select").select_option("limit")
    fill(page, ".dk-price", price)
    page.get_by_role("button", name="Review order").click()
    page.get_by_role("button", name="Confirm buy").click()
    expect(page.locator(".dk-orders .tabulator-row")).to_have_count(1, timeout=WAIT)
    tab.shot("trading")
    tab.close()


BTC_ = "BTC-PERPETUAL"
