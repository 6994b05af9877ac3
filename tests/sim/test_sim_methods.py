"""The embedded exchange's JSON-RPC methods over real sockets: envelope, session, auth, reference
and market data, subscriptions, every class of bad input, and the loopback transport itself."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import websockets
from conftest import RawPeer, authenticate, connect_peer

from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator
from deribit_kit.wire.auth import signature_params
from deribit_kit.wire.names import PERPETUAL_EXPIRY_MS, parse_date_code, parse_instrument_name

PERP = "BTC-PERPETUAL"
TEST_REQUEST = {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}

INSTRUMENT_FIELDS = (
    "instrument_name", "instrument_id", "kind", "is_active", "creation_timestamp", "expiration_timestamp",
    "base_currency", "quote_currency", "counter_currency", "price_index", "instrument_type", "tick_size",
    "tick_size_steps", "min_trade_amount", "contract_size", "maker_commission", "taker_commission",
    "block_trade_commission", "block_trade_min_trade_amount", "block_trade_tick_size", "rfq",
)
TICKER_FIELDS = (
    "timestamp", "state", "instrument_name", "best_bid_price", "best_bid_amount", "best_ask_price",
    "best_ask_amount", "mark_price", "index_price", "last_price", "min_price", "max_price", "open_interest",
    "estimated_delivery_price", "stats",
)
TRADE_FIELDS = ("trade_id", "trade_seq", "timestamp", "tick_direction", "price", "amount", "direction",
                "instrument_name", "index_price", "mark_price")


def error_of(reply: dict[str, Any], code: int) -> dict[str, Any]:
    """The reply's ``error`` object, asserting it has ``code`` and no ``result``."""
    assert "result" not in reply, reply
    assert reply["error"]["code"] == code, reply
    return reply["error"]


def assert_envelope(reply: dict[str, Any], sim: Simulator) -> None:
    assert reply["jsonrpc"] == "2.0"
    assert isinstance(reply["usIn"], int) and isinstance(reply["usOut"], int)
    assert reply["usIn"] <= reply["usOut"]
    assert reply["usDiff"] == reply["usOut"] - reply["usIn"]
    assert reply["testnet"] is sim.testnet


def an_option(sim: Simulator, coin: str = "BTC") -> str:
    return next(i.name for i in sim.market.instruments.values() if i.kind == "option" and i.coin == coin)


async def other_message(p: RawPeer, timeout: float = 5.0) -> dict[str, Any]:
    """The next non-reply, non-subscription message (heartbeats, injected frames)."""
    return await asyncio.wait_for(p.other.get(), timeout)


# ---------------------------------------------------------------- envelope and ids


async def test_result_envelope_over_ws(peer: RawPeer, sim: Simulator) -> None:
    before = sim.now_ms()
    reply = await peer.call("public/get_time")
    assert reply["id"] == 1
    assert_envelope(reply, sim)
    assert before <= reply["result"] <= sim.now_ms()
    assert abs(reply["usIn"] // 1000 - reply["result"]) < 5_000


async def test_error_envelope_over_ws(peer: RawPeer, sim: Simulator) -> None:
    reply = await peer.call("public/no_such_method")
    assert reply["id"] == 1
    assert_envelope(reply, sim)
    assert reply["error"] == {"code": -32601, "message": "Method not found"}


async def test_ids_of_any_json_type_echoed(peer: RawPeer) -> None:
    for rid in (7, 2**53, "auth_5f3c", "101", 1.5, {"k": [1, "x"]}, None):
        ok = await peer.send_raw(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "public/test"}))
        assert ok["id"] == rid and ok["result"]["version"], rid
        err = await peer.send_raw(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "public/nope"}))
        assert err["id"] == rid and err["error"]["code"] == -32601, rid


async def test_params_may_be_omitted(peer: RawPeer) -> None:
    reply = await peer.send_raw('{"jsonrpc":"2.0","id":"x","method":"public/status"}')
    assert reply["result"] == {"locked": "false", "locked_indices": []}


async def test_http_get_has_no_id_and_coerces_strings(sim_http: httpx.AsyncClient, sim: Simulator) -> None:
    r = await sim_http.get("/api/v2/public/get_order_book", params={"instrument_name": PERP, "depth": "5"})
    assert r.status_code == 200
    body = r.json()
    assert "id" not in body
    assert_envelope(body, sim)
    assert len(body["result"]["bids"]) == 5
    r = await sim_http.get("/api/v2/public/get_instruments",
                           params={"currency": "BTC", "kind": "future", "expired": "false"})
    assert r.status_code == 200
    assert {i["kind"] for i in r.json()["result"]} == {"future"}


async def test_http_post_json_rpc_echoes_id(sim_http: httpx.AsyncClient, sim: Simulator) -> None:
    for rid in (42, "abc"):
        r = await sim_http.post("/api/v2/public/ticker",
                                json={"jsonrpc": "2.0", "id": rid, "method": "public/ticker",
                                      "params": {"instrument_name": PERP}})
        assert r.status_code == 200
        body = r.json()
        assert body["id"] == rid
        assert_envelope(body, sim)
        assert body["result"]["instrument_name"] == PERP


async def test_http_get_with_json_rpc_body(sim_http: httpx.AsyncClient) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 3, "method": "public/get_time"})
    r = await sim_http.request("GET", "/api/v2/public/get_time", content=body,
                               headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["id"] == 3 and isinstance(r.json()["result"], int)


async def test_http_errors_carry_status_and_envelope(sim_http: httpx.AsyncClient, sim: Simulator) -> None:
    r = await sim_http.get("/api/v2/public/get_order_book", params={"instrument_name": "BTC-1JAN99"})
    assert r.status_code == 400
    body = r.json()
    assert "id" not in body
    assert_envelope(body, sim)
    assert body["error"]["code"] == 13020
    r = await sim_http.get("/api/v2/public/no_such_method")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32601


# ---------------------------------------------------------------- session


async def test_public_test_and_expected_exception(peer: RawPeer) -> None:
    assert (await peer.result("public/test"))["version"]
    err = error_of(await peer.call("public/test", {"expected_result": "exception"}), 11094)
    assert err["message"] == "internal_server_error"
    assert (await peer.result("public/test", {"expected_result": "anything_else"}))["version"]


async def test_hello(peer: RawPeer) -> None:
    result = await peer.result("public/hello", {"client_name": "pytest", "client_version": "1.0"})
    assert isinstance(result["version"], str) and result["version"]
    err = error_of(await peer.call("public/hello", {"client_name": "pytest"}), -32602)
    assert err["data"]["param"] == "client_version"


async def test_status(peer: RawPeer) -> None:
    assert await peer.result("public/status") == {"locked": "false", "locked_indices": []}


async def test_heartbeat_test_requests_answered_then_missed_closes(peer: RawPeer, sim: Simulator) -> None:
    assert await peer.result("public/set_heartbeat", {"interval": 1}) == "ok"
    assert await other_message(peer, 3.0) == TEST_REQUEST
    assert (await peer.result("public/test"))["version"]  # answered: the connection stays
    assert await other_message(peer, 3.0) == TEST_REQUEST
    # not answered: closed at the next interval
    await asyncio.wait_for(peer.ws.wait_closed(), 3.0)
    assert peer.ws.close_code == 1000
    assert len(sim.sessions) == 0 or all(s.conn is not peer.ws for s in sim.sessions)


async def test_disable_heartbeat(peer: RawPeer) -> None:
    assert await peer.result("public/set_heartbeat", {"interval": 1}) == "ok"
    assert await peer.result("public/disable_heartbeat") == "ok"
    # past the first interval: no test_request (and nothing to miss)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(peer.other.get(), 1.3)
    assert not peer.ws.close_code
    assert (await peer.result("public/test"))["version"]


async def test_set_heartbeat_checks_interval(peer: RawPeer, sim: Simulator) -> None:
    err = error_of(await peer.call("public/set_heartbeat", {"interval": 0}), -32602)
    assert err["data"]["param"] == "interval"
    err = error_of(await peer.call("public/set_heartbeat", {}), -32602)
    assert err["data"] == {"param": "interval", "reason": "missing required parameter"}


async def test_default_minimum_heartbeat_interval() -> None:
    async with Simulator(seed=1, tick_interval=0, rate_limits=False) as quiet:
        p = await connect_peer(quiet.ws_url)
        try:
            err = error_of(await p.call("public/set_heartbeat", {"interval": 5}), -32602)
            assert "10" in err["data"]["reason"]  # Deribit's minimum
            assert await p.result("public/set_heartbeat", {"interval": 10}) == "ok"
        finally:
            await p.close()


# ---------------------------------------------------------------- authentication


async def test_auth_client_credentials(peer: RawPeer, sim: Simulator) -> None:
    result = await peer.result("public/auth", {
        "grant_type": "client_credentials", "client_id": sim.demo_account.client_id,
        "client_secret": sim.demo_account.client_secret, "state": "s-1"})
    for key in ("access_token", "token_type", "expires_in", "refresh_token", "scope"):
        assert key in result
    assert result["token_type"] == "bearer"
    assert result["state"] == "s-1"
    assert "trade:read_write" in result["scope"]
    # the connection is now authenticated: private methods without access_token
    assert await peer.result("private/subscribe", {"channels": ["user.orders.any.any.raw"]}) == [
        "user.orders.any.any.raw"]


async def test_demo_key_constants() -> None:
    async with Simulator(seed=1, tick_interval=0, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET) as s:
        p = await connect_peer(s.ws_url)
        try:
            params = signature_params(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
            assert (await p.result("public/auth", params))["access_token"]
        finally:
            await p.close()


async def test_auth_wrong_secret_13004(peer: RawPeer, sim: Simulator) -> None:
    error_of(await peer.call("public/auth", {
        "grant_type": "client_credentials", "client_id": sim.demo_account.client_id, "client_secret": "nope"}), 13004)
    error_of(await peer.call("public/auth", {
        "grant_type": "client_credentials", "client_id": "unknown", "client_secret": "nope"}), 13004)
    error_of(await peer.call("private/subscribe", {"channels": ["user.orders.any.any.raw"]}), 13009)


async def test_auth_client_signature_and_replay(peer: RawPeer, sim: Simulator) -> None:
    acct = sim.demo_account
    params = signature_params(acct.client_id, acct.client_secret, data="x")
    result = await peer.result("public/auth", params)
    assert result["access_token"] and result["token_type"] == "bearer"
    err = error_of(await peer.call("public/auth", params), 13009)  # the exact same signature again
    assert err["message"] == "unauthorized" and err["data"]["reason"] == "signature already used (replay)"
    # same timestamp and nonce, different signed data (ccxt: ts = nonce = the current ms): not a replay
    other = signature_params(acct.client_id, acct.client_secret, timestamp=params["timestamp"],
                             nonce=params["nonce"], data="y")
    assert (await peer.result("public/auth", other))["access_token"]
    bad = signature_params(acct.client_id, "wrong-secret")
    error_of(await peer.call("public/auth", bad), 13009)
    stale = signature_params(acct.client_id, acct.client_secret, timestamp=sim.now_ms() - 10 * 60_000)
    error_of(await peer.call("public/auth", stale), 13009)


async def test_auth_refresh_token(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    first = await authenticate(peer, sim)
    second = await peer.result("public/auth", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert second["access_token"] != first["access_token"]
    error_of(await peer.call("public/auth", {"grant_type": "refresh_token",
                                             "refresh_token": first["refresh_token"]}), 13009)
    # a token passed as access_token authenticates another connection; the replaced one does not
    ch = "user.trades.any.any.raw"
    assert await peer2.result("private/subscribe", {"channels": [ch], "access_token": second["access_token"]}) == [ch]
    p3 = await connect_peer(sim.ws_url)
    try:
        error_of(await p3.call("private/subscribe", {"channels": [ch], "access_token": first["access_token"]}), 13009)
    finally:
        await p3.close()


async def test_logout_closes_and_invalidates(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    token = (await authenticate(peer, sim))["access_token"]
    assert await peer.result("private/logout") == "ok"
    await asyncio.wait_for(peer.ws.wait_closed(), 5.0)
    assert peer.ws.close_code == 1000
    reply = await peer2.call("private/subscribe", {"channels": ["user.orders.any.any.raw"], "access_token": token})
    error_of(reply, 13009)


async def test_auth_bad_grant_type(peer: RawPeer) -> None:
    err = error_of(await peer.call("public/auth", {"grant_type": "password"}), -32602)
    assert err["data"]["param"] == "grant_type"


async def test_http_authorization_headers(sim_http: httpx.AsyncClient, sim: Simulator) -> None:
    acct = sim.demo_account
    good = base64.b64encode(f"{acct.client_id}:{acct.client_secret}".encode()).decode()
    r = await sim_http.get("/api/v2/public/get_time", headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 200
    bad = base64.b64encode(f"{acct.client_id}:wrong".encode()).decode()
    r = await sim_http.get("/api/v2/public/get_time", headers={"Authorization": f"Basic {bad}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == 13004
    r = await sim_http.get("/api/v2/public/get_time", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and r.json()["error"]["code"] == 13009


# ---------------------------------------------------------------- reference data


async def test_get_currencies(peer: RawPeer) -> None:
    result = await peer.result("public/get_currencies")
    by = {c["currency"]: c for c in result}
    assert {"BTC", "ETH", "USDC"} <= set(by)
    for c in result:
        for key in ("currency", "currency_long", "coin_type", "withdrawal_fee", "in_cross_collateral_pool"):
            assert key in c, (c, key)


async def test_instrument_universe(peer: RawPeer) -> None:
    insts = await peer.result("public/get_instruments", {"currency": "any"})
    assert len(insts) >= 300
    names = [i["instrument_name"] for i in insts]
    assert len(names) == len(set(names))
    by = {i["instrument_name"]: i for i in insts}
    for inst in insts:
        for key in INSTRUMENT_FIELDS:
            assert key in inst, (inst["instrument_name"], key)
        parsed = parse_instrument_name(inst["instrument_name"])
        assert parsed.kind == inst["kind"]
        assert inst["is_active"] is True
        if inst["kind"] == "spot":
            assert "settlement_period" not in inst and "settlement_currency" not in inst
        else:
            assert inst["settlement_period"] in ("day", "week", "month", "perpetual")
            assert inst["settlement_currency"]
        if parsed.expiry is not None:
            exp = datetime.fromtimestamp(inst["expiration_timestamp"] / 1000, UTC)
            assert (exp.date(), exp.hour, exp.minute, exp.second) == (parsed.expiry, 8, 0, 0)
            assert inst["settlement_period"] != "perpetual"
        else:
            assert inst["expiration_timestamp"] == PERPETUAL_EXPIRY_MS
        if inst["kind"] == "option":
            assert inst["option_type"] == parsed.option_type
            assert inst["strike"] == parsed.strike
            assert inst["quote_currency"] == inst["base_currency"]
            assert inst["tick_size_steps"] and inst["contract_size"] == 1
        if inst["kind"] == "future":
            assert "max_leverage" in inst and "max_liquidation_commission" in inst
    for coin in ("BTC", "ETH"):
        expiries = {n.split("-")[1] for n in names if n.startswith(f"{coin}-") and n.count("-") == 3}
        assert len(expiries) >= 4
        for code in expiries:
            parse_date_code(code)
        futures = [i for i in insts if i["base_currency"] == coin and i["kind"] == "future"
                   and i["instrument_type"] == "reversed" and i["settlement_period"] != "perpetual"]
        assert len(futures) >= 3
        assert by[f"{coin}-PERPETUAL"]["settlement_period"] == "perpetual"
    perp = by[PERP]
    assert (perp["instrument_type"], perp["quote_currency"], perp["contract_size"], perp["tick_size"]) == (
        "reversed", "USD", 10, 0.5)
    spot = by["BTC_USDC"]
    assert (spot["kind"], spot["base_currency"], spot["quote_currency"]) == ("spot", "BTC", "USDC")
    lin = by["BTC_USDC-PERPETUAL"]
    assert (lin["kind"], lin["instrument_type"], lin["settlement_currency"], lin["settlement_period"]) == (
        "future", "linear", "USDC", "perpetual")
    assert Counter(i["kind"] for i in insts)["option"] >= 200


async def test_get_instruments_filters(peer: RawPeer, sim_http: httpx.AsyncClient) -> None:
    every = await peer.result("public/get_instruments", {"currency": "any"})
    assert await peer.result("public/get_instruments") == every  # missing currency = any (ccxt)
    r = await sim_http.get("/api/v2/public/get_instruments")
    assert r.status_code == 200 and len(r.json()["result"]) == len(every)
    for kind in ("future", "option", "spot", "future_combo", "option_combo"):
        result = await peer.result("public/get_instruments", {"currency": "any", "kind": kind})
        assert all(i["kind"] == kind for i in result)
        assert (len(result) > 0) == (kind in ("future", "option", "spot"))
    btc = await peer.result("public/get_instruments", {"currency": "BTC", "kind": "future"})
    assert btc and all(i["settlement_currency"] == "BTC" for i in btc)
    usdc = await peer.result("public/get_instruments", {"currency": "USDC"})
    assert {"BTC_USDC", "BTC_USDC-PERPETUAL"} <= {i["instrument_name"] for i in usdc}
    expired = await peer.result("public/get_instruments", {"currency": "BTC", "expired": True})
    assert isinstance(expired, list) and all(not i["is_active"] for i in expired)
    # cryptofeed asks for SOL and needs HTTP 200 with a list
    r = await sim_http.get("/api/v2/public/get_instruments", params={"currency": "SOL"})
    assert r.status_code == 200 and isinstance(r.json()["result"], list)
    err = error_of(await peer.call("public/get_instruments", {"currency": "BTC", "kind": "perpetual"}), -32602)
    assert err["data"]["param"] == "kind"


async def test_get_instrument_and_contract_size(peer: RawPeer, sim: Simulator) -> None:
    opt = an_option(sim)
    for name in (PERP, opt, "BTC_USDC", "ETH-PERPETUAL"):
        inst = await peer.result("public/get_instrument", {"instrument_name": name})
        assert inst == sim.market.get(name).info  # type: ignore[union-attr]
        size = await peer.result("public/get_contract_size", {"instrument_name": name})
        assert size == {"contract_size": inst["contract_size"]}
    error_of(await peer.call("public/get_instrument", {"instrument_name": "BTC-1JAN20"}), 13020)
    error_of(await peer.call("public/get_contract_size", {"instrument_name": "nope"}), 13020)


async def test_index_prices(peer: RawPeer, sim: Simulator) -> None:
    names = await peer.result("public/get_index_price_names")
    assert {"btc_usd", "eth_usd", "btc_usdc"} <= set(names)
    for name in ("btc_usd", "eth_usd"):
        result = await peer.result("public/get_index_price", {"index_name": name})
        assert set(result) == {"index_price", "estimated_delivery_price"}
        assert result["index_price"] == pytest.approx(sim.market.index[name[:3].upper()], rel=1e-2)
    err = error_of(await peer.call("public/get_index_price", {"index_name": "doge_usd"}), -32602)
    assert err["data"]["param"] == "index_name"


# ---------------------------------------------------------------- market data


async def test_get_order_book(peer: RawPeer, sim: Simulator) -> None:
    book = await peer.result("public/get_order_book", {"instrument_name": PERP, "depth": 5})
    for key in (*TICKER_FIELDS, "change_id", "bids", "asks", "settlement_price", "current_funding", "funding_8h"):
        assert key in book, key
    assert len(book["bids"]) == 5 and len(book["asks"]) == 5
    bids, asks = [p for p, _ in book["bids"]], [p for p, _ in book["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]
    assert book["best_bid_price"] == bids[0] and book["best_ask_price"] == asks[0]
    assert book["best_bid_amount"] == book["bids"][0][1]
    assert all(a > 0 and a % 10 == 0 for _, a in book["bids"] + book["asks"])  # USD, contract size 10
    assert isinstance(book["change_id"], int)
    full = await peer.result("public/get_order_book", {"instrument_name": PERP})
    assert len(full["bids"]) > 5
    one = await peer.result("public/get_order_book", {"instrument_name": PERP, "depth": 1})
    assert len(one["bids"]) == 1 == len(one["asks"])
    err = error_of(await peer.call("public/get_order_book", {"instrument_name": PERP, "depth": 7}), -32602)
    assert err["data"]["param"] == "depth"
    spot = await peer.result("public/get_order_book", {"instrument_name": "BTC_USDC", "depth": 10})
    assert "settlement_price" not in spot and "current_funding" not in spot


async def test_ticker_kinds(peer: RawPeer, sim: Simulator) -> None:
    perp = await peer.result("public/ticker", {"instrument_name": PERP})
    for key in (*TICKER_FIELDS, "current_funding", "funding_8h", "interest_value", "settlement_price"):
        assert key in perp, key
    assert perp["state"] == "open" and perp["instrument_name"] == PERP
    assert perp["min_price"] < perp["mark_price"] < perp["max_price"]
    assert "bids" not in perp and "change_id" not in perp
    assert set(perp["stats"]) >= {"high", "low", "volume", "price_change"}
    opt = await peer.result("public/ticker", {"instrument_name": an_option(sim, "ETH")})
    assert set(opt["greeks"]) == {"delta", "gamma", "rho", "theta", "vega"}
    for key in ("mark_iv", "bid_iv", "ask_iv", "underlying_price", "underlying_index", "interest_rate"):
        assert key in opt, key
    assert 5 < opt["mark_iv"] < 300
    assert "current_funding" not in opt
    fut_name = next(i.name for i in sim.market.instruments.values() if i.kind == "future" and not i.perpetual)
    fut = await peer.result("public/ticker", {"instrument_name": fut_name})
    assert "current_funding" not in fut and "greeks" not in fut
    error_of(await peer.call("public/ticker", {"instrument_name": "BTC-PERPETUAL-X"}), 13020)


async def test_book_summaries(peer: RawPeer, sim: Simulator) -> None:
    summary = await peer.result("public/get_book_summary_by_currency", {"currency": "BTC", "kind": "future"})
    assert summary
    for item in summary:
        inst = sim.market.get(item["instrument_name"])
        assert inst is not None and inst.kind == "future" and inst.info["settlement_currency"] == "BTC"
        for key in ("base_currency", "quote_currency", "bid_price", "ask_price", "mid_price", "mark_price", "last",
                    "volume", "open_interest", "creation_timestamp", "estimated_delivery_price"):
            assert key in item, key
    perp = next(i for i in summary if i["instrument_name"] == PERP)
    assert "funding_8h" in perp and "current_funding" in perp
    opts = await peer.result("public/get_book_summary_by_currency", {"currency": "ETH", "kind": "option"})
    assert opts and all("mark_iv" in i and "underlying_price" in i for i in opts)
    one = await peer.result("public/get_book_summary_by_instrument", {"instrument_name": PERP})
    assert isinstance(one, list) and len(one) == 1 and one[0]["instrument_name"] == PERP
    error_of(await peer.call("public/get_book_summary_by_currency", {"currency": "any"}), -32602)
    error_of(await peer.call("public/get_book_summary_by_currency", {}), -32602)
    error_of(await peer.call("public/get_book_summary_by_instrument", {"instrument_name": "X"}), 13020)


async def _with_trades(sim: Simulator, name: str, n: int) -> list[dict[str, Any]]:
    """Tick until ``name`` has at least ``n`` public trades; returns them oldest first."""
    inst = sim.market.get(name)
    assert inst is not None
    for _ in range(2000):
        if len(inst.trades) >= n:
            break
        sim.step()
    assert len(inst.trades) >= n
    return list(inst.trades)


async def test_last_trades_by_instrument(peer: RawPeer, sim: Simulator) -> None:
    trades = await _with_trades(sim, PERP, 12)
    result = await peer.result("public/get_last_trades_by_instrument", {"instrument_name": PERP, "count": 5})
    assert set(result) == {"trades", "has_more"}
    got = result["trades"]
    assert len(got) == 5 and result["has_more"] is True
    for t in got:
        for key in TRADE_FIELDS:
            assert key in t, key
        assert t["instrument_name"] == PERP and t["direction"] in ("buy", "sell")
        assert isinstance(t["trade_id"], str) and int(t["trade_id"]) > 0
        assert t["tick_direction"] in (0, 1, 2, 3)
    # the newest, newest first by default (the clock keeps ticking, so maybe newer than ``trades``)
    seqs = [t["trade_seq"] for t in got]
    assert seqs == list(range(seqs[0], seqs[0] - 5, -1)) and seqs[0] >= trades[-1]["trade_seq"]
    asc = (await peer.result("public/get_last_trades_by_instrument",
                             {"instrument_name": PERP, "count": 5, "sorting": "asc"}))["trades"]
    seqs = [t["trade_seq"] for t in asc]
    assert seqs == sorted(seqs)
    desc = (await peer.result("public/get_last_trades_by_instrument",
                              {"instrument_name": PERP, "count": 5, "sorting": "desc"}))["trades"]
    dseqs = [t["trade_seq"] for t in desc]
    assert dseqs == sorted(dseqs, reverse=True) and dseqs[0] >= seqs[0]
    # a sequence window, from its start
    lo = trades[2]["trade_seq"]
    window = await peer.result("public/get_last_trades_by_instrument",
                               {"instrument_name": PERP, "start_seq": lo, "end_seq": lo + 3, "count": 2,
                                "include_old": True})
    assert sorted(t["trade_seq"] for t in window["trades"]) == [lo, lo + 1]
    assert window["has_more"] is True
    all_ = await peer.result("public/get_last_trades_by_instrument", {"instrument_name": PERP, "count": 10_000})
    assert all_["has_more"] is False and len(all_["trades"]) == len(sim.market.get(PERP).trades)  # type: ignore[union-attr]
    for bad in ({"count": 0}, {"count": 10_001}, {"sorting": "up"}, {"count": "many"}):
        err = error_of(await peer.call("public/get_last_trades_by_instrument", {"instrument_name": PERP, **bad}),
                       -32602)
        assert err["data"]["param"] in bad


async def test_last_trades_by_instrument_and_time(peer: RawPeer, sim: Simulator) -> None:
    trades = await _with_trades(sim, PERP, 8)
    start, end = trades[1]["timestamp"], trades[-1]["timestamp"]
    result = await peer.result("public/get_last_trades_by_instrument_and_time",
                               {"instrument_name": PERP, "start_timestamp": start, "end_timestamp": end,
                                "count": 3, "sorting": "asc"})
    got = result["trades"]
    assert len(got) == 3 and result["has_more"] is True
    assert all(start <= t["timestamp"] <= end for t in got)
    assert got == [t for t in trades if t["timestamp"] >= start][:3]  # from the earliest in the window
    err = error_of(await peer.call("public/get_last_trades_by_instrument_and_time",
                                   {"instrument_name": PERP, "start_timestamp": start}), -32602)
    assert err["data"]["param"] == "end_timestamp"


async def test_last_trades_by_currency(peer: RawPeer, sim: Simulator) -> None:
    await _with_trades(sim, PERP, 5)
    await _with_trades(sim, "BTC_USDC", 3)
    result = await peer.result("public/get_last_trades_by_currency", {"currency": "BTC", "kind": "future",
                                                                     "count": 20})
    got = result["trades"]
    assert got
    for t in got:
        inst = sim.market.get(t["instrument_name"])
        assert inst is not None and inst.kind == "future" and inst.coin == "BTC"
    stamps = [(t["timestamp"], int(t["trade_id"])) for t in got]
    assert stamps == sorted(stamps, reverse=True)
    spot = await peer.result("public/get_last_trades_by_currency", {"currency": "BTC", "kind": "spot", "count": 3,
                                                                   "sorting": "asc"})
    assert spot["trades"] and all(t["instrument_name"] == "BTC_USDC" for t in spot["trades"])
    ids = [int(t["trade_id"]) for t in spot["trades"]]
    assert ids == sorted(ids)
    anyk = await peer.result("public/get_last_trades_by_currency", {"currency": "BTC", "kind": "any", "count": 50})
    assert {sim.market.get(t["instrument_name"]).kind for t in anyk["trades"]} >= {"future"}  # type: ignore[union-attr]
    first = int(got[-1]["trade_id"])
    paged = await peer.result("public/get_last_trades_by_currency",
                              {"currency": "BTC", "kind": "future", "start_id": str(first), "count": 2,
                               "sorting": "asc"})
    assert int(paged["trades"][0]["trade_id"]) == first
    error_of(await peer.call("public/get_last_trades_by_currency", {"currency": "XYZ"}), -32602)


async def test_funding_rate_value(peer: RawPeer, sim: Simulator, sim_http: httpx.AsyncClient) -> None:
    now = sim.now_ms()
    value = await peer.result("public/get_funding_rate_value",
                              {"instrument_name": PERP, "start_timestamp": now - 3_600_000, "end_timestamp": now})
    assert isinstance(value, float) and abs(value) < 0.01
    r = await sim_http.get("/api/v2/public/get_funding_rate_value",
                           params={"instrument_name": "ETH-PERPETUAL", "start_timestamp": str(now - 1000),
                                   "end_timestamp": str(now)})
    assert r.status_code == 200 and isinstance(r.json()["result"], float)
    fut = next(i.name for i in sim.market.instruments.values() if i.kind == "future" and not i.perpetual)
    error_of(await peer.call("public/get_funding_rate_value",
                             {"instrument_name": fut, "start_timestamp": now - 1000, "end_timestamp": now}), 10031)
    err = error_of(await peer.call("public/get_funding_rate_value", {"instrument_name": PERP}), -32602)
    assert err["data"]["param"] == "start_timestamp"


# ---------------------------------------------------------------- subscription methods


async def test_subscribe_unsubscribe_public(peer: RawPeer, sim: Simulator) -> None:
    chans = [f"ticker.{PERP}.100ms", "deribit_price_index.btc_usd", f"book.{PERP}.100ms"]
    assert await peer.result("public/subscribe", {"channels": chans}) == chans
    assert all(sim.subscriber_count(c) == 1 for c in chans)
    # subscribing again is harmless and still listed
    assert await peer.result("public/subscribe", {"channels": chans[:1]}) == chans[:1]
    assert await peer.result("public/unsubscribe", {"channels": [chans[0], "ticker.ETH-PERPETUAL.100ms"]}) == [
        chans[0]]
    assert sim.subscriber_count(chans[0]) == 0 and sim.subscriber_count(chans[1]) == 1
    assert await peer.result("public/unsubscribe_all") == "ok"
    assert all(sim.subscriber_count(c) == 0 for c in chans)
    assert await peer.result("public/unsubscribe_all") == "ok"


async def test_subscribe_private(peer: RawPeer, sim: Simulator) -> None:
    chans = [f"book.{PERP}.raw", "user.orders.any.any.raw", "user.portfolio.btc", f"ticker.{PERP}.100ms"]
    error_of(await peer.call("private/subscribe", {"channels": chans}), 13009)
    # user channels are not offered through public/subscribe
    assert await peer.result("public/subscribe", {"channels": ["user.portfolio.btc"]}) == []
    await authenticate(peer, sim)
    assert await peer.result("private/subscribe", {"channels": chans, "label": "x", "scope": "ignored"}) == chans
    assert await peer.result("private/unsubscribe", {"channels": chans[:2]}) == chans[:2]
    assert await peer.result("private/unsubscribe_all") == "ok"
    assert all(sim.subscriber_count(c) == 0 for c in chans)


async def test_unsubscribe_all_public_and_private(peer: RawPeer, sim: Simulator) -> None:
    await authenticate(peer, sim)
    await peer.result("private/subscribe", {"channels": ["user.orders.any.any.raw"]})
    await peer.result("public/subscribe", {"channels": [f"ticker.{PERP}.100ms"]})
    assert await peer.result("public/unsubscribe_all") == "ok"
    assert sim.subscriber_count("user.orders.any.any.raw") == 0
    assert sim.subscriber_count(f"ticker.{PERP}.100ms") == 0


# ---------------------------------------------------------------- bad input


BAD_FRAMES: list[tuple[str, str, int, Any]] = [
    ("malformed json", '{"jsonrpc": "2.0", "id": 1, "method": ', -32700, None),
    ("array", "[1, 2, 3]", 11050, None),
    ("batch", '[{"jsonrpc":"2.0","id":1,"method":"public/test"}]', 11050, None),
    ("string", '"public/test"', 11050, None),
    ("number", "42", 11050, None),
    ("no id", '{"jsonrpc":"2.0","method":"public/test"}', 11050, None),
    ("no method", '{"jsonrpc":"2.0","id":9}', 11050, 9),
    ("method not a string", '{"jsonrpc":"2.0","id":9,"method":5}', 11050, 9),
    ("unknown method", '{"jsonrpc":"2.0","id":9,"method":"public/get_nothing"}', -32601, 9),
    ("positional params", '{"jsonrpc":"2.0","id":9,"method":"public/test","params":[1]}', -32602, 9),
]


async def test_bad_frames(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    for what, frame, code, rid in BAD_FRAMES:
        reply = await peer.send_raw(frame)
        assert_envelope(reply, sim)
        assert reply.get("error", {}).get("code") == code, (what, reply)
        assert "result" not in reply and reply["id"] == rid, what
        assert (await peer.result("public/test"))["version"], what  # still usable
        assert (await peer2.result("public/test"))["version"], what  # the other one unaffected
    assert peer.ws.close_code is None and peer2.ws.close_code is None


BAD_PARAMS: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("public/get_order_book", {}, -32602, "instrument_name"),
    ("public/get_order_book", {"instrument_name": PERP, "depth": "deep"}, -32602, "depth"),
    ("public/get_order_book", {"instrument_name": PERP, "depth": True}, -32602, "depth"),
    ("public/get_order_book", {"instrument_name": ["BTC-PERPETUAL"]}, -32602, "instrument_name"),
    ("public/get_order_book", {"instrument_name": {"x": 1}}, -32602, "instrument_name"),
    ("public/get_instruments", {"currency": "BTC", "expired": "maybe"}, -32602, "expired"),
    ("public/get_instruments", {"currency": ["BTC"]}, -32602, "currency"),
    ("public/subscribe", {"channels": "ticker.BTC-PERPETUAL.100ms"}, -32602, "channels"),
    ("public/subscribe", {"channels": [1, 2]}, -32602, "channels"),
    ("public/subscribe", {}, -32602, "channels"),
    ("public/get_last_trades_by_instrument", {"instrument_name": PERP, "count": 1.5}, -32602, "count"),
    ("public/ticker", {"instrument_name": "BTC-32DEC24"}, 13020, "instrument_name"),
    ("public/get_order_book", {"instrument_name": "NOPE"}, 13020, "instrument_name"),
    ("private/subscribe", {"channels": ["user.orders.any.any.raw"]}, 13009, None),
    ("private/logout", {}, 13009, None),
    ("private/subscribe", {"channels": [], "access_token": "forged"}, 13009, None),
]


async def test_bad_params(peer: RawPeer, peer2: RawPeer) -> None:
    for method, params, code, param in BAD_PARAMS:
        reply = await peer.call(method, params)
        assert reply.get("error", {}).get("code") == code, (method, params, reply)
        err = reply["error"]
        if code == -32602:
            assert err["message"] == "Invalid params"
            assert err["data"]["param"] == param and err["data"]["reason"], (method, params)
        elif param is not None:
            assert err["data"]["param"] == param
        assert (await peer.result("public/test"))["version"]
        assert (await peer2.result("public/get_time")) > 0


async def test_oversize_frame(peer: RawPeer, peer2: RawPeer) -> None:
    frame = orjson.dumps({"jsonrpc": "2.0", "id": 5, "method": "public/test", "params": {"pad": "x" * 33_000}})
    assert len(frame) > 32 * 1024
    reply = await peer.send_raw(frame)
    err = error_of(reply, -32600)
    assert err["message"] == "request entity too large"
    assert (await peer.result("public/test"))["version"]
    assert (await peer2.result("public/test"))["version"]
    # just under the limit is fine
    ok = orjson.dumps({"jsonrpc": "2.0", "id": 6, "method": "public/test", "params": {"pad": "x" * 32_000}})
    assert len(ok) <= 32 * 1024
    assert (await peer.send_raw(ok))["id"] == 6


async def test_too_many_channels(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    chans = [f"ticker.{n}.100ms" for n in list(sim.market.instruments)[:501]]
    assert len(chans) == 501
    err = error_of(await peer.call("public/subscribe", {"channels": chans}), -32602)
    assert err["data"]["param"] == "channels"
    assert sim.subscriber_count(chans[0]) == 0
    assert len(await peer.result("public/subscribe", {"channels": chans[:500]})) == 500
    assert (await peer2.result("public/test"))["version"]


async def test_ws_only_methods_over_http(sim_http: httpx.AsyncClient) -> None:
    for method, params in (("public/subscribe", {"channels": '["ticker.BTC-PERPETUAL.100ms"]'}),
                           ("public/unsubscribe_all", {}), ("public/set_heartbeat", {"interval": "10"})):
        r = await sim_http.get(f"/api/v2/{method}", params=params)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == 10030
    r = await sim_http.post("/api/v2/public/subscribe", json={"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                                                            "params": {"channels": ["ticker.BTC-PERPETUAL.100ms"]}})
    assert r.status_code == 400 and r.json()["error"]["code"] == 10030 and r.json()["id"] == 1


async def test_http_bad_bodies_and_paths(sim_http: httpx.AsyncClient) -> None:
    r = await sim_http.post("/api/v2/public/get_time", content=b"{not json",
                            headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    r = await sim_http.post("/api/v2/public/get_time", content=b"[1]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 11050
    big = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/test", "params": {"pad": "x" * 40_000}})
    r = await sim_http.post("/api/v2/public/test", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    r = await sim_http.get("/no/such/path")
    assert r.status_code == 404
    r = await sim_http.get("/api/v2/public/get_time")  # the same client keeps working
    assert r.status_code == 200


# ---------------------------------------------------------------- the loopback transport


async def test_ws_ping_answered(peer: RawPeer) -> None:
    pong = await peer.ws.ping(b"hi")
    latency = await asyncio.wait_for(pong, 5.0)
    assert latency >= 0


async def test_fragmented_message(peer: RawPeer) -> None:
    frame = orjson.dumps({"jsonrpc": "2.0", "id": "frag", "method": "public/get_time"}).decode()
    await peer.ws.send([frame[:10], frame[10:25], frame[25:]])
    reply = await asyncio.wait_for(peer.other.get(), 5.0)
    assert reply["id"] == "frag" and isinstance(reply["result"], int)


async def test_http_keep_alive(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.http_url) as client:
        r1 = await client.get("/api/v2/public/get_time")
        r2 = await client.post("/api/v2/public/test", json={"jsonrpc": "2.0", "id": 1, "method": "public/test"})
        r3 = await client.get("/api/v2/public/status")
        assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]
        ports = {r.extensions["network_stream"].get_extra_info("client_addr")[1] for r in (r1, r2, r3)}
        assert len(ports) == 1
        assert sim.server is not None and sim.server.connections == 1


async def test_wrong_ws_path_404(sim: Simulator) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(sim.ws_url.replace("/ws/api/v2", "/ws/api/v1"))
    assert info.value.response.status_code == 404
    ok = await connect_peer(sim.ws_url + "/")
    try:
        assert (await ok.result("public/test"))["version"]
    finally:
        await ok.close()


async def test_healthz(sim_http: httpx.AsyncClient, peer: RawPeer) -> None:
    r = await sim_http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "connections": 1}
