"""Unit tests of instrument names and expiry date codes (deribit_kit.wire.names)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deribit_kit.wire.names import (
    EXPIRY_HOUR_UTC,
    MONTHS,
    ParsedName,
    date_code,
    expiry_ms,
    expiry_schedule,
    last_friday,
    parse_date_code,
    parse_instrument_name,
    parse_strike,
    strike_text,
)


@pytest.mark.parametrize(("d", "code"), [
    (date(2024, 12, 27), "27DEC24"),
    (date(2025, 1, 3), "3JAN25"),  # one-digit day, no zero padding
    (date(2030, 6, 30), "30JUN30"),
    (date(2001, 2, 9), "9FEB01"),  # two-digit year, zero padded
])
def test_date_code(d: date, code: str) -> None:
    assert date_code(d) == code
    assert parse_date_code(code) == d


def test_parse_date_code_accepts_padded_day() -> None:
    assert parse_date_code("03JAN25") == date(2025, 1, 3)


@pytest.mark.parametrize("code", ["", "27DEC", "DEC24", "27dec24", "27XYZ24", "127DEC24", "27DEC2024", "32DEC24",
                                  "30FEB24", "0JAN24", " 27DEC24", "27DEC24 "])
def test_parse_date_code_refuses(code: str) -> None:
    with pytest.raises(ValueError):
        parse_date_code(code)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
def test_date_code_round_trip(d: date) -> None:
    code = date_code(d)
    assert code[-5:-2] in MONTHS
    assert parse_date_code(code) == d


def test_expiry_ms() -> None:
    assert expiry_ms(date(2024, 12, 27)) == 1735286400000  # 2024-12-27T08:00:00Z
    assert expiry_ms(date(1970, 1, 1)) == EXPIRY_HOUR_UTC * 3600 * 1000


@pytest.mark.parametrize(("strike", "text"), [(60000.0, "60000"), (60000, "60000"), (0.625, "0d625"),
                                              (2.5, "2d5"), (0.0, "0")])
def test_strike_text(strike: float, text: str) -> None:
    assert strike_text(strike) == text
    assert parse_strike(text) == strike


@given(st.floats(min_value=0.001, max_value=1e7, allow_nan=False))
def test_strike_round_trip(strike: float) -> None:
    text = strike_text(strike)
    assert "." not in text and "-" not in text
    assert parse_strike(text) == strike


@pytest.mark.parametrize(("name", "want"), [
    ("BTC-PERPETUAL", ParsedName("BTC-PERPETUAL", "future", "BTC", None, None)),
    ("BTC_USDC-PERPETUAL", ParsedName("BTC_USDC-PERPETUAL", "future", "BTC", "USDC", None)),
    ("BTC-27DEC24", ParsedName("BTC-27DEC24", "future", "BTC", None, date(2024, 12, 27))),
    ("ETH_USDT-3JAN25", ParsedName("ETH_USDT-3JAN25", "future", "ETH", "USDT", date(2025, 1, 3))),
    ("BTC-27DEC24-60000-C", ParsedName("BTC-27DEC24-60000-C", "option", "BTC", None, date(2024, 12, 27),
                                       60000.0, "call")),
    ("ETH-5JAN25-3500-P", ParsedName("ETH-5JAN25-3500-P", "option", "ETH", None, date(2025, 1, 5), 3500.0, "put")),
    ("XRP_USDC-30JUN23-0d625-C", ParsedName("XRP_USDC-30JUN23-0d625-C", "option", "XRP", "USDC",
                                            date(2023, 6, 30), 0.625, "call")),
    ("BTC_USDC", ParsedName("BTC_USDC", "spot", "BTC", "USDC", None)),
])
def test_parse_instrument_name(name: str, want: ParsedName) -> None:
    assert parse_instrument_name(name) == want


def test_parsed_name_properties() -> None:
    perp = parse_instrument_name("BTC-PERPETUAL")
    assert perp.perpetual and not perp.linear
    lperp = parse_instrument_name("SOL_USDC-PERPETUAL")
    assert lperp.perpetual and lperp.linear
    fut = parse_instrument_name("BTC-27DEC24")
    assert not fut.perpetual and not fut.linear
    opt = parse_instrument_name("BTC_USDC-27DEC24-60000-P")
    assert not opt.perpetual and opt.linear
    spot = parse_instrument_name("ETH_USDC")
    assert not spot.perpetual and spot.linear and spot.kind == "spot"


@pytest.mark.parametrize("name", [
    "", "BTC", "-PERPETUAL", "_USDC", "BTC_USDC_X", "B.TC-PERPETUAL", "BTC-", "BTC-27DEC", "BTC-XYZ",
    "BTC-27DEC24-60000", "BTC-27DEC24-60000-X", "BTC-27DEC24-abc-C", "BTC-27DEC24-60000-C-X",
    "BTC-FS-27DEC24_PERP", "BTC_US-DC",
])
def test_parse_instrument_name_refuses(name: str) -> None:
    with pytest.raises(ValueError):
        parse_instrument_name(name)


@pytest.mark.xfail(strict=True, raises=pytest.fail.Exception,
                   reason="bug: an empty quote after '_' is accepted (parsed as an inverse instrument)")
def test_parse_instrument_name_refuses_empty_quote() -> None:
    with pytest.raises(ValueError):
        parse_instrument_name("BTC_-PERPETUAL")


@given(
    base=st.sampled_from(["BTC", "ETH", "SOL", "XRP"]),
    quote=st.sampled_from([None, "USDC", "USDT"]),
    d=st.dates(min_value=date(2020, 1, 1), max_value=date(2040, 12, 31)),
    strike=st.one_of(st.integers(1, 500_000).map(float), st.sampled_from([0.625, 1.5, 0.25, 12.75])),
    cp=st.sampled_from(["C", "P"]),
)
def test_option_name_round_trip(base: str, quote: str | None, d: date, strike: float, cp: str) -> None:
    pair = f"{base}_{quote}" if quote else base
    name = f"{pair}-{date_code(d)}-{strike_text(strike)}-{cp}"
    p = parse_instrument_name(name)
    assert (p.kind, p.base, p.quote, p.expiry, p.strike) == ("option", base, quote, d, strike)
    assert p.option_type == ("call" if cp == "C" else "put")


# ---------------------------------------------------------------- expiry calendars


@pytest.mark.parametrize(("year", "month", "day"), [(2024, 12, 27), (2025, 1, 31), (2025, 2, 28), (2024, 3, 29),
                                                    (2025, 10, 31), (2026, 7, 31), (2024, 6, 28)])
def test_last_friday(year: int, month: int, day: int) -> None:
    assert last_friday(year, month) == date(year, month, day)


@given(st.integers(2000, 2100), st.integers(1, 12))
def test_last_friday_property(year: int, month: int) -> None:
    d = last_friday(year, month)
    assert d.weekday() == 4 and d.month == month and d.year == year
    assert (d + timedelta(days=7)).month != month


def test_expiry_schedule_before_and_after_8_utc() -> None:
    before = datetime(2024, 12, 20, 7, 59, tzinfo=UTC)  # a Friday, before that day's expiry
    after = datetime(2024, 12, 20, 8, 0, tzinfo=UTC)
    assert expiry_schedule(before, dailies=2, weeklies=0, monthlies=0, quarterlies=0) == [date(2024, 12, 20),
                                                                                           date(2024, 12, 21)]
    assert expiry_schedule(after, dailies=2, weeklies=0, monthlies=0, quarterlies=0) == [date(2024, 12, 21),
                                                                                          date(2024, 12, 22)]


def test_expiry_schedule_weeklies_monthlies_quarterlies() -> None:
    now = datetime(2024, 12, 20, 9, 0, tzinfo=UTC)  # Friday, after the expiry
    weeks = expiry_schedule(now, dailies=0, weeklies=3, monthlies=0, quarterlies=0)
    assert weeks == [date(2024, 12, 27), date(2025, 1, 3), date(2025, 1, 10)]
    months = expiry_schedule(now, dailies=0, weeklies=0, monthlies=3, quarterlies=0)
    assert months == [date(2024, 12, 27), date(2025, 1, 31), date(2025, 2, 28)]
    quarters = expiry_schedule(now, dailies=0, weeklies=0, monthlies=0, quarterlies=3)
    assert quarters == [date(2024, 12, 27), date(2025, 3, 28), date(2025, 6, 27)]


def test_expiry_schedule_skips_a_passed_monthly() -> None:
    now = datetime(2024, 12, 28, 0, 0, tzinfo=UTC)  # the day after December's last Friday
    assert expiry_schedule(now, dailies=0, weeklies=0, monthlies=1, quarterlies=1) == [date(2025, 1, 31),
                                                                                        date(2025, 3, 28)]


def test_expiry_schedule_merges_and_sorts() -> None:
    now = datetime(2024, 12, 23, 0, 0, tzinfo=UTC)  # Monday
    out = expiry_schedule(now, dailies=5, weeklies=2, monthlies=2, quarterlies=2)
    assert out == sorted(set(out))
    assert out[:5] == [date(2024, 12, 23) + timedelta(days=i) for i in range(5)]
    assert date(2024, 12, 27) in out and date(2025, 1, 3) in out  # weeklies (the first is also a daily)
    assert date(2025, 1, 31) in out and date(2025, 3, 28) in out
    assert len(out) == 5 + 1 + 1 + 1  # 27DEC is a daily, a weekly, a monthly and a quarterly at once
    assert all(d >= now.date() for d in out)
    assert expiry_schedule(now, dailies=0, weeklies=0, monthlies=0, quarterlies=0) == []
