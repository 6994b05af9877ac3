"""JSON views of accounts: positions (``get_position``), the numbers of ``get_account_summary`` and
``user.portfolio``, ``get_margins``. No I/O; part of the engine (:mod:`.orders`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .instruments import currency_matches
from .margin import Margin
from .market import SimInstrument
from .orders import (
    EPS,
    AccountState,
    PositionState,
    _r,
    is_inverse_future,
    settlement_currency,
)

if TYPE_CHECKING:
    from .accounts import Account


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


class Views(Margin):
    """JSON views of accounts: positions, summaries, the portfolio, margins of a would-be order."""

    def floating(self, pos: PositionState) -> float:
        """The position's floating PnL at the mark price, in the settlement currency (inverse futures:
        ``size * (1/avg - 1/mark)``, in the coin)."""
        inst, size = pos.inst, pos.size
        if abs(size) <= EPS or pos.avg <= 0:
            return 0.0
        mark = inst.mark_price
        if is_inverse_future(inst):
            return size * (1.0 / pos.avg - 1.0 / mark)
        return size * (mark - pos.avg)

    def delta(self, pos: PositionState) -> float:
        """The position's delta in the coin: options ``size * delta``, inverse futures ``size / mark``
        (size in USD), linear futures the size."""
        inst, size = pos.inst, pos.size
        if inst.kind == "option":
            return size * float(inst.greeks.get("delta", 0.0))
        if is_inverse_future(inst):
            return size / inst.mark_price if inst.mark_price else 0.0
        return size

    def position_view(self, st: AccountState, inst: SimInstrument) -> dict[str, Any]:
        """A Deribit position object (``private/get_positions``: https://docs.deribit.com)."""
        pos = st.positions.get(inst.name) or PositionState(inst)
        size = pos.size
        im, mm = self.position_margins(pos)
        floating = self.floating(pos)
        index = self.market.index[inst.coin]
        out: dict[str, Any] = {
            "instrument_name": inst.name,
            "kind": inst.kind,
            "direction": "buy" if size > EPS else "sell" if size < -EPS else "zero",
            "size": _r(size, 8),
            "average_price": _r(pos.avg, 8),
            "mark_price": inst.mark_price,
            "index_price": round(index, 4),
            "settlement_price": round(inst.mark_price, 4),
            "floating_profit_loss": _r(floating, 10),
            "realized_profit_loss": _r(pos.realized, 10),
            "total_profit_loss": _r(floating + pos.realized, 10),
            "initial_margin": _r(im, 10),
            "maintenance_margin": _r(mm, 10),
            "open_orders_margin": _r(self.orders_margin(st, inst), 10),
            "delta": _r(self.delta(pos), 8),
        }
        if inst.kind == "future":
            out["size_currency"] = _r(size / inst.mark_price if not inst.linear else size, 10)
            out["leverage"] = int(inst.info.get("max_leverage") or 50)
            if inst.perpetual:
                out["realized_funding"] = 0.0
                out["interest_value"] = 0.0
        if inst.kind == "option":
            g = inst.greeks
            out["average_price_usd"] = _r(pos.avg * index, 4)
            out["floating_profit_loss_usd"] = _r(floating * index, 4)
            out["gamma"] = _r(size * float(g.get("gamma", 0.0)), 10)
            out["vega"] = _r(size * float(g.get("vega", 0.0)), 6)
            out["theta"] = _r(size * float(g.get("theta", 0.0)), 6)
        return out

    def positions(self, st: AccountState, currency: str = "any", kind: str | None = None) -> list[PositionState]:
        """The account's positions in listed, non-spot instruments of ``currency`` (``any``: all) and ``kind``."""
        return [p for p in st.positions.values()
                if p.inst.name in self.market.instruments and p.inst.kind != "spot"
                and (currency == "any" or currency_matches(p.inst.info, currency))
                and (kind is None or p.inst.kind == kind)]

    def summary_numbers(self, st: AccountState, currency: str) -> dict[str, Any]:
        """The numeric part of ``get_account_summary`` / ``user.portfolio`` for ``currency``."""
        cur = currency.upper()
        balance = st.balances.get(cur, 0.0)
        fut_upl = opt_upl = opt_value = 0.0
        im = mm = 0.0
        delta = opt_delta = opt_gamma = opt_vega = opt_theta = 0.0
        deltas: dict[str, float] = {}
        gammas: dict[str, float] = {}
        vegas: dict[str, float] = {}
        thetas: dict[str, float] = {}
        for pos in st.positions.values():
            inst = pos.inst
            if inst.kind == "spot" or settlement_currency(inst) != cur or abs(pos.size) <= EPS:
                continue
            f = self.floating(pos)
            p_im, p_mm = self.position_margins(pos)
            im += p_im
            mm += p_mm
            d = self.delta(pos)
            delta += d
            idx = inst.index_name
            deltas[idx] = deltas.get(idx, 0.0) + d
            if inst.kind == "option":
                opt_upl += f
                opt_value += pos.size * inst.mark_price
                g = inst.greeks
                opt_delta += d
                gamma, vega, theta = (pos.size * float(g.get(k, 0.0)) for k in ("gamma", "vega", "theta"))
                gammas[idx] = gammas.get(idx, 0.0) + gamma
                vegas[idx] = vegas.get(idx, 0.0) + vega
                thetas[idx] = thetas.get(idx, 0.0) + theta
                opt_gamma += gamma
                opt_vega += vega
                opt_theta += theta
            else:
                fut_upl += f
        for inst in self._instruments_in(st, cur):
            im += self.orders_margin(st, inst)
        spot_reserve = self.spot_reserve(st, cur)
        fut_rpl = st.session_rpl.get(f"futures:{cur}", 0.0)
        opt_rpl = st.session_rpl.get(f"options:{cur}", 0.0)
        equity = balance + fut_upl + opt_value
        available = equity - im - spot_reserve
        return {
            "currency": cur,
            "balance": _r(balance),
            "equity": _r(equity),
            "margin_balance": _r(equity),
            "available_funds": _r(available),
            "available_withdrawal_funds": _r(max(0.0, min(balance, available))),
            "initial_margin": _r(im),
            "maintenance_margin": _r(mm),
            "projected_initial_margin": _r(im),
            "projected_maintenance_margin": _r(mm),
            "delta_total": _r(delta, 8),
            "projected_delta_total": _r(delta, 8),
            "total_pl": _r(fut_upl + opt_upl + fut_rpl + opt_rpl),
            "session_rpl": _r(fut_rpl + opt_rpl),
            "session_upl": _r(fut_upl + opt_upl),
            "futures_pl": _r(fut_upl + fut_rpl),
            "futures_session_rpl": _r(fut_rpl),
            "futures_session_upl": _r(fut_upl),
            "options_pl": _r(opt_upl + opt_rpl),
            "options_session_rpl": _r(opt_rpl),
            "options_session_upl": _r(opt_upl),
            "options_value": _r(opt_value),
            "options_delta": _r(opt_delta, 8),
            "options_gamma": _r(opt_gamma, 10),
            "options_vega": _r(opt_vega, 6),
            "options_theta": _r(opt_theta, 6),
            "options_gamma_map": {k: _r(v, 10) for k, v in gammas.items()},
            "options_vega_map": {k: _r(v, 6) for k, v in vegas.items()},
            "options_theta_map": {k: _r(v, 6) for k, v in thetas.items()},
            "delta_total_map": {k: _r(v, 8) for k, v in deltas.items()},
            "fee_balance": 0.0,
            "additional_reserve": 0.0,
            "spot_reserve": _r(spot_reserve),
            "estimated_liquidation_ratio": 0.0,
            "estimated_liquidation_ratio_map": {},
            "portfolio_margining_enabled": False,
            "cross_collateral_enabled": False,
            "margin_model": "segregated_sm",
        }

    def has_exposure(self, st: AccountState) -> set[str]:
        """Currencies in which ``st`` holds positions (their PnL moves every tick)."""
        return {settlement_currency(p.inst) for p in st.positions.values()
                if abs(p.size) > EPS and p.inst.kind != "spot"}

    def margins(self, st: AccountState, inst: SimInstrument, amount: float, price: float) -> dict[str, Any]:
        """``private/get_margins``: initial margin to buy / sell ``amount`` at ``price``."""
        lo, hi = self.band(inst)
        out = {}
        for d in ("buy", "sell"):
            if inst.kind == "spot":
                m = amount * price if d == "buy" else amount
            else:
                m = self.orders_margin(st, inst, (d, amount, price)) - self.orders_margin(st, inst)
            out[d] = _r(max(0.0, m), 10)
        return {"buy": out["buy"], "sell": out["sell"], "min_price": lo, "max_price": hi}

    def portfolio(self, st: AccountState, currency: str) -> dict[str, Any]:
        """The ``user.portfolio.{currency}`` payload."""
        nums = self.summary_numbers(st, currency)
        return {k: v for k, v in nums.items() if k in PORTFOLIO_FIELDS}

    def summary(self, st: AccountState, currency: str, extended: bool = False, *, identity: bool = True
                ) -> dict[str, Any]:
        """``get_account_summary``; without ``identity`` the per-currency item of ``get_account_summaries``
        (whose account fields sit once at the top level)."""
        nums = self.summary_numbers(st, currency)
        out = {k: v for k, v in nums.items() if k not in SUMMARY_ONLY_EXCLUDED}
        out["limits"] = st.account.pools.limits()
        if identity:
            out.update(identity_fields(st.account))
            if extended:
                out.update(extended_fields(st))
        return out


def identity_fields(account: Account) -> dict[str, Any]:
    """The account summary's identity fields (``id``, ``email``, ``username``, ``system_name``,
    ``type``, ``security_keys_enabled``), made up for the embedded exchange's account."""
    return {
        "id": account.user_id,
        "email": f"{account.client_id}@sim.invalid",
        "username": account.name,
        "system_name": f"{account.name}-{account.user_id}",
        "type": "main",
        "security_keys_enabled": False,
    }


def extended_fields(st: AccountState) -> dict[str, Any]:
    """The fields ``private/get_account_summary`` (and ``get_account_summaries``) add with
    ``extended=true`` (creation time, fees, self-trading mode ``reject_taker``, ...)."""
    return {
        "creation_timestamp": st.created,
        "fees": [],
        "interuser_transfers_enabled": False,
        "login_enabled": True,
        "mmp_enabled": False,
        "self_trading_reject_mode": "reject_taker",
        "self_trading_extended_to_subaccounts": "false",
    }
