"""Panel dashboards for deribit_kit: reusable components (one ``pn.viewable.Viewer`` each) over one
shared client and broker per process (:mod:`deribit_kit.ui.app`).

    import panel as pn
    from deribit_kit.ui import Hub, MarketDashboard
    pn.extension("tabulator", inline=True)        # inline=True in an offline notebook
    MarketDashboard(hub=Hub.for_client(dk))         # renders in the cell, updates live

Served apps ship in :mod:`deribit_kit.ui.dashboards` (``panel serve deribit_kit/ui/dashboards/*.py``, or
``deribit-kit demo``); the operations page is :class:`~deribit_kit.ui.ops.OpsDashboard`.
Needs the ``dashboards`` extra (``pip install 'deribit-kit[dashboards]'``). Names are imported on
first use, so ``deribit_kit.ui.demo`` and ``deribit_kit.ui.render`` work without loading Panel.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import (
        AccountFeed,
        CandleFeed,
        ChainFeed,
        Feed,
        Hub,
        MarketFeed,
        TermFeed,
        close_hubs,
        describe_error,
        get_hub,
    )
    from .base import ConnectionBanner, HtmlView, LiveDashboard
    from .market import (
        BookStatus,
        CandleChart,
        DepthChart,
        InstrumentPicker,
        Ladder,
        MarketDashboard,
        TickerStats,
        TradesTape,
    )
    from .ops import OpsDashboard
    from .options import OptionChainTable, OptionsDashboard, SmilePlot, TermStructurePlot
    from .trading import AccountPanel, KillSwitch, OpenOrders, OrderTicket, PositionsTable, TradingDashboard

_WHERE = {
    "app": ["AccountFeed", "CandleFeed", "ChainFeed", "Feed", "Hub", "MarketFeed", "TermFeed", "close_hubs",
            "describe_error", "get_hub"],
    "base": ["ConnectionBanner", "HtmlView", "LiveDashboard"],
    "market": ["BookStatus", "CandleChart", "DepthChart", "InstrumentPicker", "Ladder", "MarketDashboard",
               "TickerStats", "TradesTape"],
    "ops": ["OpsDashboard"],
    "options": ["OptionChainTable", "OptionsDashboard", "SmilePlot", "TermStructurePlot"],
    "trading": ["AccountPanel", "KillSwitch", "OpenOrders", "OrderTicket", "PositionsTable", "TradingDashboard"],
}
_MODULE = {name: mod for mod, names in _WHERE.items() for name in names}

__all__ = [
    "AccountFeed",
    "AccountPanel",
    "BookStatus",
    "CandleChart",
    "CandleFeed",
    "ChainFeed",
    "ConnectionBanner",
    "DepthChart",
    "Feed",
    "HtmlView",
    "Hub",
    "InstrumentPicker",
    "KillSwitch",
    "Ladder",
    "LiveDashboard",
    "MarketDashboard",
    "MarketFeed",
    "OpenOrders",
    "OpsDashboard",
    "OptionChainTable",
    "OptionsDashboard",
    "OrderTicket",
    "PositionsTable",
    "SmilePlot",
    "TermFeed",
    "TermStructurePlot",
    "TickerStats",
    "TradesTape",
    "TradingDashboard",
    "close_hubs",
    "describe_error",
    "get_hub",
]


def __getattr__(name: str) -> Any:
    mod = _MODULE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
