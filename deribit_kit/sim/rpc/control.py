"""``sim/*`` methods: the embedded exchange's control surface over its own JSON-RPC, so that
tests in other processes, the command line and benchmarks can inject faults and drive the clock.
They exist only on the embedded exchange (Deribit answers -32601) and only when ``control`` is on
(the context's ``control`` is then the exchange's :class:`~deribit_kit.sim.server.Faults`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ...errors import error_for_code, invalid_params
from ...transport.server import text_frame
from ...wire import jsonrpc
from ...wire.rpcserver import MethodTable, P
from .context import Context

if TYPE_CHECKING:
    from ..server import Faults

METHODS = MethodTable()


def _control(cx: Context) -> Faults:
    if cx.control is None:
        raise error_for_code(-32601)
    return cx.control


@METHODS.method("sim/drop_connections")
def _drop(cx: Context, p: dict[str, Any]) -> Any:
    control = _control(cx)
    # after this reply has been written
    asyncio.get_running_loop().call_soon(control.drop_connections)
    return "ok"


@METHODS.method("sim/skip_change_id", P("instrument_name", "str", True))
def _skip(cx: Context, p: dict[str, Any]) -> Any:
    control = _control(cx)
    control.skip_change_id(p["instrument_name"])
    return "ok"


@METHODS.method("sim/stop_heartbeats", P("stopped", "bool", default=True))
def _stop_hb(cx: Context, p: dict[str, Any]) -> Any:
    control = _control(cx)
    control.stop_heartbeats(p["stopped"])
    return "ok"


@METHODS.method("sim/set_latency", P("ms", "float", True))
def _latency(cx: Context, p: dict[str, Any]) -> Any:
    control = _control(cx)
    control.set_latency(p["ms"] / 1000.0)
    return "ok"


@METHODS.method("sim/halt", P("instrument_name", "str", True), P("halted", "bool", default=True))
def _halt(cx: Context, p: dict[str, Any]) -> Any:
    control = _control(cx)
    control.halt(p["instrument_name"], p["halted"])
    return "ok"


@METHODS.method("sim/rate_limit_storm", P("requests", "int", True))
def _storm(cx: Context, p: dict[str, Any]) -> Any:
    control = _control(cx)
    control.rate_limit_storm(p["requests"])
    return "ok"


@METHODS.method("sim/inject_frame", P("payload", "str", True))
def _inject(cx: Context, p: dict[str, Any]) -> Any:
    control = _control(cx)
    return control.inject_frame(p["payload"].encode())


@METHODS.method("sim/step", P("count", "int", default=1))
def _step(cx: Context, p: dict[str, Any]) -> Any:
    control = _control(cx)
    control.step(max(1, p["count"]))
    return cx.market.last_step_ms


@METHODS.method("sim/firehose", P("instrument_name", "str", True), P("count", "int", True),
                        P("levels", "int", default=20), ws_only=True)
def _firehose(cx: Context, p: dict[str, Any]) -> Any:
    """Blast ``count`` pre-encoded ``book.{instrument}.100ms`` changes at this connection.

    A snapshot goes first, then changes chained by ``change_id`` touching ``levels`` levels per
    side; frames are built before sending so the benchmark measures serving, not generating.
    Returns at once; the stream follows the reply and ends with ``sim/firehose_done``.
    """
    _control(cx)
    inst = cx.exchange.instrument(p["instrument_name"])
    count, levels = p["count"], max(1, p["levels"])
    if not 1 <= count <= 5_000_000:
        raise error_for_code(-32602, data={"param": "count", "reason": "must be between 1 and 5000000"})
    asyncio.get_running_loop().create_task(_blast(cx, inst.name, count, levels))
    return "ok"


async def _blast(cx: Context, name: str, count: int, levels: int) -> None:
    conn = cx.session.conn
    if conn is None:
        return
    channel = f"book.{name}.100ms"
    inst = cx.market.get(name)
    assert inst is not None
    mid = inst.mark_price
    tick = inst.tick
    change_id = 1_000_000
    conn.send(jsonrpc.encode_notification(channel, {
        "type": "snapshot", "timestamp": cx.exchange.now_ms(), "instrument_name": name, "change_id": change_id,
        "bids": [["new", round(mid - (i + 1) * tick, 8), 10.0 * (i + 1)] for i in range(levels * 2)],
        "asks": [["new", round(mid + (i + 1) * tick, 8), 10.0 * (i + 1)] for i in range(levels * 2)],
    }))
    # a cycle of distinct change payloads, each re-chained per message
    variants = 64
    bodies = []
    for v in range(variants):
        bodies.append((
            [["change", round(mid - (i + 1) * tick, 8), 10.0 * (i + 1) + v] for i in range(levels)],
            [["change", round(mid + (i + 1) * tick, 8), 10.0 * (i + 1) + v] for i in range(levels)],
        ))
    ts = cx.exchange.now_ms()
    batch = 512
    transport = conn.transport
    sent = 0
    while sent < count:
        frames = []
        for _ in range(min(batch, count - sent)):
            bids, asks = bodies[sent % variants]
            prev, change_id = change_id, change_id + 1
            frames.append(text_frame(jsonrpc.encode_notification(channel, {
                "type": "change", "timestamp": ts, "prev_change_id": prev, "instrument_name": name,
                "change_id": change_id, "bids": bids, "asks": asks})))
            sent += 1
        if conn.closed:
            return
        transport.writelines(frames)
        while conn.buffered > 1 << 20 and not conn.closed:
            await asyncio.sleep(0.0005)
    conn.send(jsonrpc.dumps({"jsonrpc": "2.0", "method": "sim/firehose_done", "params": {"count": count}}))


@METHODS.method("sim/fund", P("currency", "str", True), P("amount", "float", True), P("client_id", "str"))
def _fund(cx: Context, p: dict[str, Any]) -> Any:
    """Credit (or debit) an account: the caller's, else ``client_id``'s, else the demo account's."""
    control = _control(cx)
    if p.get("client_id"):
        account = cx.accounts.by_client_id.get(p["client_id"])
        if account is None:
            raise invalid_params("client_id", "unknown client_id")
    else:
        account = cx.session.account or control.demo_account
    return cx.exchange.fund(account, p["currency"], p["amount"])


