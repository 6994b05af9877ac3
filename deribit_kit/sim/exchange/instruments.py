"""The embedded exchange's instrument universe: spot pairs, inverse perpetuals and dated futures,
linear USDC perpetuals, and inverse option chains, with Deribit's names, date codes, tick sizes,
contract sizes and every field of Deribit's instrument object. Expiries follow Deribit's calendar
(dailies, Friday weeklies, month-end and quarter-end Fridays, all at 08:00 UTC) computed from the
exchange's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from ...wire.names import PERPETUAL_EXPIRY_MS, date_code, expiry_ms, expiry_schedule, strike_text


@dataclass(slots=True, frozen=True)
class Underlying:
    """Static parameters of one coin the exchange lists."""

    coin: str
    start_price: float
    vol: float  # annualised, for the index random walk
    inverse: bool  # has inverse (coin-margined) futures, perpetual and options
    perp_tick: float
    future_tick: float
    inverse_contract: float  # USD per contract of the inverse perpetual/futures
    option_min: float
    linear_tick: float
    linear_contract: float
    spot_tick: float
    strike_steps: tuple[float, float, float]  # daily, weekly, monthly+ strike spacing


UNDERLYINGS: tuple[Underlying, ...] = (
    Underlying("BTC", 95_000.0, 0.55, True, 0.5, 2.5, 10.0, 0.1, 1.0, 0.0001, 1.0, (1000.0, 2000.0, 5000.0)),
    Underlying("ETH", 3_400.0, 0.70, True, 0.05, 0.25, 1.0, 1.0, 0.1, 0.001, 0.1, (50.0, 100.0, 200.0)),
    Underlying("SOL", 180.0, 0.90, False, 0.01, 0.01, 1.0, 1.0, 0.01, 0.1, 0.01, (5.0, 10.0, 20.0)),
)

CURRENCIES: tuple[dict[str, Any], ...] = (
    {"currency": "BTC", "currency_long": "Bitcoin", "coin_type": "BTC", "withdrawal_fee": 0.0001,
     "min_withdrawal_fee": 0.0001, "min_confirmations": 1, "fee_precision": 4, "in_cross_collateral_pool": True,
     "withdrawal_priorities": [{"name": "low", "value": 0.0}, {"name": "high", "value": 1.0}], "apr": 0.0},
    {"currency": "ETH", "currency_long": "Ethereum", "coin_type": "ETH", "withdrawal_fee": 0.0006,
     "min_withdrawal_fee": 0.0001, "min_confirmations": 1, "fee_precision": 4, "in_cross_collateral_pool": True,
     "withdrawal_priorities": [], "apr": 0.0},
    {"currency": "USDC", "currency_long": "USD Coin", "coin_type": "USDC", "withdrawal_fee": 1.0,
     "min_withdrawal_fee": 1.0, "min_confirmations": 1, "fee_precision": 4, "in_cross_collateral_pool": True,
     "withdrawal_priorities": [], "apr": 0.0},
    {"currency": "USDT", "currency_long": "Tether USD", "coin_type": "USDT", "withdrawal_fee": 1.0,
     "min_withdrawal_fee": 1.0, "min_confirmations": 1, "fee_precision": 4, "in_cross_collateral_pool": False,
     "withdrawal_priorities": [], "apr": 0.0},
    {"currency": "SOL", "currency_long": "Solana", "coin_type": "SOL", "withdrawal_fee": 0.01,
     "min_withdrawal_fee": 0.01, "min_confirmations": 1, "fee_precision": 4, "in_cross_collateral_pool": True,
     "withdrawal_priorities": [], "apr": 0.0},
)

OPTION_TICK_STEPS = [{"above_price": 0.005, "tick_size": 0.0005}]
FUTURE_EXPIRIES = {"dailies": 0, "weeklies": 2, "monthlies": 1, "quarterlies": 3}
OPTION_EXPIRIES = {"dailies": 3, "weeklies": 3, "monthlies": 3, "quarterlies": 2}


def settlement_period(d: date, now: datetime) -> str:
    """Deribit's ``settlement_period`` for an expiry: day, week or month."""
    nxt = d + timedelta(days=7)
    if d.weekday() == 4 and nxt.month != d.month:
        return "month"
    if d.weekday() == 4:
        return "week"
    return "day"


def _base_fields(name: str, kind: str, u: Underlying, *, tick: float, min_amount: float, contract: float,
                 expiry: int, created: int, linear: bool, settlement: str | None, period: str | None) -> dict[str, Any]:
    quote = "USDC" if linear else ("BTC" if kind == "option" and u.coin == "BTC" else "USD")
    if kind == "option":
        quote = u.coin
    info: dict[str, Any] = {
        "instrument_name": name,
        "instrument_id": 0,
        "kind": kind,
        "is_active": True,
        "creation_timestamp": created,
        "expiration_timestamp": expiry,
        "base_currency": u.coin,
        "quote_currency": quote,
        "counter_currency": "USDC" if linear else "USD",
        "price_index": f"{u.coin.lower()}_usdc" if linear else f"{u.coin.lower()}_usd",
        "instrument_type": "linear" if linear else "reversed",
        "tick_size": tick,
        "tick_size_steps": OPTION_TICK_STEPS if kind == "option" else [],
        "min_trade_amount": min_amount,
        "contract_size": contract,
        "maker_commission": 0.0 if kind == "spot" else 0.0003 if kind == "option" else 0.0,
        "taker_commission": 0.0 if kind == "spot" else 0.0003 if kind == "option" else 0.0005,
        "block_trade_commission": 0.0003 if kind == "option" else 0.00025,
        "block_trade_min_trade_amount": 25 if kind == "option" else 200_000 if not linear else 10,
        "block_trade_tick_size": 0.0001 if kind == "option" else 0.01,
        "rfq": kind == "option",
    }
    if settlement is not None:
        info["settlement_currency"] = settlement
    if period is not None:
        info["settlement_period"] = period
        info["future_type"] = info["instrument_type"]
    if kind == "future":
        info["max_leverage"] = 50 if not linear else 25
        info["max_liquidation_commission"] = 0.0075
    return info


def static_instruments(created_ms: int) -> list[dict[str, Any]]:
    """Perpetuals and spot pairs: listed once, never expire."""
    out: list[dict[str, Any]] = []
    for u in UNDERLYINGS:
        if u.inverse:
            out.append(_base_fields(f"{u.coin}-PERPETUAL", "future", u, tick=u.perp_tick, min_amount=u.inverse_contract,
                                    contract=u.inverse_contract, expiry=PERPETUAL_EXPIRY_MS, created=created_ms,
                                    linear=False, settlement=u.coin, period="perpetual"))
        out.append(_base_fields(f"{u.coin}_USDC-PERPETUAL", "future", u, tick=u.linear_tick,
                                min_amount=u.linear_contract, contract=u.linear_contract,
                                expiry=PERPETUAL_EXPIRY_MS, created=created_ms, linear=True, settlement="USDC",
                                period="perpetual"))
        spot = _base_fields(f"{u.coin}_USDC", "spot", u, tick=u.spot_tick, min_amount=u.linear_contract,
                            contract=u.linear_contract, expiry=PERPETUAL_EXPIRY_MS, created=created_ms, linear=True,
                            settlement=None, period=None)
        out.append(spot)
    return out


def dated_instruments(now: datetime, index: dict[str, float]) -> list[dict[str, Any]]:
    """Dated futures and option chains whose expiries are ahead of ``now``; option strikes are
    placed around the coin's index (``index[coin]``) when the expiry is listed."""
    out: list[dict[str, Any]] = []
    now_ms = int(now.timestamp() * 1000)
    for u in UNDERLYINGS:
        if not u.inverse:
            continue
        for d in expiry_schedule(now, **FUTURE_EXPIRIES):
            out.append(_base_fields(f"{u.coin}-{date_code(d)}", "future", u, tick=u.future_tick,
                                    min_amount=u.inverse_contract, contract=u.inverse_contract,
                                    expiry=expiry_ms(d), created=now_ms, linear=False, settlement=u.coin,
                                    period=settlement_period(d, now)))
        for d in expiry_schedule(now, **OPTION_EXPIRIES):
            days = (d - now.date()).days
            step = u.strike_steps[0] if days <= 3 else u.strike_steps[1] if days <= 14 else u.strike_steps[2]
            atm = round(index[u.coin] / step) * step
            width = 7 if days <= 3 else 8
            for i in range(-width, width + 1):
                strike = atm + i * step
                if strike <= 0:
                    continue
                for cp in ("C", "P"):
                    name = f"{u.coin}-{date_code(d)}-{strike_text(strike)}-{cp}"
                    info = _base_fields(name, "option", u, tick=0.0001, min_amount=u.option_min, contract=1.0,
                                        expiry=expiry_ms(d), created=now_ms, linear=False, settlement=u.coin,
                                        period=settlement_period(d, now))
                    info["strike"] = strike
                    info["option_type"] = "call" if cp == "C" else "put"
                    out.append(info)
    return out


def tick_for(info: dict[str, Any], price: float) -> float:
    """The tick size that applies at ``price`` (``tick_size_steps`` above their thresholds)."""
    tick = float(info["tick_size"])
    for step in info.get("tick_size_steps") or ():
        if price > step["above_price"]:
            tick = step["tick_size"]
    return tick


def currency_matches(info: dict[str, Any], currency: str) -> bool:
    """Whether ``get_instruments(currency=...)`` lists this instrument."""
    if currency == "any":
        return True
    if info["kind"] == "spot":
        return currency in (info["base_currency"], info["quote_currency"])
    return info.get("settlement_currency") == currency
