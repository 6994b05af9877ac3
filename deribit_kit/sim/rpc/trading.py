"""Trading and account methods of the embedded exchange (``private/buy`` ... ``private/get_margins``,
cancel-on-disconnect). Each handler takes the calling connection's :class:`~.context.Context` and
checked params, turns the request into calls on the engine (:mod:`deribit_kit.sim.exchange.engine`)
inside ``cx.pubsub.changes()`` (which publishes what changed: book changes and public trades at
once, the account's private channels to its own connections) and returns the ``result``.

Where Deribit's documentation leaves a rule open, the choices are (see also
:mod:`deribit_kit.sim.exchange.engine`):

* price off the tick grid, amount below ``min_trade_amount`` or not a multiple of the contract
  size: -32602 ``Invalid params`` with ``data.param`` and ``data.reason`` naming the rule (the
  grid is :func:`deribit_kit.wire.enums.on_grid`, the client's rule too);
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

from typing import Any

from ...errors import error_for_code, invalid_params
from ...wire.enums import (
    CANCEL_TYPES,
    KINDS,
    KINDS_ANY,
    LIMIT_TYPES,
    MAX_LABEL,
    OPEN_ORDER_TYPES,
    ORDER_TYPES,
    SORTING,
    TIME_IN_FORCE,
    TRIGGERS,
)
from ...wire.rpcserver import MethodTable, P, not_found
from ..exchange import AccountState, SimInstrument
from ..exchange.instruments import CURRENCIES, currency_matches
from ..exchange.orders import EPS, TRIGGER_TYPES, SimOrder
from ..exchange.views import CURRENCY_PORTFOLIO_FIELDS, extended_fields, identity_fields
from .context import Context
from .public import trades_page

METHODS = MethodTable()
CURRENCY_NAMES = (*(str(c["currency"]) for c in CURRENCIES), "EURR")


def _currency(value: str, allow_any: bool = False) -> str:
    cur = value.upper()
    if cur == "ANY" and allow_any:
        return "any"
    if cur not in CURRENCY_NAMES:
        raise invalid_params("currency", "invalid currency")
    return cur


def _any_instrument(cx: Context, name: str) -> SimInstrument:
    inst = cx.market.get(name) or cx.market.expired.get(name)
    if inst is None:
        raise not_found()
    return inst


def _tradable(cx: Context, name: str) -> SimInstrument:
    inst = cx.market.get(name)
    if inst is None:
        raise not_found()
    if inst.halted or inst.state != "open":
        raise error_for_code(10012, data={"reason": f"{name} is not open for trading", "param": "instrument_name"})
    return inst


def _amount(inst: SimInstrument, p: dict[str, Any], required: bool = True) -> float | None:
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


def _in_currency(inst: SimInstrument, currency: str) -> bool:
    return currency == "any" or currency_matches(inst.info, currency)


def _kind_matches(inst: SimInstrument, kind: str | None) -> bool:
    return kind is None or kind == "any" or kind == inst.kind


# ---------------------------------------------------------------- placing orders

_ORDER_PARAMS = (
    P("instrument_name", "str", True), P("amount", "float"), P("contracts", "float"),
    P("type", "str", enum=ORDER_TYPES, default="limit"), P("label", "str"), P("price", "float"),
    P("time_in_force", "str", enum=TIME_IN_FORCE, default="good_til_cancelled"), P("display_amount", "float"),
    P("post_only", "bool", default=False), P("reject_post_only", "bool", default=False),
    P("reduce_only", "bool", default=False), P("trigger_price", "float"), P("trigger_offset", "float"),
    P("trigger", "str", enum=TRIGGERS), P("advanced", "str", enum=("usd", "implv")),
    P("mmp", "bool", default=False), P("valid_until", "int"),
    P("linked_order_type", "str", enum=("one_triggers_other", "one_cancels_other", "one_triggers_one_cancels_other")),
    P("trigger_fill_condition", "str", enum=("first_hit", "complete_fill", "incremental")),
    P("otoco_config", "list"),
)


def _place(cx: Context, p: dict[str, Any], direction: str, *, close: bool = False) -> dict[str, Any]:
    eng = cx.engine
    st = cx.account_state()
    inst = _tradable(cx, p["instrument_name"])
    if p.get("linked_order_type") is not None or p.get("otoco_config"):
        raise error_for_code(10033, data={"param": "linked_order_type", "reason": "linked orders are not supported"})
    valid_until = p.get("valid_until")
    if valid_until is not None and valid_until < cx.exchange.now_ms():
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
                      implv=implv, mmp=p["mmp"], session=cx.session if cx.session.conn is not None else None)
    if order_type not in TRIGGER_TYPES:
        eng.clamp_reduce_only(st, o)
    with cx.pubsub.changes() as ch:
        trades = eng.submit(st, o, ch)
    return {"order": o.to_dict(), "trades": trades}


@METHODS.method("private/buy", *_ORDER_PARAMS)
def _buy(cx: Context, p: dict[str, Any]) -> Any:
    return _place(cx, p, "buy")


@METHODS.method("private/sell", *_ORDER_PARAMS)
def _sell(cx: Context, p: dict[str, Any]) -> Any:
    return _place(cx, p, "sell")


@METHODS.method("private/close_position", P("instrument_name", "str", True),
                        P("type", "str", True, ("limit", "market")), P("price", "float"))
def _close_position(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    inst = _tradable(cx, p["instrument_name"])
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
    return _place(cx, params, "sell" if pos.size > 0 else "buy", close=True)


_EDIT_PARAMS = (
    P("amount", "float"), P("contracts", "float"), P("price", "float"), P("post_only", "bool"),
    P("reduce_only", "bool"), P("reject_post_only", "bool"), P("advanced", "str", enum=("usd", "implv")),
    P("trigger_price", "float"), P("mmp", "bool"), P("valid_until", "int"),
)


def _edit_order(cx: Context, st: AccountState, o: SimOrder, p: dict[str, Any]) -> dict[str, Any]:
    inst = o.inst
    if inst.halted or inst.state != "open":
        raise error_for_code(10012, data={"reason": f"{inst.name} is not open for trading"})
    valid_until = p.get("valid_until")
    if valid_until is not None and valid_until < cx.exchange.now_ms():
        raise error_for_code(13888, data={"param": "valid_until", "reason": "valid_until has passed"})
    amount = _amount(inst, p, required=False)
    advanced = None
    if p.get("advanced") is not None:
        if p.get("price") is None:
            raise invalid_params("price", "required with advanced")
        advanced = (p["advanced"], float(p["price"]))
    display = p.get("display_amount")
    with cx.pubsub.changes() as ch:
        trades = cx.engine.edit(st, o, ch, amount=amount, price=p.get("price"), trigger_price=p.get("trigger_price"),
                                trigger_offset=p.get("trigger_offset"), post_only=p.get("post_only"),
                                reject_post_only=p.get("reject_post_only"), reduce_only=p.get("reduce_only"),
                                display_amount=display, advanced=advanced, mmp=p.get("mmp"))
    return {"order": o.to_dict(), "trades": trades}


@METHODS.method("private/edit", P("order_id", "str", True), *_EDIT_PARAMS, P("trigger_offset", "float"),
                P("display_amount", "float"))
def _edit(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    return _edit_order(cx, st, _own_order(st, p["order_id"], open_only=True), p)


@METHODS.method("private/edit_by_label", P("label", "str"), P("instrument_name", "str", True), *_EDIT_PARAMS)
def _edit_by_label(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    label = _label(p)
    found = [o for o in st.open.values() if o.inst.name == p["instrument_name"] and o.label == label]
    if not found:
        raise error_for_code(10004, data={"param": "label", "reason": "no open order with this label"})
    if len(found) > 1:
        raise error_for_code(13032, data={"param": "label", "reason": f"{len(found)} open orders have this label"})
    return _edit_order(cx, st, found[0], p)


# ---------------------------------------------------------------- cancelling


@METHODS.method("private/cancel", P("order_id", "str", True))
def _cancel(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    o = _own_order(st, p["order_id"], open_only=True)
    with cx.pubsub.changes() as ch:
        cx.engine.cancel(o, ch)
    return o.to_dict()


def _cancel_where(cx: Context, p: dict[str, Any], pick: Any) -> Any:
    st = cx.account_state()
    chosen = [o for o in list(st.open.values()) if pick(o) and _type_matches(o, p.get("type"))]
    with cx.pubsub.changes() as ch:
        for o in chosen:
            cx.engine.cancel(o, ch)
    if p.get("detailed"):
        return [{"order": o.to_dict()} for o in chosen]
    return len(chosen)


_CANCEL_ALL_PARAMS = (P("detailed", "bool", default=False), P("freeze_quotes", "bool"))


@METHODS.method("private/cancel_all", *_CANCEL_ALL_PARAMS)
def _cancel_all(cx: Context, p: dict[str, Any]) -> Any:
    return _cancel_where(cx, p, lambda o: True)


@METHODS.method("private/cancel_all_by_instrument", P("instrument_name", "str", True),
                P("type", "str", enum=CANCEL_TYPES, default="all"), *_CANCEL_ALL_PARAMS, P("include_combos", "bool"))
def _cancel_all_by_instrument(cx: Context, p: dict[str, Any]) -> Any:
    inst = _any_instrument(cx, p["instrument_name"])
    return _cancel_where(cx, p, lambda o: o.inst is inst)


@METHODS.method("private/cancel_all_by_currency", P("currency", "str", True), P("kind", "str", enum=KINDS_ANY),
                P("type", "str", enum=CANCEL_TYPES, default="all"), *_CANCEL_ALL_PARAMS)
def _cancel_all_by_currency(cx: Context, p: dict[str, Any]) -> Any:
    cur = _currency(p["currency"])
    kind = p.get("kind")
    return _cancel_where(cx, p, lambda o: _in_currency(o.inst, cur) and _kind_matches(o.inst, kind))


@METHODS.method("private/cancel_all_by_kind_or_type", P("currency", "any", True), P("kind", "str", enum=KINDS_ANY),
                P("type", "str", enum=CANCEL_TYPES, default="all"), *_CANCEL_ALL_PARAMS)
def _cancel_all_by_kind_or_type(cx: Context, p: dict[str, Any]) -> Any:
    raw = p["currency"]
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, str) for v in values):
        raise invalid_params("currency", "must be a currency, a list of currencies or any")
    curs = [_currency(v, allow_any=True) for v in values]
    kind = p.get("kind")
    return _cancel_where(cx, p, lambda o: any(_in_currency(o.inst, c) for c in curs)
                         and _kind_matches(o.inst, kind))


@METHODS.method("private/cancel_by_label", P("label", "str", True), P("currency", "str"))
def _cancel_by_label(cx: Context, p: dict[str, Any]) -> Any:
    cur = _currency(p["currency"]) if p.get("currency") else "any"
    label = p["label"]
    return _cancel_where(cx, {}, lambda o: o.label == label and _in_currency(o.inst, cur))


# ---------------------------------------------------------------- orders: queries


def _dicts(orders: list[SimOrder]) -> list[dict[str, Any]]:
    return [o.to_dict() for o in orders]


@METHODS.method("private/get_open_orders", P("kind", "str", enum=KINDS), P("type", "str", enum=OPEN_ORDER_TYPES))
def _open_orders(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    return _dicts([o for o in st.open.values()
                   if _kind_matches(o.inst, p.get("kind")) and _type_matches(o, p.get("type"))])


@METHODS.method("private/get_open_orders_by_instrument", P("instrument_name", "str", True),
                P("type", "str", enum=OPEN_ORDER_TYPES))
def _open_orders_by_instrument(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    inst = _any_instrument(cx, p["instrument_name"])
    return _dicts([o for o in st.open.values() if o.inst is inst and _type_matches(o, p.get("type"))])


@METHODS.method("private/get_open_orders_by_currency", P("currency", "str", True), P("kind", "str", enum=KINDS),
                P("type", "str", enum=OPEN_ORDER_TYPES))
def _open_orders_by_currency(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    cur = _currency(p["currency"])
    return _dicts([o for o in st.open.values() if _in_currency(o.inst, cur) and _kind_matches(o.inst, p.get("kind"))
                   and _type_matches(o, p.get("type"))])


@METHODS.method("private/get_open_orders_by_label", P("currency", "str", True), P("label", "str"))
def _open_orders_by_label(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    cur = _currency(p["currency"])
    label = p.get("label") or ""
    return _dicts([o for o in st.open.values() if _in_currency(o.inst, cur) and o.label == label])


@METHODS.method("private/get_order_state", P("order_id", "str", True))
def _order_state(cx: Context, p: dict[str, Any]) -> Any:
    return _own_order(cx.account_state(), p["order_id"]).to_dict()


@METHODS.method("private/get_order_state_by_label", P("currency", "str", True), P("label", "str"))
def _order_state_by_label(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
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


@METHODS.method("private/get_order_history_by_instrument", P("instrument_name", "str", True), *_HISTORY_PARAMS)
def _history_by_instrument(cx: Context, p: dict[str, Any]) -> Any:
    inst = _any_instrument(cx, p["instrument_name"])
    return _history(cx.account_state(), p, lambda o: o.inst is inst)


@METHODS.method("private/get_order_history_by_currency", P("currency", "str", True), P("kind", "str", enum=KINDS_ANY),
                *_HISTORY_PARAMS)
def _history_by_currency(cx: Context, p: dict[str, Any]) -> Any:
    cur = _currency(p["currency"])
    kind = p.get("kind")
    return _history(cx.account_state(), p, lambda o: _in_currency(o.inst, cur) and _kind_matches(o.inst, kind))


# ---------------------------------------------------------------- user trades

_USER_TRADE_PARAMS = (P("count", "int", default=10), P("start_timestamp", "int"), P("end_timestamp", "int"),
                      P("sorting", "str", enum=SORTING, default="default"), P("historical", "bool"))


@METHODS.method("private/get_user_trades_by_instrument", P("instrument_name", "str", True), P("start_seq", "int"),
                P("end_seq", "int"), *_USER_TRADE_PARAMS)
def _user_trades_by_instrument(cx: Context, p: dict[str, Any]) -> Any:
    inst = _any_instrument(cx, p["instrument_name"])
    return trades_page([t for t in cx.account_state().trades if t["instrument_name"] == inst.name], p)


@METHODS.method("private/get_user_trades_by_instrument_and_time", P("instrument_name", "str", True),
                P("start_timestamp", "int", True), P("end_timestamp", "int", True), P("count", "int", default=10),
                P("sorting", "str", enum=SORTING, default="default"), P("historical", "bool"))
def _user_trades_by_instrument_and_time(cx: Context, p: dict[str, Any]) -> Any:
    return _user_trades_by_instrument(cx, p)


def _trades_in_currency(cx: Context, p: dict[str, Any]) -> list[dict[str, Any]]:
    cur = _currency(p["currency"])
    kind = p.get("kind")
    out = []
    for t in cx.account_state().trades:
        inst = cx.market.get(t["instrument_name"]) or cx.market.expired.get(t["instrument_name"])
        if inst is not None and _in_currency(inst, cur) and _kind_matches(inst, kind):
            out.append(t)
    return out


def _trade_id(value: Any, param: str) -> int:
    try:
        return int(str(value).rsplit("-", 1)[-1])
    except ValueError:
        raise invalid_params(param, "invalid trade id") from None


@METHODS.method("private/get_user_trades_by_currency", P("currency", "str", True), P("kind", "str", enum=KINDS_ANY),
                P("start_id", "str"), P("end_id", "str"), *_USER_TRADE_PARAMS, P("subaccount_id", "int"))
def _user_trades_by_currency(cx: Context, p: dict[str, Any]) -> Any:
    trades = _trades_in_currency(cx, p)
    if p.get("start_id") is not None:
        lo = _trade_id(p["start_id"], "start_id")
        trades = [t for t in trades if int(t["trade_id"]) >= lo]
    if p.get("end_id") is not None:
        hi = _trade_id(p["end_id"], "end_id")
        trades = [t for t in trades if int(t["trade_id"]) <= hi]
    return trades_page(trades, {**p, "start_seq": None, "end_seq": None})


@METHODS.method("private/get_user_trades_by_currency_and_time", P("currency", "str", True),
                P("kind", "str", enum=KINDS_ANY), P("start_timestamp", "int", True), P("end_timestamp", "int", True),
                P("count", "int", default=10), P("sorting", "str", enum=SORTING, default="default"),
                P("historical", "bool"))
def _user_trades_by_currency_and_time(cx: Context, p: dict[str, Any]) -> Any:
    return trades_page(_trades_in_currency(cx, p), {**p, "start_seq": None, "end_seq": None})


@METHODS.method("private/get_user_trades_by_order", P("order_id", "str", True),
                P("sorting", "str", enum=SORTING, default="default"), P("historical", "bool"))
def _user_trades_by_order(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    o = _own_order(st, p["order_id"])
    trades = list(st.trades_by_order.get(o.order_id, ()))
    return trades[::-1] if p["sorting"] == "desc" else trades


# ---------------------------------------------------------------- positions and account


@METHODS.method("private/get_position", P("instrument_name", "str", True))
def _position(cx: Context, p: dict[str, Any]) -> Any:
    inst = _any_instrument(cx, p["instrument_name"])
    return cx.engine.position_view(cx.account_state(), inst)


@METHODS.method("private/get_positions", P("currency", "str", default="any"), P("kind", "str", enum=KINDS),
                P("subaccount_id", "int"))
def _positions(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    cur = _currency(p["currency"], allow_any=True)
    eng = cx.engine
    return [eng.position_view(st, pos.inst) for pos in eng.positions(st, cur, p.get("kind"))]


SUMMARY_CURRENCIES = ("BTC", "ETH", "STETH", "ETHW", "USDC", "USDT", "EURR", "MATIC", "SOL", "XRP", "USYC", "PAXG",
                      "BNB", "USDE")


@METHODS.method("private/get_account_summary", P("currency", "str", True), P("subaccount_id", "int"),
                P("extended", "bool", default=False))
def _account_summary(cx: Context, p: dict[str, Any]) -> Any:
    cur = p["currency"].upper()
    if cur not in SUMMARY_CURRENCIES:
        raise invalid_params("currency", "invalid currency")
    return cx.engine.summary(cx.account_state(), cur, p["extended"])


@METHODS.method("private/get_account_summaries", P("subaccount_id", "int"), P("extended", "bool", default=False))
def _account_summaries(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    out: dict[str, Any] = dict(identity_fields(st.account))
    if p["extended"]:
        # per-currency fee tables belong to get_account_summary; the spec has none here
        out.update({k: v for k, v in extended_fields(st).items() if k != "fees"})
    out["summaries"] = [cx.engine.summary(st, cur, identity=False) for cur in sorted(st.balances)]
    return out


@METHODS.method("private/get_subaccounts", P("with_portfolio", "bool", default=False))
def _subaccounts(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    ident = identity_fields(st.account)
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
        eng = cx.engine
        item["portfolio"] = {
            cur.lower(): {k: v.lower() if k == "currency" else v  # lower-case here, as the spec has it
                          for k, v in eng.summary_numbers(st, cur).items() if k in CURRENCY_PORTFOLIO_FIELDS}
            for cur in ("BTC", "ETH")  # the spec's portfolio object has exactly these two
        }
    return [item]


@METHODS.method("private/get_margins", P("instrument_name", "str", True), P("amount", "float", True),
                P("price", "float", True))
def _margins(cx: Context, p: dict[str, Any]) -> Any:
    inst = _tradable(cx, p["instrument_name"]) if cx.market.get(p["instrument_name"]) else None
    if inst is None:
        raise not_found()
    eng = cx.engine
    eng.check_amount(inst, p["amount"])
    if p["price"] <= 0:
        raise invalid_params("price", "must be a positive number")
    return eng.margins(cx.account_state(), inst, p["amount"], p["price"])


# ---------------------------------------------------------------- cancel on disconnect

_COD_SCOPE = P("scope", "str", enum=("connection", "account"), default="connection")


def _cod_set(cx: Context, p: dict[str, Any], on: bool) -> str:
    st = cx.account_state()
    if p["scope"] == "account":
        st.cod_account = on
    else:
        if cx.session.conn is None:
            raise error_for_code(10030, data={"reason": "scope connection needs a WebSocket connection"})
        cx.session.cancel_on_disconnect = on
    return "ok"


@METHODS.method("private/enable_cancel_on_disconnect", _COD_SCOPE)
def _enable_cod(cx: Context, p: dict[str, Any]) -> Any:
    return _cod_set(cx, p, True)


@METHODS.method("private/disable_cancel_on_disconnect", _COD_SCOPE)
def _disable_cod(cx: Context, p: dict[str, Any]) -> Any:
    return _cod_set(cx, p, False)


@METHODS.method("private/get_cancel_on_disconnect", _COD_SCOPE)
def _get_cod(cx: Context, p: dict[str, Any]) -> Any:
    st = cx.account_state()
    if p["scope"] == "account":
        return {"enabled": st.cod_account, "scope": "account"}
    return {"enabled": cx.session.cancel_on_disconnect or st.cod_account, "scope": "connection"}


