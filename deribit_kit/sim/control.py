"""``sim/*`` methods: the embedded exchange's control surface over its own JSON-RPC, so that
tests in other processes, the command line and benchmarks can inject faults and drive the clock.
They exist only on the embedded exchange (Deribit answers -32601) and only when ``control`` is on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import error_for_code
from ..transport.server import text_frame
from ..wire import jsonrpc
from .handlers import instrument, method
from .params import P

if TYPE_CHECKING:
    from .server import Session, Simulator


def _guard(sim: Simulator) -> None:
    if not sim.control:
        raise error_for_code(-32601)


@method("sim/drop_connections")
def _drop(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    _guard(sim)
    # after this reply has been written
    asyncio.get_running_loop().call_soon(sim.faults.drop_connections)
    return "ok"


@method("sim/skip_change_id", P("instrument_name", "str", True))
def _skip(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    _guard(sim)
    sim.faults.skip_change_id(p["instrument_name"])
    return "ok"


@method("sim/stop_heartbeats", P("stopped", "bool", default=True))
def _stop_hb(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    _guard(sim)
    sim.faults.stop_heartbeats(p["stopped"])
    return "ok"


@method("sim/set_latency", P("ms", "float", True))
def _latency(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    _guard(sim)
    sim.faults.set_latency(p["ms"] / 1000.0)
    return "ok"


@method("sim/halt", P("instrument_name", "str", True), P("halted", "bool", default=True))
def _halt(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    _guard(sim)
    sim.faults.halt(p["instrument_name"], p["halted"])
    return "ok"


@method("sim/rate_limit_storm", P("requests", "int", True))
def _storm(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    _guard(sim)
    sim.faults.rate_limit_storm(p["requests"])
    return "ok"


@method("sim/inject_frame", P("payload", "str", True))
def _inject(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    _guard(sim)
    return sim.faults.inject_frame(p["payload"].encode())


@method("sim/step", P("count", "int", default=1))
def _step(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    _guard(sim)
    sim.step(max(1, p["count"]))
    return sim.market.last_step_ms


@method("sim/firehose", P("instrument_name", "str", True), P("count", "int", True), P("levels", "int", default=20),
        ws_only=True)
def _firehose(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    """Blast ``count`` pre-encoded ``book.{instrument}.100ms`` changes at this connection.

    A snapshot goes first, then changes chained by ``change_id`` touching ``levels`` levels per
    side; frames are built before sending so the benchmark measures serving, not generating.
    Returns at once; the stream follows the reply and ends with ``sim/firehose_done``.
    """
    _guard(sim)
    inst = instrument(sim, p["instrument_name"])
    count, levels = p["count"], max(1, p["levels"])
    if not 1 <= count <= 5_000_000:
        raise error_for_code(-32602, data={"param": "count", "reason": "must be between 1 and 5000000"})
    asyncio.get_running_loop().create_task(_blast(sim, s, inst.name, count, levels))
    return "ok"


async def _blast(sim: Simulator, s: Session, name: str, count: int, levels: int) -> None:
    conn = s.conn
    if conn is None:
        return
    channel = f"book.{name}.100ms"
    inst = sim.market.get(name)
    assert inst is not None
    mid = inst.mark_price
    tick = inst.tick
    change_id = 1_000_000
    conn.send(jsonrpc.encode_notification(channel, {
        "type": "snapshot", "timestamp": sim.now_ms(), "instrument_name": name, "change_id": change_id,
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
    ts = sim.now_ms()
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
