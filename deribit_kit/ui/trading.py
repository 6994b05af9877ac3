"""Trading components: the order ticket, open orders (cancel / modify), the kill switch, positions
and the account summary, all live from the private channels (:class:`~deribit_kit.live.portfolio.Portfolio`).

    TradingDashboard(instrument="BTC-PERPETUAL")

Orders go through the client's checked intent methods (``buy``/``sell``/``edit``/``cancel``/
``cancel_all``): amounts in the instrument's unit, prices on its tick grid, a label on every order.
A ticket is reviewed before it is sent; every refusal, the kit's own or the exchange's, is shown
as one readable line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import panel as pn
import param

from ..client import rules as order_rules
from ..errors import DeribitKitError
from ..models import Instrument
from . import render
from .app import AccountFeed, Hub, MarketFeed, describe_error
from .base import HtmlView, LiveDashboard, html_pane, new_view, session_safe
from .market import InstrumentPicker

log = logging.getLogger("deribit_kit.ui")

ORDER_TYPES = ["limit", "market", "stop_limit", "stop_market", "take_limit", "take_market"]
TIME_IN_FORCE = ["good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel"]
TRIGGERS = ["mark_price", "index_price", "last_price"]
LABEL_PREFIX = "dk-ui-"

_tasks: set[asyncio.Task[Any]] = set()


def _spawn(coro: Any) -> None:
    """Run a coroutine on the session's loop, keeping a reference until it ends."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class StatusLine(HtmlView):
    """One line saying what just happened: ok, refused, or in progress."""

    def say(self, text: str, kind: str = "info") -> None:
        """Show ``text`` (``kind``: ok, err, info or warn), even if it is what is already shown."""
        self.key = None
        self.put((text, kind), render.message_html(text, kind))

    def clear(self) -> None:
        """Show nothing."""
        self.key = None
        self.put(("",), "")


class OrderTicket(pn.viewable.Viewer):
    """Instrument, side, type, amount (in its unit), price, trigger, time in force, post-only,
    reduce-only; *Review* checks the order and asks for confirmation, *Confirm* sends it."""

    instrument = param.String(default="BTC-PERPETUAL")
    side: param.Selector[str] = param.Selector(default="buy", objects=["buy", "sell"])
    order_type: param.Selector[str] = param.Selector(default="limit", objects=ORDER_TYPES)
    amount = param.Number(default=None, allow_None=True, bounds=(0, None))
    price = param.Number(default=None, allow_None=True)
    trigger_price = param.Number(default=None, allow_None=True)
    trigger_source: param.Selector[str] = param.Selector(default="mark_price", objects=TRIGGERS)
    time_in_force: param.Selector[str] = param.Selector(default="good_til_cancelled", objects=TIME_IN_FORCE)
    post_only = param.Boolean(default=False)
    reduce_only = param.Boolean(default=False)
    label = param.String(default="")

    def __init__(self, hub: Hub, **params: Any) -> None:
        super().__init__(**params)
        self.hub = hub
        self.inst: Instrument | None = None
        self.pending: dict[str, Any] | None = None  # checked params awaiting confirmation
        self._reviewed: tuple[Any, ...] | None = None  # what the pending order was made from
        self._fields_for: Instrument | None = None
        self._reviews = 0  # a send must not hide the confirmation of a later review
        w = pn.widgets
        self._side = w.RadioButtonGroup.from_param(self.param.side, label="Side", width=330, css_classes=["dk-side"])
        self._type = w.Select.from_param(self.param.order_type, label="Type", width=160, css_classes=["dk-type"])
        self._tif = w.Select.from_param(self.param.time_in_force, label="Time in force", width=160,
                                        css_classes=["dk-tif"])
        self._amount = w.FloatInput.from_param(self.param.amount, label="Amount", width=160, css_classes=["dk-amount"])
        self._price = w.FloatInput.from_param(self.param.price, label="Price", width=160, css_classes=["dk-price"])
        self._trigger_price = w.FloatInput.from_param(self.param.trigger_price, label="Trigger price", width=160,
                                                      css_classes=["dk-trigger-price"])
        self._trigger = w.Select.from_param(self.param.trigger_source, label="Trigger", width=160)
        self._post_only = w.Checkbox.from_param(self.param.post_only, label="post-only", css_classes=["dk-post-only"])
        self._reduce_only = w.Checkbox.from_param(self.param.reduce_only, label="reduce-only",
                                                  css_classes=["dk-reduce-only"])
        self._label = w.TextInput.from_param(self.param.label, label="Label (optional)", width=330,
                                             placeholder="dk-ui-… when empty")
        self._hint = html_pane("", width=330, margin=(0, 10))
        self._fill = {k: w.Button(label=k, width=60, margin=(0, 2)) for k in ("bid", "mid", "ask")}
        for k, b in self._fill.items():
            b.on_click(self._filler(k))
        self.review = w.Button(label="Review order", color="primary", width=330, css_classes=["dk-review"])
        self.review.on_click(self._on_review)
        self.confirm = w.Button(label="Confirm", color="success", width=160, css_classes=["dk-confirm"])
        self.confirm.on_click(lambda _e: _spawn(self.send()))
        self.back = w.Button(label="Back", width=160, css_classes=["dk-back"])
        self.back.on_click(lambda _e: self._close_confirmation())
        self._summary = html_pane("", width=330)
        self.confirmation = pn.Column(self._summary, pn.Row(self.confirm, self.back), visible=False,
                                      css_classes=["dk-confirmation"], styles={"border": "1px solid #ccc",
                                                                               "border-radius": "6px"})
        self.status = StatusLine(width=330, css_class="dk-ticket-status")
        self.status.clear()
        self.book: MarketFeed | None = None
        self._enable_fields()

    # ------------------------------------------------------------ fields
    def _filler(self, which: str) -> Callable[[Any], None]:
        return lambda _event: self.fill_price(which)

    def _on_review(self, _event: Any) -> None:
        self.check()

    def set_instrument(self, inst: Instrument | None) -> None:
        """Labels, steps and defaults for ``inst`` (from the session's refresh, once per instrument)."""
        if inst is self._fields_for:
            return
        self._fields_for = self.inst = inst
        if inst is None:
            return
        unit = render.amount_unit(inst)
        self._amount.label = f"Amount ({unit})"
        self._amount.step = order_rules.amount_step(inst)
        self._price.label = f"Price ({render.price_unit(inst)})"
        self._price.step = inst.tick_size
        self._trigger_price.step = inst.tick_size
        self.amount = inst.min_trade_amount
        self.price = None
        self._hint.object = (f'<span class="muted">{render.esc(inst.instrument_name)}: amount in {render.esc(unit)}, '
                             f'min {inst.min_trade_amount:g}, step {order_rules.amount_step(inst):g}; '
                             f'tick {inst.tick_size:g}</span>')
        self._close_confirmation()

    @param.depends("order_type", "time_in_force", watch=True)
    @session_safe
    def _enable_fields(self) -> None:
        priced = self.order_type in order_rules.PRICED_TYPES
        triggered = self.order_type in order_rules.TRIGGER_TYPES
        self._price.disabled = not priced
        for b in self._fill.values():
            b.disabled = not priced
        self._trigger_price.visible = triggered
        self._trigger.visible = triggered
        self._post_only.disabled = not priced or self.time_in_force in ("fill_or_kill", "immediate_or_cancel")
        if self._post_only.disabled:
            self.post_only = False

    @param.depends("side", watch=True)
    @session_safe
    def _side_changed(self) -> None:
        self.confirm.color = "success" if self.side == "buy" else "danger"

    def fill_price(self, which: str) -> None:
        """Put the best bid, mid or best ask in the price field."""
        live = self.book.live if self.book is not None else None
        if live is None or self.inst is None:
            self.status.say("no book yet for this instrument", "warn")
            return
        book = live.book
        value = {"bid": book.best_bid_price, "ask": book.best_ask_price, "mid": book.mid}[which]
        if value is None:
            self.status.say(f"the book has no {which}", "warn")
            return
        self.price = order_rules.round_price(self.inst, value, "down" if which != "ask" else "up")

    # ------------------------------------------------------------ review, confirm, send
    def params(self) -> dict[str, Any]:
        """The order as the client's ``buy``/``sell`` takes it (not yet checked)."""
        priced = self.order_type in order_rules.PRICED_TYPES
        triggered = self.order_type in order_rules.TRIGGER_TYPES
        return {"amount": self.amount, "price": self.price if priced else None, "type": self.order_type,
                "time_in_force": self.time_in_force, "post_only": self.post_only, "reduce_only": self.reduce_only,
                "trigger_price": self.trigger_price if triggered else None,
                "trigger": self.trigger_source if triggered else None,
                "label": self.label.strip() or order_rules.new_label().replace(order_rules.LABEL_PREFIX, LABEL_PREFIX)}

    def check(self) -> bool:
        """Check the order with the kit's rules; show the confirmation, or the reason it cannot go."""
        self.confirmation.visible = False
        if not self.hub.can_trade:
            self.status.say("Trading is off: no API key (set DERIBIT_CLIENT_ID and DERIBIT_CLIENT_SECRET)", "err")
            return False
        inst = self.hub.instruments.get(self.instrument)
        if inst is None:
            self.status.say(f"unknown instrument {self.instrument}", "err")
            return False
        self.inst = inst
        p = self.params()
        try:
            checked = order_rules.order_params(inst, p["amount"], p["price"], type=p["type"], label=p["label"],
                                               time_in_force=p["time_in_force"], post_only=p["post_only"],
                                               reduce_only=p["reduce_only"], trigger_price=p["trigger_price"],
                                               trigger=p["trigger"])
        except DeribitKitError as exc:
            self.status.say(describe_error(exc), "err")
            return False
        self.pending = {**p, "amount": checked["amount"], "price": checked.get("price"),
                        "trigger_price": checked.get("trigger_price"), "label": checked["label"]}
        self._reviewed = self._fingerprint(p)
        self._reviews += 1
        self._summary.object = self._describe(self.pending)
        self.confirm.label = f"Confirm {self.side}"
        self.confirmation.visible = True
        self.status.say("Check the order, then confirm.", "info")
        return True

    def _describe(self, p: dict[str, Any]) -> str:
        inst = self.inst
        unit = render.amount_unit(inst)
        dp = render.price_decimals(inst)
        side_cls = "buy" if self.side == "buy" else "sell"
        amount = render.fmt(p["amount"], render.amount_decimals(inst))
        what = f'<b class="{side_cls}">{self.side.upper()}</b> {amount} {render.esc(unit)} of ' \
               f'<b>{render.esc(self.instrument)}</b>'
        how = render.esc(p["type"])
        if p["price"] is not None:
            how += f' @ <b>{render.fmt(p["price"], dp)}</b>'
        if p["trigger_price"] is not None:
            how += f' when {render.esc(p["trigger"])} reaches {render.fmt(p["trigger_price"], dp)}'
        flags = [render.esc(p["time_in_force"])]
        flags += [f for f, on in (("post-only", p["post_only"]), ("reduce-only", p["reduce_only"])) if on]
        notional = ""
        if inst is not None and p["price"] and not (inst.is_future and inst.is_inverse):
            notional = f' · notional {render.fmt(p["amount"] * p["price"], dp)} {render.esc(render.price_unit(inst))}'
        return (f'<div style="padding:6px 4px"><div>{what}</div><div>{how}</div>'
                f'<div class="muted">{", ".join(flags)} · label {render.esc(p["label"])}{notional}</div></div>')

    def _fingerprint(self, p: dict[str, Any]) -> tuple[Any, ...]:
        return (self.instrument, self.side, *(v for k, v in sorted(p.items()) if k != "label"))

    def _close_confirmation(self) -> None:
        self.pending = None
        self.confirmation.visible = False

    async def send(self) -> None:
        """Send the reviewed order and say what the exchange answered."""
        p = self.pending
        if p is None:
            return
        self.pending = None
        review = self._reviews
        if self._reviewed != self._fingerprint(self.params()):
            self.confirmation.visible = False
            self.status.say("The ticket changed after the review: review it again.", "warn")
            return
        self.confirm.disabled = self.back.disabled = True
        self.status.say(f"Sending {self.side} {self.instrument}…", "info")
        client = self.hub.client_or_raise
        method = client.buy if self.side == "buy" else client.sell
        try:
            res = await method(self.instrument, p["amount"], p["price"], type=p["type"], label=p["label"],
                               time_in_force=p["time_in_force"], post_only=p["post_only"],
                               reduce_only=p["reduce_only"], trigger_price=p["trigger_price"], trigger=p["trigger"])
        except DeribitKitError as exc:
            self.status.say(describe_error(exc), "err")
        except Exception as exc:  # never leave the session in an unknown state
            log.exception("order failed")
            self.status.say(describe_error(exc), "err")
        else:
            o = res.order
            filled = res.filled_amount
            price = o.limit_price
            text = (f"Placed {o.order_id}: {o.direction} {o.amount:g} {render.amount_unit(self.inst)} "
                    f"{o.instrument_name} {o.order_type}"
                    + (f" @ {price:g}" if price is not None else "")
                    + f" — {o.order_state}" + (f", filled {filled:g}" if filled else ""))
            self.status.say(text, "ok")
        finally:
            if review == self._reviews:
                self.confirmation.visible = False
            self.confirm.disabled = self.back.disabled = False

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self._side, pn.Row(self._type, self._tif), pn.Row(self._amount, self._price),
            pn.Row(*self._fill.values(), margin=(0, 0, 0, 170)), pn.Row(self._trigger_price, self._trigger),
            pn.Row(self._post_only, self._reduce_only), self._label, self._hint, self.review, self.confirmation,
            self.status, width=350, css_classes=["dk-ticket"])


def _frame(columns: dict[str, list[Any]], numeric: tuple[str, ...]) -> pd.DataFrame:
    """A table with fixed column types (strings stay strings even when empty: the browser keeps the
    formatters of the first frame it was sent)."""
    return pd.DataFrame(columns).astype({c: ("float64" if c in numeric else "object") for c in columns})


def _number_formatters(columns: tuple[str, ...], fmt: str = "0,0.[00000000]") -> dict[str, Any]:
    from bokeh.models.widgets.tables import NumberFormatter

    return {c: NumberFormatter(format=fmt, text_align="right") for c in columns}


class OpenOrders(pn.viewable.Viewer):
    """The account's open orders, newest first, each with *Modify* and *Cancel* buttons."""

    def __init__(self, hub: Hub, **params: Any) -> None:
        super().__init__(**params)
        self.hub = hub
        self.table = pn.widgets.Tabulator(
            _frame(render.orders_table([]), render.NUMERIC_ORDER_COLUMNS), show_index=False, disabled=True,
            sizing_mode="stretch_width", buttons={"modify": "Modify", "cancel": "Cancel"}, layout="fit_data_fill",
            height=220, css_classes=["dk-orders"], selectable=False,
            formatters=_number_formatters(render.NUMERIC_ORDER_COLUMNS))
        self.table.on_click(self._on_click)
        self.status = StatusLine(css_class="dk-orders-status")
        self.status.clear()
        self.editing: str | None = None
        w = pn.widgets
        self._edit_title = html_pane("", margin=(8, 10, 0, 10))
        self._edit_amount = w.FloatInput(label="New amount", width=150, css_classes=["dk-edit-amount"])
        self._edit_price = w.FloatInput(label="New price", width=150, css_classes=["dk-edit-price"])
        self._apply = w.Button(label="Apply", color="primary", width=100, css_classes=["dk-edit-apply"])
        self._apply.on_click(lambda _e: _spawn(self.apply_edit()))
        self._discard = w.Button(label="Close", width=100)
        self._discard.on_click(lambda _e: self._end_edit())
        self.editor = pn.Row(self._edit_title, self._edit_amount, self._edit_price,
                             pn.Column(pn.Spacer(height=18), pn.Row(self._apply, self._discard)),
                             visible=False, css_classes=["dk-editor"])
        self.key: Any = None

    def update(self, feed: AccountFeed) -> bool:
        """Show the open orders if they changed."""
        view = new_view(self, feed)
        if view is None:
            return False
        self.table.value = _frame(view["orders"], render.NUMERIC_ORDER_COLUMNS)
        if self.editing is not None and self.editing not in set(view["orders"]["order_id"]):
            self._end_edit()
        return True

    def _order_at(self, row: int) -> dict[str, Any] | None:
        df = self.table.value
        if row is None or row >= len(df):
            return None
        return dict(df.iloc[row])

    def _on_click(self, event: Any) -> None:
        order = self._order_at(event.row)
        if order is None:
            return
        if event.column == "cancel":
            _spawn(self.cancel(order["order_id"]))
        elif event.column == "modify":
            self.editing = order["order_id"]
            self._edit_title.object = f"<b>Modify {render.esc(order['order_id'])}</b>"
            self._edit_amount.value = order["amount"]
            self._edit_price.value = order["price"]
            self.editor.visible = True

    def _end_edit(self) -> None:
        self.editing = None
        self.editor.visible = False

    async def cancel(self, order_id: str) -> None:
        """Cancel one order; the status line says how it went."""
        self.status.say(f"Cancelling {order_id}…", "info")
        try:
            o = await self.hub.client_or_raise.cancel(order_id)
        except DeribitKitError as exc:
            self.status.say(describe_error(exc), "err")
        else:
            self.status.say(f"Cancelled {o.order_id} ({o.instrument_name} {o.direction} {o.amount:g})", "ok")

    async def apply_edit(self) -> None:
        """Send the edit being made (new amount and price) of the order in the editor."""
        order_id = self.editing
        if order_id is None:
            return
        row = self.table.value
        match = row[row["order_id"] == order_id]
        instrument = str(match["instrument"].iloc[0]) if len(match) else None
        self.status.say(f"Modifying {order_id}…", "info")
        try:
            res = await self.hub.client_or_raise.edit(order_id, self._edit_amount.value, self._edit_price.value,
                                                      instrument=instrument)
        except DeribitKitError as exc:
            self.status.say(describe_error(exc), "err")
        else:
            o = res.order
            price = o.limit_price
            self.status.say(f"Modified {o.order_id}: amount {o.amount:g}"
                            + (f" @ {price:g}" if price is not None else "") + f" — {o.order_state}", "ok")
            self._end_edit()

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.table, self.editor, self.status, sizing_mode="stretch_width")


class KillSwitch(pn.viewable.Viewer):
    """Cancel every open order of the account, at once (no confirmation: it only removes risk)."""

    def __init__(self, hub: Hub, **params: Any) -> None:
        super().__init__(**params)
        self.hub = hub
        self.button = pn.widgets.Button(label="Cancel all orders", color="danger", width=200,
                                        css_classes=["dk-cancel-all"])
        self.button.on_click(lambda _e: _spawn(self.fire()))
        self.status = StatusLine(css_class="dk-cancel-all-status")
        self.status.clear()

    async def fire(self) -> None:
        """Cancel every open order (the kill switch); the status line says how many."""
        self.button.disabled = True
        try:
            n = await self.hub.client_or_raise.cancel_all()
        except DeribitKitError as exc:
            self.status.say(describe_error(exc), "err")
        else:
            self.status.say(f"Cancel-all: {n} order{'' if n == 1 else 's'} cancelled", "ok")
        finally:
            self.button.disabled = False

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(self.button, self.status, sizing_mode="stretch_width")


class PositionsTable(pn.viewable.Viewer):
    """Open positions with PnL and greeks."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.table = pn.widgets.Tabulator(
            _frame(render.positions_table([]), render.NUMERIC_POSITION_COLUMNS), show_index=False, disabled=True,
            sizing_mode="stretch_width", layout="fit_data_fill", height=170, css_classes=["dk-positions"],
            selectable=False, formatters=_number_formatters(render.NUMERIC_POSITION_COLUMNS))
        self.key: Any = None

    def update(self, feed: AccountFeed) -> bool:
        """Show the positions if they changed."""
        view = new_view(self, feed)
        if view is None:
            return False
        self.table.value = _frame(view["positions"], render.NUMERIC_POSITION_COLUMNS)
        return True

    def __panel__(self) -> pn.viewable.Viewable:
        return self.table


class AccountPanel(HtmlView):
    """Balance, equity, margins, PnL and greeks per currency."""

    def update(self, feed: AccountFeed) -> bool:
        """Show the account summary (or why there is none) if it changed."""
        key, view = feed.view()
        if feed.error:
            return self.put(("error", feed.error), render.message_html(feed.error, "warn"))
        return self.put(key, view["account"])


class TradingDashboard(LiveDashboard):
    """Order ticket with confirmation, open orders with cancel/modify, cancel-all, positions, account."""

    instrument = param.String(default="BTC-PERPETUAL")

    def __init__(self, **params: Any) -> None:
        self.picker = InstrumentPicker(instrument=params.get("instrument", "BTC-PERPETUAL"))
        super().__init__(**params)
        self.ticket = OrderTicket(self.shared, instrument=self.instrument)
        self.orders = OpenOrders(self.shared)
        self.kill = KillSwitch(self.shared)
        self.positions = PositionsTable()
        self.account = AccountPanel(css_class="dk-account")
        self.top = html_pane("", width=340, css_classes=["dk-top"])
        self._top_key: Any = None
        self.picker.param.watch(lambda e: setattr(self, "instrument", e.new), "instrument")
        self.param.watch(lambda e: setattr(self.ticket, "instrument", e.new), "instrument")  # at once: no widget

    @param.depends("instrument", watch=True)
    @session_safe
    def _switch(self) -> None:
        self.picker.instrument = self.instrument
        self.drop("market")
        self._top_key = None
        if self.shared.ready:
            self.refresh()

    def refresh(self) -> bool:
        """Copy the instrument list and the held feeds' views into the widgets; True when something changed."""
        hub = self.shared
        self.picker.set_instruments(hub.instruments.values(), hub.instruments_version)
        market: MarketFeed = self.hold("market", ("market", self.instrument), lambda: hub.market(self.instrument))
        account: AccountFeed = self.hold("account", ("account",), hub.account)
        self.ticket.book = market
        self.ticket.set_instrument(hub.instruments.get(self.instrument))
        if (self.ticket.price is None and market.live is not None and self.ticket.inst is not None
                and self.ticket.order_type in order_rules.PRICED_TYPES):
            self.ticket.fill_price("bid")  # a sensible start: join the bid
        changed = self.orders.update(account)
        changed |= self.positions.update(account)
        changed |= self.account.update(account)
        live = market.live
        top_key = (self.instrument, market.book_version)
        if top_key != self._top_key:
            self._top_key = top_key
            changed = True
            if live is None:
                self.top.object = render.message_html(f"waiting for the {self.instrument} book…", "info")
            else:
                b = live.book
                inst = market.instrument
                dp, adp = render.price_decimals(inst), render.amount_decimals(inst)
                bid, ask = b.best_bid, b.best_ask
                self.top.object = (
                    f'<div class="dk-top-line"><b>{render.esc(self.instrument)}</b> '
                    f'<span class="badge state-{render.esc(b.state)}">{render.esc(b.state)}</span><br>'
                    f'bid <b class="bid top-bid">{render.fmt(bid[0] if bid else None, dp)}</b> &times; '
                    f'{render.fmt(bid[1] if bid else None, adp)} &nbsp; ask '
                    f'<b class="ask top-ask">{render.fmt(ask[0] if ask else None, dp)}</b> &times; '
                    f'{render.fmt(ask[1] if ask else None, adp)}</div>')
        return changed

    def __panel__(self) -> pn.viewable.Viewable:
        left = pn.Column(pn.pane.Markdown("#### Order ticket", margin=(0, 10)), self.picker, self.top, self.ticket,
                         width=370)
        right = pn.Column(
            pn.pane.Markdown("#### Open orders", margin=(0, 10)), self.kill, self.orders,
            pn.pane.Markdown("#### Positions", margin=(0, 10)), self.positions,
            pn.pane.Markdown("#### Account", margin=(0, 10)), self.account, sizing_mode="stretch_width")
        return pn.Column(self.banner, pn.Row(left, right, sizing_mode="stretch_width"), sizing_mode="stretch_width")
