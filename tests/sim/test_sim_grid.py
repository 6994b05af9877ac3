"""The one grid rule (deribit_kit.wire.enums.on_grid) on both sides: for prices at the edge of the
tick grid the client's order rules and the embedded exchange give the same verdict (they used
to differ: 1e-9 relative in the client, 1e-6 of a tick absolute in the exchange)."""

from __future__ import annotations

import pytest

from deribit_kit import Deribit
from deribit_kit.client import rules
from deribit_kit.errors import DeribitError, ValidationError
from deribit_kit.sim import Simulator

PERP = "BTC-PERPETUAL"  # tick 0.5


@pytest.mark.parametrize(("price", "on"), [
    (50000.5, True),
    (50000.00001, True),  # 2e-5 of a tick at 100,001 ticks: float noise, on the grid (the old exchange refused)
    (100.00000025, False),  # 5e-7 of a tick at 200 ticks: off the grid (the old exchange accepted it)
    (50000.3, False),
])
async def test_client_and_exchange_agree_on_edge_prices(dk: Deribit, sim: Simulator, price: float, on: bool) -> None:
    inst = await dk.instrument(PERP)
    try:
        rules.check_price(inst, price)
        client_on = True
    except ValidationError:
        client_on = False
    try:
        await dk.call("private/buy", {"instrument_name": PERP, "amount": 10, "type": "limit", "price": price,
                                      "label": "grid-edge"})
        exchange_on = True
    except DeribitError as exc:
        assert exc.code == -32602 and exc.data["param"] == "price", exc
        exchange_on = False
    assert client_on is on and exchange_on is on
    await dk.call("private/cancel_all")
