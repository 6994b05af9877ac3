"""The blocking facade: parity with the async client, use from a plain script, refusal inside a
running loop, clean shutdown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from deribit_kit import deribit as async_client
from deribit_kit import sync
from deribit_kit.sim import Simulator


def test_method_parity_with_async_client() -> None:
    names = sync.public_methods(async_client.Deribit)
    assert {"instruments", "ticker", "order_book", "get_time", "connect"} <= set(names)
    missing = [n for n in names if not callable(getattr(sync.Deribit, n, None))]
    assert missing == []
    # the blocking twins are plain functions, not coroutines
    assert not sync.inspect.iscoroutinefunction(sync.Deribit.ticker)


def test_blocking_calls_against_the_embedded_exchange() -> None:
    threads_before = threading.active_count()
    dk = sync.Deribit.connect()
    try:
        insts = dk.instruments("BTC", "future")
        assert any(i.instrument_name == "BTC-PERPETUAL" for i in insts)
        assert len(insts.to_frame()) == len(insts)
        ticker = dk.ticker("BTC-PERPETUAL")
        assert ticker.mark_price and ticker.mark_price > 0
        with dk.subscribe("ticker.BTC-PERPETUAL.100ms") as sub:
            msg = sub.get(timeout=5)
            assert msg.channel == "ticker.BTC-PERPETUAL.100ms"
    finally:
        dk.close()
    assert dk.closed
    with pytest.raises(sync.DeribitKitError):
        dk.ticker("BTC-PERPETUAL")
    # the private loop thread is gone after close
    assert threading.active_count() <= threads_before


async def test_refuses_inside_a_running_loop() -> None:
    with pytest.raises(sync.BlockingCallInLoopError, match="await"):
        sync.Deribit.connect()


async def test_refuses_method_call_inside_a_running_loop() -> None:
    async with Simulator(seed=2, rate_limits=False) as sim:
        dk = await _connect_in_thread(sim.ws_url)
        try:
            with pytest.raises(sync.BlockingCallInLoopError, match=r"await dk.ticker"):
                dk.ticker("BTC-PERPETUAL")
        finally:
            await _close_in_thread(dk)


async def _connect_in_thread(url: str) -> sync.Deribit:
    import asyncio

    return await asyncio.to_thread(sync.Deribit.connect, url)


async def _close_in_thread(dk: sync.Deribit) -> None:
    import asyncio

    await asyncio.to_thread(dk.close)


def test_plain_script_runs_and_exits_cleanly() -> None:
    script = textwrap.dedent(
        """
        from deribit_kit.sync import Deribit
        with Deribit.connect() as dk:
            book = dk.order_book("ETH-PERPETUAL", depth=5)
            print("best", book.best_bid_price < book.best_ask_price, len(book.bids))
        print("closed")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "best True 5" in out.stdout
    assert out.stdout.strip().endswith("closed")
