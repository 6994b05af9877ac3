"""deribit_kit: a Jupyter-first research and trading kit for Deribit.

An async client, a subscription broker with live order books, Panel dashboards, and an embedded
Deribit-compatible exchange (``deribit_kit.sim``) that is the default target.
"""

from .broker import Broker, Consumer, Gap, LiveBook, Notification
from .config import Settings
from .deribit import Deribit
from .errors import (
    AuthenticationError,
    BlockingCallInLoopError,
    ChannelError,
    ConnectError,
    ConnectionClosed,
    ConsumerClosed,
    DeribitError,
    DeribitKitError,
    ExchangeUnavailableError,
    InstrumentNotFoundError,
    InsufficientFundsError,
    InvalidParamsError,
    InvalidRequestError,
    KafkaUnavailable,
    MethodNotFoundError,
    NotFoundError,
    OrderNotFoundError,
    OrderRejectedError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RecorderError,
    RecordingError,
    RequestTimeout,
    SchemaError,
    SubscriptionError,
    TransportError,
    ValidationError,
)
from .events import Event

Subscription = Consumer
"""The old name of what :meth:`Deribit.subscribe` returns: a broker :class:`Consumer`."""

__version__ = "0.1.0"

__all__ = [
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
