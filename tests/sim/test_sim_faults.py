"""Fault injection on the embedded exchange, from Python (``sim.faults``) and over its own
JSON-RPC (``sim/*``), and the real credit-based rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from conftest import RawPeer, connect_peer

from deribit_kit.sim import Simulator

PERP = "BTC-PERPETUAL"
ETH_PERP = "ETH-PERPETUAL"
TEST_REQUEST = {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}


async def closed(p: RawPeer, timeout: float = 5.0) -> None:
    await asyncio.wait_for(p.ws.wait_closed(), timeout)




# ---------------------------------------------------------------- drop_connections


async def test_drop_connections(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    await peer.result("public/subscribe", {"channels": [f"ticker.{PERP}.100ms"]})
    assert sim.faults.drop_connections() >= 2
    await closed(peer)
    await closed(peer2)
    assert peer.ws.close_code == 1006  # no closing handshake: a network failure
    fresh = await connect_peer(sim.ws_url)
    try:
        assert (await fresh.result("public/test"))["version"]
        assert sim.subscriber_count(f"ticker.{PERP}.100ms") == 0
    finally:
        await fresh.close()


async def test_drop_connections_rpc(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    assert await peer.result("sim/drop_connections") == "ok"  # the reply arrives first
    await closed(peer)
    await closed(peer2)
    with pytest.raises(websockets.ConnectionClosed):
        await peer.call("public/test")
    fresh = await connect_peer(sim.ws_url)
    try:
        assert await fresh.result("public/get_time") > 0
    finally:
        await fresh.close()


# ---------------------------------------------------------------- skip_change_id


async def _chain_with_gap(peer: RawPeer, sim: Simulator, skip: Any) -> None:
    chans = {PERP: f"book.{PERP}.100ms", ETH_PERP: f"book.{ETH_PERP}.100ms"}
    assert await peer.result("public/subscribe", {"channels": list(chans.values())}) == list(chans.values())
    last: dict[str, int] = {}
    for name, ch in chans.items():
        snap = (await peer.next_notification(ch))["data"]
        assert snap["type"] == "snapshot"
        last[name] = snap["change_id"]
    await skip()
    gaps = {PERP: 0, ETH_PERP: 0}
    for _ in range(8):
        sim.step()
    await peer.barrier()
    for n in peer.drain():
        data = n["data"]
        name = data["instrument_name"]
        if data["prev_change_id"] != last[name]:
            gaps[name] += 1
            assert data["prev_change_id"] > last[name]  # changes were withheld, not reordered
        last[name] = data["change_id"]
    assert gaps == {PERP: 1, ETH_PERP: 0}
    rest = await peer.result("public/get_order_book", {"instrument_name": PERP})
    assert rest["change_id"] >= last[PERP]


async def test_skip_change_id(peer: RawPeer, sim: Simulator) -> None:
    async def skip() -> None:
        sim.faults.skip_change_id(PERP)

    await _chain_with_gap(peer, sim, skip)


async def test_skip_change_id_rpc(peer: RawPeer, sim: Simulator) -> None:
    async def skip() -> None:
        assert await peer.result("sim/skip_change_id", {"instrument_name": PERP}) == "ok"

    await _chain_with_gap(peer, sim, skip)
    reply = await peer.call("sim/skip_change_id", {"instrument_name": "BTC-NOPE"})
    assert reply["error"]["code"] == 13020


# ---------------------------------------------------------------- heartbeats


async def test_stop_heartbeats(peer: RawPeer, sim: Simulator) -> None:
    sim.faults.stop_heartbeats()
    assert await peer.result("public/set_heartbeat", {"interval": 1}) == "ok"
    # past the first interval: no test_request
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(peer.other.get(), 1.3)
    assert (await peer.result("public/test"))["version"]
    assert await peer.result("sim/stop_heartbeats", {"stopped": False}) == "ok"
    assert sim.faults.heartbeats_stopped is False
    assert await asyncio.wait_for(peer.other.get(), 3.0) == TEST_REQUEST


async def test_stop_heartbeats_rpc(peer: RawPeer, sim: Simulator) -> None:
    assert await peer.result("sim/stop_heartbeats") == "ok"
    assert sim.faults.heartbeats_stopped is True
    sim.faults.stop_heartbeats(False)
    assert sim.faults.heartbeats_stopped is False


# ---------------------------------------------------------------- latency


async def _timed(coro: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await coro
    return result, loop.time() - t0


async def test_set_latency(peer: RawPeer, peer2: RawPeer, sim: Simulator, sim_http: httpx.AsyncClient) -> None:
    sim.faults.set_latency(0.25)
    reply, took = await _timed(peer.call("public/get_time"))
    assert "result" in reply and took >= 0.25
    reply, took = await _timed(peer2.call("public/test"))
    assert "result" in reply and took >= 0.25
    r, took = await _timed(sim_http.get("/api/v2/public/get_time"))
    assert r.status_code == 200 and took >= 0.25
    # replies keep their order on a connection
    results = await asyncio.gather(*(peer.call("public/test") for _ in range(3)))
    assert [r["id"] for r in results] == sorted(r["id"] for r in results)
    sim.faults.set_latency(0)
    reply, took = await _timed(peer.call("public/get_time"))
    assert "result" in reply and took < 0.25


async def test_set_latency_rpc(peer: RawPeer, sim: Simulator) -> None:
    assert await peer.result("sim/set_latency", {"ms": 150}) == "ok"
    assert sim.faults.latency == pytest.approx(0.15)
    reply, took = await _timed(peer.call("public/status"))
    assert "result" in reply and took >= 0.15
    assert await peer.result("sim/set_latency", {"ms": 0}) == "ok"
    assert sim.faults.latency == 0


# ---------------------------------------------------------------- halt


async def _halted_flow(peer: RawPeer, sim: Simulator, halt: Any, resume: Any) -> None:
    book, ticker = f"book.{PERP}.100ms", f"ticker.{PERP}.100ms"
    await peer.result("public/subscribe", {"channels": [book, ticker]})
    await peer.next_notification(book)
    await halt()
    await peer.barrier()
    peer.drain()
    change_id = (await peer.result("public/get_order_book", {"instrument_name": PERP}))["change_id"]
    trades = len(sim.market.get(PERP).trades)  # type: ignore[union-attr]
    sim.step(10)
    await peer.barrier()
    got = peer.drain()
    assert {n["channel"] for n in got} == {ticker}  # the book no longer changes
    assert all(n["data"]["state"] == "closed" for n in got)
    assert (await peer.result("public/ticker", {"instrument_name": PERP}))["state"] == "closed"
    rest = await peer.result("public/get_order_book", {"instrument_name": PERP})
    assert rest["state"] == "closed" and rest["change_id"] == change_id
    assert len(sim.market.get(PERP).trades) == trades  # type: ignore[union-attr]
    # other instruments keep going
    assert (await peer.result("public/ticker", {"instrument_name": ETH_PERP}))["state"] == "open"
    await resume()
    sim.step(3)
    await peer.barrier()
    got = peer.drain()
    assert book in {n["channel"] for n in got}
    assert [n["data"]["state"] for n in got if n["channel"] == ticker][-1] == "open"


async def test_halt(peer: RawPeer, sim: Simulator) -> None:
    async def halt() -> None:
        sim.faults.halt(PERP)

    async def resume() -> None:
        sim.faults.halt(PERP, False)

    await _halted_flow(peer, sim, halt, resume)


async def test_halt_rpc(peer: RawPeer, sim: Simulator) -> None:
    async def halt() -> None:
        assert await peer.result("sim/halt", {"instrument_name": PERP}) == "ok"

    async def resume() -> None:
        assert await peer.result("sim/halt", {"instrument_name": PERP, "halted": False}) == "ok"

    await _halted_flow(peer, sim, halt, resume)
    assert (await peer.call("sim/halt", {"instrument_name": "NOPE"}))["error"]["code"] == 13020


# ---------------------------------------------------------------- rate_limit_storm


async def test_rate_limit_storm_ends_each_session_it_refuses(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    """As on Deribit: 10028 is answered, then the session is ended (close 1008 too_many_requests);
    other connections go on, and free session plumbing (public/test) is never refused."""
    sim.faults.rate_limit_storm(1)
    assert (await peer.result("public/test"))["version"]  # free: passes the storm
    reply = await peer.call("public/get_time")
    assert (reply["error"]["code"], reply["error"]["message"]) == (10028, "too_many_requests")
    await asyncio.wait_for(peer._reader, 5.0)  # the exchange closes the connection
    assert peer.ws.close_code == 1008 and peer.ws.close_reason == "too_many_requests"
    assert sim.stats["rate_limit_session_ends"] == 1
    assert await peer2.result("public/get_time") > 0  # the storm is over; the other session is whole


async def test_requests_after_a_10028_are_not_answered(sim: Simulator) -> None:
    ws = await websockets.connect(sim.ws_url)
    try:
        sim.faults.rate_limit_storm(1)
        frames = [orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "public/get_time"}).decode() for i in (1, 2)]
        await ws.send(frames[0])
        await ws.send(frames[1])
        replies = [orjson.loads(await ws.recv())]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            replies.append(orjson.loads(await ws.recv()))
        assert [(r["id"], r["error"]["code"]) for r in replies] == [(1, 10028)]  # id 2 never answered
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        await ws.close()


async def test_rate_limit_storm_keeps_sessions_when_told_to() -> None:
    async with Simulator(seed=1, rate_limit_ends_session=False) as sim:
        peer = await connect_peer(sim.ws_url)
        sim.faults.rate_limit_storm(2)
        codes = [(await peer.call("public/get_time"))["error"]["code"] for _ in range(2)]
        assert codes == [10028, 10028]
        assert await peer.result("public/get_time") > 0
        await peer.close()


async def test_rate_limit_storm_rpc(peer: RawPeer, sim_http: httpx.AsyncClient) -> None:
    assert await peer.result("sim/rate_limit_storm", {"requests": 1}) == "ok"
    r = await sim_http.get("/api/v2/public/get_time")
    assert r.json()["error"]["code"] == 10028
    assert (await sim_http.get("/api/v2/public/get_time")).status_code == 200
    assert await peer.result("public/get_time") > 0


# ---------------------------------------------------------------- inject_frame


async def test_inject_frame(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    frame = {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "heartbeat"}}
    assert sim.faults.inject_frame(orjson.dumps(frame)) == 2
    assert await asyncio.wait_for(peer.other.get(), 5.0) == frame
    assert await asyncio.wait_for(peer2.other.get(), 5.0) == frame
    # over JSON-RPC, and malformed: clients see exactly the bytes
    ws = await websockets.connect(sim.ws_url)
    try:
        assert await peer.result("sim/inject_frame", {"payload": "{not json"}) == 3
        assert await asyncio.wait_for(ws.recv(), 5.0) == "{not json"
        assert await asyncio.wait_for(peer2.other.get(), 5.0) == {"unparsable": "{not json"}
        await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/test"}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5.0))["id"] == 1
    finally:
        await ws.close()


# ---------------------------------------------------------------- control surface


async def test_sim_step(peer: RawPeer, sim: Simulator) -> None:
    before = sim.market.last_step_ms
    ts = await peer.result("sim/step", {"count": 3})
    assert before + 3 <= ts <= sim.market.last_step_ms


async def test_control_off() -> None:
    async with Simulator(seed=1, tick_interval=0, control=False) as s:
        p = await connect_peer(s.ws_url)
        try:
            for method in ("sim/drop_connections", "sim/halt", "sim/step"):
                reply = await p.call(method, {"instrument_name": PERP})
                assert reply["error"]["code"] == -32601
            assert (await p.result("public/test"))["version"]
        finally:
            await p.close()


# ---------------------------------------------------------------- real rate limits


@pytest.fixture
async def limited() -> AsyncIterator[Simulator]:
    async with Simulator(seed=1, tick_interval=0.05, rate_limits=True, min_heartbeat_interval=1) as s:
        yield s


async def _burst(p: RawPeer, n: int, method: str, params: dict[str, Any] | None = None) -> list[int]:
    """Send ``n`` requests at once; the error code of each answered one (0 for success), in order.
    The first 10028 ends the session: what was sent after it is never answered."""
    calls = [asyncio.ensure_future(p.call(method, params)) for _ in range(n)]
    await asyncio.wait_for(p._reader, 10.0)  # the exchange closes after the 10028
    codes = []
    for c in calls:
        if c.done() and not c.cancelled() and c.exception() is None:
            r = c.result()
            codes.append(r["error"]["code"] if "error" in r else 0)
        else:
            c.cancel()
    return codes


async def test_credit_burst_then_10028_ends_the_session(limited: Simulator) -> None:
    a, b = await connect_peer(limited.ws_url), await connect_peer(limited.ws_url)
    try:
        codes = await _burst(a, 150, "public/get_time")
        assert codes[-1] == 10028 and set(codes[:-1]) == {0}  # answered up to the 10028, then closed
        assert 100 <= len(codes) - 1 < 150  # burst of 100 (50,000 credits / 500), plus a little refill
        # another unauthenticated connection has its own pool
        assert [(await b.call("public/get_time"))["result"] > 0 for _ in range(90)] == [True] * 90
        # free session methods never spend credits
        assert all([(await b.result("public/test"))["version"] for _ in range(30)])
    finally:
        await a.close()
        await b.close()


async def test_get_instruments_has_its_own_pool(limited: Simulator) -> None:
    a = await connect_peer(limited.ws_url)
    try:
        for _ in range(90):  # most of the default pool: get_instruments does not draw on it
            assert await a.result("public/get_time") > 0
        params = {"currency": "BTC", "kind": "future"}
        codes = await _burst(a, 55, "public/get_instruments", params)
        assert 49 <= len(codes) - 1 < 55 and codes[:49] == [0] * 49  # burst 50 (500,000 / 10,000)
        assert codes[-1] == 10028
    finally:
        await a.close()


async def test_subscribe_pool(limited: Simulator) -> None:
    a = await connect_peer(limited.ws_url)
    try:
        codes = await _burst(a, 14, "public/subscribe", {"channels": [f"ticker.{PERP}.100ms"]})
        assert codes[:10] == [0] * 10 and codes[-1] == 10028  # burst 10 (30,000 / 3,000)
    finally:
        await a.close()

