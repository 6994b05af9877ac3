"""Session methods of the embedded exchange: ``public/test``, ``hello``, ``get_time``, ``status``,
``auth`` and ``private/logout``, and (un)subscribing; the heartbeat methods are the endpoint's
(:func:`deribit_kit.transport.endpoint.heartbeat_methods`). Each handler takes the calling
connection's :class:`~.context.Context` and checked params and returns the ``result`` (or a
:class:`~deribit_kit.wire.rpcserver.Then`: a subscription goes live, a logout closes, after the
reply) or raises Deribit's error.
"""

from __future__ import annotations

from typing import Any

from ...errors import error_for_code
from ...transport.endpoint import API_VERSION
from ...wire.channels import Channel
from ...wire.rpcserver import MethodTable, P, Then, subscribe_channels
from .context import Context

METHODS = MethodTable()


@METHODS.method("public/test", P("expected_result", "str"))
def _test(cx: Context, p: dict[str, Any]) -> Any:
    cx.heartbeat.answered()
    if p.get("expected_result") == "exception":
        raise error_for_code(11094, "internal_server_error", {"reason": "expected_result=exception"})
    return {"version": API_VERSION}


@METHODS.method("public/hello", P("client_name", "str", True), P("client_version", "str", True))
def _hello(cx: Context, p: dict[str, Any]) -> Any:
    cx.session.client_name = f"{p['client_name']}/{p['client_version']}"
    return {"version": API_VERSION}


@METHODS.method("public/get_time")
def _get_time(cx: Context, p: dict[str, Any]) -> Any:
    return cx.exchange.now_ms()


@METHODS.method("public/status")
def _status(cx: Context, p: dict[str, Any]) -> Any:
    return {"locked": "false", "locked_indices": []}


@METHODS.method(
    "public/auth",
    P("grant_type", "str", True, ("client_credentials", "client_signature", "refresh_token")),
    P("client_id", "str"), P("client_secret", "str"), P("refresh_token", "str"), P("timestamp", "int"),
    P("signature", "str"), P("nonce", "str"), P("data", "str"), P("state", "str"), P("scope", "str"),
)
def _auth(cx: Context, p: dict[str, Any]) -> Any:
    account, result = cx.accounts.authenticate(p)
    if cx.session.conn is not None:
        cx.session.account = account
        cx.session.token = result["access_token"]
    if "state" in p:
        result["state"] = p["state"]
    return result


@METHODS.method("private/logout", P("invalidate_token", "bool", default=True), ws_only=True)
def _logout(cx: Context, p: dict[str, Any]) -> Any:
    if p["invalidate_token"] and cx.session.token:
        cx.accounts.revoke(cx.session.token)
    cx.session.logout_requested = True
    return Then("ok", cx.session.close_for_logout)


# ---------------------------------------------------------------- subscriptions


def _subscribe(cx: Context, p: dict[str, Any], private: bool) -> Any:
    """The channels of the call this session may have (unknown or non-existent ones left out, as
    Deribit does); new ones go live once the reply has been written."""
    s, pubsub = cx.session, cx.pubsub
    wanted: list[Channel] = []
    for ch in subscribe_channels(p):
        if ch.private and s.account is None:
            if ch.interval == "raw" and not ch.user:
                raise error_for_code(13778)
            if private:
                raise error_for_code(13009, data={"reason": "authentication required"})
            continue
        if ch.user and not private:
            continue
        if pubsub.channel_exists(ch):
            wanted.append(ch)
    new = [ch for ch in wanted if pubsub.add(s, ch)]
    return Then([ch.name for ch in wanted], lambda: pubsub.activate(s, new))


@METHODS.method("public/subscribe", P("channels", "list", True), ws_only=True)
def _public_subscribe(cx: Context, p: dict[str, Any]) -> Any:
    return _subscribe(cx, p, private=False)


@METHODS.method("private/subscribe", P("channels", "list", True), P("label", "str"), ws_only=True)
def _private_subscribe(cx: Context, p: dict[str, Any]) -> Any:
    return _subscribe(cx, p, private=True)


def _unsubscribe(cx: Context, p: dict[str, Any]) -> list[str]:
    s = cx.session
    removed = []
    for name in p["channels"]:
        if isinstance(name, str) and name in s.subscriptions:
            cx.pubsub.remove(s, name)
            removed.append(name)
    return removed


@METHODS.method("public/unsubscribe", P("channels", "list", True), ws_only=True)
def _public_unsubscribe(cx: Context, p: dict[str, Any]) -> Any:
    return _unsubscribe(cx, p)


@METHODS.method("private/unsubscribe", P("channels", "list", True), ws_only=True)
def _private_unsubscribe(cx: Context, p: dict[str, Any]) -> Any:
    return _unsubscribe(cx, p)


@METHODS.method("public/unsubscribe_all", ws_only=True)
def _public_unsubscribe_all(cx: Context, p: dict[str, Any]) -> Any:
    cx.pubsub.remove_all(cx.session)
    return "ok"


@METHODS.method("private/unsubscribe_all", ws_only=True)
def _private_unsubscribe_all(cx: Context, p: dict[str, Any]) -> Any:
    return _public_unsubscribe_all(cx, p)
