"""The embedded exchange's engine: orders, matching, the ledger and fees, margins, triggers,
expiries and settlement, and the JSON views of accounts, every account of one exchange. No I/O.

It is built by job, each a module with a class on top of the one before: :mod:`.orders` (order
state, resting queues) -> :mod:`.ledger` (balances, positions, fees) -> :mod:`.margin` ->
:mod:`.views` (positions, summaries, portfolio) -> :mod:`.matching` (checks, price-time priority,
trades, edits) -> :mod:`.triggers` -> :mod:`.settlement`. Requests arrive from
:mod:`deribit_kit.sim.rpc.trading`; each call records what it changed in a
:class:`~.orders.Changes`, which :mod:`deribit_kit.sim.pubsub` publishes.

Conventions (the trading and account methods of Deribit's API, https://docs.deribit.com):

* amounts are USD for inverse futures (multiples of ``contract_size``), coin for everything else;
* inverse futures settle in the coin: PnL ``size * (1/avg - 1/price)``, average prices are
  USD-weighted harmonic means; linear futures settle in USDC: PnL ``size * (price - avg)``;
* inverse options are priced in the coin; premium moves the balance at the trade, so equity is
  ``balance + futures floating PnL + options value`` (``size * mark``);
* futures PnL and all fees are booked into the balance at once (no 08:00 session settlement);
* spot moves both balances of the pair and keeps no position;
* at one price level market-maker quotes are older than user orders, so they fill first;
* an order never trades with its own account's orders: an incoming order that would reach one is
  rejected (``self_trading_reject_mode`` ``reject_taker``, error 10003 ``order_overlap``).
"""

from __future__ import annotations

from .market import StepResult
from .orders import Changes
from .settlement import Settlement


class Engine(Settlement):
    """Orders, matching and the ledger of every account of one embedded exchange."""

    def after_step(self, result: StepResult) -> Changes:
        """What a market tick does to orders: settle expired instruments, expire ``good_til_day``
        orders, fire triggers, fill resting orders the market makers' quotes crossed."""
        ch = Changes()
        for inst in result.expired:
            self.settle(inst, ch)
        self.expire_day_orders(result.timestamp, ch)
        self.check_triggers(ch)
        self.cross_resting(ch)
        return ch
