"""Unit tests of channel names (deribit_kit.wire.channels): every family parses to its fields,
classification properties, malformed names refused, and chunking of subscribe calls."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deribit_kit.wire.channels import (
    MAX_CALL_BYTES,
    MAX_CHANNELS_PER_CALL,
    Channel,
    ChannelError,
    book_channel,
    chunk_channels,
    parse_channel,
    ticker_channel,
    trades_channel,
)

# name -> expected Channel fields (everything not named is None)
FAMILIES: dict[str, dict[str, object]] = {
    "book.BTC-PERPETUAL.100ms": {"family": "book", "instrument": "BTC-PERPETUAL", "interval": "100ms"},
    "book.ETH-27DEC24-3000-C.raw": {"family": "book", "instrument": "ETH-27DEC24-3000-C", "interval": "raw"},
    "book.BTC-PERPETUAL.agg2": {"family": "book", "instrument": "BTC-PERPETUAL", "interval": "agg2"},
    "book.BTC-PERPETUAL.none.10.100ms": {"family": "book_grouped", "instrument": "BTC-PERPETUAL",
                                         "interval": "100ms", "group": "none", "depth": 10},
    "book.BTC-PERPETUAL.250.20.agg2": {"family": "book_grouped", "instrument": "BTC-PERPETUAL",
                                       "interval": "agg2", "group": "250", "depth": 20},
    "ticker.BTC-PERPETUAL.raw": {"family": "ticker", "instrument": "BTC-PERPETUAL", "interval": "raw"},
    "ticker.BTC_USDC.100ms": {"family": "ticker", "instrument": "BTC_USDC", "interval": "100ms"},
    "trades.BTC-PERPETUAL.100ms": {"family": "trades", "instrument": "BTC-PERPETUAL", "interval": "100ms"},
    "trades.option.BTC.raw": {"family": "trades_kind", "kind": "option", "currency": "BTC", "interval": "raw"},
    "trades.any.any.agg2": {"family": "trades_kind", "kind": "any", "currency": "any", "interval": "agg2"},
    "deribit_price_index.btc_usd": {"family": "price_index", "index_name": "btc_usd"},
    "quote.BTC-PERPETUAL": {"family": "quote", "instrument": "BTC-PERPETUAL"},
    "perpetual.BTC-PERPETUAL.100ms": {"family": "perpetual", "instrument": "BTC-PERPETUAL", "interval": "100ms"},
    "platform_state": {"family": "platform_state"},
    "chart.trades.BTC-PERPETUAL.60": {"family": "chart_trades", "instrument": "BTC-PERPETUAL", "interval": "60"},
    "chart.trades.ETH_USDC.1D": {"family": "chart_trades", "instrument": "ETH_USDC", "interval": "1D"},
    "user.orders.BTC-PERPETUAL.raw": {"family": "user.orders", "instrument": "BTC-PERPETUAL", "interval": "raw"},
    "user.orders.future.BTC.100ms": {"family": "user.orders_kind", "kind": "future", "currency": "BTC",
                                     "interval": "100ms"},
    "user.orders.combo.ETH.raw": {"family": "user.orders_kind", "kind": "combo", "currency": "ETH",
                                  "interval": "raw"},
    "user.trades.BTC-PERPETUAL.100ms": {"family": "user.trades", "instrument": "BTC-PERPETUAL",
                                        "interval": "100ms"},
    "user.trades.option.any.raw": {"family": "user.trades_kind", "kind": "option", "currency": "any",
                                   "interval": "raw"},
    "user.portfolio.btc": {"family": "user.portfolio", "currency": "btc"},
    "user.changes.BTC-PERPETUAL.raw": {"family": "user.changes", "instrument": "BTC-PERPETUAL", "interval": "raw"},
    "user.changes.spot.USDC.100ms": {"family": "user.changes_kind", "kind": "spot", "currency": "USDC",
                                     "interval": "100ms"},
}

FIELDS = ("instrument", "interval", "kind", "currency", "index_name", "group", "depth")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_parse_channel_every_family(name: str) -> None:
    ch = parse_channel(name)
    want = FAMILIES[name]
    assert ch.name == name
    assert ch.family == want["family"]
    for f in FIELDS:
        assert getattr(ch, f) == want.get(f), f


def test_every_documented_family_is_covered() -> None:
    doc = Channel.__doc__ or ""
    documented = set(doc.split("one of", 1)[1].split("``")[1::2])
    assert documented == {str(v["family"]) for v in FAMILIES.values()}


@pytest.mark.parametrize(("name", "private", "user", "is_book", "conflatable"), [
    ("book.BTC-PERPETUAL.100ms", False, False, True, False),
    ("book.BTC-PERPETUAL.raw", True, False, True, False),
    ("book.BTC-PERPETUAL.1.10.100ms", False, False, False, True),
    ("ticker.BTC-PERPETUAL.100ms", False, False, False, True),
    ("ticker.BTC-PERPETUAL.raw", True, False, False, True),
    ("trades.BTC-PERPETUAL.100ms", False, False, False, False),
    ("trades.future.BTC.raw", True, False, False, False),
    ("deribit_price_index.btc_usd", False, False, False, True),
    ("quote.BTC-PERPETUAL", False, False, False, True),
    ("perpetual.BTC-PERPETUAL.100ms", False, False, False, True),
    ("platform_state", False, False, False, True),
    ("chart.trades.BTC-PERPETUAL.1", False, False, False, False),  # a closed candle's last update matters
    ("user.orders.BTC-PERPETUAL.100ms", True, True, False, False),
    ("user.trades.any.BTC.100ms", True, True, False, False),
    ("user.portfolio.btc", True, True, False, True),
    ("user.changes.BTC-PERPETUAL.raw", True, True, False, False),
])
def test_properties(name: str, private: bool, user: bool, is_book: bool, conflatable: bool) -> None:
    ch = parse_channel(name)
    assert (ch.private, ch.user, ch.is_book, ch.conflatable) == (private, user, is_book, conflatable)


@pytest.mark.parametrize("name", [
    "",
    "book",
    "book.BTC-PERPETUAL",
    "book.BTC-PERPETUAL.1s",
    "book.BTC-PERPETUAL.none.10.raw",  # grouped books have no raw interval
    "book.BTC-PERPETUAL.3.10.100ms",  # not a grouping Deribit offers
    "book.BTC-PERPETUAL.none.5.100ms",  # not a depth Deribit offers
    "book.BTC-PERPETUAL.none.10",
    "ticker.BTC-PERPETUAL",
    "ticker.BTC-PERPETUAL.100ms.extra",
    "trades.weird.BTC.100ms",
    "trades.BTC-PERPETUAL",
    "deribit_price_index",
    "deribit_price_index.btc_usd.x",
    "quote",
    "quote.A.B",
    "perpetual.BTC-PERPETUAL",
    "platform_state.x",
    "chart.trades.BTC-PERPETUAL",
    "chart.trades.BTC-PERPETUAL.2",  # not a resolution Deribit offers
    "chart.trades.BTC-PERPETUAL.1d",
    "chart.book.BTC-PERPETUAL.1",
    "user",
    "user.orders",
    "user.orders.BTC-PERPETUAL",
    "user.orders.BTC-PERPETUAL.1s",
    "user.orders.weird.BTC.raw",
    "user.portfolio",
    "user.portfolio.btc.x",
    "user.unknown.BTC-PERPETUAL.raw",
    "unknown.BTC-PERPETUAL.raw",
    "Book.BTC-PERPETUAL.100ms",
])
def test_malformed_names(name: str) -> None:
    with pytest.raises(ChannelError, match="unknown channel"):
        parse_channel(name)
    assert issubclass(ChannelError, ValueError)


@pytest.mark.xfail(strict=True, raises=pytest.fail.Exception,
                   reason="bug: parse_channel accepts an empty instrument/index/currency segment")
@pytest.mark.parametrize("name", ["book..100ms", "ticker..raw", "quote.", "deribit_price_index.", "user.portfolio."])
def test_empty_segments_refused(name: str) -> None:
    with pytest.raises(ChannelError):
        parse_channel(name)


def test_channel_builders() -> None:
    assert book_channel("BTC-PERPETUAL") == "book.BTC-PERPETUAL.100ms"
    assert book_channel("BTC-PERPETUAL", "raw") == "book.BTC-PERPETUAL.raw"
    assert ticker_channel("ETH-PERPETUAL") == "ticker.ETH-PERPETUAL.100ms"
    assert ticker_channel("ETH-PERPETUAL", "agg2") == "ticker.ETH-PERPETUAL.agg2"
    assert trades_channel("BTC_USDC") == "trades.BTC_USDC.100ms"
    assert trades_channel("BTC_USDC", "raw") == "trades.BTC_USDC.raw"
    assert parse_channel(book_channel("X-PERPETUAL", "agg2")).family == "book"
    assert parse_channel(ticker_channel("X-PERPETUAL")).family == "ticker"
    assert parse_channel(trades_channel("X-PERPETUAL")).family == "trades"


# ---------------------------------------------------------------- chunk_channels


def _json_size(chunk: list[str]) -> int:
    """What the kit counts for a chunk: each name plus quotes and a comma."""
    return sum(len(c) + 3 for c in chunk)


def test_chunk_by_count() -> None:
    names = [f"ticker.I{i}.100ms" for i in range(250)]
    chunks = chunk_channels(names)
    assert [len(c) for c in chunks] == [MAX_CHANNELS_PER_CALL, MAX_CHANNELS_PER_CALL, 50]
    assert [n for c in chunks for n in c] == names
    assert [len(c) for c in chunk_channels(names[:7], max_channels=3)] == [3, 3, 1]
    assert chunk_channels(names[:3], max_channels=3) == [names[:3]]


def test_chunk_by_bytes() -> None:
    names = ["a" * 97] * 10  # 100 counted bytes each
    chunks = chunk_channels(names, max_channels=1000, max_bytes=350)
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    # exactly reaching the budget starts a new chunk (a chunk stays strictly under it)
    assert [len(c) for c in chunk_channels(names, max_channels=1000, max_bytes=300)] == [2, 2, 2, 2, 2]
    assert [len(c) for c in chunk_channels(names, max_channels=1000, max_bytes=301)] == [3, 3, 3, 1]


def test_chunk_default_byte_budget() -> None:
    long = "book." + "X" * 1000 + ".100ms"
    chunks = chunk_channels([long] * 100)
    assert len(chunks) > 1
    assert all(_json_size(c) < MAX_CALL_BYTES for c in chunks)


def test_chunk_empty_and_over_long_name() -> None:
    assert chunk_channels([]) == []
    huge = "x" * 500
    assert chunk_channels(["a", huge, "b"], max_bytes=100) == [["a"], [huge], ["b"]]
    assert chunk_channels([huge], max_bytes=100) == [[huge]]
    assert chunk_channels([huge, huge], max_bytes=100) == [[huge], [huge]]


@given(
    names=st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60),
                   max_size=80),
    max_channels=st.integers(1, 12),
    max_bytes=st.integers(1, 400),
)
def test_chunk_properties(names: list[str], max_channels: int, max_bytes: int) -> None:
    chunks = chunk_channels(names, max_channels=max_channels, max_bytes=max_bytes)
    assert [n for c in chunks for n in c] == names  # order kept, nothing lost or added
    assert all(chunks), "no empty chunk"
    for c in chunks:
        assert len(c) <= max_channels
        if len(c) > 1:
            assert _json_size(c) < max_bytes
    # greedy: no chunk could have taken the next chunk's first name
    for a, b in itertools.pairwise(chunks):
        assert len(a) == max_channels or _json_size([*a, b[0]]) >= max_bytes
