"""What the upstreams that read a stream instead of an exchange account share of the
:class:`~deribit_kit.upstream.Upstream` protocol (:class:`~deribit_kit.upstream.replay.Replay`,
:class:`~deribit_kit.upstream.kafka.KafkaSource`): no account, one broker fed, instruments and
public lookups answered from what the source has read."""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import DeribitKitError, error_for_code, invalid_params
from ..models import Instrument
from ..wire.enums import API_VERSION
from .protocol import Sink

__all__ = ["UNANSWERED", "OfflineUpstream", "instrument_name", "matches", "order_book_reply"]

UNANSWERED: Any = object()  # :meth:`OfflineUpstream._answer`: a method the source answers in its own way


class OfflineUpstream:
    """The shared part of a source without an account: the sink, the instrument lookups and the
    JSON-RPC answers alike in every such source. A subclass sets ``_sink``, ``_instruments`` and
    ``_tickers``, and defines ``clock_ms``, ``index_price`` and ``_not_held``."""

    _what = "this source"  # how the error of a second broker names the source
    _sink: Sink | None
    _instruments: dict[str, Instrument]

    @property
    def authenticated(self) -> bool:
        """Always False: the source has no account, so no private or ``raw`` channels."""
        return False

    def set_sink(self, sink: Sink | None) -> None:
        """Where every notification goes; one broker per source (DeribitKitError for a second one)."""
        if sink is not None and self._sink is not None and sink != self._sink:
            raise DeribitKitError(f"{self._what} already feeds a broker: share that broker")
        self._sink = sink

    def _not_held(self) -> str:
        """Why an instrument the source does not have is unknown (the reason of the 13020)."""
        raise NotImplementedError

    def clock_ms(self) -> int:
        """The source's clock (ms)."""
        raise NotImplementedError

    async def index_price(self, index_name: str) -> float:
        """The latest price of an index the source has read."""
        raise NotImplementedError

    async def instrument(self, name: str) -> Instrument:
        """An instrument the source has read, by name; 13020 when it does not have it."""
        inst = self._instruments.get(name)
        if inst is None:
            raise error_for_code(13020, data={"param": "instrument_name", "reason": self._not_held()},
                                 method="public/get_instrument")
        return inst

    def cached_instrument(self, name: str) -> Instrument | None:
        """An instrument the source has read, or None."""
        return self._instruments.get(name)

    async def _answer(self, method: str, p: dict[str, Any]) -> Any:
        """``public/get_time`` (the source's clock), ``public/test``, ``public/hello``,
        ``public/status``, ``public/get_instrument`` and ``public/get_index_price``; :data:`UNANSWERED`
        for any other method."""
        if method == "public/get_time":
            return self.clock_ms()
        if method in ("public/test", "public/hello"):
            return {"version": API_VERSION}
        if method == "public/status":
            return {"locked": "false", "locked_indices": []}
        if method == "public/get_instrument":
            return msgspec.to_builtins(await self.instrument(instrument_name(p)))
        if method == "public/get_index_price":
            index = p.get("index_name")
            if not isinstance(index, str):
                raise invalid_params("index_name", "required")
            price = await self.index_price(index)
            return {"index_price": price, "estimated_delivery_price": price}
        return UNANSWERED


def matches(inst: Instrument, currency: str | None, kind: str | None) -> bool:
    """``inst`` is of ``currency`` (base, settlement or counter; ``any``/None: every one) and of ``kind``."""
    if currency not in ("any", None) and currency not in (inst.base_currency, inst.settlement_currency,
                                                         inst.counter_currency):
        return False
    return kind in (None, "any") or inst.kind == kind


def instrument_name(p: dict[str, Any]) -> str:
    """The ``instrument_name`` parameter (invalid params when it is missing or not a string)."""
    name = p.get("instrument_name")
    if not isinstance(name, str):
        raise invalid_params("instrument_name", "required")
    return name


def order_book_reply(name: str, snap: dict[str, Any], n: int | None) -> dict[str, Any]:
    """A ``public/get_order_book`` answer from a live book's snapshot, ``n`` levels a side (None: all)."""
    bids = [[px, a] for _, px, a in snap["bids"]][:n]
    asks = [[px, a] for _, px, a in snap["asks"]][:n]
    return {"instrument_name": name, "timestamp": snap["timestamp"], "change_id": snap["change_id"],
            "state": "open", "bids": bids, "asks": asks,
            "best_bid_price": bids[0][0] if bids else None, "best_bid_amount": bids[0][1] if bids else 0.0,
            "best_ask_price": asks[0][0] if asks else None, "best_ask_amount": asks[0][1] if asks else 0.0}
