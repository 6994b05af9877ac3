"""Trading and account methods of the embedded exchange (``private/buy`` ... ``private/get_margins``),
its private channels (``user.orders.*``, ``user.trades.*``, ``user.changes.*``, ``user.portfolio.*``)
and cancel-on-disconnect.

:class:`Trading` is the simulator's trading desk: it owns the :class:`~.matching.Engine`, turns each
request into engine calls inside :meth:`Trading.changes`, and publishes what changed: book changes
and public trades at once (not at the next tick) and the account's private channels, to that
account's subscribed connections only. On every market tick it fires triggers, expires
``good_til_day`` orders, fills resting orders the market makers' quotes have crossed, settles
expired instruments and refreshes ``user.portfolio`` for accounts with open positions.

Where Deribit's documentation leaves a rule open, the choices are (see also :mod:`.matching`):

* price off the tick grid, amount below ``min_trade_amount`` or not a multiple of the contract
  size: -32602 ``Invalid params`` with ``data.param`` and ``data.reason`` naming the rule;
* limit buys above the band's ``max_price`` (sells below ``min_price``) are clamped to it, as
  ``get_margins`` documents; market orders trade up to the band;
* ``reduce_only`` orders are cut down to the position they reduce; with nothing to reduce they are
  rejected with 11030 ``other_reject``;
* a ``fill_or_kill`` that cannot fill completely, and the unfilled rest of ``immediate_or_cancel``
  and market orders, end ``cancelled``;
* triggered stop/take orders keep their id and type, become ``open`` with ``triggered: true``
  (limit) or trade at once (market);
* ``user.changes.{instrument}.{interval}`` sends one object, like the kind/currency variant;
  intervals other than ``raw`` send arrays as soon as something changes (no 100 ms batching).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import error_for_code, invalid_params
from ..wire.channels import Channel
from .handlers import _trades_page, method
from .instruments import CURRENCIES, currency_matches
from .matching import (
    EPS,
    LIMIT_TYPES,
    MARKET_TYPES,
    ORDER_TYPES,
    TIME_IN_FORCE,
    TRIGGER_TYPES,
    AccountChanges,
    AccountState,
    Changes,
    Engine,
    SimOrder,
)
from .params import P, not_found

if TYPE_CHECKING:
    from .accounts import Account
    from .market import Instrument, StepResult
    from .server import Session, Simulator

CURRENCY_NAMES = (*(str(c["currency"]) for c in CURRENCIES), "EURR")
KINDS = ("future", "option", "spot", "future_combo", "option_combo")
KINDS_ANY = (*KINDS, "combo", "any")
OPEN_ORDER_TYPES = ("all", "limit", "trigger_all", "stop_all", "stop_limit", "stop_market", "take_all",
                    "take_limit", "take_market", "trailing_all", "trailing_stop")
CANCEL_TYPES = ("all", "limit", "trigger_all", "stop", "take", "trailing_stop")
SORTING = ("asc", "desc", "default")
MAX_LABEL = 64

PORTFOLIO_FIELDS = frozenset({
    "additional_reserve", "available_funds", "available_withdrawal_funds", "balance", "cross_collateral_enabled",
    "currency", "delta_total", "delta_total_map", "equity", "estimated_liquidation_ratio",
    "estimated_liquidation_ratio_map", "fee_balance", "futures_pl", "futures_session_rpl", "futures_session_upl",
    "initial_margin", "maintenance_margin", "margin_balance", "margin_model", "options_delta", "options_gamma",
    "options_gamma_map", "options_pl", "options_session_rpl", "options_session_upl", "options_theta",
    "options_theta_map", "options_value", "options_vega", "options_vega_map", "portfolio_margining_enabled",
    "projected_delta_total", "projected_initial_margin", "projected_maintenance_margin", "session_rpl",
    "session_upl", "total_pl",
})
"""``user.portfolio.{currency}`` payload fields (Deribit's user_portfolio_notification)."""
SUMMARY_ONLY_EXCLUDED = frozenset({"delta_total_map", "estimated_liquidation_ratio_map"})
CURRENCY_PORTFOLIO_FIELDS = ("margin_balance", "currency", "maintenance_margin", "initial_margin", "equity",
                             "balance", "available_withdrawal_funds", "available_funds", "additional_reserve",
                             "spot_reserve")


class Trading:
    """The trading side of one :class:`~.server.Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.engine = Engine(sim.market)
        sim.step_listeners.append(self.on_step)
        sim.session_closed_listeners.append(self.on_session_closed)

    def state(self, account: Account) -> AccountState:
        return self.engine.state(account)

    # ------------------------------------------------------------ transactions
    @contextmanager
    def changes(self) -> Iterator[Changes]:
        """Collect what the body changes and publish it, even when the body raises midway."""
        ch = Changes()
        try:
            yield ch
        finally:
            self.commit(ch)

    def commit(self, ch: Changes, portfolio: bool = True) -> None:
        for name, inst in ch.books.items():
            self.sim.publish_instrument(inst, ch.public.get(name, (inst, []))[1])
        for ac in ch.accounts.values():
            self._publish_account(ac, portfolio)

    # ------------------------------------------------------------ private channels
    def subscribe(self, s: Session, ch: Channel) -> None:
        """Register ``s`` for the private channel ``ch`` of its account (from Simulator._activate)."""
        if s.account is None:
            return
        st = self.state(s.account)
        entry = st.subs.get(ch.name)
        if entry is None:
            st.subs[ch.name] = (ch, {s})
        else:
            entry[1].add(s)
        if ch.family == "user.portfolio":
            wanted = _portfolio_currencies(ch, st.balances)
            for cur in wanted:
                self.sim.send_to((s,), ch.name, self.portfolio(st, cur))

    def unsubscribe(self, s: Session, name: str) -> None:
        for st in self.engine.states:
            entry = st.subs.get(name)
            if entry is not None:
                entry[1].discard(s)
                if not entry[1]:
                    del st.subs[name]

    def sessions(self, account: Account, channel: str) -> set[Session]:
        """The connections of ``account`` subscribed to ``channel``."""
        st = account.state
        if not isinstance(st, AccountState):
            return set()
        entry = st.subs.get(channel)
        return entry[1] if entry is not None else set()

    def subscriber_count(self, channel: str) -> int:
        return sum(len(st.subs[channel][1]) for st in self.engine.states if channel in st.subs)

    def _publish_account(self, ac: AccountChanges, portfolio: bool) -> None:
        st = ac.state
        if not st.subs:
            return
        account = st.account
        rendered = [(o, o.to_dict()) for o in ac.orders.values()]
        for name, (chan, sessions) in list(st.subs.items()):
            if not sessions:
                continue
            fam = chan.family
            if fam in ("user.orders", "user.orders_kind"):
                sel = [d for o, d in rendered if _matches(chan, o.inst)]
                if chan.interval == "raw":
                    for d in sel:
                        self.sim.publish_user(account, name, d)
                elif sel:
                    self.sim.publish_user(account, name, sel)
            elif fam in ("user.trades", "user.trades_kind"):
                trades = [t for t in ac.trades if _matches(chan, ac.instruments[t["instrument_name"]])]
                if trades:
                    self.sim.publish_user(account, name, trades)
            elif fam in ("user.changes", "user.changes_kind"):
                for inst in ac.instruments.values():
                    if not _matches(chan, inst):
                        continue
                    self.sim.publish_user(account, name, {
                        "instrument_name": inst.name,
                        "orders": [d for o, d in rendered if o.inst is inst],
                        "trades": [t for t in ac.trades if t["instrument_name"] == inst.name],
                        "position": [] if inst.kind == "spot" else [self.engine.position_view(st, inst)],
                    })
            elif fam == "user.portfolio" and portfolio:
                for cur in sorted(ac.currencies):
                    if (chan.currency or "").upper() in ("ANY", cur):
                        self.sim.publish_user(account, name, self.portfolio(st, cur))

    def _publish_portfolios(self, touched: dict[int, set[str]]) -> None:
        for st in self.engine.states:
            chans = [(n, c) for n, (c, ss) in st.subs.items() if c.family == "user.portfolio" and ss]
            if not chans:
                continue
            curs = touched.get(id(st), set()) | self.engine.has_exposure(st)
            for cur in sorted(curs):
                data: dict[str, Any] | None = None
                for name, chan in chans:
                    if (chan.currency or "").upper() in ("ANY", cur):
                        data = data or self.portfolio(st, cur)
                        self.sim.publish_user(st.account, name, data)

    # ------------------------------------------------------------ views
    def portfolio(self, st: AccountState, currency: str) -> dict[str, Any]:
        nums = self.engine.summary_numbers(st, currency)
        return {k: v for k, v in nums.items() if k in PORTFOLIO_FIELDS}

    def summary(self, st: AccountState, currency: str, extended: bool = False, *, identity: bool = True
                ) -> dict[str, Any]:
        """``get_account_summary``; without ``identity`` the per-currency item of ``get_account_summaries``
        (whose account fields sit once at the top level)."""
        nums = self.engine.summary_numbers(st, currency)
        out = {k: v for k, v in nums.items() if k not in SUMMARY_ONLY_EXCLUDED}
        out["limits"] = st.account.pools.limits()
        if identity:
            out.update(_identity(st.account))
            if extended:
                out.update(_extended(st))
        return out

    # ------------------------------------------------------------ market clock
    def on_step(self, result: StepResult) -> None:
        ch = Changes()
        eng = self.engine
        for inst in result.expired:
            eng.settle(inst, ch)
        eng.expire_day_orders(result.timestamp, ch)
        eng.check_triggers(ch)
        eng.cross_resting(ch)
        self.commit(ch, portfolio=False)
        self._publish_portfolios({k: ac.currencies for k, ac in ch.accounts.items()})

    # ------------------------------------------------------------ cancel on disconnect
    def on_session_closed(self, s: Session) -> None:
        """The connection closed: cancel its orders if cancel-on-disconnect applies (not on logout)."""
        if s.account is None or s.logout_requested:
            return
        st = s.account.state
        if not isinstance(st, AccountState) or not (s.cancel_on_disconnect or st.cod_account):
            return
        with self.changes() as ch:
            for o in list(st.open.values()):
                if o.session is s:
                    self.engine.cancel(o, ch, "cancel_on_disconnect")


# ---------------------------------------------------------------- helpers


def _matches(chan: Channel, inst: Instrument) -> bool:
    if chan.instrument is not None:
        return chan.instrument == inst.name
    kind = chan.kind or "any"
    if kind != "any" and kind != inst.kind:
        return False
    cur = (chan.currency or "any").upper()
    return cur == "ANY" or currency_matches(inst.info, cur)


def _portfolio_currencies(chan: Channel, balances: dict[str, float]) -> list[str]:
    cur = (chan.currency or "any").upper()
    if cur == "ANY":
        return sorted(balances)
    return [cur]


def _identity(account: Account) -> dict[str, Any]:
    return {
        "id": account.user_id,
        "email": f"{account.client_id}@sim.invalid",
        "username": account.name,
        "system_name": f"{account.name}-{account.user_id}",
        "type": "main",
        "security_keys_enabled": False,
    }


def _extended(st: AccountState) -> dict[str, Any]:
    return {
        "creation_timestamp": st.created,
        "fees": [],
        "interuser_transfers_enabled": False,
        "login_enabled": True,
        "mmp_enabled": False,
        "self_trading_reject_mode": "reject_taker",
        "self_trading_extended_to_subaccounts": "false",
    }


def _trading(sim: Simulator) -> Trading:
    return sim.trading


def _st(sim: Simulator, s: Session) -> AccountState:
    account = s.account
    if account is None:  # dispatch authenticated the call; an HTTP session keeps the account
        raise error_for_code(13009, data={"reason": "authentication required"})
    return sim.trading.state(account)


def _currency(value: str, allow_any: bool = False) -> str:
    cur = value.upper()
    if cur == "ANY" and allow_any:
        return "any"
    if cur not in CURRENCY_NAMES:
        raise invalid_params("currency", "invalid currency")
    return cur


def _any_instrument(sim: Simulator, name: str) -> Instrument:
    inst = sim.market.get(name) or sim.market.expired.get(name)
    if inst is None:
        raise not_found()
    return inst


def _tradable(sim: Simulator, name: str) -> Instrument:
    inst = sim.market.get(name)
    if inst is None:
        raise not_found()
    if inst.halted or inst.state != "open":
        raise error_for_code(10012, data={"reason": f"{name} is not open for trading", "param": "instrument_name"})
    return inst


def _amount(inst: Instrument, p: dict[str, Any], required: bool = True) -> float | None:
    amount, contracts = p.get("amount"), p.get("contracts")
    size = float(inst.info["contract_size"])
    if contracts is not None:
        from_contracts = contracts * size
        if amount is not None and abs(amount - from_contracts) > EPS * max(1.0, abs(amount)):
            raise invalid_params("contracts", "amount and contracts do not match")
        amount = from_contracts
    if amount is None:
        if required:
            raise invalid_params("amount", "missing required parameter (amount or contracts)")
        return None
    return float(amount)


def _own_order(st: AccountState, order_id: str, open_only: bool = False) -> SimOrder:
    o = st.orders.get(order_id)
    if o is None:
        raise error_for_code(10004, data={"param": "order_id", "reason": "order not found"})
    if open_only and not o.is_open:
        raise error_for_code(11044, data={"param": "order_id", "reason": f"order is {o.state}"})
    return o


def _label(p: dict[str, Any]) -> str:
    label = p.get("label") or ""
    if len(label) > MAX_LABEL:
        raise invalid_params("label", f"must be at most {MAX_LABEL} characters")
    return str(label)


def _type_matches(o: SimOrder, t: str | None) -> bool:
    ot = o.order_type
    if t is None or t == "all":
        return True
    if t == "limit":
        return ot in ("limit", "market_limit")
    if t == "trigger_all":
        return ot in TRIGGER_TYPES
    if t in ("stop", "stop_all"):
        return ot.startswith("stop_")
    if t in ("take", "take_all"):
        return ot.startswith("take_")
    if t in ("trailing_all", "trailing_stop"):
        return ot == "trailing_stop"
    return ot == t


def _in_currency(inst: Instrument, currency: str) -> bool:
    return currency == "any" or currency_matches(inst.info, currency)


def _kind_matches(inst: Instrument, kind: str | None) -> bool:
    return kind is None or kind == "any" or kind == inst.kind


# ---------------------------------------------------------------- placing orders

_ORDER_PARAMS = (
    P("instrument_name", "str", True), P("amount", "float"), P("contracts", "float"),
    P("type", "str", enum=ORDER_TYPES, default="limit"), P("label", "str"), P("price", "float"),
    P("time_in_force", "str", enum=TIME_IN_FORCE, default="good_til_cancelled"), P("display_amount", "float"),
    P("post_only", "bool", default=False), P("reject_post_only", "bool", default=False),
    P("reduce_only", "bool", default=False), P("trigger_price", "float"), P("trigger_offset", "float"),
    P("trigger", "str", enum=("index_price", "mark_price", "last_price")), P("advanced", "str", enum=("usd", "implv")),
    P("mmp", "bool", default=False), P("valid_until", "int"),
    P("linked_order_type", "str", enum=("one_triggers_other", "one_cancels_other", "one_triggers_one_cancels_other")),
    P("trigger_fill_condition", "str", enum=("first_hit", "complete_fill", "incremental")),
    P("otoco_config", "list"),
)


def _place(sim: Simulator, s: Session, p: dict[str, Any], direction: str, *, close: bool = False) -> dict[str, Any]:
    tr = _trading(sim)
    eng = tr.engine
    st = _st(sim, s)
    inst = _tradable(sim, p["instrument_name"])
    if p.get("linked_order_type") is not None or p.get("otoco_config"):
        raise error_for_code(10033, data={"param": "linked_order_type", "reason": "linked orders are not supported"})
    valid_until = p.get("valid_until")
    if valid_until is not None and valid_until < sim.now_ms():
        raise error_for_code(13888, data={"param": "valid_until", "reason": "valid_until has passed"})
    order_type = p["type"]
    amount = _amount(inst, p)
    assert amount is not None
    eng.check_amount(inst, amount, "contracts" if p.get("amount") is None else "amount")
    label = _label(p)
    tif = p["time_in_force"]
    post_only = p["post_only"] and order_type in LIMIT_TYPES
    if post_only and tif in ("fill_or_kill", "immediate_or_cancel"):
        raise invalid_params("post_only", "post_only needs good_til_cancelled or good_til_day")
    advanced, usd, implv = p.get("advanced"), None, None
    price: float | None = None
    if order_type in LIMIT_TYPES and order_type != "market_limit":
        if p.get("price") is None:
            raise invalid_params("price", "required for limit orders")
        if advanced is not None:
            usd = p["price"] if advanced == "usd" else None
            implv = p["price"] if advanced == "implv" else None
            price = eng.advanced_price(inst, advanced, p["price"])
        else:
            price = float(p["price"])
            eng.check_price(inst, price)
    elif advanced is not None:
        raise invalid_params("advanced", "only for limit option orders")
    trigger = trigger_price = trigger_offset = None
    if order_type in TRIGGER_TYPES:
        trigger = p.get("trigger")
        if trigger is None:
            raise invalid_params("trigger", "required for trigger orders")
        if order_type == "trailing_stop":
            trigger_offset = p.get("trigger_offset")
            if trigger_offset is None or trigger_offset <= 0:
                raise invalid_params("trigger_offset", "required (positive) for trailing_stop")
        else:
            trigger_price = p.get("trigger_price")
            if trigger_price is None:
                raise invalid_params("trigger_price", "required for trigger orders")
            eng.check_price(inst, trigger_price, "trigger_price")
    display = p.get("display_amount")
    if display is not None:
        minimum = float(inst.info["min_trade_amount"])
        if display < 100 * minimum - EPS or display > amount + EPS:
            raise error_for_code(10036, data={"param": "display_amount",
                                              "reason": "must be between 100 x min_trade_amount and amount"})
        if display >= amount - EPS:
            display = None
    reduce_only = (p["reduce_only"] or close) and inst.kind != "spot"
    o = eng.new_order(st, inst, direction, order_type, amount, price, label=label, time_in_force=tif,
                      post_only=post_only, reject_post_only=post_only and p["reject_post_only"],
                      reduce_only=reduce_only, trigger=trigger, trigger_price=trigger_price,
                      trigger_offset=trigger_offset, display_amount=display, advanced=advanced, usd=usd,
                      implv=implv, mmp=p["mmp"], session=s if s.conn is not None else None)
    if order_type not in TRIGGER_TYPES:
        eng.clamp_reduce_only(st, o)
    with tr.changes() as ch:
        trades = eng.submit(st, o, ch)
    return {"order": o.to_dict(), "trades": trades}


@method("private/buy", *_ORDER_PARAMS)
def _buy(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _place(sim, s, p, "buy")


@method("private/sell", *_ORDER_PARAMS)
def _sell(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _place(sim, s, p, "sell")


@method("private/close_position", P("instrument_name", "str", True), P("type", "str", True, ("limit", "market")),
        P("price", "float"))
def _close_position(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    inst = _tradable(sim, p["instrument_name"])
    pos = st.positions.get(inst.name)
    if pos is None or abs(pos.size) <= EPS:
        raise error_for_code(11030, data={"param": "instrument_name", "reason": "no position to close"})
    params: dict[str, Any] = {
        "instrument_name": inst.name, "amount": abs(pos.size), "type": p["type"], "label": "",
        "time_in_force": "good_til_cancelled", "post_only": False, "reject_post_only": False,
        "reduce_only": True, "mmp": False,
    }
    if p["type"] == "limit":
        if p.get("price") is None:
            raise invalid_params("price", "required for limit orders")
        params["price"] = p["price"]
    return _place(sim, s, params, "sell" if pos.size > 0 else "buy", close=True)


_EDIT_PARAMS = (
    P("amount", "float"), P("contracts", "float"), P("price", "float"), P("post_only", "bool"),
    P("reduce_only", "bool"), P("reject_post_only", "bool"), P("advanced", "str", enum=("usd", "implv")),
    P("trigger_price", "float"), P("mmp", "bool"), P("valid_until", "int"),
)


def _edit_order(sim: Simulator, s: Session, st: AccountState, o: SimOrder, p: dict[str, Any]) -> dict[str, Any]:
    tr = _trading(sim)
    inst = o.inst
    if inst.halted or inst.state != "open":
        raise error_for_code(10012, data={"reason": f"{inst.name} is not open for trading"})
    valid_until = p.get("valid_until")
    if valid_until is not None and valid_until < sim.now_ms():
        raise error_for_code(13888, data={"param": "valid_until", "reason": "valid_until has passed"})
    amount = _amount(inst, p, required=False)
    advanced = None
    if p.get("advanced") is not None:
        if p.get("price") is None:
            raise invalid_params("price", "required with advanced")
        advanced = (p["advanced"], float(p["price"]))
    display = p.get("display_amount")
    with tr.changes() as ch:
        trades = tr.engine.edit(st, o, ch, amount=amount, price=p.get("price"), trigger_price=p.get("trigger_price"),
                                trigger_offset=p.get("trigger_offset"), post_only=p.get("post_only"),
                                reject_post_only=p.get("reject_post_only"), reduce_only=p.get("reduce_only"),
                                display_amount=display, advanced=advanced, mmp=p.get("mmp"))
    return {"order": o.to_dict(), "trades": trades}


@method("private/edit", P("order_id", "str", True), *_EDIT_PARAMS, P("trigger_offset", "float"),
        P("display_amount", "float"))
def _edit(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    return _edit_order(sim, s, st, _own_order(st, p["order_id"], open_only=True), p)


@method("private/edit_by_label", P("label", "str"), P("instrument_name", "str", True), *_EDIT_PARAMS)
def _edit_by_label(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    label = _label(p)
    found = [o for o in st.open.values() if o.inst.name == p["instrument_name"] and o.label == label]
    if not found:
        raise error_for_code(10004, data={"param": "label", "reason": "no open order with this label"})
    if len(found) > 1:
        raise error_for_code(13032, data={"param": "label", "reason": f"{len(found)} open orders have this label"})
    return _edit_order(sim, s, st, found[0], p)


# ---------------------------------------------------------------- cancelling


@method("private/cancel", P("order_id", "str", True))
def _cancel(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    o = _own_order(st, p["order_id"], open_only=True)
    with _trading(sim).changes() as ch:
        _trading(sim).engine.cancel(o, ch)
    return o.to_dict()


def _cancel_where(sim: Simulator, s: Session, p: dict[str, Any], pick: Any) -> Any:
    st = _st(sim, s)
    tr = _trading(sim)
    chosen = [o for o in list(st.open.values()) if pick(o) and _type_matches(o, p.get("type"))]
    with tr.changes() as ch:
        for o in chosen:
            tr.engine.cancel(o, ch)
    if p.get("detailed"):
        return [{"order": o.to_dict()} for o in chosen]
    return len(chosen)


_CANCEL_ALL_PARAMS = (P("detailed", "bool", default=False), P("freeze_quotes", "bool"))


@method("private/cancel_all", *_CANCEL_ALL_PARAMS)
def _cancel_all(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _cancel_where(sim, s, p, lambda o: True)


@method("private/cancel_all_by_instrument", P("instrument_name", "str", True),
        P("type", "str", enum=CANCEL_TYPES, default="all"), *_CANCEL_ALL_PARAMS, P("include_combos", "bool"))
def _cancel_all_by_instrument(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    inst = _any_instrument(sim, p["instrument_name"])
    return _cancel_where(sim, s, p, lambda o: o.inst is inst)


@method("private/cancel_all_by_currency", P("currency", "str", True), P("kind", "str", enum=KINDS_ANY),
        P("type", "str", enum=CANCEL_TYPES, default="all"), *_CANCEL_ALL_PARAMS)
def _cancel_all_by_currency(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    cur = _currency(p["currency"])
    kind = p.get("kind")
    return _cancel_where(sim, s, p, lambda o: _in_currency(o.inst, cur) and _kind_matches(o.inst, kind))


@method("private/cancel_all_by_kind_or_type", P("currency", "any", True), P("kind", "str", enum=KINDS_ANY),
        P("type", "str", enum=CANCEL_TYPES, default="all"), *_CANCEL_ALL_PARAMS)
def _cancel_all_by_kind_or_type(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    raw = p["currency"]
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, str) for v in values):
        raise invalid_params("currency", "must be a currency, a list of currencies or any")
    curs = [_currency(v, allow_any=True) for v in values]
    kind = p.get("kind")
    return _cancel_where(sim, s, p, lambda o: any(_in_currency(o.inst, c) for c in curs)
                         and _kind_matches(o.inst, kind))


@method("private/cancel_by_label", P("label", "str", True), P("currency", "str"))
def _cancel_by_label(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    cur = _currency(p["currency"]) if p.get("currency") else "any"
    label = p["label"]
    return _cancel_where(sim, s, {}, lambda o: o.label == label and _in_currency(o.inst, cur))


# ---------------------------------------------------------------- orders: queries


def _dicts(orders: list[SimOrder]) -> list[dict[str, Any]]:
    return [o.to_dict() for o in orders]


@method("private/get_open_orders", P("kind", "str", enum=KINDS), P("type", "str", enum=OPEN_ORDER_TYPES))
def _open_orders(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    return _dicts([o for o in st.open.values()
                   if _kind_matches(o.inst, p.get("kind")) and _type_matches(o, p.get("type"))])


@method("private/get_open_orders_by_instrument", P("instrument_name", "str", True),
        P("type", "str", enum=OPEN_ORDER_TYPES))
def _open_orders_by_instrument(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    inst = _any_instrument(sim, p["instrument_name"])
    return _dicts([o for o in st.open.values() if o.inst is inst and _type_matches(o, p.get("type"))])


@method("private/get_open_orders_by_currency", P("currency", "str", True), P("kind", "str", enum=KINDS),
        P("type", "str", enum=OPEN_ORDER_TYPES))
def _open_orders_by_currency(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    cur = _currency(p["currency"])
    return _dicts([o for o in st.open.values() if _in_currency(o.inst, cur) and _kind_matches(o.inst, p.get("kind"))
                   and _type_matches(o, p.get("type"))])


@method("private/get_open_orders_by_label", P("currency", "str", True), P("label", "str"))
def _open_orders_by_label(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    cur = _currency(p["currency"])
    label = p.get("label") or ""
    return _dicts([o for o in st.open.values() if _in_currency(o.inst, cur) and o.label == label])


@method("private/get_order_state", P("order_id", "str", True))
def _order_state(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _own_order(_st(sim, s), p["order_id"]).to_dict()


@method("private/get_order_state_by_label", P("currency", "str", True), P("label", "str"))
def _order_state_by_label(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    cur = _currency(p["currency"])
    label = p.get("label") or ""
    return _dicts([o for o in st.orders.values() if o.label == label and _in_currency(o.inst, cur)])


_HISTORY_PARAMS = (P("count", "int", default=20), P("offset", "int", default=0), P("include_old", "bool"),
                   P("include_unfilled", "bool", default=False), P("with_continuation", "bool"),
                   P("continuation", "str"), P("historical", "bool"))


def _history(st: AccountState, p: dict[str, Any], pick: Any) -> Any:
    count, offset = p["count"], p["offset"]
    if not 1 <= count <= 10_000:
        raise invalid_params("count", "must be between 1 and 10000")
    if p.get("continuation"):
        try:
            offset = int(p["continuation"])
        except ValueError:
            raise invalid_params("continuation", "invalid continuation token") from None
    sel = [o for o in reversed(st.orders.values())
           if pick(o) and (o.filled > EPS or (p["include_unfilled"] and not o.is_open))]
    page = sel[offset:offset + count]
    if p.get("with_continuation"):
        more = offset + count < len(sel)
        return {"orders": _dicts(page), "continuation": str(offset + count) if more else None}
    return _dicts(page)


@method("private/get_order_history_by_instrument", P("instrument_name", "str", True), *_HISTORY_PARAMS)
def _history_by_instrument(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    inst = _any_instrument(sim, p["instrument_name"])
    return _history(_st(sim, s), p, lambda o: o.inst is inst)


@method("private/get_order_history_by_currency", P("currency", "str", True), P("kind", "str", enum=KINDS_ANY),
        *_HISTORY_PARAMS)
def _history_by_currency(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    cur = _currency(p["currency"])
    kind = p.get("kind")
    return _history(_st(sim, s), p, lambda o: _in_currency(o.inst, cur) and _kind_matches(o.inst, kind))


# ---------------------------------------------------------------- user trades

_USER_TRADE_PARAMS = (P("count", "int", default=10), P("start_timestamp", "int"), P("end_timestamp", "int"),
                      P("sorting", "str", enum=SORTING, default="default"), P("historical", "bool"))


@method("private/get_user_trades_by_instrument", P("instrument_name", "str", True), P("start_seq", "int"),
        P("end_seq", "int"), *_USER_TRADE_PARAMS)
def _user_trades_by_instrument(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    inst = _any_instrument(sim, p["instrument_name"])
    return _trades_page([t for t in _st(sim, s).trades if t["instrument_name"] == inst.name], p)


@method("private/get_user_trades_by_instrument_and_time", P("instrument_name", "str", True),
        P("start_timestamp", "int", True), P("end_timestamp", "int", True), P("count", "int", default=10),
        P("sorting", "str", enum=SORTING, default="default"), P("historical", "bool"))
def _user_trades_by_instrument_and_time(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _user_trades_by_instrument(sim, s, p)


def _trades_in_currency(sim: Simulator, s: Session, p: dict[str, Any]) -> list[dict[str, Any]]:
    cur = _currency(p["currency"])
    kind = p.get("kind")
    out = []
    for t in _st(sim, s).trades:
        inst = sim.market.get(t["instrument_name"]) or sim.market.expired.get(t["instrument_name"])
        if inst is not None and _in_currency(inst, cur) and _kind_matches(inst, kind):
            out.append(t)
    return out


def _trade_id(value: Any, param: str) -> int:
    try:
        return int(str(value).rsplit("-", 1)[-1])
    except ValueError:
        raise invalid_params(param, "invalid trade id") from None


@method("private/get_user_trades_by_currency", P("currency", "str", True), P("kind", "str", enum=KINDS_ANY),
        P("start_id", "str"), P("end_id", "str"), *_USER_TRADE_PARAMS, P("subaccount_id", "int"))
def _user_trades_by_currency(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    trades = _trades_in_currency(sim, s, p)
    if p.get("start_id") is not None:
        lo = _trade_id(p["start_id"], "start_id")
        trades = [t for t in trades if int(t["trade_id"]) >= lo]
    if p.get("end_id") is not None:
        hi = _trade_id(p["end_id"], "end_id")
        trades = [t for t in trades if int(t["trade_id"]) <= hi]
    return _trades_page(trades, {**p, "start_seq": None, "end_seq": None})


@method("private/get_user_trades_by_currency_and_time", P("currency", "str", True),
        P("kind", "str", enum=KINDS_ANY), P("start_timestamp", "int", True), P("end_timestamp", "int", True),
        P("count", "int", default=10), P("sorting", "str", enum=SORTING, default="default"),
        P("historical", "bool"))
def _user_trades_by_currency_and_time(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _trades_page(_trades_in_currency(sim, s, p), {**p, "start_seq": None, "end_seq": None})


@method("private/get_user_trades_by_order", P("order_id", "str", True),
        P("sorting", "str", enum=SORTING, default="default"), P("historical", "bool"))
def _user_trades_by_order(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    o = _own_order(st, p["order_id"])
    trades = list(st.trades_by_order.get(o.order_id, ()))
    return trades[::-1] if p["sorting"] == "desc" else trades


# ---------------------------------------------------------------- positions and account


@method("private/get_position", P("instrument_name", "str", True))
def _position(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    inst = _any_instrument(sim, p["instrument_name"])
    return _trading(sim).engine.position_view(_st(sim, s), inst)


@method("private/get_positions", P("currency", "str", default="any"), P("kind", "str", enum=KINDS),
        P("subaccount_id", "int"))
def _positions(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    cur = _currency(p["currency"], allow_any=True)
    eng = _trading(sim).engine
    return [eng.position_view(st, pos.inst) for pos in eng.positions(st, cur, p.get("kind"))]


SUMMARY_CURRENCIES = ("BTC", "ETH", "STETH", "ETHW", "USDC", "USDT", "EURR", "MATIC", "SOL", "XRP", "USYC", "PAXG",
                      "BNB", "USDE")


@method("private/get_account_summary", P("currency", "str", True), P("subaccount_id", "int"),
        P("extended", "bool", default=False))
def _account_summary(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    cur = p["currency"].upper()
    if cur not in SUMMARY_CURRENCIES:
        raise invalid_params("currency", "invalid currency")
    return _trading(sim).summary(_st(sim, s), cur, p["extended"])


@method("private/get_account_summaries", P("subaccount_id", "int"), P("extended", "bool", default=False))
def _account_summaries(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    tr = _trading(sim)
    out: dict[str, Any] = dict(_identity(st.account))
    if p["extended"]:
        # per-currency fee tables belong to get_account_summary; the spec has none here
        out.update({k: v for k, v in _extended(st).items() if k != "fees"})
    out["summaries"] = [tr.summary(st, cur, identity=False) for cur in sorted(st.balances)]
    return out


@method("private/get_subaccounts", P("with_portfolio", "bool", default=False))
def _subaccounts(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    ident = _identity(st.account)
    item: dict[str, Any] = {
        **ident,
        "is_password": True,
        "login_enabled": True,
        "receive_notifications": False,
        "tfa_enabled": False,
        "security_keys_assignments": [],
        "margin_model": "segregated_sm",
    }
    if p["with_portfolio"]:
        eng = _trading(sim).engine
        item["portfolio"] = {
            cur.lower(): {k: v.lower() if k == "currency" else v  # lower-case here, as the spec has it
                          for k, v in eng.summary_numbers(st, cur).items() if k in CURRENCY_PORTFOLIO_FIELDS}
            for cur in ("BTC", "ETH")  # the spec's portfolio object has exactly these two
        }
    return [item]


@method("private/get_margins", P("instrument_name", "str", True), P("amount", "float", True),
        P("price", "float", True))
def _margins(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    inst = _tradable(sim, p["instrument_name"]) if sim.market.get(p["instrument_name"]) else None
    if inst is None:
        raise not_found()
    eng = _trading(sim).engine
    eng.check_amount(inst, p["amount"])
    if p["price"] <= 0:
        raise invalid_params("price", "must be a positive number")
    return eng.margins(_st(sim, s), inst, p["amount"], p["price"])


# ---------------------------------------------------------------- cancel on disconnect

_COD_SCOPE = P("scope", "str", enum=("connection", "account"), default="connection")


def _cod_set(sim: Simulator, s: Session, p: dict[str, Any], on: bool) -> str:
    st = _st(sim, s)
    if p["scope"] == "account":
        st.cod_account = on
    else:
        if s.conn is None:
            raise error_for_code(10030, data={"reason": "scope connection needs a WebSocket connection"})
        s.cancel_on_disconnect = on
    return "ok"


@method("private/enable_cancel_on_disconnect", _COD_SCOPE)
def _enable_cod(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _cod_set(sim, s, p, True)


@method("private/disable_cancel_on_disconnect", _COD_SCOPE)
def _disable_cod(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _cod_set(sim, s, p, False)


@method("private/get_cancel_on_disconnect", _COD_SCOPE)
def _get_cod(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    st = _st(sim, s)
    if p["scope"] == "account":
        return {"enabled": st.cod_account, "scope": "account"}
    return {"enabled": s.cancel_on_disconnect or st.cod_account, "scope": "connection"}


# ---------------------------------------------------------------- control


@method("sim/fund", P("currency", "str", True), P("amount", "float", True), P("client_id", "str"))
def _fund(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    """Credit (or debit) an account: the caller's, else ``client_id``'s, else the demo account's."""
    if not sim.control:
        raise error_for_code(-32601)
    if p.get("client_id"):
        account = sim.accounts.by_client_id.get(p["client_id"])
        if account is None:
            raise invalid_params("client_id", "unknown client_id")
    else:
        account = s.account or sim.demo_account
    return sim.fund(account, p["currency"], p["amount"])


__all__ = ["LIMIT_TYPES", "MARKET_TYPES", "Trading"]
