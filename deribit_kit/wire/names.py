"""Deribit instrument names and expiry date codes, without I/O.

``BTC-PERPETUAL``, ``BTC-27DEC24``, ``BTC-27DEC24-60000-C``, ``BTC_USDC``,
``BTC_USDC-PERPETUAL``, ``XRP_USDC-30JUN23-0d625-C``. Expiries are at 08:00 UTC; date codes are
``{D}{MMM}{YY}`` with a one- or two-digit day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .enums import PERPETUAL_EXPIRY_MS as PERPETUAL_EXPIRY_MS

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
EXPIRY_HOUR_UTC = 8

_DATE_RE = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")


def date_code(d: date) -> str:
    """``date(2024, 12, 27)`` -> ``"27DEC24"``."""
    return f"{d.day}{MONTHS[d.month - 1]}{d.year % 100:02d}"


def parse_date_code(code: str) -> date:
    """``"27DEC24"`` -> ``date(2024, 12, 27)``; ValueError if it is not a date code."""
    m = _DATE_RE.match(code)
    if not m or m.group(2) not in MONTHS:
        raise ValueError(f"not a Deribit date code: {code!r}")
    return date(2000 + int(m.group(3)), MONTHS.index(m.group(2)) + 1, int(m.group(1)))


def expiry_ms(d: date) -> int:
    """Milliseconds since the epoch of 08:00 UTC on ``d``."""
    return int(datetime(d.year, d.month, d.day, EXPIRY_HOUR_UTC, tzinfo=UTC).timestamp() * 1000)


def strike_text(strike: float) -> str:
    """``60000.0`` -> ``"60000"``; ``0.625`` -> ``"0d625"``."""
    if float(strike).is_integer():
        return str(int(strike))
    return repr(float(strike)).replace(".", "d")


def parse_strike(text: str) -> float:
    """``"0d625"`` -> ``0.625``."""
    return float(text.replace("d", "."))


@dataclass(slots=True, frozen=True)
class ParsedName:
    """What an instrument name says about itself."""

    name: str
    kind: str  # future | option | spot
    base: str
    quote: str | None  # USDC/USDT for linear or spot; None for inverse
    expiry: date | None  # None for perpetuals and spot
    strike: float | None = None
    option_type: str | None = None  # call | put

    @property
    def perpetual(self) -> bool:
        """A future without an expiry (``BTC-PERPETUAL``, ``BTC_USDC-PERPETUAL``)."""
        return self.kind == "future" and self.expiry is None

    @property
    def linear(self) -> bool:
        """Quoted and settled in a stablecoin (``BTC_USDC-...``), not inverse (settled in the base coin)."""
        return self.quote is not None


def parse_instrument_name(name: str) -> ParsedName:
    """Parse a Deribit instrument name; ValueError if it does not follow the grammar."""
    parts = name.split("-")
    pair = parts[0]
    base, _, quote = pair.partition("_")
    if not base or not base.isalnum() or (quote and not quote.isalnum()):
        raise ValueError(f"not a Deribit instrument name: {name!r}")
    q = quote or None
    if len(parts) == 1:
        if q is None:
            raise ValueError(f"not a Deribit instrument name: {name!r}")
        return ParsedName(name, "spot", base, q, None)
    if len(parts) == 2:
        if parts[1] == "PERPETUAL":
            return ParsedName(name, "future", base, q, None)
        return ParsedName(name, "future", base, q, parse_date_code(parts[1]))
    if len(parts) == 4 and parts[3] in ("C", "P"):
        return ParsedName(
            name, "option", base, q, parse_date_code(parts[1]), parse_strike(parts[2]),
            "call" if parts[3] == "C" else "put",
        )
    raise ValueError(f"not a Deribit instrument name: {name!r}")


# ---------------------------------------------------------------- expiry calendars


def _fridays_from(d: date) -> list[date]:
    first = d + timedelta(days=(4 - d.weekday()) % 7)
    return [first + timedelta(weeks=i) for i in range(60)]


def last_friday(year: int, month: int) -> date:
    """Last Friday of a month (Deribit's monthly and quarterly expiry day)."""
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    d = nxt - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - 4) % 7)


def _first_expiry_day(now: datetime) -> date:
    """The first day whose 08:00 UTC expiry is still ahead of ``now``."""
    today = now.date()
    return today if now.hour < EXPIRY_HOUR_UTC else today + timedelta(days=1)


def expiry_schedule(now: datetime, *, dailies: int, weeklies: int, monthlies: int, quarterlies: int) -> list[date]:
    """Deribit-style expiry dates ahead of ``now``: the next ``dailies`` days, ``weeklies`` Fridays,
    ``monthlies`` last-Fridays-of-month and ``quarterlies`` last-Fridays of Mar/Jun/Sep/Dec."""
    start = _first_expiry_day(now)
    out: set[date] = {start + timedelta(days=i) for i in range(dailies)}
    out.update(_fridays_from(start)[:weeklies])
    months: list[date] = []
    quarters: list[date] = []
    y, m = start.year, start.month
    while len(months) < monthlies or len(quarters) < quarterlies:
        lf = last_friday(y, m)
        if lf >= start:
            if len(months) < monthlies:
                months.append(lf)
            if m in (3, 6, 9, 12) and len(quarters) < quarterlies:
                quarters.append(lf)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    out.update(months)
    out.update(quarters)
    return sorted(out)
