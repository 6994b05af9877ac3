"""Deribit's REST surface on the broker's port, over real sockets: GET with query params and POST with a
JSON-RPC body, Deribit's envelope and errors, private calls with the broker's token (bearer or
deri-hmac-sha256) and without, WebSocket-only methods refused; ccxt with both its URLs at the port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import ccxt.pro as ccxt_pro
import httpx
import orjson
import pytest
from conftest import connect_peer

from deribit_kit import Deribit
from deribit_kit.broker import Broker
from deribit_kit.broker.port import BrokerServer
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator
from deribit_kit.wire.auth import http_signature_header

CLIENT_ID, TOKEN = "port-user", "port-secret"
PERP = "BTC-PERPETUAL"


@pytest.fixture
async def port(sim: Simulator) -> AsyncIterator[BrokerServer]:
    dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    broker = Broker(dk)
    async with BrokerServer(broker, token=TOKEN, client_id=CLIENT_ID, rate_limits=False) as srv:
        yield srv
    await broker.close()
    await dk.close()


@pytest.fixture
async def http(port: BrokerServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=port.http_url, timeout=10) as client:
        yield client


async def test_get_with_query_params(http: httpx.AsyncClient) -> None:
    got = await http.get("/api/v2/public/get_instruments", params={"currency": "BTC", "kind": "future"})
    body = got.json()
    assert got.status_code == 200 and "id" not in body and {"usIn", "usOut", "usDiff", "testnet"} <= set(body)
    assert PERP in {i["instrument_name"] for i in body["result"]}
    book = (await http.get("/api/v2/public/get_order_book", params={"instrument_name": PERP, "depth": 5})).json()
    assert book["result"]["instrument_name"] == PERP and len(book["result"]["bids"]) <= 5
    assert isinstance((await http.get("/api/v2/public/get_time")).json()["result"], int)


async def test_post_with_a_json_rpc_body(http: httpx.AsyncClient) -> None:
    body = {"jsonrpc": "2.0", "id": "x7", "method": "public/ticker", "params": {"instrument_name": PERP}}
    got = await http.post("/api/v2", content=orjson.dumps(body))
    assert got.status_code == 200 and got.json()["id"] == "x7"
    assert got.json()["result"]["instrument_name"] == PERP


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("/api/v2/public/no_such_method", {}, 400, -32601),
    ("/api/v2/public/get_instrument", {"instrument_name": "NOPE-PERPETUAL"}, 400, 13020),
    ("/api/v2/public/subscribe", {"channels": "[]"}, 400, 10030),
    ("/api/v2/private/get_positions", {"currency": "BTC"}, 401, 13009),
])
async def test_errors_are_deribits(http: httpx.AsyncClient, path: str, params: dict[str, str], status: int,
                                   code: int) -> None:
    got = await http.get(path, params=params)
    assert got.status_code == status and got.json()["error"]["code"] == code


async def test_bad_bodies(http: httpx.AsyncClient) -> None:
    assert (await http.post("/api/v2", content=b"{nope")).json()["error"]["code"] == -32700
    assert (await http.post("/api/v2", content=b"x" * 40_000)).json()["error"]["code"] == -32600


async def test_private_calls_with_the_brokers_token(http: httpx.AsyncClient) -> None:
    auth = (await http.get("/api/v2/public/auth", params={"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                                         "client_secret": TOKEN})).json()["result"]
    got = await http.get("/api/v2/private/get_positions", params={"currency": "BTC"},
                         headers={"authorization": f"bearer {auth['access_token']}"})
    assert got.status_code == 200 and isinstance(got.json()["result"], list)
    path = "/api/v2/private/get_positions?currency=BTC"
    signed = http_signature_header(CLIENT_ID, TOKEN, "GET", path)
    got = await http.get(path, headers={"authorization": signed})
    assert got.status_code == 200 and isinstance(got.json()["result"], list)
    assert (await http.get(path, headers={"authorization": signed})).status_code == 401  # an exact replay
    wrong = http_signature_header(CLIENT_ID, "not-the-token", "GET", path)
    assert (await http.get(path, headers={"authorization": wrong})).json()["error"]["code"] == 13009
    assert (await http.get(path, headers={"authorization": "bearer nope"})).status_code == 401


async def test_ccxt_with_both_urls_at_the_port(port: BrokerServer) -> None:
    ex = ccxt_pro.deribit({"enableRateLimit": False})
    ex.urls["api"] = {"rest": port.http_url, "ws": port.ws_url}
    ex.urls["test"] = {"rest": port.http_url, "ws": port.ws_url}
    try:
        markets = await ex.load_markets()
        assert "BTC/USD:BTC" in markets
        ticker = await ex.fetch_ticker("BTC/USD:BTC")
        assert ticker["symbol"] == "BTC/USD:BTC" and ticker["last"]
        book = await asyncio.wait_for(ex.watch_order_book("BTC/USD:BTC"), 10)
        assert book["bids"] and book["asks"] and book["bids"][0][0] < book["asks"][0][0]
    finally:
        await ex.close()


async def test_one_base_url_for_rest_and_a_raw_book(port: BrokerServer, http: httpx.AsyncClient) -> None:
    """A client with its REST base URL and its WebSocket URL both at the port: it lists instruments
    over REST, signs in over REST, and keeps a raw book over the WebSocket whose chain never breaks."""
    insts = (await http.get("/api/v2/public/get_instruments", params={"currency": "BTC"})).json()["result"]
    assert PERP in {i["instrument_name"] for i in insts}
    auth = (await http.get("/api/v2/public/auth", params={"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                                         "client_secret": TOKEN})).json()["result"]
    peer = await connect_peer(port.ws_url)
    try:
        chan = f"book.{PERP}.raw"
        got = await peer.result("public/subscribe", {"channels": [chan], "access_token": auth["access_token"]})
        assert got == [chan]
        last = None
        for _ in range(25):
            data = (await peer.next_notification(chan))["data"]
            assert (data["type"] == "snapshot") if last is None else (data["prev_change_id"] == last)
            last = data["change_id"]
    finally:
        await peer.close()


async def test_reference_data_is_kept_and_shared(sim: Simulator, port: BrokerServer,
                                                 http: httpx.AsyncClient) -> None:
    params = {"currency": "ETH", "kind": "option"}
    first = await http.get("/api/v2/public/get_instruments", params=params)
    asked = sim.stats["requests"]
    again = await http.get("/api/v2/public/get_instruments", params=params)  # answered from the port's copy
    assert sim.stats["requests"] == asked and again.json()["result"] == first.json()["result"]
    together = await asyncio.gather(*(http.get("/api/v2/public/get_currencies") for _ in range(5)))
    assert sim.stats["requests"] == asked + 1  # five callers at once, one upstream call
    assert len({orjson.dumps(r.json()["result"]) for r in together}) == 1
    other = await http.get("/api/v2/public/get_instruments", params={"currency": "ETH", "kind": "future"})
    assert sim.stats["requests"] == asked + 2 and other.json()["result"] != first.json()["result"]
