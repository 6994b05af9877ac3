"""Unit tests of the pure JSON-RPC server core (deribit_kit.wire.rpcserver) and the one grid check
(deribit_kit.wire.enums.on_grid): declared params coerce the way Deribit does, the request path
parses, charges, authorises, dispatches and encodes, subscribe filtering, HTTP requests."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from deribit_kit.errors import DeribitError
from deribit_kit.wire import jsonrpc
from deribit_kit.wire.credits import CreditPools
from deribit_kit.wire.enums import on_grid
from deribit_kit.wire.rpcserver import (
    MethodTable,
    P,
    RpcServer,
    Then,
    channels_param,
    check_params,
    http_request,
    subscribe_channels,
)


@pytest.mark.parametrize(("spec", "value", "expected"), [
    (P("a", "int"), "7", 7), (P("a", "int"), 7.0, 7), (P("a", "int"), "7.0", 7),
    (P("a", "float"), "1.5", 1.5), (P("a", "float"), 2, 2.0),
    (P("a", "bool"), "true", True), (P("a", "bool"), "False", False),
    (P("a", "str"), 5, "5"), (P("a", "list"), "[1,2]", [1, 2]), (P("a", "dict"), {"k": 1}, {"k": 1}),
    (P("a", "any"), [None], [None]),
])
def test_params_coerce_like_deribit(spec: P, value: Any, expected: Any) -> None:
    assert check_params((spec,), {"a": value}) == {"a": expected}


@pytest.mark.parametrize(("spec", "value"), [
    (P("a", "int"), True), (P("a", "int"), 1.5), (P("a", "int"), "x"), (P("a", "float"), "x"),
    (P("a", "bool"), "yes"), (P("a", "str"), True), (P("a", "list"), "{}"), (P("a", "dict"), []),
    (P("a", "str", enum=("x", "y")), "z"),
])
def test_bad_params_are_invalid_params_naming_the_param(spec: P, value: Any) -> None:
    with pytest.raises(DeribitError) as info:
        check_params((spec,), {"a": value})
    assert info.value.code == -32602 and info.value.data["param"] == "a"


def test_required_and_defaults() -> None:
    specs = (P("need", "int", True), P("opt", "str", default="d"))
    assert check_params(specs, {"need": 1, "unknown": 2}) == {"need": 1, "opt": "d"}
    with pytest.raises(DeribitError) as info:
        check_params(specs, {})
    assert info.value.data == {"param": "need", "reason": "missing required parameter"}


def _server(**kw: Any) -> tuple[RpcServer, list[Any]]:
    calls: list[Any] = []
    t = MethodTable()

    @t.method("public/echo", P("x", "int", True))
    def _echo(cx: Any, p: dict[str, Any]) -> Any:
        calls.append((cx, p))
        return p["x"]

    @t.method("private/secret")
    def _secret(cx: Any, p: dict[str, Any]) -> Any:
        return "s"

    @t.method("public/ws", ws_only=True)
    def _ws(cx: Any, p: dict[str, Any]) -> Any:
        return Then("ok", lambda: calls.append("after"))

    @t.method("public/boom")
    def _boom(cx: Any, p: dict[str, Any]) -> Any:
        raise RuntimeError("bug")

    return RpcServer(t, **kw), calls


def _frame(rid: Any, method: str, params: dict[str, Any] | None = None) -> bytes:
    return jsonrpc.encode_request(rid, method, params)


def test_answer_encodes_the_result_with_timing() -> None:
    rpc, calls = _server(testnet=False)
    ans = rpc.answer("ctx", _frame(3, "public/echo", {"x": "4"}), CreditPools())
    msg = orjson.loads(ans.payload or b"")
    assert msg["id"] == 3 and msg["result"] == 4 and msg["testnet"] is False and "usDiff" in msg
    assert calls == [("ctx", {"x": 4})] and ans.error is None
    assert rpc.stats == {"requests": 1, "errors": 0}


@pytest.mark.parametrize(("frame", "code"), [
    (b"{nope", -32700), (b'{"id":1,"method":"public/none"}', -32601),
    (b'{"id":1,"method":"public/echo"}', -32602), (b'{"id":1,"method":"public/boom"}', 11094),
])
def test_errors_carry_deribits_codes(frame: bytes, code: int) -> None:
    rpc, _ = _server()
    ans = rpc.answer(None, frame, CreditPools())
    assert ans.error is not None and ans.error.code == code
    assert orjson.loads(ans.payload or b"")["error"]["code"] == code
    assert rpc.stats["errors"] == 1


def test_private_methods_are_authorised_and_ws_only_methods_need_a_websocket() -> None:
    def refuse(cx: Any, p: dict[str, Any]) -> None:
        raise DeribitError(13009)

    rpc, calls = _server(authorize=refuse)
    assert rpc.answer(None, _frame(1, "private/secret"), CreditPools()).error.code == 13009  # type: ignore[union-attr]
    assert rpc.answer(None, _frame(1, "public/ws"), CreditPools(), websocket=False).error.code == 10030  # type: ignore[union-attr]
    ans = rpc.answer(None, _frame(1, "public/ws"), CreditPools())
    assert orjson.loads(ans.payload or b"")["result"] == "ok" and ans.after is not None
    ans.after()
    assert calls == ["after"]


def test_rate_limit_and_gate() -> None:
    rpc, _ = _server()
    pools = CreditPools()
    codes = [rpc.answer(None, _frame(i, "public/echo", {"x": 1}), pools).error for i in range(200)]
    assert any(e is not None and e.code == 10028 for e in codes)

    def storm(cx: Any, req: jsonrpc.Request, pools: CreditPools) -> None:
        raise DeribitError(10028)

    rpc, _ = _server(gate=storm, rate_limits=False)
    assert rpc.answer(None, _frame(1, "public/echo", {"x": 1}), CreditPools()).error.code == 10028  # type: ignore[union-attr]


def test_a_coroutine_result_is_handed_back_pending() -> None:
    t = MethodTable()

    async def later() -> int:
        return 5

    t.add("public/later", lambda cx, p: later())
    rpc = RpcServer(t)
    ans = rpc.answer(None, _frame(9, "public/later"), CreditPools())
    assert ans.payload is None and ans.request_id == 9
    assert asyncio.run(ans.pending) == 5


def test_fallback_answers_unknown_methods_with_raw_params() -> None:
    rpc = RpcServer(MethodTable(), fallback=lambda cx, name, p: (name, p))
    ans = rpc.answer(None, _frame(1, "private/x", {"a": 1}), CreditPools())
    assert orjson.loads(ans.payload or b"")["result"] == ["private/x", {"a": 1}]


def test_merged_tables_refuse_a_name_twice() -> None:
    a, b = MethodTable(), MethodTable()
    a.add("public/x", lambda cx, p: 1)
    b.add("public/x", lambda cx, p: 2)
    with pytest.raises(ValueError, match="public/x"):
        MethodTable.merged(a, b)


def test_subscribe_filtering() -> None:
    chans = subscribe_channels({"channels": ["book.BTC-PERPETUAL.100ms", "nonsense", "book.BTC-PERPETUAL.100ms",
                                             "ticker.ETH-PERPETUAL.raw"]})
    assert [c.name for c in chans] == ["book.BTC-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.raw"]
    for bad in ({}, {"channels": "x"}, {"channels": [1]}):
        with pytest.raises(DeribitError) as info:
            channels_param(bad)
        assert info.value.code == -32602
    with pytest.raises(DeribitError, match="too many"):
        subscribe_channels({"channels": [f"ticker.X-{i}.raw" for i in range(501)]})


def test_http_requests() -> None:
    req, with_id = http_request("/api/v2/public/ticker", {"instrument_name": "BTC-PERPETUAL"}, b"")
    assert (req.method, req.params, with_id) == ("public/ticker", {"instrument_name": "BTC-PERPETUAL"}, False)
    req, with_id = http_request("/api/v2/public/ticker", {}, _frame(4, "public/other", {"a": 1}))
    assert (req.id, req.method, with_id) == (4, "public/ticker", True)
    with pytest.raises(DeribitError) as info:
        http_request("/api/v2", {}, b"")
    assert info.value.code == 11050


@pytest.mark.parametrize(("value", "step", "on"), [
    (0.1 + 0.2, 0.1, True),  # float noise
    (65000.5, 0.5, True), (65000.3, 0.5, False),
    (65000.00001, 0.5, True),  # 2e-5 ticks off at 130001 ticks: within 1e-9 relative
    (100.0000005, 0.5, False),  # 1e-6 ticks off at 200 ticks: off (the old exchange rule let it pass)
    (0.0005, 0.0005, True), (0.00075, 0.0005, False), (10.0, 10.0, True), (15.0, 10.0, False),
])
def test_one_grid_rule(value: float, step: float, on: bool) -> None:
    assert on_grid(value, step) is on
