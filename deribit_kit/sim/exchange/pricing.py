"""Option pricing for the embedded exchange: Black-76 on the forward, a volatility smile with a
term structure, and greeks in Deribit's conventions (delta per coin; vega and theta in USD per
vol point and per day; gamma per USD)."""

from __future__ import annotations

import math
from dataclasses import dataclass

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
YEAR_MS = 365.0 * 24 * 3600 * 1000


def norm_cdf(x: float) -> float:
    """The standard normal cumulative distribution at ``x``."""
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def norm_pdf(x: float) -> float:
    """The standard normal density at ``x``."""
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


@dataclass(slots=True, frozen=True)
class Smile:
    """``iv(k, t) = atm(t) + skew * k + curvature * k**2`` with ``k = ln(K/F)``, in fractions."""

    atm_short: float = 0.55
    atm_long: float = 0.60
    skew: float = -0.08
    curvature: float = 0.35

    def atm(self, t_years: float) -> float:
        """At-the-money volatility (a fraction) at ``t_years``: from ``atm_short`` to ``atm_long`` over six months."""
        w = min(1.0, t_years / 0.5)
        return self.atm_short + (self.atm_long - self.atm_short) * w

    def iv(self, strike: float, forward: float, t_years: float) -> float:
        """Implied volatility (a fraction, at least 0.05) of ``strike`` against ``forward`` at
        ``t_years``; the skew and curvature flatten with maturity."""
        k = math.log(strike / forward)
        # smile flattens with maturity, as real surfaces do
        scale = 1.0 / math.sqrt(max(t_years, 1.0 / 365.0) / 0.25)
        v = self.atm(t_years) + (self.skew * k + self.curvature * k * k) * min(scale, 3.0)
        return max(0.05, v)


@dataclass(slots=True, frozen=True)
class OptionValue:
    """What :func:`black76` gives: the premium in USD, delta per coin, gamma per USD, vega in USD
    per vol point, theta in USD per day, rho in USD per rate point."""

    price_usd: float
    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float


def black76(forward: float, strike: float, t_years: float, vol: float, call: bool, rate: float = 0.0) -> OptionValue:
    """Black-76 value and greeks (undiscounted forward premium when ``rate`` is 0)."""
    t = max(t_years, 1e-6)
    sq = vol * math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * vol * vol * t) / sq
    d2 = d1 - sq
    df = math.exp(-rate * t)
    if call:
        price = df * (forward * norm_cdf(d1) - strike * norm_cdf(d2))
        delta = df * norm_cdf(d1)
        rho = t * df * strike * norm_cdf(d2) / 100.0
    else:
        price = df * (strike * norm_cdf(-d2) - forward * norm_cdf(-d1))
        delta = -df * norm_cdf(-d1)
        rho = -t * df * strike * norm_cdf(-d2) / 100.0
    pdf = norm_pdf(d1)
    gamma = df * pdf / (forward * sq)
    vega = df * forward * pdf * math.sqrt(t) / 100.0  # per vol point
    theta = -(df * forward * pdf * vol / (2.0 * math.sqrt(t))) / 365.0  # per day
    return OptionValue(max(price, 0.0), delta, gamma, vega, theta, rho)


def implied_vol(price_usd: float, forward: float, strike: float, t_years: float, call: bool) -> float | None:
    """Invert Black-76 by bisection; None when the price is outside no-arbitrage bounds."""
    intrinsic = max(0.0, forward - strike) if call else max(0.0, strike - forward)
    if price_usd <= intrinsic or price_usd >= (forward if call else strike):
        return None
    lo, hi = 0.01, 5.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if black76(forward, strike, t_years, mid, call).price_usd > price_usd:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)
