"""deribit_kit: a Jupyter-first research and trading kit for Deribit.

An async client, a subscription broker with live order books, Panel dashboards, and an embedded
Deribit-compatible exchange (``deribit_kit.sim``) that is the default target.
"""

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

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConnectError",
    "ConnectionClosed",
    "DeribitError",
    "DeribitKitError",
    "InstrumentNotFoundError",
    "InsufficientFundsError",
    "InvalidParamsError",
    "InvalidRequestError",
    "MethodNotFoundError",
    "NotFoundError",
    "OrderNotFoundError",
    "OrderRejectedError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RequestTimeout",
    "TransportError",
    "ValidationError",
    "__version__",
]
