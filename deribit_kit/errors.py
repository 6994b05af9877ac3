"""One exception tree for the whole kit, and Deribit's error codes mapped onto it.

Modelled on httpx: everything the kit raises derives from :class:`DeribitKitError`; foreign
errors (socket, websockets, httpx, JSON) are translated at the transport edge. Errors that
Deribit (or the embedded exchange) answers carry ``code``, ``message``, ``data`` and the
``method`` that was called. The embedded exchange raises the very same classes, so both sides
of the protocol agree on codes and messages by construction.

::

    DeribitKitError
    ├── TransportError                 retryable: the link failed, not the request
    │   ├── ConnectError
    │   ├── ConnectionClosed           a request was in flight when the link dropped
    │   └── RequestTimeout
    ├── ProtocolError                  the peer sent something that is not Deribit's dialect
    ├── ConsumerClosed                 a broker consumer was closed (by its owner, or on overflow)
    ├── RecordingError                 a recording cannot be read (unknown schema version, not a recording)
    ├── RecorderError                  a recorder stopped (the disk is full, the folder is taken)
    ├── SchemaError                    a Kafka value that is not a message of the pipeline's schema (or another version)
    ├── KafkaUnavailable               the Kafka cluster did not answer, or the ``kafka`` extra is not installed
    ├── ValidationError                refused before sending (units, tick size, amounts)
    ├── ChannelError                   a channel name Deribit would not accept (also a ValueError)
    ├── BlockingCallInLoopError        a blocking (sync) call inside a running event loop
    └── DeribitError                   the exchange answered with an error
        ├── InvalidRequestError        JSON-RPC level: parse, method, params, size
        │   ├── MethodNotFoundError
        │   └── InvalidParamsError
        ├── AuthenticationError        13004, 13009, 10000, ...
        ├── PermissionDeniedError      13021 forbidden, 13403 scope_exceeded, 13778 raw needs auth
        ├── RateLimitError             10028, 10047, 10066 (retryable)
        ├── NotFoundError              instrument / order not found
        │   ├── InstrumentNotFoundError
        │   └── OrderNotFoundError
        ├── OrderRejectedError         most 10xxx / 11xxx order errors
        │   └── InsufficientFundsError 10009, 10039
        └── ExchangeUnavailableError   10040, 10041, 11051, 13028, 13503 (retryable)
"""

from __future__ import annotations

from typing import Any


class DeribitKitError(Exception):
    """Base of everything deribit_kit raises."""

    retryable: bool = False

    def __init__(self, message: str, *, method: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method

    def __str__(self) -> str:
        if self.method:
            return f"{self.method}: {self.message}"
        return self.message


class TransportError(DeribitKitError):
    """The connection failed; the request may be retried."""

    retryable = True


class ConnectError(TransportError):
    """Could not open a connection to the exchange."""


class ConnectionClosed(TransportError):
    """The connection dropped while a request was in flight; its outcome is unknown."""


class RequestTimeout(TransportError):
    """No answer arrived within the request's timeout."""


class ProtocolError(DeribitKitError):
    """The peer sent a frame that is not valid Deribit JSON-RPC."""


class ConsumerClosed(DeribitKitError):
    """A broker consumer was closed (by its owner, or by the broker with a reason such as an overflow)."""


class RecordingError(DeribitKitError):
    """A recording on disk cannot be read: not a recording, or a schema version this kit does not know."""


class RecorderError(DeribitKitError):
    """A recorder stopped: its disk filled up or failed (what it wrote before stays readable)."""


class SchemaError(DeribitKitError):
    """A Kafka value that is not a message of the pipeline's schema (malformed, or another version).

    ``version`` is the schema version the value claimed, when it claimed one this reader does not know.
    """

    def __init__(self, message: str, *, version: Any = None) -> None:
        super().__init__(message)
        self.version = version


class KafkaUnavailable(DeribitKitError):
    """The Kafka cluster did not answer (or the ``kafka`` extra is not installed)."""


class ValidationError(DeribitKitError, ValueError):
    """A request was refused before it was sent (amount units, tick size, minimum amount)."""


class ChannelError(DeribitKitError, ValueError):
    """A channel name that Deribit would not accept."""


class BlockingCallInLoopError(DeribitKitError, RuntimeError):
    """A blocking call was made from inside a running event loop."""


class DeribitError(DeribitKitError):
    """The exchange answered a request with an error object."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        data: Any = None,
        *,
        method: str | None = None,
    ) -> None:
        self.code = code
        self.data = data
        super().__init__(message or ERROR_MESSAGES.get(code, "error"), method=method)

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        text = f"{where}{self.message} ({self.code})"
        if isinstance(self.data, dict):
            reason, param = self.data.get("reason"), self.data.get("param")
            if param and reason:
                text += f": {param}: {reason}"
            elif reason:
                text += f": {reason}"
        elif self.data is not None:
            text += f": {self.data}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r}, data={self.data!r})"

    def to_wire(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object for this error, as Deribit sends it."""
        out: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.data is not None:
            out["data"] = self.data
        return out

    @classmethod
    def from_wire(cls, error: Any, method: str | None = None) -> DeribitError:
        """Build the right subclass from a JSON-RPC ``error`` object."""
        if not isinstance(error, dict):
            return ProtocolErrorAnswer(0, f"malformed error object: {error!r}", method=method)
        code = error.get("code")
        if not isinstance(code, int):
            return ProtocolErrorAnswer(0, f"malformed error object: {error!r}", method=method)
        return error_for_code(code, error.get("message"), error.get("data"), method=method)


class ProtocolErrorAnswer(DeribitError):
    """An error object that does not follow JSON-RPC (no integer code)."""


class InvalidRequestError(DeribitError):
    """JSON-RPC level rejection: parse error, invalid request, entity too large."""


class MethodNotFoundError(InvalidRequestError):
    """-32601: the method does not exist."""


class InvalidParamsError(InvalidRequestError):
    """-32602 / -32000 / 11029 / 11043 / 11049: a parameter is missing or wrong; see ``data``."""


class AuthenticationError(DeribitError):
    """Bad credentials, bad signature, missing or expired token."""


class PermissionDeniedError(DeribitError):
    """Authenticated, but not allowed to do this."""


class RateLimitError(DeribitError):
    """The exchange refused the request for rate reasons; retry after a pause."""

    retryable = True


class NotFoundError(DeribitError):
    """Something named in the request does not exist."""


class InstrumentNotFoundError(NotFoundError):
    """Unknown or expired instrument."""


class OrderNotFoundError(NotFoundError):
    """Unknown order, or not the caller's order, or no longer open."""


class OrderRejectedError(DeribitError):
    """The matching engine rejected an order (price, amount, flags)."""


class InsufficientFundsError(OrderRejectedError):
    """Not enough margin or balance for the order."""


class ExchangeUnavailableError(DeribitError):
    """The exchange is temporarily unable to serve the request."""

    retryable = True


class SubscriptionError(DeribitError):
    """A subscription could not be made."""


# Deribit's error codes and their short messages (Deribit's API documentation, "Errors": https://docs.deribit.com).
ERROR_MESSAGES: dict[int, str] = {
    -32000: "Missing params",
    -32600: "request entity too large",
    -32601: "Method not found",
    -32602: "Invalid params",
    -32700: "Parse error",
    9999: "api_not_enabled",
    10000: "authorization_required",
    10001: "error",
    10002: "qty_too_low",
    10003: "order_overlap",
    10004: "order_not_found",
    10005: "price_too_low",
    10006: "price_too_low4idx",
    10007: "price_too_high",
    10008: "price_too_high4idx",
    10009: "not_enough_funds",
    10010: "already_closed",
    10011: "price_not_allowed",
    10012: "book_closed",
    10019: "locked_by_admin",
    10020: "invalid_or_unsupported_instrument",
    10021: "invalid_amount",
    10023: "invalid_price",
    10025: "invalid_order_id",
    10026: "price_precision_exceeded",
    10027: "non_integer_contract_amount",
    10028: "too_many_requests",
    10029: "not_owner_of_order",
    10030: "must_be_websocket_request",
    10031: "invalid_args_for_instrument",
    10032: "whole_cost_too_low",
    10033: "not_implemented",
    10034: "trigger_price_too_high",
    10035: "trigger_price_too_low",
    10039: "not_enough_funds_in_currency",
    10040: "retry",
    10041: "settlement_in_progress",
    10043: "price_wrong_tick",
    10044: "trigger_price_wrong_tick",
    10047: "matching_engine_queue_full",
    10049: "cancel_on_disconnect_failed",
    10066: "too_many_concurrent_requests",
    11008: "already_filled",
    11029: "invalid_arguments",
    11030: "other_reject",
    11031: "other_error",
    11036: "invalid_trigger_price",
    11038: "no_adv_for_futures",
    11042: "permission_denied",
    11043: "bad_argument",
    11044: "not_open_order",
    11047: "unsupported_arg_combination",
    11049: "bad_arguments",
    11050: "bad_request",
    11094: "internal_server_error",
    11051: "system_maintenance",
    11052: "subscribe_error_unsubscribed",
    11054: "post_only_reject",
    11055: "post_only_not_allowed",
    13004: "invalid_credentials",
    13009: "unauthorized",
    13010: "value_required",
    13016: "invalid_input",
    13017: "subscription_failed",
    13019: "orderbook_closed",
    13020: "not_found",
    13021: "forbidden",
    13028: "temporarily_unavailable",
    13032: "non_unique_order_label",
    13042: "cod_not_enabled",
    13403: "scope_exceeded",
    13503: "unavailable",
    13778: "raw_subscriptions_not_available_for_unauthorized",
    13888: "timed_out",
}

_CLASS_BY_CODE: dict[int, type[DeribitError]] = {
    -32700: InvalidRequestError,
    -32600: InvalidRequestError,
    -32601: MethodNotFoundError,
    -32602: InvalidParamsError,
    -32000: InvalidParamsError,
    11029: InvalidParamsError,
    11043: InvalidParamsError,
    11049: InvalidParamsError,
    11050: InvalidRequestError,
    13010: InvalidParamsError,
    13016: InvalidParamsError,
    10000: AuthenticationError,
    13004: AuthenticationError,
    13009: AuthenticationError,
    13021: PermissionDeniedError,
    11042: PermissionDeniedError,
    13403: PermissionDeniedError,
    13778: PermissionDeniedError,
    9999: PermissionDeniedError,
    10028: RateLimitError,
    10047: RateLimitError,
    10066: RateLimitError,
    10020: InstrumentNotFoundError,
    13020: InstrumentNotFoundError,
    10004: OrderNotFoundError,
    10010: OrderNotFoundError,
    10029: OrderNotFoundError,
    11044: OrderNotFoundError,
    10009: InsufficientFundsError,
    10039: InsufficientFundsError,
    10040: ExchangeUnavailableError,
    10041: ExchangeUnavailableError,
    11051: ExchangeUnavailableError,
    13028: ExchangeUnavailableError,
    13503: ExchangeUnavailableError,
    11052: SubscriptionError,
    11094: ExchangeUnavailableError,
    10030: InvalidRequestError,
    13017: SubscriptionError,
}


def error_class(code: int) -> type[DeribitError]:
    """The exception class for a Deribit error code."""
    cls = _CLASS_BY_CODE.get(code)
    if cls is not None:
        return cls
    if 10000 <= code < 12000:
        return OrderRejectedError
    return DeribitError


def error_for_code(
    code: int, message: str | None = None, data: Any = None, *, method: str | None = None
) -> DeribitError:
    """An instance of the right class for ``code`` (message defaults to Deribit's)."""
    return error_class(code)(code, message, data, method=method)


def invalid_params(param: str, reason: str) -> InvalidParamsError:
    """Deribit's -32602 with ``data.param`` and ``data.reason``."""
    return InvalidParamsError(-32602, "Invalid params", {"reason": reason, "param": param})


def is_retryable(exc: BaseException) -> bool:
    """True when repeating the same request later may succeed."""
    return isinstance(exc, DeribitKitError) and exc.retryable
