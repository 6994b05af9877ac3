"""Market components: instrument picker, ladder, depth chart, candles with volume, ticker stats,
recent trades, book state.

    MarketDashboard(instrument="BTC-PERPETUAL")      # the composed view (served, or in a notebook)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import panel as pn
import param
from bokeh.models import ColumnDataSource, NumeralTickFormatter, Range1d
from bokeh.plotting import figure

from ..models import Instrument
from . import render
from .app import CandleFeed, MarketFeed
from .base import HtmlView, LiveDashboard, html_pane, new_view, session_safe

KINDS = ["perpetual", "future", "option", "spot", "any"]
MAX_LISTED = 400


def kind_of(inst: Instrument) -> str:
    """The kind an instrument is listed under: ``perpetual``, ``future``, ``option`` or ``spot``."""
    if inst.is_perpetual:
        return "perpetual"
    if inst.kind == "future":
        return "future"
    return inst.kind


def _order(inst: Instrument) -> tuple[Any, ...]:
    rank = {"perpetual": 0, "future": 1, "spot": 2, "option": 3}.get(kind_of(inst), 4)
    return (rank, inst.base_currency, inst.expiration_timestamp, inst.strike or 0.0, inst.option_type or "",
            inst.instrument_name)


class InstrumentPicker(pn.viewable.Viewer):
    """Every instrument of the exchange, filtered by currency and kind, or found by search."""

    instrument = param.String(default="BTC-PERPETUAL", doc="the picked instrument")
    currency: param.Selector[str] = param.Selector(default="BTC", objects=["any", "BTC"], doc="filter by base currency")
    kind: param.Selector[str] = param.Selector(default="perpetual", objects=KINDS, doc="filter by kind")
    search = param.String(default="", doc="case-insensitive words that must all appear in the name (all kinds)")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._insts: list[Instrument] = []
        self._version = -1
        self._currency = pn.widgets.Select.from_param(self.param.currency, label="Currency", width=90)
        self._kind = pn.widgets.RadioButtonGroup.from_param(self.param.kind, label="Kind", width=320,
                                                           css_classes=["dk-kind"])
        self._search = pn.widgets.TextInput(label="Search", placeholder="e.g. ETH perp, 27MAR, 100000-C",
                                            width=210, css_classes=["dk-search"])
        self._search.param.watch(lambda e: setattr(self, "search", e.new or ""), "value_input")
        self._select = pn.widgets.Select(label="Instrument", options=[self.instrument], value=self.instrument,
                                         width=320, css_classes=["dk-instrument"])
        self._select.param.watch(self._on_select, "value")
        self._count = html_pane("", margin=(0, 10))

    def set_instruments(self, insts: Iterable[Instrument], version: int = 0) -> None:
        """New instrument list (only rebuilds the options when ``version`` changed)."""
        if version == self._version:
            return
        first = self._version < 0
        self._version = version
        self._insts = sorted(insts, key=_order)
        self.param.currency.objects = ["any", *sorted({i.base_currency for i in self._insts})]
        current = next((i for i in self._insts if i.instrument_name == self.instrument), None)
        if first and current is not None:
            with param.parameterized.discard_events(self):
                self.currency = current.base_currency
                self.kind = kind_of(current)
        self._refilter()

    def _matches(self, inst: Instrument, words: list[str]) -> bool:
        if words:
            name = inst.instrument_name.lower()
            return all(w in name for w in words)
        return ((self.currency == "any" or inst.base_currency == self.currency)
                and (self.kind == "any" or kind_of(inst) == self.kind))

    @param.depends("currency", "kind", "search", watch=True)
    @session_safe
    def _refilter(self) -> None:
        if not self._insts:
            return
        words = self.search.lower().split()
        names = [i.instrument_name for i in self._insts if self._matches(i, words)]
        shown = names[:MAX_LISTED]
        if self.instrument in names and self.instrument not in shown:
            shown.append(self.instrument)
        self._select.options = shown or [self.instrument]
        if self.instrument in shown:
            self._select.value = self.instrument
        elif shown:
            self._select.value = shown[0]
        more = f" (first {MAX_LISTED})" if len(names) > MAX_LISTED else ""
        self._count.object = f'<span class="muted">{len(names)} match{"" if len(names) == 1 else "es"}{more}</span>'

    @session_safe
    def _on_select(self, event: Any) -> None:
        if event.new and event.new != self.instrument:
            self.instrument = event.new

    @param.depends("instrument", watch=True)
    @session_safe
    def _follow(self) -> None:
        if self.instrument not in self._select.options:
            self._select.options = [*self._select.options, self.instrument]
        self._select.value = self.instrument

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._kind, pn.Row(self._currency, self._search), self._select, self._count, width=340)


class Ladder(HtmlView):
    """Bids and asks with sizes and cumulative sizes, best prices in the middle."""

    levels = param.Integer(default=10, bounds=(1, 50))

    def update(self, feed: MarketFeed) -> bool:
        """Show the feed's ladder if it changed; True when the widget changed."""
        return self.put(*feed.ladder(self.levels))


class DepthChart(pn.viewable.Viewer):
    """Cumulative bid and ask depth (Bokeh), one step area per side."""

    levels = param.Integer(default=50, bounds=(2, 500))

    def __init__(self, **params: Any) -> None:
        height = params.pop("height", 300)
        super().__init__(**params)
        self.bids = ColumnDataSource({"price": [], "cum": []})
        self.asks = ColumnDataSource({"price": [], "cum": []})
        fig = figure(height=height, sizing_mode="stretch_width", tools="", toolbar_location=None,
                     x_axis_label="price", y_axis_label="cumulative size")
        for source, color in ((self.bids, "#0a7d3b"), (self.asks, "#c62828")):
            # steps come precomputed (render.depth_data): varea_step hangs BokehJS on an empty source
            fig.varea(x="price", y1=0, y2="cum", source=source, fill_color=color, fill_alpha=0.18)
            fig.line(x="price", y="cum", source=source, line_color=color, line_width=2)
        fig.yaxis.formatter = NumeralTickFormatter(format="0.[00]a")
        fig.xaxis.formatter = NumeralTickFormatter(format="0,0.[0000]")
        fig.min_border_left = 50
        self.figure = fig
        self.pane = pn.pane.Bokeh(fig, sizing_mode="stretch_width")
        self.key: Any = None

    def update(self, feed: MarketFeed) -> bool:
        """Show the feed's depth if it changed; True when the chart changed."""
        key, (bids, asks) = feed.depth(self.levels)
        if key == self.key:
            return False
        self.key = key
        self.bids.data = bids
        self.asks.data = asks
        return True

    def reset(self) -> None:
        """Forget what is shown, so that the next update redraws."""
        self.key = None

    def __panel__(self) -> pn.viewable.Viewable:
        return self.pane


class CandleChart(pn.viewable.Viewer):
    """Candlesticks with volume bars under them (Bokeh, one shared time axis), a resolution picker
    and a status line; live from a :class:`~deribit_kit.ui.app.CandleFeed`."""

    resolution: param.Selector[str] = param.Selector(default="1", objects=list(render.RESOLUTION_LABELS),
                                                     doc="Deribit's resolution: minutes, or 1D")

    def __init__(self, **params: Any) -> None:
        height = params.pop("height", 260)
        super().__init__(**params)
        self.source = ColumnDataSource(render.candle_data([], 60_000))
        self.x_range = Range1d(start=0, end=1)  # the time axis: set to each new period's window
        price = figure(height=height, sizing_mode="stretch_width", x_axis_type="datetime", x_range=self.x_range,
                       tools="xpan,xwheel_zoom,reset", active_scroll="xwheel_zoom", toolbar_location=None,
                       y_axis_label="price")
        price.segment(x0="x", y0="high", x1="x", y1="low", line_color="color", source=self.source)
        price.vbar(x="x", width="w", top="top", bottom="bottom", fill_color="color", line_color="color",
                   source=self.source)
        price.yaxis.formatter = NumeralTickFormatter(format="0,0.[0000]")
        price.xaxis.visible = False
        price.min_border_left = 60
        volume = figure(height=110, sizing_mode="stretch_width", x_axis_type="datetime", x_range=price.x_range,
                        tools="", toolbar_location=None, y_axis_label="volume")
        volume.vbar(x="x", width="w", top="volume", bottom=0, fill_color="color", line_color="color",
                    fill_alpha=0.5, source=self.source)
        volume.yaxis.formatter = NumeralTickFormatter(format="0.[000]a")
        volume.min_border_left = 60
        self.price_figure, self.volume_figure = price, volume
        labels = {label: res for res, label in render.RESOLUTION_LABELS.items()}
        self._picker = pn.widgets.RadioButtonGroup(options=labels, value=self.resolution, css_classes=["dk-resolution"])
        self._picker.param.watch(lambda e: setattr(self, "resolution", e.new), "value")
        self.param.watch(lambda e: setattr(self._picker, "value", e.new), "resolution")
        self.status = html_pane(render.message_html("connecting…", "info"), css_classes=["dk-candles"])
        self.pane = pn.Column(pn.Row(self._picker, self.status, sizing_mode="stretch_width"),
                              pn.pane.Bokeh(price, sizing_mode="stretch_width"),
                              pn.pane.Bokeh(volume, sizing_mode="stretch_width"), sizing_mode="stretch_width",
                              css_classes=["dk-candle-chart"])
        self.key: Any = None
        self._window: tuple[float, float] | None = None

    def update(self, feed: CandleFeed) -> bool:
        """Show the feed's newest candles (only when they changed)."""
        view = new_view(self, feed)
        if view is None:
            return False
        self.source.data = view["data"]
        self.status.object = view["status"]
        window = view["window"]
        if window is not None and window != self._window:  # a new period: follow it (else pan/zoom stay)
            self._window = window
            self.x_range.start, self.x_range.end = window
        return True

    def reset(self) -> None:
        """Forget what is shown (and the window followed), so that the next update redraws."""
        self.key = None
        self._window = None

    def __panel__(self) -> pn.viewable.Viewable:
        return self.pane


class TickerStats(HtmlView):
    """Last, mark, index, funding, open interest, 24h volume; IV and greeks for options."""

    def update(self, feed: MarketFeed) -> bool:
        """Show the feed's ticker stats if they changed."""
        return self.put(*feed.ticker_view())


class TradesTape(HtmlView):
    """The most recent public trades, newest first."""

    rows = param.Integer(default=15, bounds=(1, 30))

    def update(self, feed: MarketFeed) -> bool:
        """Show the feed's recent trades if they changed."""
        return self.put(*feed.trades_view(self.rows))


class BookStatus(HtmlView):
    """The book's state from the broker (live / syncing / resyncing / stale) and its counters."""

    def update(self, feed: MarketFeed) -> bool:
        """Show the book's state and counters if they changed."""
        return self.put(*feed.state_view())


class MarketDashboard(LiveDashboard):
    """Picker, ladder, depth chart, candles (with a resolution picker), ticker stats, recent trades
    and book state of one instrument."""

    instrument = param.String(default="BTC-PERPETUAL")
    levels = param.Integer(default=10, bounds=(1, 50))
    resolution: param.Selector[str] = param.Selector(default="1", objects=list(render.RESOLUTION_LABELS),
                                                     doc="the candle chart's resolution")

    def __init__(self, **params: Any) -> None:
        self.picker = InstrumentPicker(instrument=params.get("instrument", "BTC-PERPETUAL"))
        self.candles = CandleChart(resolution=params.get("resolution", "1"))
        self.ladder = Ladder(levels=params.get("levels", 10), width=400, css_class="dk-ladder")
        self.depth = DepthChart()
        self.stats = TickerStats(css_class="dk-ticker")
        self.tape = TradesTape(title="Recent trades", css_class="dk-trades")
        self.book_status = BookStatus(css_class="dk-bookstate")
        self.title = html_pane("", margin=(0, 10))
        super().__init__(**params)
        self.picker.param.watch(lambda e: setattr(self, "instrument", e.new), "instrument")
        self.param.watch(lambda e: setattr(self.ladder, "levels", e.new), "levels")
        self.candles.param.watch(lambda e: setattr(self, "resolution", e.new), "resolution")
        self.param.watch(self._switch_resolution, "resolution")
        self._title_key: Any = None

    @param.depends("instrument", watch=True)
    @session_safe
    def _switch(self) -> None:
        self.picker.instrument = self.instrument
        self.drop("market")
        self.drop("candles")
        for part in (self.ladder, self.depth, self.stats, self.tape, self.book_status, self.candles):
            part.reset()
        if self.shared.ready:
            self.refresh()

    @session_safe
    def _switch_resolution(self, event: Any) -> None:
        self.candles.resolution = event.new
        self.drop("candles")
        self.candles.reset()
        if self.shared.ready:
            self.refresh()

    def refresh(self) -> bool:
        """Copy the instrument list and the held feeds' views into the widgets; True when something changed."""
        hub = self.shared
        self.picker.set_instruments(hub.instruments.values(), hub.instruments_version)
        feed: MarketFeed = self.hold("market", ("market", self.instrument), lambda: hub.market(self.instrument))
        changed = False
        for part in (self.ladder, self.depth, self.stats, self.tape, self.book_status):
            changed |= part.update(feed)
        candles: CandleFeed = self.hold("candles", ("candles", self.instrument, self.resolution),
                                        lambda: hub.candles(self.instrument, self.resolution))
        changed |= self.candles.update(candles)
        inst = feed.instrument
        title_key = (self.instrument, inst is not None)
        if title_key != self._title_key:
            self._title_key = title_key
            what = ""
            if inst is not None:
                what = (f'<span class="muted"> · {render.esc(kind_of(inst))} · amounts in '
                        f'{render.esc(render.amount_unit(inst))} · prices in {render.esc(render.price_unit(inst))}'
                        f' · tick {inst.tick_size:g}</span>')
            self.title.object = f'<h2 style="margin:4px 0">{render.esc(self.instrument)}{what}</h2>'
        return changed

    def __panel__(self) -> pn.viewable.Viewable:
        left = pn.Column(self.picker, pn.pane.Markdown("#### Ticker", margin=(0, 10)), self.stats, width=360)
        middle = pn.Column(pn.pane.Markdown("#### Order book", margin=(0, 10)), self.ladder, width=420)
        right = pn.Column(pn.pane.Markdown("#### Depth", margin=(0, 10)), self.depth, self.tape,
                          sizing_mode="stretch_width", min_width=420)
        chart = pn.Column(pn.pane.Markdown("#### Candles", margin=(0, 10)), self.candles,
                          sizing_mode="stretch_width")
        return pn.Column(self.banner, pn.Row(self.title, self.book_status, sizing_mode="stretch_width"),
                         pn.Row(left, middle, right, sizing_mode="stretch_width"), chart, sizing_mode="stretch_width")
