"""Deribit's closed vocabularies and fixed limits, in one place: instrument kinds, order types,
time in force, trigger types, order states, the perpetual expiry, size limits; and the one grid
check (is a price on the tick grid, an amount on the contract grid) that the client's order
rules (:mod:`deribit_kit.client.rules`) and the embedded exchange both apply, so the two never
disagree on an edge price. No I/O; imported by every layer that speaks the dialect.
"""

from __future__ import annotations

KINDS = ("future", "option", "spot", "future_combo", "option_combo")
"""Instrument kinds (``kind`` of ``public/get_instruments``)."""
KINDS_ANY = (*KINDS, "combo", "any")
"""Kinds a filter may name (``get_last_trades_by_currency``, ``get_positions``, ...)."""

ORDER_TYPES = ("limit", "stop_limit", "take_limit", "market", "stop_market", "take_market", "market_limit",
               "trailing_stop")
PRICED_TYPES = ("limit", "stop_limit", "take_limit")
"""Order types that need a ``price``."""
LIMIT_TYPES = frozenset({"limit", "stop_limit", "take_limit", "market_limit"})
"""Order types that rest at a limit once live."""
MARKET_TYPES = frozenset({"market", "stop_market", "take_market", "trailing_stop"})
"""Order types that trade at once up to the price band once live."""
TRIGGER_ORDER_TYPES = ("stop_limit", "take_limit", "stop_market", "take_market", "trailing_stop")
"""Order types that wait for a trigger (``untriggered`` until it fires)."""
TRIGGER_TYPES = TRIGGER_ORDER_TYPES
TRIGGERS = ("index_price", "mark_price", "last_price")
"""What a trigger order watches (its ``trigger`` param)."""
TIME_IN_FORCE = ("good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel")
OPEN_ORDER_TYPES = ("all", "limit", "trigger_all", "stop_all", "stop_limit", "stop_market", "take_all",
                    "take_limit", "take_market", "trailing_all", "trailing_stop")
"""The ``type`` filter of ``get_open_orders*``."""
CANCEL_TYPES = ("all", "limit", "trigger_all", "stop", "take", "trailing_stop")
"""The ``type`` filter of ``cancel_all_by_*``."""

ORDER_STATES = ("open", "filled", "rejected", "cancelled", "untriggered", "triggered")
OPEN_STATES = frozenset({"open", "untriggered"})
"""Order states in which an order can still trade or be edited."""

SORTING = ("asc", "desc", "default")
BOOK_DEPTHS = (1, 5, 10, 20, 50, 100, 1000, 10000)
"""The ``depth`` values ``public/get_order_book`` accepts."""

API_VERSION = "1.2.26"
"""The API version ``public/test`` and ``public/hello`` answer."""
PERPETUAL_EXPIRY_MS = 32503708800000
"""``expiration_timestamp`` of a perpetual (year 3000, as Deribit)."""
MAX_REQUEST_BYTES = 32 * 1024
"""Deribit refuses frames and POST bodies over 32 kB with -32600."""
MAX_LABEL = 64
"""An order label has at most 64 characters."""
MAX_CHANNELS_PER_SUBSCRIBE = 500
"""Channels one ``public/subscribe`` may name (more: -32602)."""

GRID_TOLERANCE = 1e-9
"""How far off a multiple, relative to the number of steps (at least 1e-9 of a step), a value may
be and still count as on the grid: float noise (``0.1 + 0.2``) passes, a real fraction of a tick
does not."""


def on_grid(value: float, step: float) -> bool:
    """``value`` is a whole multiple of ``step`` (a price on its tick, an amount on its contract
    size), up to :data:`GRID_TOLERANCE`. The client refuses what this refuses, and so does the
    exchange."""
    n = value / step
    return abs(n - round(n)) <= GRID_TOLERANCE * max(1.0, abs(n))
