"""Conformance of the embedded exchange to Deribit's own API description (``deribit_api_v2.json``).

For every non-``sim/*`` method registered in :data:`deribit_kit.sim.rpc.METHODS` a call recipe
below produces one or more calls; each reply is checked over WebSocket:

* the envelope (``jsonrpc``, ``id``, ``usIn``, ``usOut``, ``usDiff``, ``testnet``) against the spec's
  ``base_message`` and by value;
* the ``result`` with jsonschema against the spec's result schema (``$ref``s resolved inside the
  spec, OpenAPI ``nullable`` translated to JSON Schema);
* that the result carries no field the spec does not define (typos, invented names), except the
  legacy fields deribit-api.md documents.

The broker's port answers the public methods it serves (its own or forwarded) through the same
checks (:func:`test_port_result_conforms`).

Every implemented public channel's notification ``data`` is checked against
``components['x-subscriptions'][template]['notifications']['schema']``, and every declared
``Method.params`` name against the spec's parameters of that path.

Where the spec disagrees with what Deribit really sends (deribit-api.md records it), the exchange
keeps the documented behaviour and the deviation is listed, with its reason, in ``DEVIATIONS`` /
``EXTRA_FIELDS`` / ``EXTRA_PARAMS`` below. Recipes for the trading and account methods exist ahead
of their registration, so they are covered the moment ``deribit_kit.sim.rpc`` assembles them.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import itertools
import json
import os
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import pytest_asyncio
from conftest import SPEC_PATH, RawPeer, connect_peer
from jsonschema import Draft7Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from deribit_kit import Deribit
from deribit_kit.broker import Broker
from deribit_kit.broker.port import METHODS as PORT_TABLE
from deribit_kit.broker.port import BrokerServer
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator
from deribit_kit.sim.rpc import METHODS

SPEC_URI = "urn:deribit:api-v2"
API_METHODS = sorted(m for m in METHODS if not m.startswith("sim/"))

# ---------------------------------------------------------------- allow-lists (spec vs reality)

REQUIRED_TYPOS = {
    # Typos in the spec's ``required`` lists: the name required is not a property of the same schema.
    # The intended field (value) must be present instead.
    "best_add_price": "best_ask_price",  # ticker_notification(_with_bids_and_asks), quote_notification
    "best_add_amount": "best_ask_amount",
    "base currency": "base_currency",  # book_summary
    "min_confirmation": "min_confirmations",  # currency
    "instrument": "instrument_name",  # order
    "relized_profit_loss": "realized_profit_loss",  # position
}


@dataclass(frozen=True)
class Deviation:
    """A schema violation that is accepted because the spec, not the exchange, is wrong.

    ``where`` is an fnmatch pattern over the method or channel template being checked."""

    where: str
    why: str
    applies: Callable[[ValidationError], bool]


def _missing(e: ValidationError) -> str | None:
    if e.validator != "required":
        return None
    m = re.match(r"^'(.*)' is a required property$", e.message)
    return m.group(1) if m else None


def _field(e: ValidationError) -> str:
    return ".".join("[]" if isinstance(p, int) else str(p) for p in e.relative_path)


def _is_null(e: ValidationError) -> bool:
    return e.validator == "type" and e.instance is None


DEVIATIONS: tuple[Deviation, ...] = (
    Deviation("*", "spec typo in `required` (see REQUIRED_TYPOS); the intended field is present",
              lambda e: (_missing(e) in REQUIRED_TYPOS and isinstance(e.instance, dict)
                         and REQUIRED_TYPOS[_missing(e) or ""] in e.instance)),
    # The spec's own description says "`null` if there weren't any trades/asks/bids" (stats.price_change,
    # book_summary last/low/price_change/mid_price/bid_price/ask_price) but the type lacks `nullable`.
    Deviation("*", "description documents `null`, type forgot `nullable`",
              lambda e: _is_null(e) and isinstance(e.schema, dict)
              and "`null`" in str(e.schema.get("description", ""))),
    # 24 h high/low are the same statistics as book_summary's `low` ("`null` if there weren't any
    # trades"); an instrument that has not traded has no high/low, and the exchange says so with null.
    Deviation("*", "24h high/low are null before the first trade (as book_summary documents for low)",
              lambda e: _is_null(e) and _field(e) in ("stats.high", "stats.low", "[].high")),
    # deribit-api.md 4.3: settlement_period is "not added for spot"; cryptofeed classifies an
    # instrument as spot precisely because the key is absent. The spec lists it as required.
    Deviation("public/get_instrument*", "spot instruments carry no settlement_period (deribit-api.md 4.3)",
              lambda e: (_missing(e) == "settlement_period" and isinstance(e.instance, dict)
                         and e.instance.get("kind") == "spot")),
    # types/underlying_index is described as "Name of the underlying future, or `index_price`" but typed
    # number; it is a name (deribit-api.md 4.4, ccxt's captured ticker: "underlying_index": "BTC-27SEP24";
    # book_summary types the same field as string).
    Deviation("*", "underlying_index is a name (string), the spec's type says number",
              lambda e: e.validator == "type" and isinstance(e.instance, str)
              and _field(e).endswith("underlying_index")),
    # The result schema only describes the `extended=true` form ({name, *_combo_creation_enabled});
    # without `extended` Deribit answers plain index names (its documented example, and what
    # tests/sim/test_sim_methods.py and clients read). The exchange returns objects for extended=true.
    Deviation("public/get_index_price_names", "without `extended` the names are plain strings",
              lambda e: e.validator == "type" and isinstance(e.instance, str) and _field(e) == "[]"),
)

EXTRA_FIELDS: dict[tuple[str, str], str] = {
    # (method or channel template pattern, field path pattern; ``[]`` = any list item) -> why the
    # exchange sends a field the spec does not define
    ("public/get_order_book", "change_id"): "book sequence, same as the book channel; ccxt's nonce (4.4)",
    # TODO(lead): deribit-api.md 4.4/4.5 and ccxt's captured get_order_book have no
    # estimated_delivery_price (it is a ticker field), but tests/sim/test_sim_methods.py::test_get_order_book
    # requires it; kept until that is settled.
    ("public/get_order_book", "estimated_delivery_price"): "expected by tests/sim/test_sim_methods.py",
    ("private/*", "*commission"): "legacy order field ccxt reads as the fee (deribit-api.md 6.2)",
    ("private/*", "*profit_loss"): "legacy order field (deribit-api.md 6.2)",
    ("private/*", "*max_show"): "legacy order field (deribit-api.md 6.2)",
    ("private/*", "*open_orders_margin"): "position field seen in real captures (deribit-api.md 7.1)",
    ("private/*", "*estimated_liquidation_price"): "position field in real captures, ccxt reads it (7.1)",
    ("private/*", "*self_trade"): "user-trade field observed in real captures (deribit-api.md 6.4)",
    ("user.*", "*commission"): "legacy order field (deribit-api.md 6.2)",
    ("user.*", "*profit_loss"): "legacy order field (deribit-api.md 6.2)",
    ("user.*", "*max_show"): "legacy order field (deribit-api.md 6.2)",
    ("user.*", "*self_trade"): "user-trade field observed in real captures (deribit-api.md 6.4)",
    ("user.*", "*open_orders_margin"): "position field seen in real captures (deribit-api.md 7.1)",
    ("user.*", "*estimated_liquidation_price"): "position field in real captures, ccxt reads it (7.1)",
}

CHANNEL_SCHEMA_OVERRIDES: dict[str, tuple[str, str]] = {
    # channel template -> (JSON pointer suffix under its notification schema, why)
    "user.changes.{instrument_name}.{interval}": (
        "/items", "the spec types the data as an array of user_change; deribit-api.md 5.2 documents one "
        "{instrument_name, orders, trades, position} object per message (the array is unconfirmed)"),
}

RESULT_UNWRAPPED = {
    # The response schema puts the result's schema beside the envelope instead of under `result`
    # (an `allOf` member `{type: array, items: user_trade}`); deribit-api.md 6.3: a plain array of trades.
    "private/get_user_trades_by_order": "spec forgot the `result` wrapper",
}

KNOWN_GAPS: dict[str, str] = {
    # method -> why its result does not conform yet; run as strict xfail, so the test turns red
    # (XPASS) the moment it is fixed and the entry must go.
}

EXTRA_PARAMS: dict[tuple[str, str], str] = {
    # (method, param) the exchange accepts although the spec does not list it
    ("public/get_last_trades_by_instrument", "include_old"): "legacy, still sent by ccxt and cryptofeed (4.6)",
    ("public/get_last_trades_by_instrument_and_time", "include_old"): "legacy, sent by ccxt/cryptofeed (4.6)",
    ("public/get_last_trades_by_currency", "include_old"): "legacy, still sent by ccxt (4.6)",
}

# ---------------------------------------------------------------- the spec, as JSON Schema


@cache
def _spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_bytes())


def spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.skip(f"Deribit API description not found at {SPEC_PATH} (CI provides ../shared/deribit)")
    return _spec()


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema draft 7: ``nullable: true`` becomes a ``null`` type alternative, and
    the spec's stray ``type: float`` is read as ``number``."""
    if isinstance(node, list):
        return [_to_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items()}
    if out.get("type") in ("float", "double"):  # not a JSON/OpenAPI type (get_funding_rate_value uses it)
        out["type"] = "number"
    if out.pop("nullable", False) is True:
        if "$ref" in out:
            return {"anyOf": [{"$ref": out.pop("$ref")}, {"type": "null"}], **out}
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


@cache
def _registry() -> Registry:
    doc = _to_json_schema(copy.deepcopy(spec()))
    return Registry().with_resource(SPEC_URI, Resource.from_contents(doc, default_specification=DRAFT7))


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(urllib.parse.quote(p.replace("~", "~0").replace("/", "~1"), safe="") for p in parts)


@cache
def _lookup(ref: str) -> Any:
    """What a document-local ``#/...`` reference points at (every ``$ref`` in the spec is one)."""
    return _registry().resolver(SPEC_URI).lookup(ref).contents


@cache
def _validator(pointer: str) -> Draft7Validator:
    return Draft7Validator({"$ref": SPEC_URI + pointer}, registry=_registry())


def result_pointer(method: str) -> str | None:
    """The JSON pointer of ``method``'s ``result`` schema, or None when the spec gives none."""
    ok = spec()["paths"]["/" + method]["get"]["responses"].get("200", {})
    schema = ok.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    ref = schema["$ref"]
    response = _lookup(ref)
    for i, part in enumerate(response.get("allOf", [])):
        if "result" in part.get("properties", {}):
            return f"{ref}/allOf/{i}/properties/result"
        if method in RESULT_UNWRAPPED and part.get("type") == "array":
            return f"{ref}/allOf/{i}"
    raise AssertionError(f"no result schema in {ref}")


def channel_pointer(template: str) -> str:
    return _pointer("components", "x-subscriptions", template, "notifications", "schema")


def schema_errors(pointer: str, instance: Any, where: str) -> list[str]:
    """Violations of the schema at ``pointer`` that no deviation listed for ``where`` (a method or
    channel template) excuses, as readable lines."""
    out = []
    for e in _validator(pointer).iter_errors(instance):
        if any(fnmatch.fnmatchcase(where, d.where) and d.applies(e) for d in DEVIATIONS):
            continue
        out.append(f"{_field(e) or '<root>'}: {e.message[:300]}")
    return out


def _flatten(schema: Any) -> list[dict[str, Any]]:
    """``schema`` with ``$ref``s resolved and ``allOf``/``anyOf``/``oneOf`` members spread out."""
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        return _flatten(_lookup(schema["$ref"]))
    out = [schema]
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            out.extend(_flatten(sub))
    return out


def extra_fields(pointer: str, instance: Any, where: str) -> list[str]:
    """Object keys in ``instance`` that the schema at ``pointer`` does not define (nor EXTRA_FIELDS)."""
    found: list[str] = []

    def walk(value: Any, parts: list[dict[str, Any]], path: str) -> None:
        if isinstance(value, dict):
            props: dict[str, list[dict[str, Any]]] = {}
            open_object = True
            for sch in parts:
                if "properties" in sch:
                    open_object = False
                    for k, v in sch["properties"].items():
                        props.setdefault(k, []).extend(_flatten(v))
                for k in sch.get("required", []):  # required but left undefined (e.g. tfa_enabled)
                    props.setdefault(k, [])
            if open_object:
                return  # a free-form object (no properties declared)
            for k, v in value.items():
                p = f"{path}.{k}" if path else k
                if k not in props:
                    found.append(p)
                else:
                    walk(v, props[k], p)
        elif isinstance(value, list):
            subs = [x for sch in parts if isinstance(sch.get("items"), dict) for x in _flatten(sch["items"])]
            if subs:
                for v in value:
                    walk(v, subs, f"{path}.[]" if path else "[]")

    walk(instance, _flatten({"$ref": pointer}), "")
    return sorted({f for f in found if not any(fnmatch.fnmatchcase(where, w) and fnmatch.fnmatchcase(f, pat)
                                                for w, pat in EXTRA_FIELDS)})


def spec_param_names(method: str) -> set[str]:
    names = set()
    for p in spec()["paths"]["/" + method]["get"].get("parameters", []):
        if "$ref" in p:
            p = _lookup(p["$ref"])
        names.add(p["name"])
    return names


# ---------------------------------------------------------------- call recipes


@dataclass
class Ctx:
    """What a recipe may use: the exchange, an authenticated-if-needed peer and sample names."""

    sim: Simulator
    peer: RawPeer

    def names(self) -> dict[str, str]:
        insts = self.sim.market.instruments
        future = min(n for n, i in insts.items() if i.kind == "future" and not i.perpetual and n.startswith("BTC-"))
        option = min(n for n, i in insts.items() if i.kind == "option" and n.startswith("BTC-"))
        return {"perp": "BTC-PERPETUAL", "future": future, "option": option, "spot": "BTC_USDC",
                "linear": "BTC_USDC-PERPETUAL", "eth": "ETH-PERPETUAL"}

    def samples(self) -> list[str]:
        return list(self.names().values())

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        return await self.peer.result(method, params)

    async def resting_order(self, label: str = "conformance") -> dict[str, Any]:
        """A limit buy resting well below the market on BTC-PERPETUAL (needs private/buy)."""
        bid = self.sim.market.get("BTC-PERPETUAL")
        assert bid is not None
        price = round(bid.mark_price * 0.9 * 2) / 2
        res = await self.call("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit",
                                              "price": price, "label": label})
        order: dict[str, Any] = res["order"]
        return order

    async def filled_order(self) -> dict[str, Any]:
        """A market buy that fills on BTC-PERPETUAL (needs private/buy)."""
        res = await self.call("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market",
                                              "label": "conformance-fill"})
        order: dict[str, Any] = res["order"]
        return order


Recipe = Callable[[Ctx], Awaitable[list[dict[str, Any]]]]


def static(*calls: dict[str, Any]) -> Recipe:
    async def recipe(ctx: Ctx) -> list[dict[str, Any]]:
        return [dict(c) for c in calls]

    return recipe


def per_instrument(**extra: Any) -> Recipe:
    async def recipe(ctx: Ctx) -> list[dict[str, Any]]:
        return [{"instrument_name": n, **extra} for n in ctx.samples()]

    return recipe


async def _auth_calls(ctx: Ctx) -> list[dict[str, Any]]:
    client_id, secret = demo_key(ctx.sim)
    first = await ctx.call("public/auth", {"grant_type": "client_credentials", "client_id": client_id,
                                           "client_secret": secret})
    return [
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
         "scope": "session:conformance expires:600", "state": "s1"},
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    ]


async def _instruments_calls(ctx: Ctx) -> list[dict[str, Any]]:
    return [
        {},  # ccxt's load_markets: no params at all (every instrument)
        {"currency": "BTC", "kind": "future"}, {"currency": "USDC"}, {"currency": "SOL"},
        {"currency": "any", "kind": "spot"}, {"currency": "BTC", "expired": True},
    ]


async def _trades_time_calls(ctx: Ctx) -> list[dict[str, Any]]:
    now = ctx.sim.now_ms()
    return [{"instrument_name": n, "start_timestamp": 0, "end_timestamp": now + 1000, "count": 100}
            for n in ctx.samples()]


async def _funding_calls(ctx: Ctx) -> list[dict[str, Any]]:
    now = ctx.sim.now_ms()
    return [{"instrument_name": "BTC-PERPETUAL", "start_timestamp": now - 8 * 3_600_000, "end_timestamp": now}]


async def _chart_calls(ctx: Ctx) -> list[dict[str, Any]]:
    now = ctx.sim.now_ms()
    return [{"instrument_name": "BTC-PERPETUAL", "start_timestamp": now - 3_600_000, "end_timestamp": now,
             "resolution": r} for r in ("1", "60", "1D")]


async def _unsubscribe_calls(ctx: Ctx) -> list[dict[str, Any]]:
    chans = ["ticker.BTC-PERPETUAL.100ms", "deribit_price_index.btc_usd"]
    await ctx.call("public/subscribe", {"channels": chans})
    return [{"channels": chans}]


async def _order_id_calls(ctx: Ctx) -> list[dict[str, Any]]:
    return [{"order_id": (await ctx.resting_order())["order_id"]}]


async def _edit_calls(ctx: Ctx) -> list[dict[str, Any]]:
    order = await ctx.resting_order()
    return [{"order_id": order["order_id"], "amount": 20, "price": order["price"]}]


async def _edit_by_label_calls(ctx: Ctx) -> list[dict[str, Any]]:
    order = await ctx.resting_order("conformance-edit")
    return [{"label": "conformance-edit", "instrument_name": "BTC-PERPETUAL", "amount": 20, "price": order["price"]}]


async def _with_orders(ctx: Ctx, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    await ctx.resting_order()
    await ctx.filled_order()
    return calls


def with_orders(*calls: dict[str, Any]) -> Recipe:
    """Calls made after one resting and one filled order exist (so results are not empty)."""

    async def recipe(ctx: Ctx) -> list[dict[str, Any]]:
        return await _with_orders(ctx, [dict(c) for c in calls])

    return recipe


async def _trades_by_order_calls(ctx: Ctx) -> list[dict[str, Any]]:
    return [{"order_id": (await ctx.filled_order())["order_id"]}]


async def _user_trades_time_calls(ctx: Ctx) -> list[dict[str, Any]]:
    await ctx.filled_order()
    now = ctx.sim.now_ms()
    return [{"instrument_name": "BTC-PERPETUAL", "start_timestamp": 0, "end_timestamp": now + 1000}]


async def _user_trades_ccy_time_calls(ctx: Ctx) -> list[dict[str, Any]]:
    await ctx.filled_order()
    now = ctx.sim.now_ms()
    return [{"currency": "BTC", "start_timestamp": 0, "end_timestamp": now + 1000}]


async def _margins_calls(ctx: Ctx) -> list[dict[str, Any]]:
    inst = ctx.sim.market.get("BTC-PERPETUAL")
    assert inst is not None
    return [{"instrument_name": "BTC-PERPETUAL", "amount": 100, "price": round(inst.mark_price)}]


PERP = {"instrument_name": "BTC-PERPETUAL"}

RECIPES: dict[str, Recipe] = {
    # ---- session
    "public/test": static({}, {"expected_result": "ok"}),
    "public/hello": static({"client_name": "conformance", "client_version": "1.0"}),
    "public/get_time": static({}),
    "public/status": static({}),
    "public/set_heartbeat": static({"interval": 30}),
    "public/disable_heartbeat": static({}),
    "public/auth": _auth_calls,
    "private/logout": static({"invalidate_token": True}),
    "public/enable_cancel_on_disconnect": static({}, {"scope": "connection"}),
    "public/disable_cancel_on_disconnect": static({}, {"scope": "connection"}),
    "public/get_cancel_on_disconnect": static({}, {"scope": "connection"}),
    "private/enable_cancel_on_disconnect": static({}, {"scope": "connection"}),
    "private/disable_cancel_on_disconnect": static({}, {"scope": "connection"}),
    "private/get_cancel_on_disconnect": static({}, {"scope": "connection"}),
    # ---- reference and market data
    "public/get_currencies": static({}),
    "public/get_instruments": _instruments_calls,
    "public/get_instrument": per_instrument(),
    "public/get_contract_size": per_instrument(),
    "public/get_index_price_names": static({}, {"extended": True}),
    "public/get_index_price": static({"index_name": "btc_usd"}, {"index_name": "eth_usd"}, {"index_name": "sol_usdc"}),
    "public/get_order_book": per_instrument(depth=5),
    "public/ticker": per_instrument(),
    "public/get_book_summary_by_currency": static({"currency": "BTC"}, {"currency": "BTC", "kind": "option"},
                                                  {"currency": "ETH", "kind": "future"},
                                                  {"currency": "USDC", "kind": "spot"}),
    "public/get_book_summary_by_instrument": per_instrument(),
    "public/get_last_trades_by_instrument": per_instrument(count=100),
    "public/get_last_trades_by_instrument_and_time": _trades_time_calls,
    "public/get_last_trades_by_currency": static({"currency": "BTC", "count": 100},
                                                 {"currency": "ETH", "kind": "future", "sorting": "asc"}),
    "public/get_last_trades_by_currency_and_time": static({"currency": "BTC", "start_timestamp": 0,
                                                           "end_timestamp": 2**53}),
    "public/get_funding_rate_value": _funding_calls,
    "public/get_funding_rate_history": _funding_calls,
    "public/get_tradingview_chart_data": _chart_calls,
    "public/get_historical_volatility": static({"currency": "BTC"}),
    "public/get_delivery_prices": static({"index_name": "btc_usd"}),
    "public/get_last_settlements_by_instrument": static(PERP),
    "public/get_last_settlements_by_currency": static({"currency": "BTC"}),
    "public/get_expirations": static({"currency": "BTC", "kind": "any"}),
    "public/get_supported_index_names": static({}),
    # ---- subscriptions
    "public/subscribe": static({"channels": ["book.BTC-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.100ms",
                                             "no.such.channel"]}),
    "private/subscribe": static({"channels": ["book.BTC-PERPETUAL.raw", "user.orders.any.any.raw",
                                              "user.portfolio.btc"], "label": "conformance"}),
    "public/unsubscribe": _unsubscribe_calls,
    "private/unsubscribe": _unsubscribe_calls,
    "public/unsubscribe_all": static({}),
    "private/unsubscribe_all": static({}),
    # ---- trading (deribit_kit.sim.rpc.trading)
    "private/buy": static({**PERP, "amount": 10, "type": "market", "label": "conf-buy"}),
    "private/sell": static({**PERP, "amount": 10, "type": "market", "label": "conf-sell"}),
    "private/edit": _edit_calls,
    "private/edit_by_label": _edit_by_label_calls,
    "private/cancel": _order_id_calls,
    "private/cancel_all": with_orders({}),
    "private/cancel_all_by_instrument": with_orders(PERP),
    "private/cancel_all_by_currency": with_orders({"currency": "BTC"}),
    "private/cancel_all_by_kind_or_type": with_orders({"currency": "BTC"}),
    "private/cancel_by_label": with_orders({"label": "conformance"}),
    "private/close_position": with_orders({**PERP, "type": "market"}),
    "private/get_open_orders": with_orders({}),
    "private/get_open_orders_by_instrument": with_orders(PERP),
    "private/get_open_orders_by_currency": with_orders({"currency": "BTC"}),
    "private/get_open_orders_by_label": with_orders({"currency": "BTC", "label": "conformance"}),
    "private/get_order_state": _order_id_calls,
    "private/get_order_state_by_label": with_orders({"currency": "BTC", "label": "conformance"}),
    "private/get_order_history_by_instrument": with_orders(PERP),
    "private/get_order_history_by_currency": with_orders({"currency": "BTC"}),
    "private/get_user_trades_by_instrument": with_orders(PERP),
    "private/get_user_trades_by_instrument_and_time": _user_trades_time_calls,
    "private/get_user_trades_by_currency": with_orders({"currency": "BTC"}),
    "private/get_user_trades_by_currency_and_time": _user_trades_ccy_time_calls,
    "private/get_user_trades_by_order": _trades_by_order_calls,
    "private/get_margins": _margins_calls,
    "private/get_position": with_orders(PERP),
    "private/get_positions": with_orders({}, {"currency": "BTC"}, {"currency": "BTC", "kind": "future"}),
    "private/get_account_summary": with_orders({"currency": "BTC"}, {"currency": "BTC", "extended": True}),
    "private/get_account_summaries": with_orders({}, {"extended": True}),
    "private/get_subaccounts": static({}, {"with_portfolio": True}),
    "private/get_transaction_log": with_orders({"currency": "BTC", "start_timestamp": 0,
                                                "end_timestamp": 2**53}),
    "private/get_settlement_history_by_currency": static({"currency": "BTC"}),
    "private/get_settlement_history_by_instrument": static(PERP),
}

CLOSES_CONNECTION = {"private/logout"}  # the spec gives no result: "closes WS connection"


def demo_key(sim: Simulator) -> tuple[str, str]:
    """The demo API key: DEMO_CLIENT_ID / DEMO_CLIENT_SECRET unless DERIBIT_CLIENT_ID/SECRET override it."""
    acct = sim.demo_account
    if "DERIBIT_CLIENT_ID" not in os.environ:
        assert (acct.client_id, acct.client_secret) == (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    return acct.client_id, acct.client_secret


async def authenticate(peer: RawPeer, sim: Simulator) -> None:
    client_id, secret = demo_key(sim)
    res = await peer.result("public/auth", {"grant_type": "client_credentials", "client_id": client_id,
                                            "client_secret": secret})
    assert res["access_token"]



def check_envelope(reply: dict[str, Any], request_id: Any, testnet: bool) -> None:
    errors = schema_errors(_pointer("responses", "base_message"), reply, "envelope")
    assert not errors, errors
    assert reply["jsonrpc"] == "2.0"
    assert reply["id"] == request_id
    for k in ("usIn", "usOut", "usDiff"):
        assert type(reply[k]) is int, (k, reply[k])
    assert reply["usOut"] >= reply["usIn"] > 1_500_000_000_000_000
    assert reply["usDiff"] == reply["usOut"] - reply["usIn"]
    assert reply["testnet"] is testnet
    assert set(reply) <= {"jsonrpc", "id", "result", "error", "usIn", "usOut", "usDiff", "testnet"}, set(reply)
    assert ("result" in reply) != ("error" in reply)


# ---------------------------------------------------------------- fixtures


# One exchange for the whole module (building one is the slow part of each test), on one event
# loop; every test gets its own connection. The exchange's clock is stopped (``autostep=False``): it
# moves only on the tests' own ``sim.step()`` calls, so no tick runs behind a test's back.
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def quiet() -> AsyncIterator[Simulator]:
    async with Simulator(seed=1, autostep=False, rate_limits=False, min_heartbeat_interval=1) as s:
        s.market.trade_rate = 5.0  # trades on every perpetual each tick, so trade lists are not empty
        s.step(20)
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def qpeer(quiet: Simulator) -> AsyncIterator[RawPeer]:
    p = await connect_peer(quiet.ws_url)
    yield p
    await p.close()


# ---------------------------------------------------------------- tests: methods


def test_every_method_has_a_recipe() -> None:
    """Nothing registered is silently left out of the conformance run."""
    missing = [m for m in API_METHODS if m not in RECIPES]
    assert not missing, f"add call recipes to RECIPES for: {missing}"


def test_every_method_is_in_the_spec() -> None:
    paths = spec()["paths"]
    unknown = [m for m in API_METHODS if "/" + m not in paths]
    assert not unknown, f"methods Deribit does not have: {unknown}"


@pytest.mark.parametrize("name", API_METHODS)
def test_declared_params_exist_in_spec(name: str) -> None:
    if "/" + name not in spec()["paths"]:
        pytest.fail(f"{name} is not in the spec")
    declared = [p.name for p in METHODS[name].params]
    unknown = [p for p in declared if p not in spec_param_names(name) and (name, p) not in EXTRA_PARAMS]
    assert not unknown, f"{name} declares params the spec does not list: {unknown}"


@pytest.mark.parametrize("name", [
    pytest.param(m, marks=pytest.mark.xfail(reason=KNOWN_GAPS[m], strict=True)) if m in KNOWN_GAPS else m
    for m in API_METHODS
])
@module_loop
async def test_method_result_conforms(name: str, quiet: Simulator, qpeer: RawPeer) -> None:
    await _check_method(name, quiet, qpeer, quiet.testnet)


async def _check_method(name: str, sim: Simulator, peer: RawPeer, testnet: bool) -> None:
    """Call ``name`` as its recipe says on ``peer`` (the exchange, or the port in front of it) and
    check every reply against the spec."""
    spec()
    recipe = RECIPES.get(name)
    if recipe is None:
        pytest.fail(f"no call recipe for {name} (see test_every_method_has_a_recipe)")
    sim.market.trade_rate = 5.0
    sim.step(2)
    if METHODS[name].private:
        await authenticate(peer, sim)
    calls = await recipe(Ctx(sim, peer))
    assert calls, f"recipe for {name} made no calls"
    pointer = result_pointer(name)
    for params in calls:
        request_id = next(peer.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        peer.replies[request_id] = fut
        await peer.ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": name, "params": params}))
        reply = await asyncio.wait_for(fut, 5.0)
        check_envelope(reply, request_id, testnet)
        assert "result" in reply, f"{name}({params}) -> {reply.get('error')}"
        if pointer is None:
            assert name in CLOSES_CONNECTION, f"the spec has no result schema for {name}"
            await asyncio.wait_for(peer._reader, 5.0)  # the exchange closes the connection
            assert peer.ws.close_code is not None
            continue
        result = reply["result"]
        errors = schema_errors(pointer, result, name)
        assert not errors, f"{name}({params}) result violates the spec:\n" + "\n".join(errors[:20])
        extra = extra_fields(pointer, result, name)
        assert not extra, f"{name}({params}) result has fields the spec does not define: {extra}"


# ---------------------------------------------------------------- tests: the broker's port

PORT_METHODS = sorted(m for m in PORT_TABLE if m in RECIPES and not PORT_TABLE[m].ws_only and not
                      PORT_TABLE[m].private and m != "public/auth")
"""The public methods the broker's port answers itself or forwards: the same spec checks as the exchange's."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def qport(quiet: Simulator) -> AsyncIterator[BrokerServer]:
    dk = await Deribit.connect(quiet.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    broker = Broker(dk)
    async with BrokerServer(broker, rate_limits=False) as srv:
        yield srv
    await broker.close()
    await dk.close()


@pytest.mark.parametrize("name", [
    pytest.param(m, marks=pytest.mark.xfail(reason=KNOWN_GAPS[m], strict=True)) if m in KNOWN_GAPS else m
    for m in PORT_METHODS
])
@module_loop
async def test_port_result_conforms(name: str, quiet: Simulator, qport: BrokerServer) -> None:
    assert len(PORT_METHODS) >= 12
    peer = await connect_peer(qport.ws_url)
    try:
        await _check_method(name, quiet, peer, qport.testnet)
    finally:
        await peer.close()


# ---------------------------------------------------------------- tests: channels


@dataclass(frozen=True)
class ChannelCase:
    template: str
    channel: str  # may use {perp}, {option}, {spot}, {future}, {linear}, {eth}
    messages: int = 2  # notifications to validate (book: snapshot + change)
    trade_rate: float = 1.0  # the market's trade rate multiplier (trade channels need trades each tick)
    private: bool = False  # the account's own data: private/subscribe after auth; orders make it move


CHANNEL_CASES = (
    ChannelCase("book.{instrument_name}.{interval}", "book.{perp}.100ms", 3),
    ChannelCase("book.{instrument_name}.{interval}", "book.{option}.100ms", 1),
    ChannelCase("book.{instrument_name}.{group}.{depth}.{interval}", "book.{perp}.none.10.100ms"),
    ChannelCase("book.{instrument_name}.{group}.{depth}.{interval}", "book.{eth}.5.20.100ms"),
    ChannelCase("ticker.{instrument_name}.{interval}", "ticker.{perp}.100ms"),
    ChannelCase("ticker.{instrument_name}.{interval}", "ticker.{future}.100ms"),
    ChannelCase("ticker.{instrument_name}.{interval}", "ticker.{option}.100ms"),
    ChannelCase("ticker.{instrument_name}.{interval}", "ticker.{spot}.100ms"),
    ChannelCase("ticker.{instrument_name}.{interval}", "ticker.{linear}.100ms"),
    ChannelCase("trades.{instrument_name}.{interval}", "trades.{perp}.100ms", trade_rate=4),
    ChannelCase("trades.{instrument_name}.{interval}", "trades.{option}.100ms", 1, trade_rate=100),
    ChannelCase("trades.{kind}.{currency}.{interval}", "trades.future.BTC.100ms", trade_rate=13),
    ChannelCase("trades.{kind}.{currency}.{interval}", "trades.option.any.100ms", trade_rate=5),
    ChannelCase("deribit_price_index.{index_name}", "deribit_price_index.btc_usd"),
    ChannelCase("quote.{instrument_name}", "quote.{perp}"),
    ChannelCase("quote.{instrument_name}", "quote.{spot}"),
    ChannelCase("perpetual.{instrument_name}.{interval}", "perpetual.{perp}.100ms"),
    ChannelCase("chart.trades.{instrument_name}.{resolution}", "chart.trades.{perp}.1", trade_rate=4),
    ChannelCase("chart.trades.{instrument_name}.{resolution}", "chart.trades.{linear}.1D", trade_rate=8),
    # private channels (deribit_kit.sim.pubsub): one resting and one filled order make them move
    ChannelCase("user.orders.{instrument_name}.raw", "user.orders.{perp}.raw", private=True),
    ChannelCase("user.orders.{kind}.{currency}.raw", "user.orders.any.any.raw", private=True),
    ChannelCase("user.orders.{instrument_name}.{interval}", "user.orders.{perp}.100ms", 1, private=True),
    ChannelCase("user.orders.{kind}.{currency}.{interval}", "user.orders.future.BTC.100ms", 1, private=True),
    ChannelCase("user.trades.{instrument_name}.{interval}", "user.trades.{perp}.raw", 1, private=True),
    ChannelCase("user.trades.{kind}.{currency}.{interval}", "user.trades.any.any.raw", 1, private=True),
    ChannelCase("user.portfolio.{currency}", "user.portfolio.btc", 1, private=True),
    ChannelCase("user.changes.{instrument_name}.{interval}", "user.changes.{perp}.raw", 1, private=True),
    ChannelCase("user.changes.{kind}.{currency}.{interval}", "user.changes.any.any.raw", 1, private=True),
)


@pytest.mark.parametrize("case", CHANNEL_CASES, ids=lambda c: c.channel)
@module_loop
async def test_notification_conforms(case: ChannelCase, quiet: Simulator, qpeer: RawPeer) -> None:
    sim, peer = quiet, qpeer
    spec()
    assert case.template in spec()["components"]["x-subscriptions"]
    sim.market.trade_rate = case.trade_rate
    ctx = Ctx(sim, peer)
    channel = case.channel.format(**ctx.names())
    if case.private:
        if "private/buy" not in METHODS:
            pytest.skip("no trading engine registered (private/buy)")
        await authenticate(peer, sim)
    subscribed = await peer.result("private/subscribe" if case.private else "public/subscribe",
                                   {"channels": [channel]})
    assert subscribed == [channel]
    got: list[dict[str, Any]] = []
    for i in range(50):
        if case.private and i == 0:
            await ctx.resting_order()
            await ctx.filled_order()
        sim.step()
        await peer.barrier()
        while not peer.notifications.empty():
            n = peer.notifications.get_nowait()
            assert n["channel"] == channel  # echoed exactly as subscribed
            assert set(n) == {"channel", "data"}
            got.append(n["data"])
        if len(got) >= case.messages:
            break
    assert len(got) >= case.messages, f"only {len(got)} notifications on {channel} in 50 ticks"
    pointer = channel_pointer(case.template) + CHANNEL_SCHEMA_OVERRIDES.get(case.template, ("", ""))[0]
    for data in got:
        errors = schema_errors(pointer, data, case.template)
        assert not errors, f"{channel} data violates the spec:\n" + "\n".join(errors[:20]) + f"\n{data}"
        extra = extra_fields(pointer, data, case.template)
        assert not extra, f"{channel} data has fields the spec does not define: {extra}"
    if case.template == "book.{instrument_name}.{interval}":
        assert got[0]["type"] == "snapshot" and "prev_change_id" not in got[0]
        assert all(lvl[0] == "new" for side in ("bids", "asks") for lvl in got[0][side])
        for prev, cur in itertools.pairwise(got):
            assert cur["type"] == "change" and cur["prev_change_id"] == prev["change_id"]


@module_loop
async def test_error_envelope(quiet: Simulator, qpeer: RawPeer) -> None:
    """Errors carry the same envelope. The spec's ``error_message`` puts ``error`` (an integer) and
    ``message`` at the top level, which is not what Deribit sends (deribit-api.md 1: ``error`` is
    ``{code, message, data?}``), so the envelope is checked against ``base_message`` and the error
    object by the documented shape."""
    for method, params, code in (("public/get_instrument", {"instrument_name": "BTC-1JAN20"}, 13020),
                                 ("public/get_order_book", {"instrument_name": "BTC-PERPETUAL", "depth": 7}, -32602),
                                 ("public/no_such_method", {}, -32601),
                                 ("private/get_positions", {}, 13009)):
        reply = await qpeer.call(method, params)
        check_envelope(reply, reply["id"], quiet.testnet)
        err = reply["error"]
        assert set(err) <= {"code", "message", "data"} and err["code"] == code, (method, reply)
        assert isinstance(err["message"], str) and err["message"]


def test_every_public_channel_family_is_covered() -> None:
    """Each template the exchange publishes on has a case above (the brief's list of channels)."""
    covered = {c.template for c in CHANNEL_CASES}
    expected = {
        "book.{instrument_name}.{interval}", "book.{instrument_name}.{group}.{depth}.{interval}",
        "ticker.{instrument_name}.{interval}", "trades.{instrument_name}.{interval}",
        "trades.{kind}.{currency}.{interval}", "deribit_price_index.{index_name}", "quote.{instrument_name}",
        "perpetual.{instrument_name}.{interval}", "chart.trades.{instrument_name}.{resolution}",
    }
    assert expected <= covered
