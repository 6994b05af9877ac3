"""The broker's own Deribit-compatible port, over real sockets: sharing, book continuity (late
joiners, resyncs, reconnects), slow clients, errors and limits, private gating, TLS, ccxt.pro and a fuzz."""

from __future__ import annotations

import asyncio
import datetime
import gc
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ccxt.pro as ccxt_pro
import httpx
import orjson
import pytest
import websockets
from conftest import RawPeer, connect_peer, expect, reconnecting_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deribit_kit.broker import Broker
from deribit_kit.broker.port import BrokerServer
from deribit_kit.live.orderbook import OrderBook
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator

PERP = "BTC-PERPETUAL"
BOOK = f"book.{PERP}.100ms"


@pytest.fixture
async def port(sim: Simulator) -> AsyncIterator[BrokerServer]:
    dk = await reconnecting_client(sim)
    broker = Broker(dk)
    async with BrokerServer(broker, max_channels=5) as srv:
        yield srv
    await broker.close()
    await dk.close()


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url)


class Chain:
    """Builds a book from one client's notifications and checks that the chain never breaks."""

    def __init__(self) -> None:
        self.book = OrderBook(PERP)
        self.snapshots = 0
        self.last: int | None = None
        self.states: dict[int, dict[str, list[list[float]]]] = {}

    def feed(self, data: dict[str, Any]) -> None:
        if data["type"] == "snapshot":
            self.snapshots += 1
        else:
            assert data["prev_change_id"] == self.last, (data["prev_change_id"], self.last)
        assert self.book.apply(data)
        self.last = data["change_id"]
        self.states[data["change_id"]] = self.book.snapshot_levels()

    async def read(self, peer: RawPeer, until: Any, limit: int = 400) -> None:
        for _ in range(limit):
            self.feed((await peer.next_notification(BOOK))["data"])
            if until(self):
                return
        raise AssertionError("condition not reached")


async def test_shared_upstream_and_late_joiner(sim: Simulator, port: BrokerServer) -> None:
    a, b = await connect_peer(port.ws_url), await connect_peer(port.ws_url)
    assert await a.result("public/subscribe", {"channels": [BOOK]}) == [BOOK]
    assert await b.result("public/subscribe", {"channels": [BOOK]}) == [BOOK]
    assert sim.subscriber_count(BOOK) == 1
    ca, cb = Chain(), Chain()
    await ca.read(a, lambda c: c.book.changes >= 5)
    await cb.read(b, lambda c: c.book.changes >= 5)
    late = await connect_peer(port.ws_url)
    assert await late.result("public/subscribe", {"channels": [BOOK]}) == [BOOK]
    cl = Chain()
    await cl.read(late, lambda c: c.book.changes >= 3)
    assert sim.subscriber_count(BOOK) == 1
    target = cl.last
    assert target is not None
    await ca.read(a, lambda c: c.last is not None and c.last >= target)
    assert ca.states[target] == cl.states[target]
    for p in (a, b, late):
        await p.close()


async def test_resync_and_reconnect_give_fresh_snapshots(sim: Simulator, port: BrokerServer) -> None:
    peers = [await connect_peer(port.ws_url) for _ in range(2)]
    chains = [Chain() for _ in peers]
    for p, c in zip(peers, chains, strict=True):
        await p.result("public/subscribe", {"channels": [BOOK]})
        await c.read(p, lambda c: c.book.changes >= 2)
    sim.faults.skip_change_id(PERP)  # the upstream chain breaks: the broker resyncs
    for p, c in zip(peers, chains, strict=True):
        await c.read(p, lambda c: c.snapshots >= 2 and c.book.changes >= 1)
    assert port.broker.book_resyncs >= 1
    reconnected = expect(port.broker.client.reconnected)
    assert sim.faults.drop_connections() >= 1  # the broker's upstream connection
    await asyncio.wait_for(reconnected, 5.0)  # (its session restored: the snapshots may come before this event)
    for p, c in zip(peers, chains, strict=True):
        await c.read(p, lambda c: c.snapshots >= 3 and c.book.state == "live")
    assert port.broker.reconnects >= 1
    for p in peers:
        assert await p.result("public/test") == {"version": "1.2.26"}
        await p.close()


async def test_a_10028_session_end_upstream_shows_port_clients_a_consistent_chain(sim: Simulator,
                                                                                 port: BrokerServer) -> None:
    peer = await connect_peer(port.ws_url)
    chain = Chain()
    await peer.result("public/subscribe", {"channels": [BOOK]})
    await chain.read(peer, lambda c: c.book.changes >= 2)
    upstream = port.broker.client
    reconnected = expect(upstream.reconnected)
    sim.faults.rate_limit_storm(1)
    assert await upstream.get_time() > 0  # refused with 10028, the session ends, restored, sent again
    await asyncio.wait_for(reconnected, 5.0)
    assert sim.stats["rate_limit_session_ends"] == 1
    await chain.read(peer, lambda c: c.snapshots >= 2 and c.book.changes >= 3)  # Chain asserts every link
    assert await peer.result("public/test") == {"version": "1.2.26"}
    await peer.close()


@pytest.fixture
async def loop_errors() -> list[dict[str, Any]]:
    """Everything the event loop would log as unhandled ("Task exception was never retrieved")."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    return seen


async def test_an_unsubscribe_never_overtakes_a_later_subscribe_upstream(sim: Simulator, port: BrokerServer) -> None:
    """Hostile clients had spent the upstream's credits, so one client's unsubscribe paced while
    the next client's subscribe (another credit pool) went out first; the late unsubscribe then
    left the channel dead for everyone: a subscribe reply and nothing after it."""
    a = await connect_peer(port.ws_url)
    await a.result("public/subscribe", {"channels": [BOOK]})
    await Chain().read(a, lambda c: c.book.changes >= 1)
    port.broker.client.transport.credits.default.level = -5000.0  # the next unsubscribe paces ~0.65 s
    assert await a.result("public/unsubscribe", {"channels": [BOOK]}) == [BOOK]
    b = await connect_peer(port.ws_url)
    assert await b.result("public/subscribe", {"channels": [BOOK]}) == [BOOK]
    await Chain().read(b, lambda c: c.snapshots == 1 and c.book.changes >= 3)
    await port.broker.settle()
    assert sim.subscriber_count(BOOK) == 1
    for p in (a, b):
        await p.close()


async def test_a_close_while_the_subscribe_is_in_flight_leaves_the_channel_whole(sim: Simulator,
                                                                               port: BrokerServer) -> None:
    sim.faults.set_latency(0.2)  # the upstream's subscribe is answered 0.2 s later
    hostile = await connect_peer(port.ws_url)
    await hostile.ws.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                                        "params": {"channels": [BOOK, BOOK]}}).decode())
    await hostile.barrier()  # the port has the subscribe (its upstream call is in flight)
    assert hostile.ws.transport is not None
    hostile.ws.transport.abort()  # gone without a close, before its answer
    b = await connect_peer(port.ws_url)
    assert await b.result("public/subscribe", {"channels": [BOOK]}) == [BOOK]
    sim.faults.set_latency(0)
    await Chain().read(b, lambda c: c.snapshots == 1 and c.book.changes >= 3)
    assert await b.result("public/unsubscribe_all") == "ok"
    await port.broker.settle()
    assert sim.subscriber_count(BOOK) == 0 and port.broker.channels == []  # every reference let go
    await b.close()


async def test_a_subscribe_always_gets_one_answer(sim: Simulator, port: BrokerServer,
                                                  loop_errors: list[dict[str, Any]]) -> None:
    """A channel named twice, refused and unknown channels mixed with good ones, and an unsubscribe
    of the refused channel while the subscribe is still in flight: one answer each, with the
    channels the client got (each once), and nothing raised in the port."""
    p = await connect_peer(port.ws_url)
    nope, ticker = "book.NOPE-PERPETUAL.100ms", f"ticker.{PERP}.100ms"
    got = await p.result("public/subscribe", {"channels": [BOOK, BOOK, nope, "nonsense", ticker, ticker]})
    assert got == [BOOK, ticker]
    other = "book.NOPE2-PERPETUAL.100ms"
    sub = asyncio.ensure_future(p.call("public/subscribe", {"channels": [other, f"trades.{PERP}.100ms"]}))
    unsub = asyncio.ensure_future(p.call("public/unsubscribe", {"channels": [other]}))
    assert (await unsub)["result"] == [other]
    assert (await sub)["result"] == [f"trades.{PERP}.100ms"]
    assert await p.result("public/test") == {"version": "1.2.26"}
    await port.broker.settle()
    gc.collect()  # a task whose exception nobody retrieved is reported when it is collected
    assert loop_errors == []
    await p.close()


async def test_subscribe_and_leave_in_one_read_lets_every_channel_go(sim: Simulator, port: BrokerServer) -> None:
    """A subscribe followed by an unsubscribe (or a reset) that the port reads in the same
    ``data_received`` stops the topic before its consumer's start has run: the channel must still
    be let go upstream (found by stress/port_fuzz.py: every channel hostile clients had touched
    stayed subscribed for good)."""
    ticker, trades = f"ticker.{PERP}.100ms", f"trades.{PERP}.100ms"
    p = await connect_peer(port.ws_url)
    proto = p.ws.protocol
    for i, (method, chans) in enumerate((("public/subscribe", [ticker, BOOK]), ("public/unsubscribe", [ticker, BOOK]),
                                         ("public/subscribe", [trades]))):
        proto.send_text(orjson.dumps({"jsonrpc": "2.0", "id": 100 + i, "method": method,
                                      "params": {"channels": chans}}))
    assert p.ws.transport is not None
    p.ws.transport.write(b"".join(proto.data_to_send()))  # three frames, one write: one read on the port
    await p.barrier()
    p.ws.transport.abort()  # the trades subscribe may still be in flight upstream
    async def gone() -> None:
        while port.clients:
            await asyncio.sleep(0.005)  # bounded poll: the port notices the reset on its next read
    await asyncio.wait_for(gone(), 5)
    await port.broker.settle()
    assert port.topics == {} and port.broker.channels == []
    assert sim.subscriber_count(ticker) == sim.subscriber_count(BOOK) == sim.subscriber_count(trades) == 0
    b = await connect_peer(port.ws_url)  # and the channels still work for a newcomer
    assert await b.result("public/subscribe", {"channels": [BOOK]}) == [BOOK]
    await Chain().read(b, lambda c: c.snapshots == 1 and c.book.changes >= 2)
    await b.close()


async def test_slow_client_is_conflated_fast_one_unaffected(sim: Simulator) -> None:
    dk = await reconnecting_client(sim)
    broker = Broker(dk)
    chans = [f"book.{n}.100ms" for n in ("BTC-PERPETUAL", "ETH-PERPETUAL")] + [f"ticker.{PERP}.100ms"]
    async with BrokerServer(broker, max_buffer=2048) as srv:
        fast = await connect_peer(srv.ws_url)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        raw.connect(("127.0.0.1", srv.port))
        slow = await websockets.connect(srv.ws_url, sock=raw, max_queue=1, max_size=2**24, close_timeout=0.2)
        await slow.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                                      "params": {"channels": chans}}).decode())
        await fast.result("public/subscribe", {"channels": [BOOK]})
        slow_client = next(c for c in srv.clients if c.conn.peer.endswith(str(raw.getsockname()[1])))
        slow_client.conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2048)
        chain = Chain()
        await chain.read(fast, lambda c: slow_client.drops > 0 or slow_client.conn.closed, limit=2000)
        n = chain.book.changes
        await chain.read(fast, lambda c: c.book.changes >= n + 5)  # the fast one keeps its chain
        # the slow one reads again: whatever it gets is an unbroken chain, resumed from a fresh snapshot
        slow_chain = Chain()
        async def drain() -> None:
            while slow_chain.snapshots < 2:
                msg = orjson.loads(await slow.recv())
                if msg.get("params", {}).get("channel") == BOOK:
                    slow_chain.feed(msg["params"]["data"])
        if not slow_client.conn.closed:
            await asyncio.wait_for(drain(), 10)
        m = (await _get(f"{srv.http_url}/metrics")).text
        assert "deribit_kit_port_client_drops_total" in m and "deribit_kit_broker_upstream_up 1" in m
        await fast.close()
        await slow.close()
    await broker.close()
    await dk.close()


async def test_errors_and_limits_leave_others_alone(port: BrokerServer) -> None:
    bad, good = await connect_peer(port.ws_url), await connect_peer(port.ws_url)
    assert (await bad.send_raw("{nope"))["error"]["code"] == -32700
    assert (await bad.call("public/no_such_method"))["error"]["code"] == -32601
    assert (await bad.call("public/subscribe", {"channels": "x"}))["error"]["code"] == -32602
    big = orjson.dumps({"jsonrpc": "2.0", "id": 9, "method": "public/test", "params": {"x": "a" * 40_000}})
    assert (await bad.send_raw(big.decode()))["error"]["code"] == -32600
    many = [f"ticker.{n}.100ms" for n in ("BTC-PERPETUAL", "ETH-PERPETUAL")] + [
        f"trades.{n}.100ms" for n in ("BTC-PERPETUAL", "ETH-PERPETUAL")] + [BOOK, "book.ETH-PERPETUAL.100ms"]
    err = (await bad.call("public/subscribe", {"channels": many}))["error"]
    assert err["code"] == -32602 and err["data"]["param"] == "channels"
    assert (await bad.call("private/get_positions", {"currency": "BTC"}))["error"]["code"] == 13009
    err = (await bad.call("public/subscribe", {"channels": ["user.orders.any.any.raw"]}))["error"]
    assert err["code"] == 13009
    replies = await asyncio.gather(*(bad.call("public/get_time") for _ in range(150)))
    assert any(r.get("error", {}).get("code") == 10028 for r in replies)
    assert await good.result("public/test") == {"version": "1.2.26"}
    reply = await good.call("public/get_instrument", {"instrument_name": PERP})
    assert reply["result"]["instrument_name"] == PERP and {"usIn", "usOut", "usDiff", "testnet"} <= set(reply)
    assert (await good.call("public/get_instrument", {"instrument_name": "NOPE"}))["error"]["code"] == 13020
    health = (await _get(f"{port.http_url}/healthz")).json()
    assert health["upstream"] == "open" and health["clients"] == 2
    await bad.close()
    await good.close()


async def test_connection_limit_answers_http_429(sim: Simulator) -> None:
    dk = await reconnecting_client(sim)
    broker = Broker(dk)
    try:
        async with BrokerServer(broker, max_connections=1) as srv:
            first = await connect_peer(srv.ws_url)
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(srv.ws_url)
            assert refused.value.response.status_code == 429
            assert b"too_many_connections" in refused.value.response.body
            assert (await first.result("public/test"))["version"]  # the admitted client is unaffected
            await first.close()
    finally:
        await broker.close()
        await dk.close()


async def test_private_forwarding_needs_the_broker_token(sim: Simulator) -> None:
    dk = await reconnecting_client(sim)
    broker = Broker(dk)
    async with BrokerServer(broker, token="s3cret", client_id="me") as srv:
        p = await connect_peer(srv.ws_url)
        assert (await p.call("private/get_account_summary", {"currency": "BTC"}))["error"]["code"] == 13009
        wrong = {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}
        assert "error" in await p.call("public/auth", wrong)  # the upstream key is not the broker's
        auth = await p.result("public/auth", {"grant_type": "client_credentials", "client_id": "me",
                                              "client_secret": "s3cret"})
        assert auth["access_token"]
        summary = await p.result("private/get_account_summary", {"currency": "BTC"})
        assert summary["currency"] == "BTC"
        await p.close()
    await broker.close()
    await dk.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cf, kf = tmp / "cert.pem", tmp / "key.pem"
    cf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cf, kf


async def test_wss_with_a_self_signed_certificate(sim: Simulator, tmp_path: Path) -> None:
    cf, kf = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cf, kf)
    client_ctx = ssl.create_default_context(cafile=str(cf))
    dk = await reconnecting_client(sim)
    broker = Broker(dk)
    async with BrokerServer(broker, ssl_context=server_ctx) as srv:
        assert srv.ws_url.startswith("wss://")
        p = RawPeer(await websockets.connect(srv.ws_url, ssl=client_ctx, max_size=2**24))
        assert await p.result("public/test") == {"version": "1.2.26"}
        await p.result("public/subscribe", {"channels": [BOOK]})
        assert (await p.next_notification(BOOK))["data"]["type"] == "snapshot"
        await p.close()
    await broker.close()
    await dk.close()


async def test_ccxt_pro_watch_order_book_through_the_broker() -> None:
    async with Simulator(seed=11, autostep=False, rate_limits=False) as sim:
        dk = await reconnecting_client(sim)
        broker = Broker(dk)
        async with BrokerServer(broker) as srv:
            ex = ccxt_pro.deribit({"enableRateLimit": False})
            ex.urls["api"] = {"rest": sim.http_url, "ws": srv.ws_url}
            ex.urls["test"] = {"rest": sim.http_url, "ws": srv.ws_url}
            try:
                book = await asyncio.wait_for(ex.watch_order_book("BTC/USD:BTC"), 10)
                changes = 0
                for _ in range(30):
                    result = sim.step()
                    if not any(inst.name == PERP for inst, _ in result.book_changes):
                        continue
                    changes += 1
                    while book["timestamp"] != result.timestamp:
                        book = await asyncio.wait_for(ex.watch_order_book("BTC/USD:BTC"), 5)
                    live = broker.books[PERP].book
                    assert live.last_update_ms == result.timestamp
                    lv = live.snapshot_levels()
                    assert [[float(x[0]), float(x[1])] for x in book["bids"]] == lv["bids"]
                    assert [[float(x[0]), float(x[1])] for x in book["asks"]] == lv["asks"]
                assert changes >= 10
                assert sim.subscriber_count(BOOK) == 1
            finally:
                await ex.close()
        await broker.close()
        await dk.close()


_method = st.one_of(st.sampled_from(["public/subscribe", "public/unsubscribe", "public/get_instrument",
                                     "public/ticker", "public/test", "public/auth", "private/buy",
                                     "public/get_order_book", "public/set_heartbeat", "public/unsubscribe_all"]),
                    st.text(max_size=30))
_scalar = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(_scalar,
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=10)
_frame = st.one_of(
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    _json.map(lambda v: orjson.dumps(v).decode()),
    st.builds(lambda i, m, p: orjson.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}).decode(),
              _json, _method, _json),
)


@pytest.fixture
async def fuzz_target(sim: Simulator) -> AsyncIterator[tuple[BrokerServer, list[websockets.ClientConnection]]]:
    dk = await reconnecting_client(sim)
    broker = Broker(dk)
    async with BrokerServer(broker, rate_limits=False) as srv:
        # the fuzzing connections never read: once their queue fills they stop reading and the port
        # drops them as slow; the client side then cannot see the close, so it does not wait long
        conns = [await websockets.connect(srv.ws_url, max_size=2**24, close_timeout=0.2)]
        yield srv, conns
        for c in conns:
            await c.close()
    await broker.close()
    await dk.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_frame, min_size=1, max_size=5))
async def test_fuzz_frames(fuzz_target: tuple[BrokerServer, list[websockets.ClientConnection]],
                           frames: list[str]) -> None:
    srv, conns = fuzz_target
    for f in frames:
        try:
            await conns[-1].send(f)
        except websockets.ConnectionClosed:
            conns.append(await websockets.connect(srv.ws_url, max_size=2**24, close_timeout=0.2))
    good = await connect_peer(srv.ws_url)
    assert await good.result("public/test") == {"version": "1.2.26"}
    await good.close()


async def test_interval_channels_wait_for_the_flush_window_replies_never(sim: Simulator) -> None:
    """With a (huge) flush window, 100ms book changes queue up instead of going out each loop turn;
    a reply is never held and takes them along, in order and chained."""
    dk = await reconnecting_client(sim)
    broker = Broker(dk)
    async with BrokerServer(broker, flush_interval=30.0) as srv:
        p = await connect_peer(srv.ws_url)
        assert await p.result("public/subscribe", {"channels": [BOOK]}) == [BOOK]  # the reply is not held
        live = srv.topics[BOOK].live
        assert live is not None
        for _ in range(3):
            await asyncio.wait_for(expect(live.updated), 5)
        (client,) = srv.clients
        assert len(client.out) >= 3 and srv._flush_timed  # queued, waiting for the window
        await p.barrier()  # public/test: its reply flushes what waits
        chain = Chain()
        for note in p.drain():
            chain.feed(note["data"])
        assert chain.snapshots == 1 and chain.book.changes >= 2
        await p.close()
    await broker.close()
    await dk.close()


async def test_channels_without_interval_are_not_held(sim: Simulator) -> None:
    dk = await reconnecting_client(sim)
    broker = Broker(dk)
    async with BrokerServer(broker, flush_interval=30.0) as srv:
        p = await connect_peer(srv.ws_url)
        index = "deribit_price_index.btc_usd"
        assert await p.result("public/subscribe", {"channels": [index]}) == [index]
        note = await p.next_notification(index, timeout=5)  # no request needed to get it out
        assert note["data"]["index_name"] == "btc_usd" and note["data"]["price"] > 0
        await p.close()
    await broker.close()
    await dk.close()
