"""deribit_kit: a Jupyter-first research and trading kit for Deribit.

An async client, a subscription broker with live order books, Panel dashboards, and an embedded
Deribit-compatible exchange (``deribit_kit.sim``) that is the default target.
"""

from .broker import Broker, Consumer, ConsumerClosed, Gap, LiveBook
from .client import Deribit, Notification, Subscription
from .config import Settings
from .errors import (
    AuthenticationError,
    ConnectError,
    ConnectionClosed,
    DeribitError,
    DeribitKitError,
    InstrumentNotFoundError,
    InsufficientFundsError,
    InvalidParamsError,
    InvalidRequestError,
    MethodNotFoundError,
    NotFoundError,
    OrderNotFoundError,
    OrderRejectedError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RequestTimeout,
    TransportError,
    ValidationError,
)
from .events import Event

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Broker",
    "ConnectError",
    "ConnectionClosed",
    "Consumer",
    "ConsumerClosed",
    "Deribit",
    "DeribitError",
    "DeribitKitError",
    "Event",
    "Gap",
    "InstrumentNotFoundError",
    "InsufficientFundsError",
    "InvalidParamsError",
    "InvalidRequestError",
    "LiveBook",
    "MethodNotFoundError",
    "NotFoundError",
    "Notification",
    "OrderNotFoundError",
    "OrderRejectedError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RequestTimeout",
    "Settings",
    "Subscription",
    "TransportError",
    "ValidationError",
    "__version__",
]
