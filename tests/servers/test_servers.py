"""One suite for both Deribit-compatible servers, the embedded exchange and the broker's port (both
built on deribit_kit.wire.rpcserver and deribit_kit.transport.endpoint), over real sockets: the
JSON-RPC envelope, bad input, subscribe filtering, heartbeats and test_request, health and 404."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import websockets
from conftest import RawPeer, connect_peer

from deribit_kit import Deribit
from deribit_kit.broker import Broker
from deribit_kit.broker.port import BrokerServer
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator


@dataclass
class Server:
    name: str
    ws_url: str
    http_url: str


@pytest.fixture(params=["exchange", "port"])
async def server(request: pytest.FixtureRequest, sim: Simulator) -> AsyncIterator[Server]:
    if request.param == "exchange":
        yield Server("exchange", sim.ws_url, sim.http_url)
        return
    dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    broker = Broker(dk)
    async with BrokerServer(broker, min_heartbeat_interval=1, rate_limits=False) as srv:
        yield Server("port", srv.ws_url, srv.http_url)
    await broker.close()
    await dk.close()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[RawPeer]:
    p = await connect_peer(server.ws_url)
    yield p
    await p.close()


# ---------------------------------------------------------------- the envelope


@pytest.mark.parametrize("rid", [7, "abc", None, 1.5, [1, "x"], {"k": 2}])
async def test_any_id_is_echoed_with_deribits_fields(client: RawPeer, rid: Any) -> None:
    msg = await client.send_raw(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "public/test"}))
    assert msg["id"] == rid
    assert msg["jsonrpc"] == "2.0" and msg["result"]["version"]
    assert msg["usOut"] >= msg["usIn"] and msg["usDiff"] == msg["usOut"] - msg["usIn"]
    assert isinstance(msg["testnet"], bool)


async def test_time_and_hello(client: RawPeer) -> None:
    assert isinstance(await client.result("public/get_time"), int)
    assert (await client.result("public/hello", {"client_name": "t", "client_version": "1"}))["version"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(("frame", "code"), [
    ("{not json", -32700),
    ("[1, 2]", 11050),
    ('{"jsonrpc":"2.0","method":"public/test"}', 11050),  # no id
    ('{"jsonrpc":"2.0","id":5}', 11050),  # no method
    ('{"jsonrpc":"2.0","id":5,"method":"public/test","params":[1]}', -32602),
    ('{"jsonrpc":"2.0","id":5,"method":"public/no_such_method"}', -32601),
    ('{"jsonrpc":"2.0","id":5,"method":"public/test","params":{"pad":"' + "x" * 33_000 + '"}}', -32600),
])
async def test_bad_input_is_answered_with_deribits_codes(client: RawPeer, frame: str, code: int) -> None:
    msg = await client.send_raw(frame)
    assert msg["error"]["code"] == code, msg
    if '"id":5' in frame and code != -32600:
        assert msg["id"] == 5
    assert (await client.result("public/test"))["version"]  # the connection is still served


@pytest.mark.parametrize("params", [{}, {"channels": "ticker.BTC-PERPETUAL.raw"}, {"channels": [1]}])
async def test_subscribe_needs_an_array_of_channel_names(client: RawPeer, params: dict[str, Any]) -> None:
    reply = await client.call("public/subscribe", params)
    assert reply["error"]["code"] == -32602


async def test_a_channel_named_twice_is_subscribed_once(client: RawPeer) -> None:
    chan = "ticker.BTC-PERPETUAL.100ms"
    assert await client.result("public/subscribe", {"channels": [chan, chan]}) == [chan]
    assert await client.result("public/subscribe", {"channels": [chan]}) == [chan]  # already held: listed again


async def test_subscribe_leaves_unknown_channels_out(client: RawPeer) -> None:
    got = await client.result("public/subscribe", {"channels": ["ticker.BTC-PERPETUAL.100ms", "no.such.channel"]})
    assert got == ["ticker.BTC-PERPETUAL.100ms"]
    assert (await client.next_notification("ticker.BTC-PERPETUAL.100ms"))["data"]["instrument_name"]
    assert await client.result("public/unsubscribe", {"channels": ["ticker.BTC-PERPETUAL.100ms"]}) == [
        "ticker.BTC-PERPETUAL.100ms"]
    assert await client.result("public/unsubscribe_all") == "ok"


# ---------------------------------------------------------------- heartbeats


@pytest.mark.parametrize("interval", [0, "x", True, None])
async def test_set_heartbeat_refuses_bad_intervals(client: RawPeer, interval: Any) -> None:
    reply = await client.call("public/set_heartbeat", {} if interval is None else {"interval": interval})
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["param"] == "interval"


async def test_answered_test_requests_keep_the_connection(client: RawPeer) -> None:
    assert await client.result("public/set_heartbeat", {"interval": 1}) == "ok"
    for _ in range(2):
        msg = await asyncio.wait_for(client.other.get(), 5)
        assert msg == {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
        assert (await client.result("public/test"))["version"]
    assert await client.result("public/disable_heartbeat") == "ok"


async def test_an_unanswered_test_request_closes_the_connection(client: RawPeer) -> None:
    assert await client.result("public/set_heartbeat", {"interval": 1}) == "ok"
    msg = await asyncio.wait_for(client.other.get(), 5)
    assert msg["params"]["type"] == "test_request"
    await asyncio.wait_for(client.ws.wait_closed(), 5)
    assert client.ws.close_code == 1000


# ---------------------------------------------------------------- health and 404


async def test_health_and_404(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        missing = await http.get("/no/such/thing")
        assert missing.status_code == 404 and "no endpoint" in missing.json()["error"]
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(server.ws_url.replace("/ws/api/v2", "/ws/elsewhere"))
    assert info.value.response.status_code == 404
