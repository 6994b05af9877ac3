"""The embedded exchange's state, without I/O: the market (instruments, books, market makers,
index, tape, candles), its clock (one for all of it), the accounts (keys, tokens, credit pools) and the engine
(orders, matching, ledger and fees, margins, triggers, expiries and settlement, JSON views).

Nothing here touches a socket, a task or the event loop: :mod:`deribit_kit.sim.rpc` turns requests
into calls on it, :mod:`deribit_kit.sim.pubsub` publishes what changed, and
:mod:`deribit_kit.sim.server` drives its clock and serves it.
"""

from __future__ import annotations

from collections.abc import Callable

from ...wire.rpcserver import not_found
from .accounts import Account, Accounts
from .clock import Clock
from .engine import Engine
from .market import Market, SimInstrument, StepResult
from .orders import AccountState, Changes

__all__ = [
    "Account",
    "AccountState",
    "Accounts",
    "Changes",
    "Clock",
    "Engine",
    "Exchange",
    "Market",
    "SimInstrument",
    "StepResult",
]


class Exchange:
    """One exchange's market, accounts and engine."""

    def __init__(self, *, seed: int = 0, clock: Clock | Callable[[], float] | None = None, tick_interval: float = 0.1,
                 option_requote: float = 0.1, trade_rate: float = 1.0, token_ttl: float = 900.0) -> None:
        self.clock = Clock.of(clock)  # one clock for the market and the accounts
        self.market = Market(seed=seed, clock=self.clock, tick_interval=tick_interval,
                             option_requote=option_requote, trade_rate=trade_rate)
        self.accounts = Accounts(token_ttl=token_ttl, clock=self.clock)
        self.engine = Engine(self.market)

    def now_ms(self) -> int:
        """The exchange's time in milliseconds."""
        return self.clock.now_ms()

    def instrument(self, name: str) -> SimInstrument:
        """A live instrument, or Deribit's 13020 ``not_found``."""
        inst = self.market.get(name)
        if inst is None:
            raise not_found()
        return inst

    def state(self, account: Account) -> AccountState:
        """The account's trading state (balances, positions, open orders), created funded on first use."""
        return self.engine.state(account)

    def fund(self, account: Account, currency: str, amount: float) -> float:
        """Credit (or debit, with a negative ``amount``) an account; the new balance."""
        return self.engine.fund(account, currency, amount)
