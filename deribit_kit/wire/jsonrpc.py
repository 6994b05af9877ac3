"""Deribit's JSON-RPC 2.0 envelope, without I/O: encode requests, results, errors, notifications
and heartbeats; parse what arrives: requests (the server half, used by :mod:`.rpcserver`) and
replies (the client half, used by :mod:`deribit_kit.transport.ws` and
:mod:`deribit_kit.transport.http`). Shared by the client, the embedded exchange and the broker.

Deribit's dialect: ``id`` of any JSON type echoed verbatim; ``params`` is an object; responses
carry ``usIn``/``usOut``/``usDiff`` (microseconds) and ``testnet``; notifications are
``{"method": "subscription", "params": {"channel", "data"}}``; heartbeats are
``{"method": "heartbeat", "params": {"type": "heartbeat" | "test_request"}}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import DeribitError, InvalidRequestError, ProtocolError, error_for_code
from .enums import MAX_REQUEST_BYTES

_dumps = orjson.dumps
_loads = orjson.loads


def now_us() -> int:
    """Wall-clock microseconds since the epoch, as Deribit's ``usIn``/``usOut``."""
    return time.time_ns() // 1000


def dumps(obj: Any) -> bytes:
    """Encode a JSON value (orjson; non-str dict keys allowed)."""
    return _dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode a JSON value."""
    return _loads(data)


# ---------------------------------------------------------------- encoding


def encode_request(request_id: Any, method: str, params: dict[str, Any] | None = None) -> bytes:
    """A JSON-RPC request frame."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params:
        msg["params"] = params
    return _dumps(msg)


def encode_result(request_id: Any, result: Any, us_in: int, testnet: bool, *, with_id: bool = True) -> bytes:
    """A success response with Deribit's timing fields."""
    us_out = now_us()
    msg: dict[str, Any] = {"jsonrpc": "2.0"}
    if with_id:
        msg["id"] = request_id
    msg["result"] = result
    msg["usIn"] = us_in
    msg["usOut"] = us_out
    msg["usDiff"] = us_out - us_in
    msg["testnet"] = testnet
    return _dumps(msg)


def encode_error(
    request_id: Any, error: DeribitError, us_in: int, testnet: bool, *, with_id: bool = True
) -> bytes:
    """An error response with Deribit's timing fields."""
    us_out = now_us()
    msg: dict[str, Any] = {"jsonrpc": "2.0"}
    if with_id:
        msg["id"] = request_id
    msg["error"] = error.to_wire()
    msg["testnet"] = testnet
    msg["usIn"] = us_in
    msg["usOut"] = us_out
    msg["usDiff"] = us_out - us_in
    return _dumps(msg)


def encode_notification(channel: str, data: Any) -> bytes:
    """A subscription notification; encode once and send the same bytes to every subscriber."""
    return _dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})


HEARTBEAT = _dumps({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "heartbeat"}})
TEST_REQUEST = _dumps({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}})


# ---------------------------------------------------------------- parsing (server side)


@dataclass(slots=True)
class Request:
    """A parsed JSON-RPC request. ``id`` is whatever JSON value the caller used."""

    id: Any
    method: str
    params: dict[str, Any]


def parse_request(data: bytes | str, *, limit: int = MAX_REQUEST_BYTES) -> Request:
    """Parse one request frame the way Deribit does.

    Raises :class:`DeribitError` with Deribit's code: -32600 for oversize frames, -32700 for
    unparsable JSON, 11050 ``bad_request`` for valid JSON that is not a request object. The
    error's ``data`` holds the request id when one could be read (see :func:`request_id_of`).
    """
    if len(data) > limit:
        raise InvalidRequestError(-32600, "request entity too large", {"limit": limit, "size": len(data)})
    try:
        msg = _loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(-32700, "Parse error", {"reason": str(exc)}) from None
    if not isinstance(msg, dict):
        raise error_for_code(11050, data={"reason": "request must be a JSON object"})
    method = msg.get("method")
    if "id" not in msg:
        raise _with_id(error_for_code(11050, data={"reason": "missing id"}), None)
    if not isinstance(method, str) or not method:
        raise _with_id(error_for_code(11050, data={"reason": "missing method"}), msg["id"])
    params = msg.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise _with_id(
            error_for_code(-32602, data={"reason": "params must be an object", "param": "params"}), msg["id"]
        )
    return Request(msg["id"], method, params)


def _with_id(err: DeribitError, request_id: Any) -> DeribitError:
    err.request_id = request_id  # type: ignore[attr-defined]
    return err


def request_id_of(err: DeribitError) -> Any:
    """The id of the request that failed to parse, or ``None``."""
    return getattr(err, "request_id", None)


# ---------------------------------------------------------------- parsing (client side)


def reply_result(msg: Any, method: str | None = None) -> Any:
    """The ``result`` of a reply already decoded from JSON; raises the :class:`DeribitError` it
    carries, or :class:`ProtocolError` when it is neither a result nor an error."""
    if not isinstance(msg, dict):
        raise ProtocolError("the answer is not a JSON object", method=method)
    if "error" in msg:
        raise DeribitError.from_wire(msg["error"], method)
    if "result" not in msg:
        raise ProtocolError("an answer without result", method=method)
    return msg["result"]
