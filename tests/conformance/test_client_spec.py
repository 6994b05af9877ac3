"""The client's requests against Deribit's own API description (``deribit_api_v2.json``).

Every public ``Deribit`` method that talks to the exchange is run against the embedded exchange
while the transports record each ``(method, params)`` they send; then every recorded method must
be a path of the description, every param one of that path's parameters, with the documented
type and enum, and every channel name one of the documented channels. A new public method fails
``test_every_api_method_is_driven`` until it is added to ``DRIVERS`` below.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any

import pytest
from conftest import SPEC_PATH

from deribit_kit import Deribit, MethodNotFoundError
from deribit_kit.client.rules import round_price
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator
from deribit_kit.transport.http import HttpTransport
from deribit_kit.transport.ws import WsTransport

pytestmark = pytest.mark.skipif(not SPEC_PATH.exists(),
                                reason=f"Deribit's API description is not at {SPEC_PATH} (../shared/deribit)")

KEY: dict[str, Any] = {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}
Sent = list[tuple[str, dict[str, Any]]]


async def _subscribe_cycle(dk: Deribit) -> None:
    sub = dk.subscribe("ticker.BTC-PERPETUAL.100ms", "book.BTC-PERPETUAL.100ms", "trades.future.BTC.100ms",
                       "deribit_price_index.btc_usd", "user.orders.BTC-PERPETUAL.raw")
    await sub.start()
    await sub.close()


async def _order_books(dk: Deribit) -> None:
    await dk.order_book("BTC-PERPETUAL", depth=10)
    await dk.order_book("ETH-PERPETUAL", live=True)  # through the client's broker


PERP = "BTC-PERPETUAL"


async def _resting(dk: Deribit, side: str = "buy", label: str | None = None) -> str:
    """A limit order well away from the market; its order id."""
    inst, tick = await dk.instrument(PERP), await dk.ticker(PERP)
    assert tick.mark_price is not None
    if side == "buy":
        price = round_price(inst, tick.mark_price * 0.8, "down")
        placed = await dk.buy(PERP, 10, price=price, label=label, post_only=True)
    else:
        price = round_price(inst, tick.mark_price * 1.2, "up")
        placed = await dk.sell(PERP, 10, price=price, label=label, time_in_force="good_til_cancelled")
    return placed.order.order_id


async def _buy(dk: Deribit) -> None:
    await _resting(dk, "buy")
    await dk.buy(PERP, 10, type="market")  # leaves a position for close_position


async def _edit(dk: Deribit) -> None:
    order_id = await _resting(dk, "buy")
    inst, tick = await dk.instrument(PERP), await dk.ticker(PERP)
    assert tick.mark_price is not None
    await dk.edit(order_id, 20, round_price(inst, tick.mark_price * 0.79, "down"))
    await dk.edit(order_id, 30, None, instrument=PERP)


async def _cancel_all(dk: Deribit) -> None:
    await _resting(dk, "sell", label="spec-cancel")
    await dk.cancel_all(label="spec-cancel")
    await dk.cancel_all(label="spec-cancel", currency="BTC")
    await dk.cancel_all(instrument=PERP)
    await dk.cancel_all(currency="BTC", kind="future")
    await dk.cancel_all(kind="future")
    await dk.cancel_all()


async def _open_orders(dk: Deribit) -> None:
    await _resting(dk, "buy")
    await dk.open_orders()
    await dk.open_orders(PERP)
    await dk.open_orders(currency="BTC", kind="future")


async def _order_state(dk: Deribit) -> None:
    await dk.order_state(await _resting(dk, "sell"))


async def _cancel(dk: Deribit) -> None:
    await dk.cancel(await _resting(dk, "buy"))


async def _portfolio(dk: Deribit) -> None:
    portfolio = await dk.portfolio()
    await portfolio.close()


async def _candles(dk: Deribit) -> None:
    await dk.candles("BTC-PERPETUAL", "60")
    if dk.client is not None and isinstance(dk.client.transport, WsTransport):  # live candles stream
        live = await dk.candles("ETH-PERPETUAL", "1D", live=True)  # the history call and chart.trades
        await live.close()


# public methods that call the API -> how the test calls them (the ``sent`` params are recorded)
DRIVERS: dict[str, Callable[[Deribit], Awaitable[Any]]] = {
    "authenticate": lambda dk: dk.authenticate(),
    "set_heartbeat": lambda dk: dk.set_heartbeat(10),
    "get_time": lambda dk: dk.get_time(),
    "test": lambda dk: dk.test(),
    "currencies": lambda dk: dk.currencies(),
    "instruments": lambda dk: dk.instruments("BTC", "option", expired=False),
    "instrument": lambda dk: dk.instrument("BTC-PERPETUAL", refresh=True),
    "order_book": _order_books,
    "ticker": lambda dk: dk.ticker("ETH-PERPETUAL"),
    "index_price": lambda dk: dk.index_price("btc_usd"),
    "trades": lambda dk: dk.trades("BTC-PERPETUAL", count=5, sorting="asc"),
    "candles": _candles,
    "book_summary": lambda dk: dk.book_summary("ETH", "future"),
    "subscribe": _subscribe_cycle,
    "buy": _buy,
    "sell": lambda dk: _resting(dk, "sell"),
    "edit": _edit,
    "order_state": _order_state,
    "open_orders": _open_orders,
    "cancel": _cancel,
    "cancel_all": _cancel_all,
    "positions": lambda dk: dk.positions("BTC", "future"),
    "account_summary": lambda dk: dk.account_summary("BTC"),
    "user_trades": lambda dk: dk.user_trades(PERP, count=5, sorting="asc"),
    "close_position": lambda dk: dk.close_position(PERP),
    "portfolio": _portfolio,
}
WS_ONLY = {"authenticate", "set_heartbeat", "subscribe", "portfolio"}
# public methods that are not API calls of their own
NOT_API = {"connect", "start", "close", "call"}


@cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


def resolve(node: Any) -> Any:
    """Follow ``$ref`` JSON pointers (``#/components/...``) until a concrete object."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec()
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def parameters(method: str) -> dict[str, dict[str, Any]] | None:
    """name -> resolved parameter object of ``method``, or None if the method is not documented."""
    path = spec()["paths"].get(f"/{method}")
    if path is None:
        return None
    op = path.get("get") or path.get("post") or {}
    out = {}
    for raw in op.get("parameters", []):
        p = resolve(raw)
        out[p["name"]] = {**p, "schema": resolve(p.get("schema", {}))}
    return out


JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list,),
    "object": (dict,),
}


def channel_patterns() -> list[re.Pattern[str]]:
    names = spec()["components"]["x-subscriptions"]
    return [re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^.]+", re.escape(n)) + "$") for n in names]


def problems(sent: Sent) -> list[str]:
    out: list[str] = []
    patterns = channel_patterns()
    for method, params in sent:
        documented = parameters(method)
        if documented is None:
            out.append(f"{method}: not in the API description")
            continue
        for name, value in params.items():
            p = documented.get(name)
            if p is None:
                out.append(f"{method}: param {name!r} is not documented (documented: {sorted(documented)})")
                continue
            schema = p["schema"]
            kinds = JSON_TYPES.get(schema.get("type", ""), ())
            if kinds and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
                out.append(f"{method}: {name}={value!r} is not of type {schema['type']}")
            # the description types resolution as a string but lists its minutes as integers
            enum = schema.get("enum")
            if enum is not None and schema.get("type") == "string":
                enum = [str(v) for v in enum]
            if enum is not None and (str(value) if schema.get("type") == "string" else value) not in enum:
                out.append(f"{method}: {name}={value!r} is not one of {schema['enum']}")
            if name == "channels":
                out += [f"{method}: channel {ch!r} is not documented" for ch in value
                        if not any(pat.match(ch) for pat in patterns)]
        if method == "public/auth":  # "required" there depends on the grant type
            needs = {"client_credentials": {"client_id", "client_secret"},
                     "client_signature": {"client_id", "timestamp", "signature"},
                     "refresh_token": {"refresh_token"}}[params["grant_type"]]
        else:
            needs = {n for n, p in documented.items() if p.get("required")}
        out += [f"{method}: required param {n!r} not sent" for n in sorted(needs - set(params))]
    return out


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every request the transports send, recorded by a wrapper around the real ``request``."""
    log: Sent = []
    for cls in (WsTransport, HttpTransport):
        real = cls.request

        def wrapper(real: Any) -> Any:
            async def request(self: Any, method: str, params: dict[str, Any] | None = None, *,
                              timeout: float | None = None) -> Any:
                log.append((method, dict(params or {})))
                return await real(self, method, params, timeout=timeout)
            return request

        monkeypatch.setattr(cls, "request", wrapper(real))
    for var in ("DERIBIT_TARGET", "DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    return log


@pytest.fixture
async def dk(sim: Simulator, sent: Sent) -> AsyncIterator[Deribit]:
    client = await Deribit.connect(sim.ws_url, **KEY, heartbeat=10)
    yield client
    await client.close()


def test_every_api_method_is_driven() -> None:
    public = {name for name, fn in inspect.getmembers(Deribit, inspect.isfunction) if not name.startswith("_")}
    missing = public - NOT_API - set(DRIVERS)
    assert not missing, f"add a driver to DRIVERS in tests/conformance/test_client_spec.py for: {sorted(missing)}"
    assert not set(DRIVERS) - public


async def test_ws_requests_match_the_description(dk: Deribit, sent: Sent) -> None:
    for name, drive in DRIVERS.items():
        before = len(sent)
        await drive(dk)
        assert len(sent) > before, f"Deribit.{name} sent nothing"
    sent_methods = {m for m, _ in sent}
    assert {"public/hello", "public/auth", "public/set_heartbeat", "public/subscribe", "private/subscribe",
            "public/unsubscribe", "private/unsubscribe"} <= sent_methods
    assert problems(sent) == []


async def test_http_requests_match_the_description(sim: Simulator, sent: Sent) -> None:
    dk = await Deribit.connect(sim.ws_url, **KEY, transport="http")
    try:
        for name, drive in DRIVERS.items():
            if name == "order_book":
                await dk.order_book("BTC-PERPETUAL", depth=10)  # live books stream: WebSocket only
            elif name not in WS_ONLY:
                await drive(dk)
    finally:
        await dk.close()
    assert len(sent) >= len(DRIVERS) - len(WS_ONLY)
    assert problems(sent) == []


async def test_session_requests_match_the_description(sim: Simulator, sent: Sent) -> None:
    signed = await Deribit.connect(sim.ws_url, **KEY, auth_method="client_signature")
    await signed.close()
    try:
        cod = await Deribit.connect(sim.ws_url, **KEY, cancel_on_disconnect=True)
        await cod.close()
    except MethodNotFoundError:
        pass  # the request was sent (and recorded) before the embedded exchange refused it
    async with Simulator(seed=1, tick_interval=0, rate_limits=False, token_ttl=1) as short:
        refreshing = await Deribit.connect(short.ws_url, **KEY)
        try:
            await asyncio.wait_for(refreshing.authenticated.wait(), 3.0)
        finally:
            await refreshing.close()
    grants = {p.get("grant_type") for m, p in sent if m == "public/auth"}
    assert grants == {"client_credentials", "client_signature", "refresh_token"}
    assert any(m == "private/enable_cancel_on_disconnect" for m, _ in sent)
    assert problems(sent) == []


def test_the_checker_catches_mistakes() -> None:
    found = problems([
        ("public/get_tickers", {}),
        ("public/get_order_book", {"instrument": "BTC-PERPETUAL"}),
        ("public/get_order_book", {"instrument_name": "BTC-PERPETUAL", "depth": 7}),
        ("public/get_instruments", {"currency": "BTC", "expired": "no"}),
        ("public/subscribe", {"channels": ["tickers.BTC-PERPETUAL.100ms"]}),
    ])
    assert found == [
        "public/get_tickers: not in the API description",
        "public/get_order_book: param 'instrument' is not documented (documented: ['depth', 'instrument_name'])",
        "public/get_order_book: required param 'instrument_name' not sent",
        "public/get_order_book: depth=7 is not one of [1, 5, 10, 20, 50, 100, 1000, 10000]",
        "public/get_instruments: expired='no' is not of type boolean",
        "public/subscribe: channel 'tickers.BTC-PERPETUAL.100ms' is not documented",
    ]
