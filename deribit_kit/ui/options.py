"""Options components: the chain of one expiry, its IV smile, and the ATM IV term structure.

    OptionsDashboard(currency="BTC", expiry="27MAR26")
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param
from bokeh.models import ColumnDataSource, NumeralTickFormatter
from bokeh.models.annotations import Span
from bokeh.plotting import figure

from . import render
from .app import ChainFeed, TermFeed
from .base import HtmlView, LiveDashboard, html_pane, new_view, session_safe


class OptionChainTable(HtmlView):
    """Calls and puts by strike: bid/ask, mark, IV, delta, open interest; the ATM strike marked."""

    def update(self, feed: ChainFeed) -> bool:
        """Show the chain table if it changed."""
        key, view = feed.view()
        return self.put(key, view["html"])


class SmilePlot(pn.viewable.Viewer):
    """Mark IV of calls and puts across strikes, with bid/ask IV ranges and the forward marked."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.sources = {k: ColumnDataSource({"strike": [], "iv": []}) for k in ("call", "put")}
        self.quotes = {k: ColumnDataSource({"strike": [], "bid_iv": [], "ask_iv": []}) for k in ("call", "put")}
        fig = figure(height=300, sizing_mode="stretch_width", tools="", toolbar_location=None,
                     x_axis_label="strike", y_axis_label="implied volatility (%)", title="IV smile")
        for side, color in (("call", "#1f5fbf"), ("put", "#b5179e")):
            fig.segment(x0="strike", x1="strike", y0="bid_iv", y1="ask_iv", source=self.quotes[side], line_color=color,
                        line_alpha=0.35, line_width=4)
            fig.line(x="strike", y="iv", source=self.sources[side], line_color=color, line_width=2,
                     legend_label=f"{side}s (mark)")
            fig.scatter(x="strike", y="iv", source=self.sources[side], color=color, size=5)
        self.forward = Span(location=0, dimension="height", line_color="#888", line_dash="dashed", visible=False)
        fig.add_layout(self.forward)
        fig.legend.location = "top_right"
        fig.legend.orientation = "horizontal"
        fig.xaxis.formatter = NumeralTickFormatter(format="0,0")
        self.figure = fig
        self.pane = pn.pane.Bokeh(fig, sizing_mode="stretch_width")
        self.key: Any = None

    def update(self, feed: ChainFeed) -> bool:
        """Show the smile (mark IV, bid/ask IV quotes, the forward) if it changed."""
        view = new_view(self, feed)
        if view is None:
            return False
        smile = view["smile"]
        for side in ("call", "put"):
            self.sources[side].data = smile[side]
            self.quotes[side].data = smile[f"{side}_quotes"]
        und = view.get("underlying")
        if und:
            self.forward.location = und
            self.forward.visible = True
        return True

    def reset(self) -> None:
        """Forget what is shown, so that the next update redraws."""
        self.key = None

    def __panel__(self) -> pn.viewable.Viewable:
        return self.pane


class TermStructurePlot(pn.viewable.Viewer):
    """At-the-money mark IV per expiry against days to expiry."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.source = ColumnDataSource({"days": [], "iv": [], "expiry": []})
        fig = figure(height=260, sizing_mode="stretch_width", tools="hover", toolbar_location=None,
                     x_axis_label="days to expiry", y_axis_label="ATM IV (%)", title="ATM IV term structure",
                     tooltips=[("expiry", "@expiry"), ("days", "@days{0.0}"), ("ATM IV", "@iv{0.00}%")])
        fig.line(x="days", y="iv", source=self.source, line_color="#e08a00", line_width=2)
        fig.scatter(x="days", y="iv", source=self.source, color="#e08a00", size=7)
        self.figure = fig
        self.pane = pn.pane.Bokeh(fig, sizing_mode="stretch_width")
        self.key: Any = None

    def update(self, feed: TermFeed) -> bool:
        """Show the term structure if it changed."""
        if feed.version == self.key:
            return False
        self.key = feed.version
        self.source.data = dict(feed.data)
        return True

    def reset(self) -> None:
        """Forget what is shown, so that the next update redraws."""
        self.key = None

    def __panel__(self) -> pn.viewable.Viewable:
        return self.pane


def default_expiry(expiries: list[str], hub_instruments: dict[str, Any], currency: str) -> str:
    """The first expiry at least three days out (a fuller smile than tomorrow's), else the first."""
    import time

    now = time.time() * 1000
    stamps = {i.instrument_name.split("-")[1]: i.expiration_timestamp for i in hub_instruments.values()
              if i.kind == "option" and i.base_currency == currency}
    for code in expiries:
        if stamps.get(code, 0) - now > 3 * 86_400_000:
            return code
    return expiries[0] if expiries else ""


class OptionsDashboard(LiveDashboard):
    """The option chain of a currency and expiry, its IV smile, and the term structure across expiries."""

    currency: param.Selector[str] = param.Selector(default="BTC", objects=["BTC", "ETH"])
    expiry = param.String(default="", doc="expiry code such as 27MAR26 ('' picks one)")

    def __init__(self, **params: Any) -> None:
        self.chain = OptionChainTable(css_class="dk-chain")
        self.smile = SmilePlot()
        self.term = TermStructurePlot()
        self.header = html_pane("", margin=(0, 10))
        self._expiry_select = pn.widgets.Select(label="Expiry", options=[], width=140, css_classes=["dk-expiry"])
        self._expiry_select.param.watch(self._on_expiry, "value")
        self._version = -1
        self._header_key: Any = None
        super().__init__(**params)
        self._currency_select = pn.widgets.Select.from_param(self.param.currency, label="Currency", width=100)

    @session_safe
    def _on_expiry(self, event: Any) -> None:
        if event.new and event.new != self.expiry:
            self.expiry = event.new

    @param.depends("currency", watch=True)
    @session_safe
    def _currency_changed(self) -> None:
        self._version = -1
        self.expiry = ""

    @param.depends("expiry", watch=True)
    @session_safe
    def _expiry_changed(self) -> None:
        if self.expiry:
            self._expiry_select.value = self.expiry
        self.chain.reset()
        self.smile.reset()
        if self.shared.ready:
            self.refresh()

    def refresh(self) -> bool:
        """Copy the expiries and the held feeds' views into the widgets; True when something changed."""
        hub = self.shared
        if self._version != hub.instruments_version:
            self._version = hub.instruments_version
            currencies = hub.option_currencies()
            if currencies and list(self.param.currency.objects) != currencies:
                self.param.currency.objects = currencies
            expiries = hub.expiries(self.currency)
            self._expiry_select.options = expiries
            if self.expiry not in expiries:
                self.expiry = default_expiry(expiries, hub.instruments, self.currency)
            self._expiry_select.value = self.expiry
        if not self.expiry:
            return False
        chain: ChainFeed = self.hold("chain", ("chain", self.currency, self.expiry),
                                     lambda: hub.chain(self.currency, self.expiry))
        term: TermFeed = self.hold("term", ("term", self.currency), lambda: hub.term(self.currency))
        changed = self.chain.update(chain)
        changed |= self.smile.update(chain)
        changed |= self.term.update(term)
        _key, view = chain.view()
        header_key = (self.currency, self.expiry, round(view["index"] or 0, 0), round(view["underlying"] or 0, 0),
                      len(view["rows"]))
        if header_key != self._header_key:
            self._header_key = header_key
            self.header.object = (
                f'<h2 style="margin:4px 0">{render.esc(self.currency)} options · {render.esc(self.expiry)}'
                f'<span class="muted"> · index {render.fmt(view["index"], 2)} · forward '
                f'{render.fmt(view["underlying"], 2)} · {len(view["rows"])} strikes · prices in '
                f'{render.esc(self.currency)}, IV in %</span></h2>')
        return changed

    def __panel__(self) -> pn.viewable.Viewable:
        controls = pn.Row(self._currency_select, self._expiry_select, self.header, sizing_mode="stretch_width")
        plots = pn.Column(self.smile, self.term, sizing_mode="stretch_width", min_width=380)
        return pn.Column(self.banner, controls,
                         pn.Row(pn.Column(self.chain, width=820), plots, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
