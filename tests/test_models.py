"""Tests for deribit_kit.models: parsing realistic payloads, properties, frames, and Deribit's names."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest

from deribit_kit.errors import ProtocolError
from deribit_kit.models import (
    AccountSummary,
    AuthResult,
    BookStats,
    BookSummary,
    Candle,
    ChartData,
    Currency,
    FrameList,
    Greeks,
    IndexPrice,
    Instrument,
    Model,
    Order,
    OrderBookSnapshot,
    OrderResult,
    Position,
    PublicTrade,
    Ticker,
    TickSizeStep,
    TradesPage,
    UserTrade,
    UserTradesPage,
    WithdrawalPriority,
    convert,
    convert_list,
    decode,
    from_ms,
)

# --------------------------------------------------------------------------------------------
# payloads (shapes and values from Deribit's documentation examples, deribit-api.md §4, §6, §7)

PERPETUAL: dict[str, Any] = {
    "tick_size": 0.5,
    "tick_size_steps": [],
    "taker_commission": 0.0005,
    "settlement_period": "perpetual",
    "settlement_currency": "BTC",
    "quote_currency": "USD",
    "price_index": "btc_usd",
    "min_trade_amount": 10,
    "max_liquidation_commission": 0.0075,
    "max_leverage": 50,
    "maker_commission": 0,
    "kind": "future",
    "is_active": True,
    "instrument_name": "BTC-PERPETUAL",
    "instrument_id": 124972,
    "instrument_type": "reversed",
    "expiration_timestamp": 32503708800000,
    "creation_timestamp": 1534167754000,
    "counter_currency": "USD",
    "contract_size": 10,
    "block_trade_tick_size": 0.01,
    "block_trade_min_trade_amount": 200000,
    "block_trade_commission": 0.00025,
    "base_currency": "BTC",
    "rfq": False,
}

OPTION: dict[str, Any] = {
    "tick_size": 0.0001,
    "tick_size_steps": [{"above_price": 0.005, "tick_size": 0.0005}],
    "taker_commission": 0.0003,
    "strike": 60000.0,
    "settlement_period": "month",
    "settlement_currency": "BTC",
    "quote_currency": "BTC",
    "price_index": "btc_usd",
    "option_type": "call",
    "min_trade_amount": 0.1,
    "maker_commission": 0.0003,
    "kind": "option",
    "is_active": True,
    "instrument_name": "BTC-27DEC24-60000-C",
    "instrument_id": 364671,
    "instrument_type": "reversed",
    "expiration_timestamp": 1735286400000,
    "creation_timestamp": 1711699205000,
    "counter_currency": "USD",
    "contract_size": 1.0,
    "block_trade_tick_size": 0.0001,
    "block_trade_min_trade_amount": 25,
    "block_trade_commission": 0.0003,
    "base_currency": "BTC",
    "rfq": False,
}

LINEAR_PERP: dict[str, Any] = {
    **PERPETUAL,
    "instrument_name": "BTC_USDC-PERPETUAL",
    "instrument_id": 210838,
    "quote_currency": "USDC",
    "settlement_currency": "USDC",
    "counter_currency": "USDC",
    "price_index": "btc_usdc",
    "instrument_type": "linear",
    "min_trade_amount": 0.001,
    "contract_size": 0.001,
    "tick_size": 1,
}

SPOT: dict[str, Any] = {
    "tick_size": 1,
    "tick_size_steps": [],
    "taker_commission": 0,
    "quote_currency": "USDC",
    "price_index": "btc_usdc",
    "min_trade_amount": 0.0001,
    "maker_commission": 0,
    "kind": "spot",
    "is_active": True,
    "instrument_name": "BTC_USDC",
    "instrument_id": 221,
    "instrument_type": "linear",
    "expiration_timestamp": 32503708800000,
    "creation_timestamp": 1682002800000,
    "counter_currency": "USDC",
    "contract_size": 0.0001,
    "base_currency": "BTC",
    "rfq": False,
}

CURRENCY: dict[str, Any] = {
    "withdrawal_priorities": [{"value": 0.15, "name": "very_low"}, {"value": 1.5, "name": "very_high"}],
    "withdrawal_fee": 0.0001,
    "min_withdrawal_fee": 0.0001,
    "min_confirmations": 1,
    "in_cross_collateral_pool": True,
    "fee_precision": 4,
    "currency_long": "Bitcoin",
    "currency": "BTC",
    "coin_type": "BTC",
}

TICKER_PERP: dict[str, Any] = {
    "timestamp": 1623060194301,
    "stats": {
        "volume_usd": 1508577920.0,
        "volume": 19833.27826924,
        "price_change": -1.5391,
        "low": 74520.5,
        "high": 77580.0,
    },
    "state": "open",
    "settlement_price": 75814.16,
    "open_interest": 1093154980,
    "min_price": 74912.84,
    "max_price": 77195.55,
    "mark_price": 76054.22,
    "last_price": 76054.5,
    "interest_value": 0.0021963611913002,
    "instrument_name": "BTC-PERPETUAL",
    "index_price": 76032.58,
    "funding_8h": 0.00003147,
    "estimated_delivery_price": 76032.58,
    "current_funding": 0.0,
    "best_bid_price": 76054.0,
    "best_bid_amount": 41850.0,
    "best_ask_price": 76054.5,
    "best_ask_amount": 177990.0,
}

TICKER_OPTION: dict[str, Any] = {
    "underlying_price": 76102.35,
    "underlying_index": "BTC-27DEC24",
    "timestamp": 1623060194301,
    "stats": {"volume": 251.3, "price_change": 4.5455, "low": 0.0215, "high": 0.0245},
    "state": "open",
    "settlement_price": 0.0225,
    "open_interest": 2214.6,
    "min_price": 0.0095,
    "max_price": 0.0535,
    "mark_price": 0.0231,
    "mark_iv": 52.31,
    "last_price": 0.023,
    "interest_rate": 0.0,
    "instrument_name": "BTC-27DEC24-60000-C",
    "index_price": 76032.58,
    "greeks": {"vega": 20.46, "theta": -45.37, "rho": 8.74, "gamma": 0.00002, "delta": 0.91893},
    "estimated_delivery_price": 76032.58,
    "bid_iv": 51.2,
    "best_bid_price": 0.0229,
    "best_bid_amount": 12.5,
    "best_ask_price": 0.0234,
    "best_ask_amount": 7.2,
    "ask_iv": 53.4,
}

ORDER_BOOK: dict[str, Any] = {
    "timestamp": 1550757626706,
    "stats": {"volume": 93.35589552, "price_change": 0.6913, "low": 3940.75, "high": 3976.25},
    "state": "open",
    "settlement_price": 3925.85,
    "open_interest": 45.27600333464605,
    "min_price": 3932.22,
    "max_price": 3971.74,
    "mark_price": 3931.97,
    "last_price": 3955.75,
    "instrument_name": "BTC-PERPETUAL",
    "index_price": 3910.46,
    "funding_8h": 0.00455263,
    "current_funding": 0.00500063,
    "change_id": 474988,
    "bids": [[3955.75, 30.0], [3940.75, 102020.0], [3423.0, 42840.0]],
    "best_bid_price": 3955.75,
    "best_bid_amount": 30.0,
    "best_ask_price": 0,
    "best_ask_amount": 0,
    "asks": [],
}

PUBLIC_TRADES: dict[str, Any] = {
    "trades": [
        {
            "trade_seq": 30289432,
            "trade_id": "48079254",
            "timestamp": 1590484156350,
            "tick_direction": 0,
            "price": 8950.0,
            "mark_price": 8948.9,
            "instrument_name": "BTC-PERPETUAL",
            "index_price": 8955.88,
            "direction": "sell",
            "amount": 10.0,
            "contracts": 1.0,
        },
        {
            "trade_seq": 30289433,
            "trade_id": "48079255",
            "timestamp": 1590484156350,
            "tick_direction": 1,
            "price": 8950.0,
            "mark_price": 8948.9,
            "instrument_name": "BTC-PERPETUAL",
            "index_price": 8955.88,
            "direction": "sell",
            "amount": 20.0,
            "liquidation": "T",
        },
    ],
    "has_more": True,
}

BOOK_SUMMARY: dict[str, Any] = {
    "volume_usd": 0,
    "volume": 0.0,
    "quote_currency": "USD",
    "price_change": -11.1896349,
    "open_interest": 0.0,
    "mid_price": None,
    "mark_price": 3579.73,
    "low": None,
    "last": 4.0,
    "instrument_name": "BTC-22FEB19",
    "high": None,
    "estimated_delivery_price": 3579.73,
    "creation_timestamp": 1550230036440,
    "bid_price": None,
    "base_currency": "BTC",
    "ask_price": None,
}

ORDER_FILLED: dict[str, Any] = {
    "web": False,
    "time_in_force": "good_til_cancelled",
    "replaced": False,
    "reduce_only": False,
    "profit_loss": 0.00022929,
    "price": 207.3,
    "post_only": False,
    "order_type": "market",
    "order_state": "filled",
    "order_id": "ETH-584849853",
    "max_show": 40,
    "last_update_timestamp": 1590483938456,
    "label": "market0000234",
    "is_liquidation": False,
    "instrument_name": "ETH-PERPETUAL",
    "filled_amount": 40,
    "direction": "buy",
    "creation_timestamp": 1590483938456,
    "commission": 0.00014757,
    "average_price": 203.3,
    "api": True,
    "amount": 40,
}

USER_TRADE: dict[str, Any] = {
    "trade_seq": 1966056,
    "trade_id": "ETH-2696083",
    "timestamp": 1590483938456,
    "tick_direction": 0,
    "state": "filled",
    "reduce_only": False,
    "price": 203.3,
    "post_only": False,
    "order_type": "market",
    "order_id": "ETH-584849853",
    "matching_id": None,
    "mark_price": 203.28,
    "liquidity": "T",
    "label": "market0000234",
    "instrument_name": "ETH-PERPETUAL",
    "index_price": 203.33,
    "fee_currency": "ETH",
    "fee": 0.00014757,
    "direction": "buy",
    "amount": 40,
    "self_trade": False,
}

BUY_RESULT: dict[str, Any] = {"trades": [USER_TRADE], "order": ORDER_FILLED}

OPEN_LIMIT_ORDER: dict[str, Any] = {
    "web": True,
    "triggered": False,
    "trigger": "last_price",
    "time_in_force": "good_til_cancelled",
    "risk_reducing": False,
    "replaced": False,
    "reject_post_only": False,
    "reduce_only": False,
    "price": 70000.0,
    "post_only": True,
    "order_type": "limit",
    "order_state": "open",
    "order_id": "46094375191",
    "mobile": False,
    "last_update_timestamp": 1723459200123,
    "label": "dk-1",
    "is_rebalance": False,
    "is_liquidation": False,
    "instrument_name": "BTC-PERPETUAL",
    "filled_amount": 30.0,
    "direction": "buy",
    "creation_timestamp": 1723459200000,
    "average_price": 70000.0,
    "api": True,
    "amount": 100.0,
    "contracts": 10.0,
}

POSITION: dict[str, Any] = {
    "average_price": 0,
    "delta": 0,
    "direction": "buy",
    "estimated_liquidation_price": 0,
    "floating_profit_loss": 0,
    "index_price": 3555.86,
    "initial_margin": 0,
    "instrument_name": "BTC-PERPETUAL",
    "interest_value": 1.7362511643080387,
    "kind": "future",
    "leverage": 100,
    "maintenance_margin": 0,
    "mark_price": 3556.62,
    "open_orders_margin": 0.000165889,
    "realized_profit_loss": 0,
    "settlement_price": 3555.44,
    "size": 0,
    "size_currency": 0,
    "total_profit_loss": 0,
}

SHORT_OPTION_POSITION: dict[str, Any] = {
    "vega": -2.3,
    "total_profit_loss": 0.0012,
    "theta": 1.7,
    "size": -2.5,
    "settlement_price": 0.0225,
    "realized_profit_loss": 0,
    "mark_price": 0.0231,
    "maintenance_margin": 0.28,
    "kind": "option",
    "instrument_name": "BTC-27DEC24-60000-C",
    "initial_margin": 0.35,
    "index_price": 76032.58,
    "gamma": -0.00005,
    "floating_profit_loss": 0.0012,
    "floating_profit_loss_usd": 91.2,
    "direction": "sell",
    "delta": -2.297,
    "average_price_usd": 1850.0,
    "average_price": 0.0236,
}

ACCOUNT_SUMMARY: dict[str, Any] = {
    "total_pl": 0.00000425,
    "session_upl": 0.05271038,
    "session_rpl": -0.00013786,
    "projected_maintenance_margin": 0.0016,
    "projected_initial_margin": 0.0032,
    "projected_delta_total": 0.0,
    "portfolio_margining_enabled": False,
    "options_vega_map": {},
    "options_vega": 0,
    "options_value": 0,
    "options_theta_map": {},
    "options_theta": 0,
    "options_session_upl": 0,
    "options_session_rpl": 0,
    "options_pl": 0,
    "options_gamma_map": {},
    "options_gamma": 0,
    "options_delta": 0,
    "margin_balance": 302.62729214,
    "maintenance_margin": 1.01830928,
    "limits": {
        "non_matching_engine": {"rate": 20, "burst": 100},
        "matching_engine": {"trading": {"total": {"rate": 5, "burst": 20}}},
    },
    "initial_margin": 1.24564917,
    "futures_session_upl": 0.05271038,
    "futures_session_rpl": -0.00013786,
    "futures_pl": 0.00000425,
    "fee_balance": 0,
    "estimated_liquidation_ratio_map": {},
    "estimated_liquidation_ratio": 0.01,
    "equity": 302.61869214,
    "delta_total_map": {"btc_usd": 31.59405153},
    "delta_total": 31.602149,
    "currency": "BTC",
    "cross_collateral_enabled": False,
    "balance": 302.60065765,
    "available_withdrawal_funds": 301.38059622,
    "available_funds": 301.38059622,
    "additional_reserve": 0,
    "margin_model": "segregated_sm",
    "spot_reserve": 0,
}

AUTH: dict[str, Any] = {
    "access_token": "1582628593469.1MbQ-J_4.CBP-OqOwm_FBdMYj4cRK2dMXyHPfBtXGpzLxhWg31nHu3H_Q60FpE5_vqU",
    "expires_in": 31536000,
    "refresh_token": "1582628593469.1GP4rQd0.A9Wa78o5kFRIUP49mScaD1CqHgiK50HOl2VA6kCtWa8_",
    "scope": "connection mainaccount trade:read_write",
    "token_type": "bearer",
    "enabled_features": [],
}


# --------------------------------------------------------------------------------------------
# reference data


def test_currency() -> None:
    cur = convert(CURRENCY, Currency)
    assert cur.currency == "BTC"
    assert cur.currency_long == "Bitcoin"
    assert cur.withdrawal_priorities[1] == WithdrawalPriority(name="very_high", value=1.5)
    assert cur.apr is None
    frame = convert_list([CURRENCY, {**CURRENCY, "currency": "ETH"}], Currency).to_frame()
    assert list(frame["currency"]) == ["BTC", "ETH"]


def test_instrument_perpetual() -> None:
    inst = convert(PERPETUAL, Instrument)
    assert inst.instrument_name == "BTC-PERPETUAL"
    assert inst.contract_size == 10.0
    assert isinstance(inst.contract_size, float)
    assert inst.tick_size_steps == []
    assert inst.price_index == "btc_usd"
    assert inst.is_perpetual and inst.is_future and inst.is_inverse
    assert not (inst.is_option or inst.is_spot or inst.is_linear or inst.is_combo)
    assert inst.expiry is None
    assert inst.created == datetime(2018, 8, 13, 13, 42, 34, tzinfo=UTC)
    assert inst.strike is None and inst.option_type is None


def test_instrument_option() -> None:
    inst = convert(OPTION, Instrument)
    assert inst.is_option and not inst.is_perpetual and not inst.is_linear
    assert inst.strike == 60000.0 and inst.option_type == "call"
    assert inst.expiry == datetime(2024, 12, 27, 8, 0, tzinfo=UTC)
    assert inst.tick_size_steps == [TickSizeStep(above_price=0.005, tick_size=0.0005)]
    assert inst.tick_size_at(0.001) == 0.0001
    assert inst.tick_size_at(0.005) == 0.0005
    assert inst.tick_size_at(0.02) == 0.0005


def test_instrument_linear_and_spot() -> None:
    linear = convert(LINEAR_PERP, Instrument)
    assert linear.is_linear and linear.is_perpetual
    spot = convert(SPOT, Instrument)
    assert spot.is_spot and spot.is_linear and not spot.is_perpetual
    assert spot.settlement_period is None and spot.settlement_currency is None
    assert spot.expiry is None
    # without instrument_type, linearity follows the settlement (or quote) currency
    bare_linear = {k: v for k, v in LINEAR_PERP.items() if k != "instrument_type"}
    assert convert(bare_linear, Instrument).is_linear
    bare_inverse = {k: v for k, v in PERPETUAL.items() if k != "instrument_type"}
    assert not convert(bare_inverse, Instrument).is_linear
    combo = {**PERPETUAL, "kind": "future_combo", "instrument_name": "BTC-FS-29APR22_PERP"}
    combo.pop("settlement_period")
    assert convert(combo, Instrument).is_combo


def test_instruments_frame() -> None:
    instruments = convert_list([PERPETUAL, OPTION, SPOT], Instrument)
    assert isinstance(instruments, FrameList)
    assert isinstance(instruments, list)
    assert instruments[1].instrument_name == "BTC-27DEC24-60000-C"
    frame = instruments.to_frame()
    assert frame.shape[0] == 3
    assert {"instrument_name", "strike", "tick_size_steps", "expiration_timestamp", "expiry", "created"} <= set(
        frame.columns
    )
    assert isinstance(frame["expiry"].dtype, pd.DatetimeTZDtype)
    assert frame["expiry"].isna().tolist() == [True, False, True]  # perpetual, option, spot
    assert frame.loc[1, "expiry"] == pd.Timestamp("2024-12-27T08:00:00Z")
    assert frame.loc[1, "tick_size_steps"] == [{"above_price": 0.005, "tick_size": 0.0005}]
    html = instruments._repr_html_()
    assert "BTC-27DEC24-60000-C" in html and "3 items" in html


def test_empty_framelist_has_columns() -> None:
    frame = FrameList([], item_type=Ticker).to_frame()
    assert frame.shape == (0, len(frame.columns))
    assert {"instrument_name", "stats.high", "greeks.delta", "time"} <= set(frame.columns)
    assert "stats" not in frame.columns and "greeks" not in frame.columns
    assert FrameList().to_frame().empty


def test_framelist_repr_html_shows_first_20() -> None:
    trades = [{**PUBLIC_TRADES["trades"][0], "trade_id": str(i)} for i in range(25)]
    listed = convert_list(trades, PublicTrade)
    html = listed._repr_html_()
    assert "25 items, first 20 shown" in html
    assert html.count("<tr") == 21  # header + 20 rows


# --------------------------------------------------------------------------------------------
# market data


def test_ticker_perpetual() -> None:
    t = convert(TICKER_PERP, Ticker)
    assert t.instrument_name == "BTC-PERPETUAL"
    assert t.stats == BookStats(
        volume_usd=1508577920.0, volume=19833.27826924, price_change=-1.5391, low=74520.5, high=77580.0
    )
    assert t.greeks is None
    assert t.funding_8h == 0.00003147 and t.interest_value == 0.0021963611913002
    assert t.mid == pytest.approx(76054.25)
    assert t.spread == pytest.approx(0.5)
    assert t.time == datetime(2021, 6, 7, 10, 3, 14, 301000, tzinfo=UTC)


def test_ticker_option_and_empty_side() -> None:
    t = convert(TICKER_OPTION, Ticker)
    assert t.greeks == Greeks(vega=20.46, theta=-45.37, rho=8.74, gamma=0.00002, delta=0.91893)
    assert t.mark_iv == 52.31 and t.underlying_index == "BTC-27DEC24"
    assert t.stats is not None and t.stats.volume_usd is None  # absent, as for spot
    empty = convert({**TICKER_PERP, "best_ask_price": None, "best_ask_amount": 0}, Ticker)
    assert empty.mid is None and empty.spread is None


def test_tickers_frame_flattens_nested() -> None:
    frame = FrameList([convert(TICKER_PERP, Ticker), convert(TICKER_OPTION, Ticker)]).to_frame()
    assert frame.shape[0] == 2
    for col in ("stats.high", "stats.volume_usd", "greeks.delta", "greeks.vega", "time"):
        assert col in frame.columns
    assert frame["greeks.delta"].isna().tolist() == [True, False]
    assert frame.loc[1, "greeks.delta"] == 0.91893
    assert frame.loc[0, "stats.high"] == 77580.0


def test_order_book_snapshot() -> None:
    book = convert(ORDER_BOOK, OrderBookSnapshot)
    assert book.change_id == 474988
    assert book.bids[0] == (3955.75, 30.0)
    assert book.asks == []
    assert book.mid is None  # best_ask_price 0: empty side
    frame = book.to_frame()
    assert list(frame.columns) == ["side", "price", "amount", "cumulative"]
    assert frame.shape == (3, 4)
    assert list(frame["cumulative"]) == [30.0, 102050.0, 144890.0]
    two_sided = convert({**ORDER_BOOK, "asks": [[3956.0, 5.0], [3957.0, 7.0]]}, OrderBookSnapshot)
    frame = two_sided.to_frame()
    assert list(frame["side"]) == ["bid"] * 3 + ["ask"] * 2
    assert list(frame[frame.side == "ask"]["cumulative"]) == [5.0, 12.0]


def test_index_price() -> None:
    idx = convert({"index_price": 11628.81, "estimated_delivery_price": 11628.81}, IndexPrice)
    assert idx.index_price == 11628.81 and idx.estimated_delivery_price == 11628.81


def test_trades_page() -> None:
    page = convert(PUBLIC_TRADES, TradesPage)
    assert page.has_more is True
    assert [t.trade_id for t in page.trades] == ["48079254", "48079255"]
    assert page.trades[1].liquidation == "T"
    assert page.trades[0].time == datetime(2020, 5, 26, 9, 9, 16, 350000, tzinfo=UTC)
    frame = page.to_frame()
    assert frame.shape[0] == 2 and {"trade_id", "price", "amount", "time"} <= set(frame.columns)


def test_book_summary() -> None:
    items = convert_list([BOOK_SUMMARY], BookSummary)
    s = items[0]
    assert s.instrument_name == "BTC-22FEB19" and s.mid_price is None and s.last == 4.0
    assert items.to_frame().shape == (1, len(msgspec.structs.fields(BookSummary)))


# --------------------------------------------------------------------------------------------
# trading


def test_order_result() -> None:
    result = convert(BUY_RESULT, OrderResult)
    order = result.order
    assert order.order_id == "ETH-584849853"
    assert order.price == 207.3 and order.limit_price == 207.3
    assert order.commission == 0.00014757 and order.max_show == 40 and order.profit_loss == 0.00022929
    assert not order.is_open
    assert order.remaining == 0
    trade = result.trades[0]
    assert trade.fee == 0.00014757 and trade.liquidity == "T" and trade.matching_id is None
    assert trade.self_trade is False
    assert result.filled_amount == 40


def test_order_market_price_and_open() -> None:
    market = convert({**ORDER_FILLED, "price": "market_price"}, Order)
    assert market.price == "market_price"
    assert market.limit_price is None
    order = convert(OPEN_LIMIT_ORDER, Order)
    assert order.is_open and order.remaining == 70.0
    assert order.label == "dk-1" and order.post_only is True
    assert convert({**OPEN_LIMIT_ORDER, "order_state": "untriggered"}, Order).is_open
    assert not convert({**OPEN_LIMIT_ORDER, "order_state": "cancelled"}, Order).is_open
    # a number sent as a string is accepted (strict=False); the price stays readable
    assert convert({**OPEN_LIMIT_ORDER, "price": "70000.5"}, Order).limit_price == 70000.5
    assert convert({**OPEN_LIMIT_ORDER, "amount": "100"}, Order).amount == 100.0


def test_orders_frame() -> None:
    frame = convert_list([OPEN_LIMIT_ORDER, ORDER_FILLED], Order).to_frame()
    assert frame.shape[0] == 2
    assert {"order_id", "price", "order_state", "created", "updated"} <= set(frame.columns)
    assert frame.loc[0, "created"] == pd.Timestamp(1723459200000, unit="ms", tz="UTC")


def test_user_trades_page() -> None:
    page = convert({"trades": [USER_TRADE], "has_more": False}, UserTradesPage)
    assert page.trades[0].order_id == "ETH-584849853"
    assert page.to_frame().shape[0] == 1
    # get_user_trades_by_order returns a plain array
    trades = convert_list([USER_TRADE, USER_TRADE], UserTrade)
    assert len(trades) == 2 and trades.to_frame()["fee_currency"].tolist() == ["ETH", "ETH"]


# --------------------------------------------------------------------------------------------
# account


def test_positions() -> None:
    positions = convert_list([POSITION, SHORT_OPTION_POSITION], Position)
    flat, short = positions
    assert flat.is_flat and flat.leverage == 100 and flat.estimated_liquidation_price == 0
    assert not short.is_flat and short.size == -2.5 and short.direction == "sell"
    assert short.leverage is None
    frame = positions.to_frame()
    assert frame.shape == (2, len(msgspec.structs.fields(Position)))
    assert convert({**POSITION, "direction": "zero", "size": 0}, Position).is_flat


def test_account_summary() -> None:
    acct = convert(ACCOUNT_SUMMARY, AccountSummary)
    assert acct.currency == "BTC" and acct.equity == 302.61869214
    assert acct.limits["non_matching_engine"] == {"rate": 20, "burst": 100}
    assert acct.delta_total_map == {"btc_usd": 31.59405153}
    assert acct.options_vega_map == {}
    assert acct.email is None and acct.type is None
    extended = convert({**ACCOUNT_SUMMARY, "type": "main", "id": 7, "username": "me"}, AccountSummary)
    assert extended.type == "main" and extended.id == 7
    frame = FrameList([acct]).to_frame()
    assert frame.shape[0] == 1 and "limits" in frame.columns


def test_auth_result_hides_tokens() -> None:
    auth = convert(AUTH, AuthResult)
    assert auth.token_type == "bearer" and auth.expires_in == 31536000
    assert auth.scopes == ["connection", "mainaccount", "trade:read_write"]
    assert auth.enabled_features == []
    assert AUTH["access_token"] not in repr(auth)
    assert AUTH["refresh_token"] not in auth._repr_html_()


# --------------------------------------------------------------------------------------------
# helpers


def test_to_dict_and_repr_html() -> None:
    t = convert(TICKER_OPTION, Ticker)
    d = t.to_dict()
    assert d["greeks"]["delta"] == 0.91893
    assert d["current_funding"] is None
    assert "current_funding" not in t.to_dict(drop_none=True)
    assert "volume_usd" not in t.to_dict(drop_none=True)["stats"]
    # round trip
    assert convert(t.to_dict(), Ticker) == t
    html = t._repr_html_()
    assert "<table>" in html and "greeks.delta" in html and "0.91893" in html
    assert "current_funding" not in html  # None fields are left out
    book = convert(ORDER_BOOK, OrderBookSnapshot)
    assert convert(book.to_dict(), OrderBookSnapshot) == book


def test_decode_bytes_and_objects() -> None:
    raw = json.dumps(TICKER_PERP).encode()
    assert decode(raw, Ticker) == convert(TICKER_PERP, Ticker)
    assert decode(raw.decode(), Ticker).instrument_name == "BTC-PERPETUAL"
    assert decode(TICKER_PERP, Ticker).mark_price == 76054.22
    listed = decode(json.dumps([PERPETUAL, OPTION]).encode(), list[Instrument])
    assert [i.instrument_name for i in listed] == ["BTC-PERPETUAL", "BTC-27DEC24-60000-C"]


def test_protocol_error_on_wrong_types() -> None:
    with pytest.raises(ProtocolError, match=r"Instrument.*tick_size"):
        convert({**PERPETUAL, "tick_size": "half"}, Instrument)
    with pytest.raises(ProtocolError, match=r"instrument_name"):
        convert({k: v for k, v in TICKER_PERP.items() if k != "instrument_name"}, Ticker)
    with pytest.raises(ProtocolError, match=r"Order"):
        convert({**ORDER_FILLED, "order_id": ["x"]}, Order)
    with pytest.raises(ProtocolError, match=r"bids"):
        convert({**ORDER_BOOK, "bids": [["new", 1.0, 2.0]]}, OrderBookSnapshot)
    with pytest.raises(ProtocolError):
        convert_list({"not": "a list"}, Position)
    with pytest.raises(ProtocolError, match="malformed JSON"):
        decode(b'{"index_price": ', IndexPrice)
    with pytest.raises(ProtocolError, match="IndexPrice"):
        decode(b'{"index_price": "x"}', IndexPrice)


def test_from_ms() -> None:
    assert from_ms(None) is None
    assert from_ms(32503708800000) is None
    assert from_ms(0) == datetime(1970, 1, 1, tzinfo=UTC)


def test_unknown_fields_ignored() -> None:
    inst = convert({**PERPETUAL, "brand_new_field": {"x": 1}}, Instrument)
    assert not hasattr(inst, "brand_new_field")


# --------------------------------------------------------------------------------------------
# Deribit's own API description: our field names are Deribit's

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "deribit" / "deribit_api_v2.json"


@cache
def _spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.skip(f"Deribit API description not found at {SPEC_PATH} (CI provides ../shared/deribit)")
    data: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return data


def _ptr(ref: str) -> Any:
    node: Any = _spec()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _resolve(schema: Any) -> dict[str, Any]:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = _ptr(schema["$ref"])
    assert isinstance(schema, dict)
    return schema


def _props(schema: Any) -> dict[str, dict[str, Any]]:
    """Properties of an object schema (through $ref, allOf/oneOf/anyOf and array items)."""
    schema = _resolve(schema)
    out: dict[str, dict[str, Any]] = {}
    for sub in schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", []):
        out.update(_props(sub))
    for name, prop in schema.get("properties", {}).items():
        out[name] = _resolve(prop)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        out.update(_props(schema["items"]))
    return out


def _result(path: str) -> dict[str, Any]:
    """The ``result`` schema of a method (array results: the item schema)."""
    response = _spec()["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    result = _resolve(_props(response)["result"])
    if result.get("type") == "array":
        return _resolve(result["items"])
    return result


def _at(schema: dict[str, Any], *names: str) -> dict[str, Any]:
    """A nested property's schema (array properties: the item schema)."""
    for name in names:
        schema = _props(schema)[name]
        if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
            schema = _resolve(schema["items"])
    return schema


def _merged(*schemas: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for s in schemas:
        props.update(_props(s))
    return {"type": "object", "properties": props}


# model -> the spec schema(s) it parses
SCHEMAS: dict[type[Model], typing.Callable[[], dict[str, Any]]] = {
    Currency: lambda: _result("/public/get_currencies"),
    WithdrawalPriority: lambda: _at(_result("/public/get_currencies"), "withdrawal_priorities"),
    Instrument: lambda: _result("/public/get_instrument"),
    TickSizeStep: lambda: _at(_result("/public/get_instrument"), "tick_size_steps"),
    Ticker: lambda: _result("/public/ticker"),
    Greeks: lambda: _at(_result("/public/ticker"), "greeks"),
    BookStats: lambda: _at(_result("/public/ticker"), "stats"),
    OrderBookSnapshot: lambda: _result("/public/get_order_book"),
    IndexPrice: lambda: _result("/public/get_index_price"),
    PublicTrade: lambda: _at(_result("/public/get_last_trades_by_instrument"), "trades"),
    TradesPage: lambda: _result("/public/get_last_trades_by_instrument"),
    BookSummary: lambda: _result("/public/get_book_summary_by_currency"),
    Order: lambda: _result("/private/get_order_state"),  # components.schemas.order
    UserTrade: lambda: _at(_result("/private/get_user_trades_by_instrument"), "trades"),
    UserTradesPage: lambda: _result("/private/get_user_trades_by_instrument"),
    OrderResult: lambda: _result("/private/buy"),
    Position: lambda: _result("/private/get_position"),
    # AccountSummary also parses user.portfolio.{currency} notifications
    AccountSummary: lambda: _merged(
        _result("/private/get_account_summary"),
        _resolve(_ptr("#/notifications/user_portfolio_notification")),
    ),
    AuthResult: lambda: _result("/public/auth"),
    Candle: lambda: _resolve(_ptr("#/notifications/trade_chart_notification")),  # chart.trades.*
    ChartData: lambda: _result("/public/get_tradingview_chart_data"),
}

# Model fields that the current spec does not list, each with its reason.
LEGACY_FIELDS: dict[type[Model], set[str]] = {
    # absent from the current spec, present in ccxt/cryptofeed example payloads and read by ccxt
    # (deribit-api.md 6.2); the simulator includes them
    Order: {"commission", "profit_loss", "max_show"},
    # "self_trade" observed in real captures (deribit-api.md 6.4)
    UserTrade: {"self_trade"},
    # change_id is sent by Deribit (same sequence as the book channel, ccxt's REST book nonce) but
    # missing from the get_order_book schema (deribit-api.md 4.4)
    OrderBookSnapshot: {"change_id"},
}

# Spec properties we deliberately do not model.
NOT_MODELLED: dict[type[Model], set[str]] = {}

# Spec types that contradict the spec's own description / live Deribit.
SPEC_TYPE_ERRATA: dict[type[Model], set[str]] = {
    # typed "number" in ticker_notification, described as "Name of the underlying future, or
    # index_price"; book_summary types it as a string
    Ticker: {"underlying_index"},
    OrderBookSnapshot: {"underlying_index"},
}

ALL_MODELS = [
    Currency,
    WithdrawalPriority,
    Instrument,
    TickSizeStep,
    Ticker,
    Greeks,
    BookStats,
    OrderBookSnapshot,
    IndexPrice,
    PublicTrade,
    TradesPage,
    BookSummary,
    Order,
    UserTrade,
    UserTradesPage,
    OrderResult,
    Position,
    AccountSummary,
    AuthResult,
    Candle,
    ChartData,
]


def test_every_model_is_mapped() -> None:
    import deribit_kit.models as models

    public = {
        obj
        for name in models.__all__
        if isinstance(obj := getattr(models, name), type) and issubclass(obj, Model) and obj is not Model
    }
    assert public == set(SCHEMAS) == set(ALL_MODELS)


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_fields_use_deribit_names(model: type[Model]) -> None:
    spec_props = _props(SCHEMAS[model]())
    assert spec_props, f"no properties found for {model.__name__}"
    ours = {f.encode_name for f in msgspec.structs.fields(model)}
    unknown = ours - set(spec_props) - LEGACY_FIELDS.get(model, set())
    assert not unknown, f"{model.__name__} fields not in Deribit's schema: {sorted(unknown)}"
    stale = LEGACY_FIELDS.get(model, set()) & set(spec_props)
    assert not stale, f"{model.__name__}: allow-listed fields now in the spec: {sorted(stale)}"


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_models_cover_documented_fields(model: type[Model]) -> None:
    spec_props = set(_props(SCHEMAS[model]()))
    ours = {f.encode_name for f in msgspec.structs.fields(model)}
    missing = spec_props - ours - NOT_MODELLED.get(model, set())
    assert not missing, f"{model.__name__} lacks documented fields: {sorted(missing)}"


_ACCEPTS: dict[str, tuple[type[msgspec.inspect.Type], ...]] = {
    "number": (msgspec.inspect.FloatType,),
    "integer": (msgspec.inspect.IntType, msgspec.inspect.FloatType),
    "string": (msgspec.inspect.StrType,),
    "boolean": (msgspec.inspect.BoolType,),
    "array": (msgspec.inspect.ListType, msgspec.inspect.VarTupleType, msgspec.inspect.TupleType),
    "object": (msgspec.inspect.DictType, msgspec.inspect.StructType),
}


def _members(info: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    return list(info.types) if isinstance(info, msgspec.inspect.UnionType) else [info]


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_field_types_match_spec(model: type[Model]) -> None:
    spec_props = _props(SCHEMAS[model]())
    errata = SPEC_TYPE_ERRATA.get(model, set())
    wrong = []
    for field in msgspec.structs.fields(model):
        prop = spec_props.get(field.encode_name)
        if prop is None or field.encode_name in errata:
            continue
        kinds = [prop["type"]] if "type" in prop else [_resolve(p).get("type") for p in prop.get("oneOf", [])]
        members = _members(msgspec.inspect.type_info(field.type))
        if any(isinstance(m, msgspec.inspect.AnyType) for m in members):
            continue
        for kind in kinds:
            if kind in _ACCEPTS and not any(isinstance(m, _ACCEPTS[kind]) for m in members):
                wrong.append(f"{field.name}: spec {kind}, model {field.type}")
    assert not wrong, f"{model.__name__}: {wrong}"


def _required(schema: Any) -> set[str]:
    """Names a schema marks required (through $ref and allOf)."""
    schema = _resolve(schema)
    out = set(schema.get("required", []))
    for sub in schema.get("allOf", []):
        out |= _required(sub)
    return out


# Fields our models require although the spec does not mark them required.
EXTRA_REQUIRED: dict[type[Model], set[str]] = {
    # the spec's order schema requires "instrument", a typo for instrument_name
    Order: {"instrument_name"},
    # tick_size_step has no required list; a step without either value is meaningless
    TickSizeStep: {"above_price", "tick_size"},
}


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_only_spec_required_fields_are_required(model: type[Model]) -> None:
    """A payload is never rejected for lacking a field Deribit documents as optional."""
    if model is AccountSummary:  # merged schema: use get_account_summary's own required list
        spec_required = _required(_result("/private/get_account_summary"))
    else:
        spec_required = _required(SCHEMAS[model]())
    ours = {f.encode_name for f in msgspec.structs.fields(model) if f.required}
    extra = ours - spec_required - EXTRA_REQUIRED.get(model, set())
    assert not extra, f"{model.__name__} requires fields Deribit may omit: {sorted(extra)}"


# --------------------------------------------------------------------------------------------
# candles (public/get_tradingview_chart_data, chart.trades.{instrument}.{resolution})

CHART_DATA: dict[str, Any] = {  # Deribit's documented example, shortened to three candles
    "volume": [19.007942601, 20.095877981, 0.0],
    "ticks": [1554373800000, 1554375600000, 1554377400000],
    "status": "ok",
    "open": [4963.42, 4986.29, 5000.0],
    "low": [4963.42, 4973.93, 5000.0],
    "high": [4999.25, 5002.66, 5000.0],
    "cost": [94514.0, 100144.0, 0],
    "close": [4986.29, 4985.25, 5000.0],
}


def test_chart_data_columns_become_candles() -> None:
    data = convert(CHART_DATA, ChartData)
    candles = data.candles()
    assert isinstance(candles, FrameList) and len(candles) == 3
    first = candles[0]
    assert first == Candle(tick=1554373800000, open=4963.42, high=4999.25, low=4963.42, close=4986.29,
                           volume=19.007942601, cost=94514.0)
    assert first.time == datetime(2019, 4, 4, 10, 30, tzinfo=UTC)
    assert candles[2].volume == 0.0 and candles[2].cost == 0.0  # a filler
    frame = data.to_frame()
    assert list(frame.columns) == ["tick", "open", "high", "low", "close", "volume", "cost", "time"]
    assert frame["close"].tolist() == CHART_DATA["close"]
    assert isinstance(frame["time"].dtype, pd.DatetimeTZDtype) and str(frame["time"].dt.tz) == "UTC"


def test_chart_data_without_candles() -> None:
    empty = convert({"status": "no_data", "ticks": [], "open": [], "high": [], "low": [], "close": [],
                     "volume": [], "cost": []}, ChartData)
    assert empty.status == "no_data" and empty.candles() == []
    frame = empty.to_frame()
    assert len(frame) == 0 and "close" in frame.columns and "time" in frame.columns
    with pytest.raises(ProtocolError, match="unequal"):
        convert({**CHART_DATA, "close": [1.0]}, ChartData).candles()


def test_chart_trades_message_is_a_candle() -> None:
    msg = {"tick": 1554373800000, "open": 4963.42, "high": 4999.25, "low": 4963.42, "close": 4986.29,
           "volume": "19.007942601", "cost": 94514}  # numbers as strings and ints are read too
    c = decode(json.dumps(msg).encode(), Candle)
    assert c.volume == 19.007942601 and c.cost == 94514.0 and isinstance(c.cost, float)
    with pytest.raises(ProtocolError):
        convert({"tick": 1, "open": 1.0}, Candle)
