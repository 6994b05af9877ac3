"""Unit tests of the JSON-RPC envelope (deribit_kit.wire.jsonrpc): encoders round-trip through orjson,
parse_request answers Deribit's codes, reply_result reads a reply."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deribit_kit.errors import (
    DeribitError,
    InvalidParamsError,
    InvalidRequestError,
    ProtocolError,
    RateLimitError,
)
from deribit_kit.wire import jsonrpc
from deribit_kit.wire.jsonrpc import (
    HEARTBEAT,
    MAX_REQUEST_BYTES,
    TEST_REQUEST,
    Request,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
    parse_request,
    reply_result,
    request_id_of,
)

# JSON values Deribit echoes as ids: any scalar, and containers of them
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20) | st.floats(
    allow_nan=False, allow_infinity=False
)
json_ids = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def _parse_error(data: bytes | str, **kw: Any) -> DeribitError:
    with pytest.raises(DeribitError) as info:
        parse_request(data, **kw)
    return info.value


# ---------------------------------------------------------------- encoding


def test_encode_request_round_trip() -> None:
    msg = orjson.loads(encode_request(7, "public/get_time", {"a": 1}))
    assert msg == {"jsonrpc": "2.0", "id": 7, "method": "public/get_time", "params": {"a": 1}}


@pytest.mark.parametrize("params", [None, {}])
def test_encode_request_without_params_omits_them(params: dict[str, Any] | None) -> None:
    msg = orjson.loads(encode_request("x", "public/test", params))
    assert msg == {"jsonrpc": "2.0", "id": "x", "method": "public/test"}


@given(rid=json_ids)
def test_encode_request_then_parse_request_keeps_any_id(rid: Any) -> None:
    req = parse_request(encode_request(rid, "public/test", {"k": [1, 2]}))
    assert req == Request(rid, "public/test", {"k": [1, 2]})


def test_encode_result_fields_and_timing() -> None:
    us_in = jsonrpc.now_us() - 1500
    msg = orjson.loads(encode_result(3, {"x": [1, 2]}, us_in, True))
    assert msg["jsonrpc"] == "2.0"
    assert msg["id"] == 3
    assert msg["result"] == {"x": [1, 2]}
    assert msg["testnet"] is True
    assert msg["usIn"] == us_in
    assert msg["usOut"] >= us_in + 1500
    assert msg["usDiff"] == msg["usOut"] - msg["usIn"]
    assert "error" not in msg


def test_encode_result_without_id_and_on_production() -> None:
    msg = orjson.loads(encode_result(3, None, jsonrpc.now_us(), False, with_id=False))
    assert "id" not in msg
    assert msg["result"] is None  # a null result is still a result
    assert msg["testnet"] is False


def test_encode_error_fields() -> None:
    err = RateLimitError(10028, data={"reason": "slow down"})
    us_in = jsonrpc.now_us()
    msg = orjson.loads(encode_error({"nested": 1}, err, us_in, True))
    assert msg["id"] == {"nested": 1}
    assert msg["error"] == {"message": "too_many_requests", "code": 10028, "data": {"reason": "slow down"}}
    assert "result" not in msg
    assert msg["testnet"] is True
    assert msg["usIn"] == us_in and msg["usOut"] >= us_in
    assert msg["usDiff"] == msg["usOut"] - us_in
    assert DeribitError.from_wire(msg["error"]).code == 10028


def test_encode_error_without_data_or_id() -> None:
    msg = orjson.loads(encode_error(1, InvalidRequestError(-32601), 0, False, with_id=False))
    assert "id" not in msg
    assert msg["error"] == {"message": "Method not found", "code": -32601}


# channel names are printable ASCII without quotes or backslashes
channel_names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
                        min_size=1, max_size=40)


@given(channel=channel_names, data=json_ids)
def test_encode_notification_round_trip(channel: str, data: Any) -> None:
    frame = encode_notification(channel, data)
    msg = orjson.loads(frame)
    assert msg == {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}


def test_heartbeat_frames() -> None:
    assert orjson.loads(HEARTBEAT) == {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "heartbeat"}}
    assert orjson.loads(TEST_REQUEST)["params"] == {"type": "test_request"}


def test_dumps_accepts_non_str_keys_and_loads_reads_all_buffer_types() -> None:
    assert jsonrpc.loads(jsonrpc.dumps({1: "a"})) == {"1": "a"}
    for buf in (b"[1]", bytearray(b"[1]"), memoryview(b"[1]"), "[1]"):
        assert jsonrpc.loads(buf) == [1]


# ---------------------------------------------------------------- parse_request


def test_parse_request_ok_bytes_and_str() -> None:
    for data in (b'{"jsonrpc":"2.0","id":1,"method":"public/test","params":{"a":1}}',
                 '{"id":"s","method":"public/test","params":{"a":1}}'):
        req = parse_request(data)
        assert req.method == "public/test"
        assert req.params == {"a": 1}
    assert parse_request(b'{"id":null,"method":"m"}').id is None  # a null id is an id


@pytest.mark.parametrize("params", ["null", None])
def test_parse_request_params_none_is_empty_object(params: str | None) -> None:
    body = '{"id":1,"method":"m"' + (f',"params":{params}' if params else "") + "}"
    assert parse_request(body).params == {}


def test_parse_request_oversize() -> None:
    padding = "x" * MAX_REQUEST_BYTES
    data = orjson.dumps({"id": 1, "method": "m", "params": {"p": padding}})
    err = _parse_error(data)
    assert isinstance(err, InvalidRequestError)
    assert err.code == -32600
    assert err.data == {"limit": MAX_REQUEST_BYTES, "size": len(data)}


def test_parse_request_custom_limit_boundary() -> None:
    data = b'{"id":1,"method":"m"}'
    assert parse_request(data, limit=len(data)).id == 1  # exactly at the limit is fine
    err = _parse_error(data, limit=len(data) - 1)
    assert err.code == -32600
    assert err.data == {"limit": len(data) - 1, "size": len(data)}


@pytest.mark.parametrize("data", [b"{", b"not json", b'{"id":1,}', b"", b"\xff\xfe"])
def test_parse_request_bad_json(data: bytes) -> None:
    err = _parse_error(data)
    assert isinstance(err, InvalidRequestError)
    assert err.code == -32700
    assert isinstance(err.data, dict) and err.data["reason"]
    assert request_id_of(err) is None


@pytest.mark.parametrize("data", [b"[]", b'[{"id":1,"method":"m"}]', b"1", b'"str"', b"null", b"true"])
def test_parse_request_not_an_object(data: bytes) -> None:
    err = _parse_error(data)
    assert err.code == 11050
    assert err.message == "bad_request"
    assert err.data == {"reason": "request must be a JSON object"}
    assert request_id_of(err) is None


def test_parse_request_missing_id() -> None:
    err = _parse_error(b'{"method":"public/test"}')
    assert err.code == 11050
    assert err.data == {"reason": "missing id"}
    assert request_id_of(err) is None


@pytest.mark.parametrize("body", [b'{"id":42}', b'{"id":42,"method":""}', b'{"id":42,"method":5}',
                                  b'{"id":42,"method":null}'])
def test_parse_request_missing_method_keeps_id(body: bytes) -> None:
    err = _parse_error(body)
    assert err.code == 11050
    assert err.data == {"reason": "missing method"}
    assert request_id_of(err) == 42


@pytest.mark.parametrize("params", ["[]", "[1]", '"x"', "3", "true"])
def test_parse_request_params_not_an_object(params: str) -> None:
    err = _parse_error(('{"id":"abc","method":"m","params":' + params + "}").encode())
    assert isinstance(err, InvalidParamsError)
    assert err.code == -32602
    assert err.data["param"] == "params"
    assert request_id_of(err) == "abc"


def test_request_id_of_plain_error_is_none() -> None:
    assert request_id_of(DeribitError(10028)) is None


# ---------------------------------------------------------------- reply_result


def test_reply_result_returns_the_result() -> None:
    assert reply_result({"jsonrpc": "2.0", "id": 1, "result": {"a": 1}}, "public/test") == {"a": 1}


def test_reply_result_raises_the_error() -> None:
    with pytest.raises(DeribitError) as info:
        reply_result({"jsonrpc": "2.0", "id": 1, "error": {"code": 10028, "message": "too_many_requests"}}, "m")
    assert info.value.code == 10028 and info.value.method == "m"


@pytest.mark.parametrize("msg", [[], {"jsonrpc": "2.0", "id": 1}])
def test_reply_result_without_result_is_a_protocol_error(msg: Any) -> None:
    with pytest.raises(ProtocolError):
        reply_result(msg, "m")

