"""Placing orders idempotently by label.

When the link drops while ``private/buy``/``sell`` is in flight
(:class:`~deribit_kit.errors.ConnectionClosed`, or a timeout), the outcome is unknown, so
:func:`place` waits for the reconnect (requests wait until the session is restored), looks the
label up, and returns the order the exchange holds; only when the exchange has no such order is the
request sent again, once. Every order carries a label (:func:`~deribit_kit.client.rules.check_label`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionClosed, MethodNotFoundError, RequestTimeout
from ..models import Instrument, Order, OrderResult, UserTrade, convert, convert_list

if TYPE_CHECKING:
    from .methods import Methods

__all__ = ["PlacedOrder", "find_by_label", "place"]

log = logging.getLogger("deribit_kit.client.placement")


class PlacedOrder(OrderResult, kw_only=True):
    """An :class:`~deribit_kit.models.OrderResult` that also says how it was obtained.

    ``reconciled`` is ``None`` for a normal answer; ``"found"`` when the connection dropped during
    the request and the order was found on the exchange by its label; ``"resent"`` when it was not
    there and the request was sent again (once).
    """

    reconciled: str | None = None


def _currencies(inst: Instrument) -> list[str]:
    """The currencies whose order lists hold ``inst``'s orders (settlement; spot: base and quote)."""
    if inst.settlement_currency:
        return [inst.settlement_currency]
    return [c for c in dict.fromkeys((inst.base_currency, inst.quote_currency)) if c]


async def find_by_label(client: Methods, inst: Instrument, label: str) -> list[Order]:
    """Every order (open or closed) of ``inst`` carrying ``label``, as the exchange reports them."""
    found: dict[str, Order] = {}
    for cur in _currencies(inst):
        try:
            raw = await client.call("private/get_order_state_by_label", currency=cur, label=label)
        except MethodNotFoundError:
            raw = await client.call("private/get_open_orders_by_label", currency=cur, label=label)
            raw += await client.call("private/get_order_history_by_instrument", instrument_name=inst.instrument_name,
                                     count=100, include_unfilled=True)
        for o in convert_list(raw, Order):
            if o.label == label and o.instrument_name == inst.instrument_name:
                found[o.order_id] = o
        if found:
            break
    return sorted(found.values(), key=lambda o: o.creation_timestamp)


async def place(client: Methods, direction: str, params: dict[str, Any]) -> PlacedOrder:
    """Send ``private/{direction}``; on an unknown outcome reconcile by label (see module doc)."""
    method = f"private/{direction}"
    try:
        return convert(await client.call(method, params), PlacedOrder)
    except (ConnectionClosed, RequestTimeout) as exc:
        label = params["label"]
        log.warning("%s %s label=%s: outcome unknown (%s); reconciling by label after reconnect",
                    method, params["instrument_name"], label, exc)
    inst = await client.instrument(params["instrument_name"])
    orders = await find_by_label(client, inst, label)
    if orders:
        order = orders[-1]
        if len(orders) > 1:
            log.error("label %s names %d orders on %s", label, len(orders), inst.instrument_name)
        trades = convert_list(await client.call("private/get_user_trades_by_order", order_id=order.order_id),
                              UserTrade)
        log.warning("%s label=%s reconciled: the exchange holds order %s (%s); not re-sent",
                    method, label, order.order_id, order.order_state)
        return PlacedOrder(order=order, trades=list(trades), reconciled="found")
    log.warning("%s label=%s reconciled: no such order on the exchange; sending it again (once)", method, label)
    result = convert(await client.call(method, params), PlacedOrder)
    result.reconciled = "resent"
    return result
