"""Unit tests of deribit_kit.events.Event: handlers, emission order, failures, coroutine handlers, wait()."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from deribit_kit import events as events_mod
from deribit_kit.events import Event


def test_connect_disconnect_and_len() -> None:
    ev = Event("e")
    seen: list[Any] = []
    assert len(ev) == 0 and not ev

    def h(x: Any) -> None:
        seen.append(x)

    ev.connect(h)
    ev.connect(h)  # connecting twice keeps one registration
    assert len(ev) == 1 and ev
    ev.emit(1)
    assert seen == [1]
    ev.disconnect(h)
    ev.disconnect(h)  # disconnecting an absent handler is fine
    ev.emit(2)
    assert seen == [1]
    assert len(ev) == 0 and not ev


def test_iadd_isub() -> None:
    class Owner:
        def __init__(self) -> None:
            self.updated = Event("updated")

    o = Owner()
    seen: list[tuple[Any, ...]] = []

    def h(*args: Any) -> None:
        seen.append(args)

    o.updated += h
    assert isinstance(o.updated, Event) and len(o.updated) == 1
    o.updated.emit("a", 2)
    o.updated -= h
    o.updated.emit("b")
    assert seen == [("a", 2)]
    assert isinstance(o.updated, Event)


def test_bound_methods_deduplicate() -> None:
    class Listener:
        def __init__(self) -> None:
            self.n = 0

        def on(self) -> None:
            self.n += 1

    ev = Event()
    listener = Listener()
    ev += listener.on
    ev += listener.on
    ev.emit()
    assert listener.n == 1
    ev -= listener.on
    assert len(ev) == 0


def test_emit_order_and_arguments() -> None:
    ev = Event()
    order: list[str] = []
    ev += lambda *a: order.append(f"first{a}")
    ev += lambda *a: order.append(f"second{a}")
    ev += lambda *a: order.append(f"third{a}")
    ev.emit(1, "x")
    assert order == ["first(1, 'x')", "second(1, 'x')", "third(1, 'x')"]


def test_raising_handler_is_logged_and_others_run(caplog: pytest.LogCaptureFixture) -> None:
    ev = Event("ticks")
    seen: list[int] = []

    def bad(x: int) -> None:
        raise RuntimeError("boom")

    ev += lambda x: seen.append(x)
    ev += bad
    ev += lambda x: seen.append(x * 10)
    with caplog.at_level(logging.ERROR, logger="deribit_kit.events"):
        ev.emit(3)
    assert seen == [3, 30]
    records = [r for r in caplog.records if r.name == "deribit_kit.events"]
    assert len(records) == 1
    assert "ticks" in records[0].getMessage()
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], RuntimeError)


def test_handler_disconnecting_during_emit() -> None:
    ev = Event()
    seen: list[str] = []

    def once(x: str) -> None:
        ev.disconnect(once)
        seen.append("once")

    ev += once
    ev += lambda x: seen.append("always")
    ev.emit("a")
    ev.emit("b")
    assert seen == ["once", "always", "always"]  # removing itself does not skip the next handler


async def test_coroutine_handlers_are_scheduled() -> None:
    ev = Event()
    done = asyncio.Event()
    seen: list[Any] = []

    async def handler(x: Any) -> None:
        seen.append(("start", x))
        await asyncio.sleep(0)
        seen.append(("end", x))
        done.set()

    ev += handler
    ev.emit(5)
    assert seen == []  # scheduled, not run inline
    assert len(events_mod._tasks) >= 1  # kept alive until done
    await asyncio.wait_for(done.wait(), 5)
    assert seen == [("start", 5), ("end", 5)]


async def test_wait_returns_the_next_emission() -> None:
    ev = Event()
    listening: list[bool] = []

    def fire() -> None:  # runs once wait() has registered (callbacks run in order)
        listening.append(bool(ev))
        ev.emit("value")

    asyncio.get_running_loop().call_soon(fire)
    assert not ev
    assert await ev.wait(timeout=5) == "value"
    assert listening == [True]  # a waiter counts as a listener
    assert not ev  # the waiter is gone after it was answered


async def test_wait_values() -> None:
    ev = Event()
    loop = asyncio.get_running_loop()
    loop.call_soon(ev.emit, 1, 2)
    assert await ev.wait(timeout=5) == (1, 2)
    loop.call_soon(ev.emit)
    assert await ev.wait(timeout=5) == ()


async def test_many_waiters_all_answered() -> None:
    ev = Event()
    waiters = [asyncio.ensure_future(ev.wait(timeout=5)) for _ in range(3)]
    asyncio.get_running_loop().call_soon(ev.emit, "x")  # after the three waiters have started
    assert await asyncio.gather(*waiters) == ["x", "x", "x"]
    assert not ev


async def test_wait_timeout() -> None:
    ev = Event()
    with pytest.raises(TimeoutError):
        await ev.wait(timeout=0.01)
    assert not ev  # the timed-out waiter is removed
    ev.emit("late")  # nobody to answer; no error


async def test_cancelled_wait_is_removed() -> None:
    ev = Event()
    waiter = asyncio.ensure_future(ev.wait())
    listening: list[bool] = []

    def cancel() -> None:  # runs once wait() has registered
        listening.append(bool(ev))
        waiter.cancel()

    asyncio.get_running_loop().call_soon(cancel)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert listening == [True]
    assert not ev


def test_repr() -> None:
    ev = Event("updated")
    ev += print
    assert repr(ev) == "Event('updated', handlers=1)"
