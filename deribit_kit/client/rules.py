"""The exchange's order rules, checked here so that a wrong order never leaves the process:

* **amount** — inverse futures and perpetuals (``BTC-PERPETUAL``) trade USD: the amount is a
  multiple of ``contract_size`` (10 USD for BTC) and at least ``min_trade_amount``. Linear futures,
  options and spot trade coin: the amount is a multiple of the finer of ``min_trade_amount`` and
  ``contract_size`` and at least ``min_trade_amount``. ``contracts`` is the amount divided by
  ``contract_size``; if both are given they must agree.
* **price** — on the tick grid of the price's band (``tick_size`` and ``tick_size_steps``).
  :func:`round_price` snaps a price to it; :func:`check_price` rounds (``strict=False``) or
  refuses (``strict=True``).
* **label** — every order carries one (``dk-<12 hex>`` when none is given), at most 64 characters.

Placement by label (reconciliation after a drop) is :mod:`deribit_kit.client.placement`.
"""

from __future__ import annotations

import logging
import math
import uuid
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from ..errors import ValidationError
from ..models import Instrument
from ..wire.enums import GRID_TOLERANCE, MAX_LABEL, ORDER_TYPES, PRICED_TYPES, TIME_IN_FORCE, on_grid
from ..wire.enums import TRIGGER_ORDER_TYPES as TRIGGER_TYPES

log = logging.getLogger("deribit_kit.client.rules")

LABEL_PREFIX = "dk-"
RoundMode = Literal["nearest", "down", "up"]
_ROUNDING = {"nearest": ROUND_HALF_EVEN, "down": ROUND_FLOOR, "up": ROUND_CEILING}
_REL = GRID_TOLERANCE


# ---------------------------------------------------------------- labels


def new_label() -> str:
    """A fresh order label: ``dk-`` and 12 hex digits of a UUID4."""
    return LABEL_PREFIX + uuid.uuid4().hex[:12]


def check_label(label: str | None) -> str:
    """``label`` if valid, a fresh one if ``None``/empty; refuses labels over 64 characters."""
    if not label:
        return new_label()
    if not isinstance(label, str):
        raise ValidationError(f"label must be a string, not {type(label).__name__}")
    if len(label) > MAX_LABEL:
        raise ValidationError(f"label {label[:20]!r}... has {len(label)} characters; "
                              f"Deribit allows at most {MAX_LABEL}")
    return label


# ---------------------------------------------------------------- amounts


def amount_unit(inst: Instrument) -> str:
    """What ``amount`` counts for this instrument: ``USD`` (inverse futures) or the base coin."""
    if inst.is_future and inst.is_inverse:
        return "USD" if inst.quote_currency in ("USD", "") else inst.quote_currency
    return inst.base_currency


def amount_step(inst: Instrument) -> float:
    """The amount granularity: whole contracts, or ``min_trade_amount`` when that is finer."""
    return min(inst.contract_size, inst.min_trade_amount) if inst.min_trade_amount > 0 else inst.contract_size


def _describe(inst: Instrument) -> str:
    if inst.is_future:
        what = "perpetual" if inst.is_perpetual else "future"
        return f"{'inverse' if inst.is_inverse else 'linear'} {what}"
    return inst.kind


def _fmt(x: float) -> str:
    return f"{x:.10g}"


def check_amount(inst: Instrument, amount: float | None = None, contracts: float | None = None) -> float:
    """The order amount in the instrument's unit, after checking it against its rules.

    Raises :class:`ValidationError` naming the rule (minimum, contract multiple, unit).
    """
    name, unit = inst.instrument_name, amount_unit(inst)
    if contracts is not None:
        if not math.isfinite(contracts) or contracts <= 0:
            raise ValidationError(f"{name}: contracts must be a positive number, not {contracts!r}")
        from_contracts = float(Decimal(str(contracts)) * Decimal(str(inst.contract_size)))
        if amount is not None and abs(amount - from_contracts) > 1e-9 * max(1.0, abs(amount)):
            raise ValidationError(f"{name}: amount {_fmt(amount)} {unit} and contracts {_fmt(contracts)} disagree "
                                  f"({_fmt(contracts)} contracts x contract_size {_fmt(inst.contract_size)} = "
                                  f"{_fmt(from_contracts)} {unit})")
        amount = from_contracts
    if amount is None:
        raise ValidationError(f"{name}: give amount (in {unit}) or contracts")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount) or amount <= 0:
        raise ValidationError(f"{name}: amount must be a positive number of {unit}, not {amount!r}")
    amount = float(amount)
    kind = _describe(inst)
    if amount < inst.min_trade_amount * (1 - _REL):
        raise ValidationError(f"{name}: amount {_fmt(amount)} {unit} is below min_trade_amount "
                              f"{_fmt(inst.min_trade_amount)} {unit} ({kind}: amount is in {unit})")
    step = amount_step(inst)
    if not on_grid(amount, step):
        if inst.is_future and inst.is_inverse:
            rule = f"a multiple of contract_size {_fmt(inst.contract_size)} {unit}"
        else:
            rule = f"a multiple of {_fmt(step)} {unit} (min_trade_amount/contract_size)"
        lower = math.floor(amount / step + 1e-9) * step
        raise ValidationError(f"{name}: amount {_fmt(amount)} {unit} is not {rule} ({kind}: amount is in {unit}; "
                              f"nearest below: {_fmt(lower)})")
    return amount


# ---------------------------------------------------------------- prices


def _snap(price: float, tick: float, mode: RoundMode) -> float:
    q = Decimal(str(tick))
    n = (Decimal(str(price)) / q).to_integral_value(rounding=_ROUNDING[mode])
    return float(n * q)


def round_price(inst: Instrument, price: float, mode: RoundMode = "nearest") -> float:
    """``price`` moved onto the instrument's tick grid (``tick_size_steps`` honoured).

    ``mode``: ``"nearest"``, ``"down"`` (never above ``price``) or ``"up"`` (never below).
    """
    if mode not in _ROUNDING:
        raise ValueError(f"mode must be 'nearest', 'down' or 'up', not {mode!r}")
    if not math.isfinite(price):
        raise ValidationError(f"{inst.instrument_name}: price must be a finite number, not {price!r}")
    out = _snap(price, inst.tick_size_at(price), mode)
    tick = inst.tick_size_at(out)  # rounding up may cross into a coarser band
    if not on_grid(out, tick):
        out = _snap(out, tick, "up" if mode == "up" else "down" if mode == "down" else "nearest")
    return out


def is_on_tick(inst: Instrument, price: float) -> bool:
    """True when ``price`` lies on the instrument's tick grid at that price (``tick_size_steps`` honoured)."""
    return on_grid(price, inst.tick_size_at(price))


def check_price(inst: Instrument, price: float, *, strict: bool = True, param: str = "price",
                mode: RoundMode = "nearest") -> float:
    """``price`` if on the tick grid; otherwise rounded (``strict=False``) or refused."""
    if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
        raise ValidationError(f"{inst.instrument_name}: {param} must be a finite number, not {price!r}")
    price = float(price)
    if is_on_tick(inst, price):
        return round_price(inst, price, "nearest")  # clean float representation
    tick = inst.tick_size_at(price)
    rounded = round_price(inst, price, mode)
    if strict:
        steps = ", ".join(f"{_fmt(s.tick_size)} from {_fmt(s.above_price)}" for s in inst.tick_size_steps)
        rule = f"tick_size {_fmt(inst.tick_size)}" + (f" (tick_size_steps: {steps})" if steps else "")
        raise ValidationError(f"{inst.instrument_name}: {param} {_fmt(price)} is not a multiple of the tick "
                              f"{_fmt(tick)} at that price ({rule}); nearest: {_fmt(rounded)}; "
                              f"pass strict=False to round")
    log.debug("%s: %s %s rounded to %s", inst.instrument_name, param, price, rounded)
    return rounded


# ---------------------------------------------------------------- requests


def order_params(inst: Instrument, amount: float | None, price: float | None, *, type: str = "limit",
                 label: str | None = None, time_in_force: str = "good_til_cancelled", post_only: bool = False,
                 reject_post_only: bool = False, reduce_only: bool = False, trigger_price: float | None = None,
                 trigger: str | None = None, contracts: float | None = None, strict: bool = True,
                 **extra: Any) -> dict[str, Any]:
    """Checked ``private/buy``/``sell`` params (amount in the right unit, prices on tick, a label)."""
    name = inst.instrument_name
    if type not in ORDER_TYPES:
        raise ValidationError(f"{name}: order type must be one of {', '.join(ORDER_TYPES)}, not {type!r}")
    if time_in_force not in TIME_IN_FORCE:
        raise ValidationError(f"{name}: time_in_force must be one of {', '.join(TIME_IN_FORCE)}")
    params: dict[str, Any] = {"instrument_name": name, "amount": check_amount(inst, amount, contracts),
                              "type": type, "label": check_label(label)}
    if type in PRICED_TYPES:
        if price is None:
            raise ValidationError(f"{name}: a {type} order needs a price")
        params["price"] = check_price(inst, price, strict=strict)
    elif price is not None and type != "market_limit":
        raise ValidationError(f"{name}: a {type} order takes no price")
    if type in TRIGGER_TYPES:
        if trigger is None:
            raise ValidationError(f"{name}: a {type} order needs trigger= (index_price, mark_price or last_price)")
        params["trigger"] = trigger
        if type != "trailing_stop":
            if trigger_price is None:
                raise ValidationError(f"{name}: a {type} order needs trigger_price")
            params["trigger_price"] = check_price(inst, trigger_price, strict=strict, param="trigger_price")
    elif trigger_price is not None or trigger is not None:
        raise ValidationError(f"{name}: trigger/trigger_price apply to stop/take orders only, not {type}")
    if time_in_force != "good_til_cancelled":
        params["time_in_force"] = time_in_force
    if post_only or reject_post_only:
        if type not in PRICED_TYPES:
            raise ValidationError(f"{name}: post_only applies to limit orders only")
        if time_in_force in ("fill_or_kill", "immediate_or_cancel"):
            raise ValidationError(f"{name}: post_only needs good_til_cancelled or good_til_day")
        params["post_only"] = True
        if reject_post_only:
            params["reject_post_only"] = True
    if reduce_only:
        params["reduce_only"] = True
    params.update({k: v for k, v in extra.items() if v is not None})
    return params


__all__ = [
    "MAX_LABEL",
    "ORDER_TYPES",
    "TIME_IN_FORCE",
    "amount_step",
    "amount_unit",
    "check_amount",
    "check_label",
    "check_price",
    "is_on_tick",
    "new_label",
    "order_params",
    "round_price",
]
