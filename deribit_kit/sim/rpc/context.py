"""What an embedded-exchange handler gets besides its params: the :class:`Context` of the calling
connection (the exchange's state, the session, publishing, and the control surface when it is on),
built once per session by :mod:`deribit_kit.sim.server`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import error_for_code
from ..exchange import Accounts, AccountState, Engine, Exchange, Market
from ..pubsub import PubSub

if TYPE_CHECKING:
    from ...transport.endpoint import Heartbeat
    from ..server import Faults, Session


class ExchangeParts:
    """The exchange's parts by name (``market``, ``accounts``, ``engine``) for whatever holds an
    ``exchange``: the handler context and the :class:`~deribit_kit.sim.server.Simulator`."""

    __slots__ = ()
    exchange: Exchange

    @property
    def market(self) -> Market:
        """The exchange's instruments, books and price paths (``exchange.market``)."""
        return self.exchange.market

    @property
    def accounts(self) -> Accounts:
        """The exchange's accounts, API keys and tokens (``exchange.accounts``)."""
        return self.exchange.accounts

    @property
    def engine(self) -> Engine:
        """The exchange's order engine: placement, matching, cancels (``exchange.engine``)."""
        return self.exchange.engine


class Context(ExchangeParts):
    """One connection's handler context: ``exchange`` (pure state), ``session``, ``pubsub`` and
    ``control`` (the faults and the clock, ``None`` when ``sim/*`` methods are off)."""

    __slots__ = ("control", "exchange", "min_heartbeat_interval", "pubsub", "session")

    def __init__(self, exchange: Exchange, session: Session, pubsub: PubSub, control: Faults | None,
                 min_heartbeat_interval: int) -> None:
        self.exchange = exchange
        self.session = session
        self.pubsub = pubsub
        self.control = control
        self.min_heartbeat_interval = min_heartbeat_interval

    @property
    def heartbeat(self) -> Heartbeat:
        """The calling connection's heartbeat (``public/set_heartbeat``)."""
        return self.session.heartbeat

    def account_state(self) -> AccountState:
        """The caller's account state (dispatch authenticated the call; an HTTP session keeps the account)."""
        account = self.session.account
        if account is None:
            raise error_for_code(13009, data={"reason": "authentication required"})
        return self.exchange.state(account)
