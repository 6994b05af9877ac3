"""The public names are pinned: a change here is a change of the kit's API, made on purpose
(update the lists below in the same commit, and the README if users see it)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import deribit_kit
from deribit_kit import Consumer, Deribit, Notification, Settings, Subscription

ALL = [
    "AuthenticationError",
    "BlockingCallInLoopError",
    "Broker",
    "ChannelError",
    "ConnectError",
    "ConnectionClosed",
    "Consumer",
    "ConsumerClosed",
    "Deribit",
    "DeribitError",
    "DeribitKitError",
    "Event",
    "ExchangeUnavailableError",
    "Gap",
    "InstrumentNotFoundError",
    "InsufficientFundsError",
    "InvalidParamsError",
    "InvalidRequestError",
    "KafkaUnavailable",
    "LiveBook",
    "MethodNotFoundError",
    "NotFoundError",
    "Notification",
    "OrderNotFoundError",
    "OrderRejectedError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RecorderError",
    "RecordingError",
    "RequestTimeout",
    "SchemaError",
    "Settings",
    "Subscription",
    "SubscriptionError",
    "TransportError",
    "ValidationError",
    "__version__",
]

DERIBIT_METHODS = [
    "account_summary",
    "authenticate",
    "book_summary",
    "buy",
    "call",
    "cancel",
    "cancel_all",
    "candles",
    "close",
    "close_position",
    "connect",
    "currencies",
    "edit",
    "from_kafka",
    "get_time",
    "index_price",
    "instrument",
    "instruments",
    "open_orders",
    "order_book",
    "order_state",
    "over",
    "portfolio",
    "positions",
    "replay",
    "sell",
    "set_heartbeat",
    "start",
    "subscribe",
    "test",
    "ticker",
    "trades",
    "user_trades",
]
DERIBIT_PROPERTIES = ["broker", "channels", "is_authenticated", "transport"]
DERIBIT_ATTRIBUTES = [
    "authenticated",
    "client",
    "connected",
    "disconnected",
    "http_url",
    "notification",
    "rate_limited",
    "reconnected",
    "settings",
    "sim",
    "transport_kind",
    "upstream",
    "ws_url",
]
# Deribit.subscribe returns a broker Consumer (``Subscription`` is its old name, kept as an alias)
SUBSCRIPTION_NAMES = ["add_channels", "close", "close_nowait", "closed", "depth", "drain", "get", "get_nowait",
                      "metrics", "refused", "remove_channels", "start", "wait_closed"]
SUBSCRIPTION_ATTRIBUTES = ["accepted", "broker", "callback", "channels", "closed_reason", "consumed", "delivered",
                           "dropped", "latency_ms", "max_depth", "maxsize", "name", "policy"]


def public(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("_"))


def test_all_is_pinned() -> None:
    assert sorted(deribit_kit.__all__) == ALL
    for name in deribit_kit.__all__:
        assert hasattr(deribit_kit, name), name


def test_deribit_methods_are_pinned() -> None:
    members = dict(inspect.getmembers(Deribit))
    assert public(n for n, v in members.items() if callable(v)) == DERIBIT_METHODS
    assert public(n for n, v in members.items() if isinstance(v, property)) == DERIBIT_PROPERTIES
    assert public(vars(Deribit(Settings(target="sim")))) == DERIBIT_ATTRIBUTES


def test_coroutines_are_coroutines() -> None:
    sync = {"subscribe"}  # returns a Subscription to start, iterate or enter
    for name in DERIBIT_METHODS:
        fn = inspect.getattr_static(Deribit, name)
        fn = fn.__func__ if isinstance(fn, classmethod) else fn
        assert inspect.iscoroutinefunction(fn) is (name not in sync), name


def test_subscription_and_notification_are_pinned() -> None:
    assert public(dir(Subscription)) == SUBSCRIPTION_NAMES
    assert Subscription is Consumer
    sub = Consumer(None, ["ticker.BTC-PERPETUAL.100ms"])  # type: ignore[arg-type]
    assert public(vars(sub)) == SUBSCRIPTION_ATTRIBUTES
    assert Notification.__slots__ == ("channel", "data", "raw")


def test_every_exported_error_is_of_the_one_tree() -> None:
    """Every exported exception derives from DeribitKitError; the pipeline's two are also importable
    where they were defined before errors.py held them."""
    from deribit_kit.pipeline.schema import SchemaError
    from deribit_kit.transport.kafka import KafkaUnavailable

    errors = [getattr(deribit_kit, n) for n in ALL if isinstance(getattr(deribit_kit, n), type)
              and issubclass(getattr(deribit_kit, n), BaseException)]
    assert all(issubclass(e, deribit_kit.DeribitKitError) for e in errors)
    assert all(e.__module__ == "deribit_kit.errors" for e in errors)
    assert SchemaError is deribit_kit.SchemaError and KafkaUnavailable is deribit_kit.KafkaUnavailable
