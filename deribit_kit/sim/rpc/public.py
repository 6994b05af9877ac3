"""Public market-data and reference methods of the embedded exchange: currencies, instruments,
index prices, books, tickers, summaries, trades, funding, candles. Each handler takes the calling
connection's :class:`~.context.Context` and checked params and returns the ``result`` or raises
Deribit's error; the data comes from the exchange's market (:mod:`deribit_kit.sim.exchange.market`).
"""

from __future__ import annotations

from typing import Any

from ...errors import error_for_code, invalid_params
from ...wire.enums import BOOK_DEPTHS, KINDS, SORTING
from ...wire.rpcserver import MethodTable, P, not_found
from ..exchange.candles import RESOLUTIONS
from ..exchange.instruments import CURRENCIES
from .context import Context

METHODS = MethodTable()
CURRENCY_ENUM = ("BTC", "ETH", "USDC", "USDT", "EURR", "SOL")


@METHODS.method("public/get_currencies")
def _get_currencies(cx: Context, p: dict[str, Any]) -> Any:
    return [dict(c) for c in CURRENCIES]


@METHODS.method("public/get_instruments", P("currency", "str", default="any"), P("kind", "str", enum=KINDS),
                P("expired", "bool", default=False))
def _get_instruments(cx: Context, p: dict[str, Any]) -> Any:
    # unlisted coins (SOL for inverse, say) answer an empty list, as cryptofeed expects
    return [i.info for i in cx.market.find(p["currency"], p.get("kind"), p["expired"])]


@METHODS.method("public/get_instrument", P("instrument_name", "str", True))
def _get_instrument(cx: Context, p: dict[str, Any]) -> Any:
    name = p["instrument_name"]
    inst = cx.market.get(name) or cx.market.expired.get(name)
    if inst is None:
        raise not_found()
    return inst.info


@METHODS.method("public/get_contract_size", P("instrument_name", "str", True))
def _get_contract_size(cx: Context, p: dict[str, Any]) -> Any:
    return {"contract_size": cx.exchange.instrument(p["instrument_name"]).info["contract_size"]}


@METHODS.method("public/get_index_price_names", P("extended", "bool", default=False))
def _get_index_price_names(cx: Context, p: dict[str, Any]) -> Any:
    names = cx.market.index_names()
    if p["extended"]:
        return [{"name": n, "future_combo_creation_enabled": False, "option_combo_creation_enabled": False}
                for n in names]
    return names


@METHODS.method("public/get_index_price", P("index_name", "str", True))
def _get_index_price(cx: Context, p: dict[str, Any]) -> Any:
    name = p["index_name"]
    if name not in cx.market.index_names():
        raise invalid_params("index_name", "unknown index name")
    price = round(cx.market.index_price(name) or 0.0, 4)
    return {"index_price": price, "estimated_delivery_price": price}


# ---------------------------------------------------------------- market data


@METHODS.method("public/get_order_book", P("instrument_name", "str", True),
                P("depth", "int", enum=BOOK_DEPTHS))
def _get_order_book(cx: Context, p: dict[str, Any]) -> Any:
    return cx.market.order_book(cx.exchange.instrument(p["instrument_name"]), p.get("depth"))


@METHODS.method("public/ticker", P("instrument_name", "str", True))
def _ticker(cx: Context, p: dict[str, Any]) -> Any:
    return cx.market.ticker(cx.exchange.instrument(p["instrument_name"]))


@METHODS.method("public/get_book_summary_by_currency", P("currency", "str", True, CURRENCY_ENUM),
                P("kind", "str", enum=KINDS))
def _book_summary_by_currency(cx: Context, p: dict[str, Any]) -> Any:
    return [cx.market.book_summary(i) for i in cx.market.find(p["currency"], p.get("kind"))]


@METHODS.method("public/get_book_summary_by_instrument", P("instrument_name", "str", True))
def _book_summary_by_instrument(cx: Context, p: dict[str, Any]) -> Any:
    return [cx.market.book_summary(cx.exchange.instrument(p["instrument_name"]))]


_TRADE_PARAMS = (P("start_seq", "int"), P("end_seq", "int"), P("start_timestamp", "int"),
                 P("end_timestamp", "int"), P("count", "int", default=10),
                 P("sorting", "str", enum=SORTING, default="default"),
                 P("include_old", "bool"))


def trades_page(trades: list[dict[str, Any]], p: dict[str, Any], seq_key: str = "trade_seq") -> dict[str, Any]:
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


@METHODS.method("public/get_last_trades_by_instrument", P("instrument_name", "str", True), *_TRADE_PARAMS)
def _last_trades(cx: Context, p: dict[str, Any]) -> Any:
    return trades_page(list(cx.exchange.instrument(p["instrument_name"]).trades), p)


@METHODS.method("public/get_last_trades_by_instrument_and_time", P("instrument_name", "str", True),
                P("start_timestamp", "int", True), P("end_timestamp", "int", True), P("count", "int", default=10),
                P("sorting", "str", enum=SORTING, default="default"), P("include_old", "bool"))
def _last_trades_time(cx: Context, p: dict[str, Any]) -> Any:
    return trades_page(list(cx.exchange.instrument(p["instrument_name"]).trades), p)


@METHODS.method("public/get_tradingview_chart_data", P("instrument_name", "str", True),
                P("start_timestamp", "int", True), P("end_timestamp", "int", True),
                P("resolution", "str", True, RESOLUTIONS))
def _chart_data(cx: Context, p: dict[str, Any]) -> Any:
    """Candles built from the exchange's own trades (:mod:`.candles`)."""
    inst = cx.exchange.instrument(p["instrument_name"])
    return cx.market.candles.chart_data(inst.name, p["resolution"], p["start_timestamp"],
                                         p["end_timestamp"], cx.exchange.now_ms())


def _trade_id_key(trade_id: str) -> int:
    """Order of a trade id: ``"300000123"`` or ``"ETH-15"`` -> its number."""
    return int(trade_id.rsplit("-", 1)[-1])


@METHODS.method("public/get_last_trades_by_currency", P("currency", "str", True, CURRENCY_ENUM),
                P("kind", "str", enum=(*KINDS, "combo", "any")), P("start_id", "str"), P("end_id", "str"),
                *(q for q in _TRADE_PARAMS if q.name not in ("start_seq", "end_seq")))
def _last_trades_currency(cx: Context, p: dict[str, Any]) -> Any:
    # Deribit pages this one by trade id (``start_id``/``end_id``), not by per-instrument ``trade_seq``
    kind = p.get("kind")
    insts = cx.market.find(p["currency"], None if kind in (None, "any", "combo") else kind)
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
    return trades_page(trades, p)


@METHODS.method("public/get_funding_rate_value", P("instrument_name", "str", True), P("start_timestamp", "int", True),
                P("end_timestamp", "int", True))
def _funding_rate_value(cx: Context, p: dict[str, Any]) -> Any:
    inst = cx.exchange.instrument(p["instrument_name"])
    if not inst.perpetual:
        raise error_for_code(10031, data={"param": "instrument_name", "reason": "not a perpetual"})
    return round(cx.market.premium[inst.coin] / 3, 8)


