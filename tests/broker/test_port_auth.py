"""The port's ``public/auth`` grants against its own credentials, over real sockets:
client_credentials, client_signature (good, bad, replayed, stale) and refresh_token; a signed-in
client's private calls are forwarded with the broker's upstream session."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from conftest import RawPeer, connect_peer

from deribit_kit import Deribit
from deribit_kit.broker import Broker
from deribit_kit.broker.port import BrokerServer
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator
from deribit_kit.wire.auth import signature_params

CLIENT_ID, TOKEN = "port-user", "port-secret"


@pytest.fixture
async def port(sim: Simulator) -> AsyncIterator[BrokerServer]:
    dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    broker = Broker(dk)
    async with BrokerServer(broker, token=TOKEN, client_id=CLIENT_ID) as srv:
        yield srv
    await broker.close()
    await dk.close()


@pytest.fixture
async def client(port: BrokerServer) -> AsyncIterator[RawPeer]:
    p = await connect_peer(port.ws_url)
    yield p
    await p.close()


async def test_client_signature_signs_in_and_private_calls_are_forwarded(client: RawPeer) -> None:
    assert (await client.call("private/get_positions", {"currency": "BTC"}))["error"]["code"] == 13009
    got = await client.result("public/auth", signature_params(CLIENT_ID, TOKEN))
    assert got["access_token"] and got["refresh_token"] and got["token_type"] == "bearer"
    assert isinstance(await client.result("private/get_positions", {"currency": "BTC"}), list)


@pytest.mark.parametrize("change", ["secret", "client_id", "stale", "future"])
async def test_bad_signatures_are_refused(client: RawPeer, change: str) -> None:
    now = int(time.time() * 1000)
    params = {
        "secret": signature_params(CLIENT_ID, "wrong-secret"),
        "client_id": signature_params("someone-else", TOKEN),
        "stale": signature_params(CLIENT_ID, TOKEN, timestamp=now - 120_000),
        "future": signature_params(CLIENT_ID, TOKEN, timestamp=now + 120_000),
    }[change]
    reply = await client.call("public/auth", params)
    assert reply["error"]["code"] in (13004, 13009), reply
    assert (await client.call("private/get_positions", {"currency": "BTC"}))["error"]["code"] == 13009


async def test_an_exact_replay_is_refused(port: BrokerServer, client: RawPeer) -> None:
    params = signature_params(CLIENT_ID, TOKEN)
    assert (await client.result("public/auth", params))["access_token"]
    other = await connect_peer(port.ws_url)
    try:
        reply = await other.call("public/auth", params)
        assert reply["error"]["code"] == 13009 and "replay" in reply["error"]["data"]["reason"]
        assert (await other.result("public/auth", signature_params(CLIENT_ID, TOKEN)))["access_token"]
    finally:
        await other.close()


async def test_a_signature_without_timestamp_is_invalid_params(client: RawPeer) -> None:
    params = signature_params(CLIENT_ID, TOKEN)
    del params["timestamp"]
    assert (await client.call("public/auth", params))["error"]["code"] == -32602


async def test_credentials_and_refresh(port: BrokerServer, client: RawPeer) -> None:
    first = await client.result("public/auth", {"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                                "client_secret": TOKEN})
    other = await connect_peer(port.ws_url)
    try:
        again = await other.result("public/auth", {"grant_type": "refresh_token",
                                                   "refresh_token": first["refresh_token"]})
        assert again["access_token"] != first["access_token"]
        assert isinstance(await other.result("private/get_positions", {"currency": "BTC"}), list)
        bad = await other.call("public/auth", {"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                               "client_secret": "nope"})
        assert bad["error"]["code"] == 13004
    finally:
        await other.close()


# ---------------------------------------------------------------- raw channels

RAW = ["book.BTC-PERPETUAL.raw", "trades.BTC-PERPETUAL.raw", "ticker.BTC-PERPETUAL.raw"]


async def _signed_in(port: BrokerServer) -> RawPeer:
    p = await connect_peer(port.ws_url)
    assert (await p.result("public/auth", signature_params(CLIENT_ID, TOKEN)))["access_token"]
    return p


@pytest.mark.parametrize("method", ["public/subscribe", "private/subscribe"])
async def test_raw_channels_after_auth_keep_an_unbroken_chain(sim: Simulator, port: BrokerServer,
                                                              method: str) -> None:
    p = await _signed_in(port)
    try:
        assert await p.result(method, {"channels": RAW}) == RAW
        last: int | None = None
        for _ in range(30):
            data = (await p.next_notification(RAW[0]))["data"]
            if last is None:
                assert data["type"] == "snapshot"
            else:
                assert data["type"] == "change" and data["prev_change_id"] == last
            last = data["change_id"]
        assert (await p.next_notification(RAW[2]))["data"]["instrument_name"] == "BTC-PERPETUAL"
    finally:
        await p.close()


async def test_raw_channels_without_auth_are_13778(client: RawPeer) -> None:
    reply = await client.call("public/subscribe", {"channels": [RAW[0], "ticker.BTC-PERPETUAL.100ms"]})
    assert reply["error"]["code"] == 13778
    assert (await client.call("private/subscribe", {"channels": RAW}))["error"]["code"] == 13009


async def test_raw_channels_through_an_unauthenticated_upstream_are_13778(sim: Simulator) -> None:
    dk = await Deribit.connect(sim.ws_url)  # no key: the broker's upstream cannot have raw channels
    broker = Broker(dk)
    try:
        async with BrokerServer(broker, token=TOKEN, client_id=CLIENT_ID) as srv:
            p = await _signed_in(srv)
            try:
                reply = await p.call("public/subscribe", {"channels": [RAW[0]]})
                assert reply.get("error", {}).get("code") == 13778, reply
                # the refused call leaves nothing behind; other channels still work
                assert await p.result("public/subscribe", {"channels": ["ticker.BTC-PERPETUAL.100ms"]}) == [
                    "ticker.BTC-PERPETUAL.100ms"]
                assert srv.topics.keys() == {"ticker.BTC-PERPETUAL.100ms"}
            finally:
                await p.close()
    finally:
        await broker.close()
        await dk.close()


# ---------------------------------------------------------------- logout and expiry


async def test_logout_revokes_the_token_and_closes_never_the_upstream(sim: Simulator, port: BrokerServer) -> None:
    p = await connect_peer(port.ws_url)
    token = (await p.result("public/auth", signature_params(CLIENT_ID, TOKEN)))["access_token"]
    assert await p.result("private/logout") == "ok"
    await p.ws.wait_closed()
    assert port.broker.upstream.state == "open"  # the broker's own session upstream is untouched
    other = await connect_peer(port.ws_url)
    try:
        reply = await other.call("private/get_positions", {"currency": "BTC", "access_token": token})
        assert reply["error"]["code"] == 13009
    finally:
        await other.close()


async def test_tokens_expire_and_refresh(sim: Simulator) -> None:
    now = [1000.0]
    dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    broker = Broker(dk)
    try:
        async with BrokerServer(broker, token=TOKEN, client_id=CLIENT_ID, token_ttl=60,
                                clock=lambda: now[0]) as srv:
            p = await connect_peer(srv.ws_url)
            try:
                auth = await p.result("public/auth", signature_params(CLIENT_ID, TOKEN))
                assert auth["expires_in"] == 60
                assert isinstance(await p.result("private/get_positions", {"currency": "BTC"}), list)
                now[0] += 61
                assert (await p.call("private/get_positions", {"currency": "BTC"}))["error"]["code"] == 13009
                again = await p.result("public/auth", {"grant_type": "refresh_token",
                                                       "refresh_token": auth["refresh_token"]})
                assert isinstance(await p.result("private/get_positions", {"currency": "BTC"}), list)
                reuse = await p.call("public/auth", {"grant_type": "refresh_token",
                                                     "refresh_token": auth["refresh_token"]})
                assert reuse["error"]["code"] == 13004 and again["access_token"] != auth["access_token"]
            finally:
                await p.close()
    finally:
        await broker.close()
        await dk.close()
