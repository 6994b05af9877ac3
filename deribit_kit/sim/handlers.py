"""The embedded exchange's JSON-RPC method table: public market data, session and subscription
methods. Each handler takes the simulator, the calling session and checked params, and returns
the ``result`` or raises a :class:`~deribit_kit.errors.DeribitError` with Deribit's code.
Trading and account methods register themselves from :mod:`deribit_kit.sim.trading`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import error_for_code, invalid_params
from ..wire.channels import ChannelError, parse_channel
from .candles import RESOLUTIONS
from .instruments import CURRENCIES
from .params import Method, P, check_params, not_found

if TYPE_CHECKING:
    from .market import Instrument
    from .server import Session, Simulator

API_VERSION = "1.2.26"
KIND_ENUM = ("future", "option", "spot", "future_combo", "option_combo")
CURRENCY_ENUM = ("BTC", "ETH", "USDC", "USDT", "EURR", "SOL", "any")
MAX_CHANNELS_PER_CALL = 500

METHODS: dict[str, Method] = {}


def method(name: str, *params: P, ws_only: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a JSON-RPC method handler ``func(sim, session, params) -> result``."""

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        METHODS[name] = Method(name, func, params, name.startswith("private/"), ws_only)
        return func

    return deco


def dispatch(sim: Simulator, session: Session, name: str, raw_params: dict[str, Any]) -> Any:
    """Look up, authorise, check params and run one method."""
    m = METHODS.get(name)
    if m is None:
        raise error_for_code(-32601)
    if m.ws_only and session.conn is None:
        raise error_for_code(10030, data={"reason": "this method needs a WebSocket connection"})
    if m.private:
        session.require_auth(raw_params.get("access_token"))
    params = check_params(m.params, raw_params)
    return m.func(sim, session, params)


def instrument(sim: Simulator, name: str) -> Instrument:
    inst = sim.market.get(name)
    if inst is None:
        raise not_found()
    return inst


# ---------------------------------------------------------------- session


@method("public/test", P("expected_result", "str"))
def _test(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    s.awaiting_test = False
    if p.get("expected_result") == "exception":
        raise error_for_code(11094, "internal_server_error", {"reason": "expected_result=exception"})
    return {"version": API_VERSION}


@method("public/hello", P("client_name", "str", True), P("client_version", "str", True))
def _hello(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    s.client_name = f"{p['client_name']}/{p['client_version']}"
    return {"version": API_VERSION}


@method("public/get_time")
def _get_time(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return sim.now_ms()


@method("public/status")
def _status(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return {"locked": "false", "locked_indices": []}


@method("public/set_heartbeat", P("interval", "int", True), ws_only=True)
def _set_heartbeat(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    interval = p["interval"]
    if interval < sim.min_heartbeat_interval:
        raise invalid_params("interval", f"must be at least {sim.min_heartbeat_interval} seconds")
    s.start_heartbeat(float(interval))
    return "ok"


@method("public/disable_heartbeat", ws_only=True)
def _disable_heartbeat(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    s.stop_heartbeat()
    return "ok"


@method(
    "public/auth",
    P("grant_type", "str", True, ("client_credentials", "client_signature", "refresh_token")),
    P("client_id", "str"), P("client_secret", "str"), P("refresh_token", "str"), P("timestamp", "int"),
    P("signature", "str"), P("nonce", "str"), P("data", "str"), P("state", "str"), P("scope", "str"),
)
def _auth(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    account, result = sim.accounts.authenticate(p)
    if s.conn is not None:
        s.account = account
        s.token = result["access_token"]
    if "state" in p:
        result["state"] = p["state"]
    return result


@method("private/logout", P("invalidate_token", "bool", default=True), ws_only=True)
def _logout(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    if p["invalidate_token"] and s.token:
        sim.accounts.revoke(s.token)
    s.logout_requested = True
    return "ok"


# ---------------------------------------------------------------- reference data


@method("public/get_currencies")
def _get_currencies(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return [dict(c) for c in CURRENCIES]


@method("public/get_instruments", P("currency", "str", default="any"), P("kind", "str", enum=KIND_ENUM),
        P("expired", "bool", default=False))
def _get_instruments(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    # unlisted coins (SOL for inverse, say) answer an empty list, as cryptofeed expects
    return [i.info for i in sim.market.find(p["currency"], p.get("kind"), p["expired"])]


@method("public/get_instrument", P("instrument_name", "str", True))
def _get_instrument(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    name = p["instrument_name"]
    inst = sim.market.get(name) or sim.market.expired.get(name)
    if inst is None:
        raise not_found()
    return inst.info


@method("public/get_contract_size", P("instrument_name", "str", True))
def _get_contract_size(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return {"contract_size": instrument(sim, p["instrument_name"]).info["contract_size"]}


@method("public/get_index_price_names", P("extended", "bool", default=False))
def _get_index_price_names(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    names = sim.market.index_names()
    if p["extended"]:
        return [{"name": n, "future_combo_creation_enabled": False, "option_combo_creation_enabled": False}
                for n in names]
    return names


@method("public/get_index_price", P("index_name", "str", True))
def _get_index_price(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    name = p["index_name"]
    if name not in sim.market.index_names():
        raise invalid_params("index_name", "unknown index name")
    price = round(sim.market.index_price(name) or 0.0, 4)
    return {"index_price": price, "estimated_delivery_price": price}


# ---------------------------------------------------------------- market data


@method("public/get_order_book", P("instrument_name", "str", True),
        P("depth", "int", enum=(1, 5, 10, 20, 50, 100, 1000, 10000)))
def _get_order_book(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return sim.market.order_book(instrument(sim, p["instrument_name"]), p.get("depth"))


@method("public/ticker", P("instrument_name", "str", True))
def _ticker(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return sim.market.ticker(instrument(sim, p["instrument_name"]))


@method("public/get_book_summary_by_currency", P("currency", "str", True, CURRENCY_ENUM[:-1]),
        P("kind", "str", enum=KIND_ENUM))
def _book_summary_by_currency(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return [sim.market.book_summary(i) for i in sim.market.find(p["currency"], p.get("kind"))]


@method("public/get_book_summary_by_instrument", P("instrument_name", "str", True))
def _book_summary_by_instrument(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return [sim.market.book_summary(instrument(sim, p["instrument_name"]))]


_TRADE_PARAMS = (P("start_seq", "int"), P("end_seq", "int"), P("start_timestamp", "int"),
                 P("end_timestamp", "int"), P("count", "int", default=10),
                 P("sorting", "str", enum=("asc", "desc", "default"), default="default"),
                 P("include_old", "bool"))


def _trades_page(trades: list[dict[str, Any]], p: dict[str, Any], seq_key: str = "trade_seq") -> dict[str, Any]:
    """One page of ``trades`` (oldest first) as Deribit pages them: from the start of the window
    when a start (``start_seq``/``start_id``/``start_timestamp``) is given, else the newest ones;
    ``default`` sorting is then oldest first, or newest first."""
    count = p["count"]
    if not 1 <= count <= 10_000:
        raise invalid_params("count", "must be between 1 and 10000")
    sel = [
        t for t in trades
        if (p.get("start_seq") is None or t[seq_key] >= p["start_seq"])
        and (p.get("end_seq") is None or t[seq_key] <= p["end_seq"])
        and (p.get("start_timestamp") is None or t["timestamp"] >= p["start_timestamp"])
        and (p.get("end_timestamp") is None or t["timestamp"] <= p["end_timestamp"])
    ]
    from_start = any(p.get(k) is not None for k in ("start_seq", "start_id", "start_timestamp"))
    page = sel[:count] if from_start else sel[-count:]
    if p["sorting"] == "desc" or (p["sorting"] == "default" and not from_start):
        page = page[::-1]
    return {"trades": page, "has_more": len(sel) > count}


@method("public/get_last_trades_by_instrument", P("instrument_name", "str", True), *_TRADE_PARAMS)
def _last_trades(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _trades_page(list(instrument(sim, p["instrument_name"]).trades), p)


@method("public/get_last_trades_by_instrument_and_time", P("instrument_name", "str", True),
        P("start_timestamp", "int", True), P("end_timestamp", "int", True), P("count", "int", default=10),
        P("sorting", "str", enum=("asc", "desc", "default"), default="default"), P("include_old", "bool"))
def _last_trades_time(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _trades_page(list(instrument(sim, p["instrument_name"]).trades), p)


@method("public/get_tradingview_chart_data", P("instrument_name", "str", True),
        P("start_timestamp", "int", True), P("end_timestamp", "int", True),
        P("resolution", "str", True, RESOLUTIONS))
def _chart_data(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    """Candles built from the exchange's own trades (:mod:`.candles`)."""
    inst = instrument(sim, p["instrument_name"])
    return sim.market.candles.chart_data(inst.name, p["resolution"], p["start_timestamp"],
                                         p["end_timestamp"], sim.now_ms())


def _trade_id_key(trade_id: str) -> int:
    """Order of a trade id: ``"300000123"`` or ``"ETH-15"`` -> its number."""
    return int(trade_id.rsplit("-", 1)[-1])


@method("public/get_last_trades_by_currency", P("currency", "str", True, CURRENCY_ENUM[:-1]),
        P("kind", "str", enum=(*KIND_ENUM, "combo", "any")), P("start_id", "str"), P("end_id", "str"),
        *(q for q in _TRADE_PARAMS if q.name not in ("start_seq", "end_seq")))
def _last_trades_currency(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    # Deribit pages this one by trade id (``start_id``/``end_id``), not by per-instrument ``trade_seq``
    kind = p.get("kind")
    insts = sim.market.find(p["currency"], None if kind in (None, "any", "combo") else kind)
    if kind == "combo":
        insts = [i for i in insts if i.kind.endswith("_combo")]
    try:
        lo = None if p.get("start_id") is None else _trade_id_key(p["start_id"])
        hi = None if p.get("end_id") is None else _trade_id_key(p["end_id"])
    except ValueError:
        raise invalid_params("start_id" if "start_id" in p else "end_id", "not a trade id") from None
    trades = sorted((t for i in insts for t in i.trades), key=lambda t: (t["timestamp"], _trade_id_key(t["trade_id"])))
    trades = [t for t in trades if (lo is None or _trade_id_key(t["trade_id"]) >= lo)
              and (hi is None or _trade_id_key(t["trade_id"]) <= hi)]
    return _trades_page(trades, p)


@method("public/get_funding_rate_value", P("instrument_name", "str", True), P("start_timestamp", "int", True),
        P("end_timestamp", "int", True))
def _funding_rate_value(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    inst = instrument(sim, p["instrument_name"])
    if not inst.perpetual:
        raise error_for_code(10031, data={"param": "instrument_name", "reason": "not a perpetual"})
    return round(sim.market.premium[inst.coin] / 3, 8)


# ---------------------------------------------------------------- subscriptions


def _subscribe(sim: Simulator, s: Session, p: dict[str, Any], private: bool) -> list[str]:
    channels = p["channels"]
    if len(channels) > MAX_CHANNELS_PER_CALL:
        raise invalid_params("channels", f"too many channels in one call (max {MAX_CHANNELS_PER_CALL})")
    accepted: list[str] = []
    parsed = []
    for name in channels:
        if not isinstance(name, str):
            raise invalid_params("channels", "must be an array of strings")
        try:
            ch = parse_channel(name)
        except ChannelError:
            continue  # Deribit leaves channels it does not know out of the result
        if ch.private and s.account is None:
            if ch.interval == "raw" and not ch.user:
                raise error_for_code(13778)
            if private:
                raise error_for_code(13009, data={"reason": "authentication required"})
            continue
        if ch.user and not private:
            continue
        if not sim.channel_exists(ch):
            continue
        parsed.append(ch)
    for ch in parsed:
        if sim.add_subscription(s, ch) or ch.name in s.subscriptions:
            accepted.append(ch.name)
    return accepted


@method("public/subscribe", P("channels", "list", True), ws_only=True)
def _public_subscribe(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _subscribe(sim, s, p, private=False)


@method("private/subscribe", P("channels", "list", True), P("label", "str"), ws_only=True)
def _private_subscribe(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _subscribe(sim, s, p, private=True)


def _unsubscribe(sim: Simulator, s: Session, p: dict[str, Any]) -> list[str]:
    removed = []
    for name in p["channels"]:
        if isinstance(name, str) and name in s.subscriptions:
            sim.remove_subscription(s, name)
            removed.append(name)
    return removed


@method("public/unsubscribe", P("channels", "list", True), ws_only=True)
def _public_unsubscribe(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _unsubscribe(sim, s, p)


@method("private/unsubscribe", P("channels", "list", True), ws_only=True)
def _private_unsubscribe(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _unsubscribe(sim, s, p)


@method("public/unsubscribe_all", ws_only=True)
def _public_unsubscribe_all(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    for name in list(s.subscriptions):
        sim.remove_subscription(s, name)
    return "ok"


@method("private/unsubscribe_all", ws_only=True)
def _private_unsubscribe_all(sim: Simulator, s: Session, p: dict[str, Any]) -> Any:
    return _public_unsubscribe_all(sim, s, p)
