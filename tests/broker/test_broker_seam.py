"""The broker against the upstream protocol alone (a scripted upstream: a unit test of the seam):
the wire worker's order of calls, the sink, and the optional ``interrupted`` event."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import StubUpstream

from deribit_kit.broker import Broker
from deribit_kit.events import Event

BOOK = "book.BTC-PERPETUAL.100ms"


class ScriptedUpstream(StubUpstream):
    """Accepts every channel, records every call, and lets the test feed the sink."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = Event("interrupted")
        self.calls: list[tuple[str, list[str]]] = []
        self.gate = asyncio.Event()  # unsubscribes wait for it (a slow upstream)
        self.gate.set()
        self.called = Event("called")

    async def subscribe(self, channels: list[str]) -> list[str]:
        self.calls.append(("subscribe", list(channels)))
        await asyncio.sleep(0)
        self.wire.update(channels)
        return list(channels)

    async def unsubscribe(self, channels: list[str]) -> None:
        self.calls.append(("unsubscribe", list(channels)))
        self.called.emit("unsubscribe")
        await self.gate.wait()
        self.wire.difference_update(channels)

    async def resync(self, channels: list[str]) -> None:
        self.calls.append(("resync", list(channels)))


def snapshot(change_id: int) -> dict[str, Any]:
    return {"type": "snapshot", "timestamp": 1, "instrument_name": "BTC-PERPETUAL", "change_id": change_id,
            "bids": [["new", 100.0, 1.0]], "asks": [["new", 101.0, 1.0]]}


def change(prev: int, change_id: int) -> dict[str, Any]:
    return {"type": "change", "timestamp": 2, "instrument_name": "BTC-PERPETUAL", "prev_change_id": prev,
            "change_id": change_id, "bids": [["change", 100.0, 2.0]], "asks": []}


async def test_interrupted_channels_resync_with_a_gap_counted() -> None:
    up = ScriptedUpstream()
    broker = Broker(up)
    live = broker.hold_book(BOOK)
    await broker.settle()
    up.sink(BOOK, snapshot(10), None)
    up.sink(BOOK, change(10, 11), None)
    assert live.state == "live" and live.book.change_id == 11
    up.interrupted.emit([BOOK], True)
    assert live.state == "resyncing" and live.book.gaps == 1
    up.sink(BOOK, change(11, 12), None)  # nothing applies before a snapshot
    assert live.book.change_id == 11
    await broker.settle()
    assert up.calls[-1] == ("resync", [BOOK])
    up.sink(BOOK, snapshot(20), None)
    assert live.state == "live" and live.book.resyncs == 1
    live.release()
    await broker.close()


async def test_the_worker_sends_calls_in_the_order_references_changed() -> None:
    up = ScriptedUpstream()
    broker = Broker(up)
    first = broker.hold_book(BOOK)
    await broker.settle()
    up.gate.clear()
    sent = asyncio.ensure_future(up.called.wait(5.0))
    first.release()  # unwanted ...
    await sent  # ... the unsubscribe is in flight upstream
    second = broker.hold_book(BOOK)  # ... and wanted again before it is answered
    up.gate.set()
    await broker.settle()
    assert up.calls == [("subscribe", [BOOK]), ("unsubscribe", [BOOK]), ("subscribe", [BOOK])]
    assert BOOK in up.wire and broker.channels == [BOOK]
    second.release()
    await broker.settle()
    assert up.wire == set() and broker.channels == []
    await broker.close()
