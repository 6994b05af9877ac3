"""Live objects: state folded from the broker's streams, updated in place.

:class:`~deribit_kit.live.orderbook.OrderBook` (L2 state with integrity counters, over the side
layouts of :mod:`~deribit_kit.live.ladder`), :class:`~deribit_kit.live.livebook.LiveBook` (a book
the broker keeps live), :class:`~deribit_kit.live.portfolio.Portfolio` (orders, positions,
balances), :class:`~deribit_kit.live.chain.OptionChain` (channels that follow the calendar) and
:class:`~deribit_kit.live.candles.LiveCandles` (history plus the open candle).
"""

from .candles import LiveCandles
from .chain import OptionChain
from .livebook import LiveBook
from .orderbook import LIVE, RESYNCING, STALE, SYNCING, OrderBook
from .portfolio import Portfolio

__all__ = ["LIVE", "RESYNCING", "STALE", "SYNCING", "LiveBook", "LiveCandles", "OptionChain", "OrderBook", "Portfolio"]
