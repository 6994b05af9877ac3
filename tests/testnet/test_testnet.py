"""Against Deribit's real testnet: off by default (``-m live``), needs network and, for the private
part, DERIBIT_CLIENT_ID / DERIBIT_CLIENT_SECRET of a testnet account."""

from __future__ import annotations

import os

import pytest

from deribit_kit import Deribit

pytestmark = pytest.mark.live


async def test_public_market_data_on_testnet() -> None:
    dk = await Deribit.connect("test", client_id="", client_secret="")
    try:
        insts = await dk.instruments("BTC", "future")
        assert any(i.instrument_name == "BTC-PERPETUAL" for i in insts)
        book = await dk.order_book("BTC-PERPETUAL", depth=5)
        assert book.bids and book.asks and book.bids[0][0] < book.asks[0][0]
        async with dk.subscribe("ticker.BTC-PERPETUAL.100ms") as sub:
            msg = await sub.get(timeout=10)
            assert msg.data["instrument_name"] == "BTC-PERPETUAL"
    finally:
        await dk.close()


@pytest.mark.skipif(not os.environ.get("DERIBIT_CLIENT_SECRET"), reason="needs testnet API keys in the environment")
async def test_private_account_on_testnet() -> None:
    dk = await Deribit.connect("test")
    try:
        summary = await dk.account_summary("BTC")
        assert summary.currency == "BTC"
        orders = await dk.open_orders(currency="BTC")
        assert isinstance(orders.to_frame().shape[0], int)
    finally:
        await dk.close()
