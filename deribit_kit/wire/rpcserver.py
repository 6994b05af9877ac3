"""The server half of Deribit's JSON-RPC, without I/O: a method table with declared params and
types, and one request path (parse -> rate-limit -> dispatch -> encode) that the embedded exchange
and the broker's port both answer through.

Where a request arrives: a server's endpoint hands the frame (or an HTTP request already turned
into a :class:`~deribit_kit.wire.jsonrpc.Request`) to :meth:`RpcServer.answer`; it is parsed by
:func:`~deribit_kit.wire.jsonrpc.parse_request`, charged to the caller's credit pools, looked up
in the :class:`MethodTable`, authorised and checked against the method's declared :class:`P`
params, run, and its result or Deribit error leaves as one encoded response frame. A handler
may return a coroutine instead of a result (the port forwards upstream): the caller gets it back
in :class:`Answer` and encodes the result when it completes; or a :class:`Then` (a result and
what to do once it has been written).

Param values may arrive typed (JSON-RPC) or as strings (HTTP GET query); both are coerced the
way Deribit does, and anything wrong is answered with -32602 ``Invalid params`` naming the
``param`` and the ``reason``. Unknown params are ignored (ccxt and cryptofeed send a few).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import CoroutineType
from typing import Any

import orjson

from ..errors import DeribitError, error_for_code, invalid_params
from . import jsonrpc
from .channels import Channel, ChannelError, parse_channel
from .credits import CreditPools
from .enums import MAX_CHANNELS_PER_SUBSCRIBE

log = logging.getLogger("deribit_kit.wire.rpcserver")

Handler = Callable[[Any, dict[str, Any]], Any]
"""``handler(context, params) -> result``: the context is whatever the server passes per call."""


# ---------------------------------------------------------------- declared params


@dataclass(slots=True, frozen=True)
class P:
    """One declared parameter."""

    name: str
    type: str = "str"  # str | int | float | bool | list | dict | any
    required: bool = False
    enum: tuple[Any, ...] | None = None
    default: Any = None


def _as_str(spec: P, value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_params(spec.name, "must be a string")
    return str(value)


def _as_bool(spec: P, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid_params(spec.name, "must be a boolean")


def _as_int(spec: P, value: Any) -> Any:
    if isinstance(value, bool):
        raise invalid_params(spec.name, "must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                pass
            else:
                if f.is_integer():
                    return int(f)
    raise invalid_params(spec.name, "must be an integer")


def _as_float(spec: P, value: Any) -> Any:
    if isinstance(value, bool):
        raise invalid_params(spec.name, "must be a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise invalid_params(spec.name, "must be a number")


def _as_list(spec: P, value: Any) -> Any:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    raise invalid_params(spec.name, "must be an array")


def _as_dict(spec: P, value: Any) -> Any:
    if isinstance(value, dict):
        return value
    raise invalid_params(spec.name, "must be an object")


_COERCE: dict[str, Callable[[P, Any], Any]] = {
    "any": lambda spec, value: value, "str": _as_str, "bool": _as_bool, "int": _as_int, "float": _as_float,
    "list": _as_list, "dict": _as_dict,
}


def check_params(specs: tuple[P, ...], params: dict[str, Any]) -> dict[str, Any]:
    """Coerce and check ``params`` against ``specs``; returns the clean dict (with defaults)."""
    out: dict[str, Any] = {}
    for spec in specs:
        value = params.get(spec.name)
        if value is None:
            if spec.required:
                raise invalid_params(spec.name, "missing required parameter")
            if spec.default is not None:
                out[spec.name] = spec.default
            continue
        value = _COERCE[spec.type](spec, value)
        if spec.enum is not None and value not in spec.enum:
            allowed = ", ".join(str(e) for e in spec.enum)
            raise invalid_params(spec.name, f"must be one of: {allowed}")
        out[spec.name] = value
    return out


def not_found(param: str = "instrument_name", what: str = "instrument") -> DeribitError:
    """Deribit's 13020 ``not_found`` for an unknown instrument (or other named thing)."""
    return error_for_code(13020, data={"param": param, "reason": f"{what} not found"})


# ---------------------------------------------------------------- the method table


@dataclass(slots=True, frozen=True)
class Method:
    """A JSON-RPC method: its handler, declared params, whether it needs an authenticated caller
    (``private/*``) and whether it needs a WebSocket (subscriptions, heartbeats)."""

    name: str
    func: Handler
    params: tuple[P, ...]
    private: bool
    ws_only: bool
    raw: bool = False  # the handler takes the params as sent (a method forwarded upstream)


class MethodTable:
    """Methods by name. Modules fill their own table (``@table.method(...)``); a server assembles
    the tables it serves explicitly with :meth:`merged`."""

    def __init__(self, methods: Iterable[Method] = ()) -> None:
        self._methods: dict[str, Method] = {m.name: m for m in methods}

    def add(self, name: str, func: Handler, *params: P, ws_only: bool = False, raw: bool = False,
            private: bool | None = None) -> Method:
        """Add ``name``; it needs an authenticated caller when ``private`` (default: a ``private/*`` name)."""
        m = Method(name, func, params, name.startswith("private/") if private is None else private, ws_only, raw)
        self._methods[name] = m
        return m

    def method(self, name: str, *params: P, ws_only: bool = False, raw: bool = False
               ) -> Callable[[Handler], Handler]:
        """Decorate ``handler(context, params)`` as the method ``name`` of this table (``raw``: the
        params as sent, unchecked)."""

        def deco(func: Handler) -> Handler:
            self.add(name, func, *params, ws_only=ws_only, raw=raw)
            return func

        return deco

    @classmethod
    def merged(cls, *tables: MethodTable) -> MethodTable:
        """One table of all of ``tables``' methods; a name in two of them is a mistake."""
        out = cls()
        for t in tables:
            clash = out._methods.keys() & t._methods.keys()
            if clash:
                raise ValueError(f"methods defined twice: {sorted(clash)}")
            out._methods.update(t._methods)
        return out

    def get(self, name: str) -> Method | None:
        """The method called ``name``, or None when the table does not have it."""
        return self._methods.get(name)

    def __getitem__(self, name: str) -> Method:
        return self._methods[name]

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)

    def items(self) -> Iterable[tuple[str, Method]]:
        """``(name, method)`` pairs, in the order they were added."""
        return self._methods.items()

    def values(self) -> Iterable[Method]:
        """The methods, in the order they were added."""
        return self._methods.values()


# ---------------------------------------------------------------- the request path


@dataclass(slots=True, frozen=True)
class Then:
    """A handler's result with work to run once its response has been written (a subscription
    goes live, a logout closes the connection, after the reply). A coroutine handler may return
    one too."""

    result: Any
    after: Callable[[], None]


@dataclass(slots=True)
class Answer:
    """What :meth:`RpcServer.answer` made of one request: the response frame, or a coroutine
    (``pending``) whose result (or Deribit error) the caller encodes with :meth:`RpcServer.result`
    / :meth:`RpcServer.error` once it completes. ``error`` is set when the frame is an error;
    ``after`` runs once the frame has been written."""

    payload: bytes | None
    error: DeribitError | None = None
    pending: Any = None
    request_id: Any = None
    us_in: int = 0
    after: Callable[[], None] | None = None


Authorize = Callable[[Any, dict[str, Any]], None]
Gate = Callable[[Any, jsonrpc.Request, CreditPools], None]


class RpcServer:
    """Answer Deribit JSON-RPC requests from a :class:`MethodTable`.

    ``authorize(context, raw_params)`` runs before a ``private/*`` method (raise 13009 to refuse);
    ``gate(context, request, pools)`` runs before the credit charge (fault injection: an
    exchange told to answer 10028); ``fallback(context, method, raw_params)`` answers methods
    the table does not have (the port forwards ``private/*``; without one: -32601). ``stats``
    counts ``requests`` and ``errors`` (pass the server's own dict to share it).
    """

    def __init__(self, table: MethodTable, *, testnet: bool = True, rate_limits: bool = True,
                 authorize: Authorize | None = None, gate: Gate | None = None,
                 fallback: Callable[[Any, str, dict[str, Any]], Any] | None = None,
                 stats: dict[str, int] | None = None) -> None:
        self.table = table
        self.testnet = testnet
        self.rate_limits = rate_limits
        self.authorize = authorize
        self.gate = gate
        self.fallback = fallback
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("requests", 0)
        self.stats.setdefault("errors", 0)

    def dispatch(self, context: Any, name: str, raw_params: dict[str, Any], *, websocket: bool = True) -> Any:
        """Look up, authorise, check params and run one method: its result (or a coroutine)."""
        m = self.table.get(name)
        if m is None:
            if self.fallback is not None:
                return self.fallback(context, name, raw_params)
            raise error_for_code(-32601)
        if m.ws_only and not websocket:
            raise error_for_code(10030, data={"reason": "this method needs a WebSocket connection"})
        if m.private and self.authorize is not None:
            self.authorize(context, raw_params)
        return m.func(context, raw_params if m.raw else check_params(m.params, raw_params))

    def answer(self, context: Any, data: bytes | str, pools: CreditPools, *, websocket: bool = True,
               with_id: bool = True, request: jsonrpc.Request | None = None) -> Answer:
        """Answer one request frame (or the already parsed ``request``)."""
        us_in = jsonrpc.now_us()
        self.stats["requests"] += 1
        req_id: Any = None
        try:
            req = request or jsonrpc.parse_request(data)
            req_id = req.id
            if self.gate is not None:
                self.gate(context, req, pools)
            if self.rate_limits and not pools.try_spend(req.method):
                raise error_for_code(10028)
            result = self.dispatch(context, req.method, req.params, websocket=websocket)
            kind = type(result)
            if kind is CoroutineType:
                return Answer(None, None, result, req_id, us_in)
            if kind is Then:
                return Answer(jsonrpc.encode_result(req_id, result.result, us_in, self.testnet, with_id=with_id),
                              None, None, req_id, us_in, result.after)
            return Answer(jsonrpc.encode_result(req_id, result, us_in, self.testnet, with_id=with_id), None,
                          None, req_id, us_in)
        except DeribitError as exc:
            err = exc
        except Exception:
            log.exception("internal error handling a request")
            err = error_for_code(11094)
        if req_id is None:
            req_id = jsonrpc.request_id_of(err)
        return Answer(self.error(req_id, err, us_in, with_id=with_id), err, None, req_id, us_in)

    def result(self, request_id: Any, result: Any, us_in: int, *, with_id: bool = True) -> bytes:
        """A success response frame for a handler's late result (``usIn``/``usOut``/``usDiff`` in
        microseconds, ``testnet`` from this server); without ``id`` when ``with_id`` is false."""
        return jsonrpc.encode_result(request_id, result, us_in, self.testnet, with_id=with_id)

    def error(self, request_id: Any, err: DeribitError, us_in: int, *, with_id: bool = True) -> bytes:
        """An error response frame for ``err`` (its Deribit code, message and data), counted in
        ``stats["errors"]``."""
        self.stats["errors"] += 1
        return jsonrpc.encode_error(request_id, err, us_in, self.testnet, with_id=with_id)


HTTP_PREFIX = "/api/v2"


def http_request(path: str, query: dict[str, str], body: bytes) -> tuple[jsonrpc.Request, bool]:
    """The request an HTTP call makes, as Deribit reads it: a JSON-RPC body (``POST``; the path's
    method wins over the body's), or the path's method with the query string as params (``GET``,
    answered without an ``id``). Returns the request and whether the answer carries an ``id``;
    raises Deribit's error (with the request id when one could be read) for a bad body or no
    method."""
    path_method = path[len(HTTP_PREFIX) + 1:] if path.startswith(HTTP_PREFIX + "/") else ""
    if body:
        req = jsonrpc.parse_request(body)
        if path_method and req.method != path_method:
            req.method = path_method
        return req, True
    if path_method:
        return jsonrpc.Request(None, path_method, dict(query)), False
    raise error_for_code(11050, data={"reason": "no method"})


# ---------------------------------------------------------------- subscribe filtering


def channels_param(params: dict[str, Any], *, limit: int | None = None) -> list[str]:
    """The ``channels`` of a (un)subscribe call: an array of strings (else -32602), at most
    ``limit`` of them (else -32602)."""
    chans = params.get("channels")
    if not isinstance(chans, list) or not all(isinstance(ch, str) for ch in chans):
        raise invalid_params("channels", "must be an array of strings")
    if limit is not None and len(chans) > limit:
        raise invalid_params("channels", f"too many channels in one call (max {limit})")
    return chans


def subscribe_channels(params: dict[str, Any], *, limit: int = MAX_CHANNELS_PER_SUBSCRIBE) -> list[Channel]:
    """The channels a subscribe call names, parsed, each once, in order; names Deribit does not
    know are left out (Deribit leaves them out of the result, without an error)."""
    out: list[Channel] = []
    for name in dict.fromkeys(channels_param(params, limit=limit)):
        try:
            out.append(parse_channel(name))
        except ChannelError:
            continue
    return out


__all__ = [
    "Answer",
    "Method",
    "MethodTable",
    "P",
    "RpcServer",
    "Then",
    "channels_param",
    "check_params",
    "http_request",
    "not_found",
    "subscribe_channels",
]
