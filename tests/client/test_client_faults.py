"""Bad input and faults, each against the embedded exchange over real sockets: the client never
crashes the caller's loop, never waits past its timeout, and says what happened."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from conftest import DEMO_KEY, expect

from deribit_kit import (
    AuthenticationError,
    ConnectError,
    ConnectionClosed,
    Deribit,
    DeribitError,
    InstrumentNotFoundError,
    InvalidParamsError,
    MethodNotFoundError,
    Notification,
    RateLimitError,
    RequestTimeout,
)
from deribit_kit.errors import is_retryable
from deribit_kit.sim import DEMO_CLIENT_ID, Simulator
from deribit_kit.transport.ws import WsTransport

TICKER = "ticker.BTC-PERPETUAL.100ms"
KEY = DEMO_KEY



def ws(dk: Deribit) -> WsTransport:
    assert isinstance(dk.transport, WsTransport)
    return dk.transport


pytestmark = pytest.mark.usefixtures("no_env_credentials")


# ---------------------------------------------------------------- bad input


async def test_wrong_instrument(dk: Deribit) -> None:
    with pytest.raises(InstrumentNotFoundError) as err:
        await dk.ticker("BTC-NOPE")
    e = err.value
    assert (e.code, e.method, e.message) == (13020, "public/ticker", "not_found")
    assert e.data == {"param": "instrument_name", "reason": "instrument not found"}
    assert "public/ticker" in str(e) and "13020" in str(e) and not is_retryable(e)
    with pytest.raises(InstrumentNotFoundError):
        await dk.instrument("ETH-1JAN20", refresh=True)
    assert await dk.get_time() > 0  # the session goes on


async def test_wrong_params(dk: Deribit) -> None:
    with pytest.raises(InvalidParamsError) as err:
        await dk.order_book("BTC-PERPETUAL", depth=7)
    e = err.value
    assert (e.code, e.method) == (-32602, "public/get_order_book")
    assert e.data["param"] == "depth" and e.message == "Invalid params"
    assert "depth" in str(e)
    with pytest.raises(InvalidParamsError) as missing:
        await dk.call("public/get_instrument")
    assert missing.value.data["param"] == "instrument_name"
    with pytest.raises(MethodNotFoundError) as nope:
        await dk.call("public/get_everything")
    assert (nope.value.code, nope.value.method) == (-32601, "public/get_everything")


async def test_unauthorized_private_call(sim: Simulator) -> None:
    dk = await Deribit.connect(sim.ws_url)  # no key
    try:
        with pytest.raises(AuthenticationError) as err:
            await dk.call("private/unsubscribe", channels=[TICKER])
        e = err.value
        assert (e.code, e.method, e.message) == (13009, "private/unsubscribe", "unauthorized")
        assert e.data == {"reason": "authentication required"}
        with pytest.raises(AuthenticationError):
            await dk.subscribe("user.orders.BTC-PERPETUAL.raw").start()
        assert dk.channels == []
    finally:
        await dk.close()


async def test_bad_credentials_fail_connect(sim: Simulator) -> None:
    with pytest.raises(AuthenticationError) as err:
        await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret="not-the-secret")
    assert (err.value.code, err.value.method) == (13004, "public/auth")
    assert "not-the-secret" not in str(err.value) + repr(err.value)


async def test_nothing_listening_is_a_connect_error() -> None:
    started = time.monotonic()
    with pytest.raises(ConnectError, match="cannot connect"):
        await Deribit.connect("ws://127.0.0.1:9/ws/api/v2", connect_timeout=2.0)
    assert time.monotonic() - started < 2.5


async def test_stale_or_bad_token_is_13009(dk: Deribit, sim: Simulator) -> None:
    with pytest.raises(AuthenticationError) as bad:
        await dk.call("private/unsubscribe", channels=[TICKER], access_token="not-a-token")
    assert bad.value.code == 13009 and bad.value.data == {"reason": "invalid_token"}
    # the exchange's clock passes the session token's expiry (no refresh happened in between)
    real_clock = sim.accounts.clock
    sim.accounts.clock = lambda: real_clock() + 10_000
    with pytest.raises(AuthenticationError) as expired:
        await dk.call("private/unsubscribe", channels=[TICKER])
    assert expired.value.code == 13009 and expired.value.data == {"reason": "token_expired"}
    assert expired.value.method == "private/unsubscribe"
    await dk.authenticate()  # a fresh token works again
    assert await dk.call("private/unsubscribe", channels=[TICKER]) == []


# ---------------------------------------------------------------- rate limits


async def test_rate_limit_ends_the_session_and_the_client_restores_it(sim: Simulator) -> None:
    """Deribit answers 10028 and ends the session: the client holds its requests until its credit
    model has room, reconnects, restores auth and subscriptions, tells listeners, and the refused
    request is sent again (it was refused, so resending is safe)."""
    dk = await Deribit.connect(sim.ws_url, **KEY, backoff_initial=0.05, backoff_max=0.5)
    try:
        async with dk.subscribe(TICKER) as sub:
            await sub.get(timeout=2.0)
            limited = expect(dk.rate_limited)
            reconnected = expect(dk.reconnected)
            sim.faults.rate_limit_storm(1)
            assert await dk.get_time() > 0
            method, hold = await asyncio.wait_for(limited, 1.0)
            assert method == "public/get_time" and hold >= 0.05
            await asyncio.wait_for(reconnected, 5.0)
            assert sim.stats["rate_limit_session_ends"] == 1 and ws(dk).stats["reconnects"] == 1
            assert dk.is_authenticated and sim.subscriber_count(TICKER) == 1  # the session is whole again
    finally:
        await dk.close()


async def test_rate_limit_storm_never_leaves_the_user_without_a_session(sim: Simulator) -> None:
    """Each 10028 of a storm ends a session (the restore's own hello included): the client waits
    before every reconnect, never in a tight loop, and has a session again once the storm is over."""
    dk = await Deribit.connect(sim.ws_url, **KEY, backoff_initial=0.02, backoff_max=0.2, request_timeout=8.0)
    try:
        sim.faults.rate_limit_storm(5)
        assert await dk.get_time() > 0
        t = ws(dk)
        assert sim.stats["rate_limit_session_ends"] == 5
        assert t.stats["rate_limited"] == 5 and t.stats["reconnects"] == 5
        assert t.stats["rate_limit_wait_s"] >= 5 * 0.02  # every session end was waited out
        assert dk.is_authenticated and await dk.call("private/get_positions", currency="BTC") == []
    finally:
        await dk.close()


async def test_rate_limit_retries_are_bounded(sim: Simulator) -> None:
    dk = await Deribit.connect(sim.ws_url, **KEY, rate_limit_retries=2, backoff_initial=0.01, backoff_max=0.05)
    try:
        sim.faults.rate_limit_storm(3)
        with pytest.raises(RateLimitError) as err:
            await dk.get_time()
        e = err.value
        assert (e.code, e.method, e.message) == (10028, "public/get_time", "too_many_requests")
        assert is_retryable(e) and ws(dk).stats["rate_limited"] == 3
        assert await dk.get_time() > 0  # the session is restored after the storm
    finally:
        await dk.close()


async def test_rate_limit_keeps_the_session_when_the_exchange_does(no_env_credentials: None) -> None:
    async with Simulator(seed=1, rate_limit_ends_session=False) as sim:
        dk = await Deribit.connect(sim.ws_url, **KEY)
        try:
            sim.faults.rate_limit_storm(3)
            assert await dk.get_time() > 0
            assert ws(dk).stats["rate_limited"] == 3
            assert ws(dk).stats["reconnects"] == 0 and dk.is_authenticated
        finally:
            await dk.close()


# ---------------------------------------------------------------- heartbeats and silence


async def test_heartbeats_answered_then_silence_detected(sim: Simulator) -> None:
    dk = await Deribit.connect(sim.ws_url, **KEY, heartbeat=1, backoff_initial=0.05)
    try:
        t = ws(dk)
        # two test_requests in a row: the exchange closes a connection that leaves one unanswered
        for _ in range(2):
            assert await asyncio.wait_for(expect(t.heartbeat), 3.0) == "test_request"
        assert t.stats["test_requests"] >= 2 and t.stats["reconnects"] == 0
        reconnected = expect(dk.reconnected)
        dropped = expect(dk.disconnected)
        sim.faults.stop_heartbeats()
        started = time.monotonic()
        await asyncio.wait_for(dropped, 6.0)  # the watchdog cuts the silent link ...
        assert 2.0 < time.monotonic() - started < 5.0
        sim.faults.stop_heartbeats(False)
        assert await asyncio.wait_for(reconnected, 5.0) is dk  # ... and the client comes back
        assert t.stats["reconnects"] == 1 and dk.is_authenticated
        (session,) = sim.sessions
        assert session.heartbeat.running  # heartbeats were asked for again on the new connection
        assert await dk.get_time() > 0
    finally:
        await dk.close()


# ---------------------------------------------------------------- dropped connections


async def test_connection_dropped_mid_request(dk: Deribit, sim: Simulator) -> None:
    sim.faults.set_latency(0.5)
    reconnected = expect(dk.reconnected)
    started = time.monotonic()
    # the exchange receives get_time, then the drop order on the same socket, before answering either
    in_flight = asyncio.ensure_future(dk.get_time())
    dropper = asyncio.ensure_future(dk.call("sim/drop_connections"))
    with pytest.raises(ConnectionClosed) as err:
        await in_flight
    assert time.monotonic() - started < 0.45  # failed at the drop, not after the latency
    sim.faults.set_latency(0)
    e = err.value
    assert e.method == "public/get_time" and is_retryable(e)
    assert "outcome is unknown" in str(e)
    with pytest.raises(ConnectionClosed):
        await dropper
    await asyncio.wait_for(reconnected, 5.0)
    assert await dk.get_time() > 0 and dk.is_authenticated
    assert not ws(dk)._pending


async def test_connection_dropped_mid_stream(dk: Deribit, sim: Simulator) -> None:
    async with dk.subscribe(TICKER) as sub:
        await sub.get(timeout=2.0)
        dropped = expect(dk.disconnected)
        reconnected = expect(dk.reconnected)
        assert sim.faults.drop_connections() == 1
        reason = await asyncio.wait_for(dropped, 2.0)
        assert "connection closed" in reason
        await asyncio.wait_for(reconnected, 5.0)
        assert sim.subscriber_count(TICKER) == 1  # restored on the new connection
        sub.drain()  # what arrived before the drop
        n = await sub.get(timeout=2.0)
        assert n.channel == TICKER
    assert ws(dk).stats["reconnects"] == 1
    assert sim.subscriber_count(TICKER) == 0


async def test_private_request_during_reconnect_waits_for_reauth(dk: Deribit, sim: Simulator) -> None:
    dropped = expect(dk.disconnected)
    sim.faults.drop_connections()
    await asyncio.wait_for(dropped, 2.0)
    # issued while the link is down: it goes out only once the session is authenticated again
    assert await dk.call("private/unsubscribe", channels=[TICKER], timeout=5.0) == []
    assert ws(dk).stats["reconnects"] == 1


async def test_request_pacing_across_a_reconnect_waits_for_the_restored_session(dk: Deribit, sim: Simulator) -> None:
    """A private request that passed the open check, then waited for credits while the link dropped
    and came back, must not reach the new link before ``public/auth`` (it failed with 13009)."""
    ws(dk).credits.default.level = -5000.0  # the next default-pool call paces ~0.65 s
    call = asyncio.ensure_future(dk.call("private/get_positions", currency="BTC", timeout=8.0))
    await asyncio.sleep(0)  # the call is now pacing (its only await before sending)
    sim.faults.set_latency(1.0)  # the restore's hello is answered ~1 s after the reconnect (at ~0.2 s)
    reconnected = expect(dk.reconnected)
    assert sim.faults.drop_connections() == 1
    assert await call == []  # sent after the restored session's auth: no 13009
    await asyncio.wait_for(reconnected, 5.0)  # already fired: the call went out after it
    sim.faults.set_latency(0)
    assert ws(dk).stats["reconnects"] == 1


async def test_no_reconnect_when_disabled(sim: Simulator) -> None:
    dk = await Deribit.connect(sim.ws_url, reconnect=False)
    try:
        dropped = expect(dk.disconnected)
        sim.faults.drop_connections()
        await asyncio.wait_for(dropped, 2.0)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed, match="reconnecting is off"):
            await dk.get_time()
        assert time.monotonic() - started < 0.1
    finally:
        await dk.close()


async def test_server_restarted_on_same_port() -> None:
    sim = await Simulator(seed=1, tick_interval=0.05, rate_limits=False).start()
    port = sim.port
    dk = await Deribit.connect(sim.ws_url, **KEY, backoff_initial=0.05, backoff_max=0.3)
    sim2: Simulator | None = None
    try:
        async with dk.subscribe(TICKER) as sub:
            await sub.get(timeout=2.0)
            reconnected = expect(dk.reconnected)
            await sim.stop()
            sim2 = await Simulator(port=port, seed=2, tick_interval=0.05, rate_limits=False).start()
            await asyncio.wait_for(reconnected, 5.0)
            assert sim2.subscriber_count(TICKER) == 1
            (session,) = sim2.sessions
            assert session.account is not None and session.client_name.startswith("deribit_kit/")
            sub.drain()
            assert (await sub.get(timeout=2.0)).channel == TICKER
            assert await dk.get_time() > 0
    finally:
        await dk.close()
        await sim.stop()
        if sim2 is not None:
            await sim2.stop()


# ---------------------------------------------------------------- timeouts and malformed frames


async def test_request_timeout_never_hangs(dk: Deribit, sim: Simulator) -> None:
    sim.faults.set_latency(0.6)
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as err:
        await dk.call("public/get_time", timeout=0.2)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.4
    assert err.value.method == "public/get_time" and is_retryable(err.value)
    assert not ws(dk)._pending
    # the late answer arrives for an id nobody waits for: ignored; the link is fine
    assert await dk.get_time() > 0
    sim.faults.set_latency(0)
    assert await dk.get_time() > 0 and ws(dk).stats["reconnects"] == 0


async def test_close_fails_pending_requests(dk: Deribit, sim: Simulator) -> None:
    sim.faults.set_latency(1.0)
    pending = asyncio.ensure_future(dk.get_time())
    started = time.monotonic()
    await dk.close()
    with pytest.raises(ConnectionClosed, match="closed"):
        await pending
    assert time.monotonic() - started < 0.5
    with pytest.raises(ConnectionClosed, match="client is closed"):
        await dk.get_time()


async def test_malformed_frames_are_counted_and_ignored(dk: Deribit, sim: Simulator,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="deribit_kit.transport.ws")
    whys: asyncio.Queue[str] = asyncio.Queue()
    ws(dk).protocol_error += lambda why, _text: whys.put_nowait(why)
    async with dk.subscribe(TICKER) as sub:
        for frame in (b"{garbage", b"[1,2]", b'{"jsonrpc":"2.0","method":"subscription","params":{"data":1}}',
                      b'{"jsonrpc":"2.0","result":"no id"}',
                      b'{"jsonrpc":"2.0","id":987654,"result":1}',  # unknown id: logged at DEBUG only
                      b'{"jsonrpc":"2.0","method":"heartbeat","params":5}',
                      b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.X.100ms"}}'):
            sim.faults.inject_frame(frame)
        got = [await asyncio.wait_for(whys.get(), 2.0) for _ in range(4)]
        assert got == ["not JSON", "not a JSON object", "subscription without channel",
                       "neither a reply nor a notification"]
        assert ws(dk).stats["protocol_errors"] == 4
        assert "malformed frame" in caplog.text and "{garbage" in caplog.text
        # still the same connection, still streaming, still answering
        sub.drain()
        assert (await sub.get(timeout=2.0)).channel == TICKER
        assert await dk.get_time() > 0
        assert ws(dk).stats["reconnects"] == 0


async def test_failing_callback_does_not_stop_the_feed(dk: Deribit, caplog: pytest.LogCaptureFixture) -> None:
    def broken(_n: Notification) -> None:
        raise ValueError("bug in user code")

    async with dk.subscribe(TICKER, callback=broken), dk.subscribe(TICKER) as healthy:
        for _ in range(2):
            assert (await healthy.get(timeout=2.0)).channel == TICKER
    assert "callback failed" in caplog.text
    assert ws(dk).stats["reconnects"] == 0


async def test_errors_carry_method_code_message_data(dk: Deribit) -> None:
    with pytest.raises(DeribitError) as err:
        await dk.call("public/test", expected_result="exception")
    e = err.value
    assert (e.code, e.method, e.message) == (11094, "public/test", "internal_server_error")
    assert e.data == {"reason": "expected_result=exception"}
    assert repr(e) == f"{type(e).__name__}(code=11094, message='internal_server_error', data={e.data!r})"
