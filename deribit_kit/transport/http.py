"""HTTP transport (``httpx``): the same JSON-RPC methods by POST to ``/api/v2/{method}``; private
calls signed per request with ``deri-hmac-sha256`` (no token to keep fresh). Errors become the
same exception classes as over WebSocket, so both transports give identical typed results.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import httpx
import orjson

from ..errors import (
    ConnectError,
    ProtocolError,
    RequestTimeout,
    TransportError,
    error_for_code,
)
from ..wire import jsonrpc
from ..wire.auth import http_signature_header, redact
from ..wire.credits import CreditPools
from .pacing import ClientCredits, retry_rate_limited, spend

log = logging.getLogger("deribit_kit.transport.http")


class HttpTransport:
    """Deribit over HTTP."""

    def __init__(self, base_url: str, *, client_id: str | None = None, client_secret: str | None = None,
                 request_timeout: float = 10.0, client_rate_limit: bool = True, rate_limit_retries: int = 6,
                 verify: Any = True) -> None:
        self.base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self.request_timeout = request_timeout
        self.rate_limit_retries = rate_limit_retries
        self.credits: CreditPools | None = ClientCredits() if client_rate_limit else None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=request_timeout, verify=verify)
        self._ids = itertools.count(1)
        self.stats: dict[str, float] = {"requests": 0, "rate_limited": 0}
        self.state = "open"

    async def connect(self) -> None:
        """Nothing to open for HTTP; kept for symmetry with the WebSocket transport."""

    async def close(self) -> None:
        """Close the HTTP connection pool; the transport is ``closed`` afterwards."""
        self.state = "closed"
        await self._http.aclose()

    async def request(self, method: str, params: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        """POST one request to ``/api/v2/{method}`` and return its ``result`` (``private/*`` signed
        with ``deri-hmac-sha256``; 13009 without an API key); 10028 is retried with backoff within
        ``rate_limit_retries`` and ``timeout`` (seconds, default ``request_timeout``). Raises the
        mapped :class:`~deribit_kit.errors.DeribitError`, or RequestTimeout, ConnectError,
        TransportError or ProtocolError."""
        timeout = self.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        return await retry_rate_limited(lambda: self._request_once(method, params or {}, deadline), method,
                                        retries=self.rate_limit_retries, deadline=deadline, stats=self.stats)

    async def _request_once(self, method: str, params: dict[str, Any], deadline: float) -> Any:
        await spend(self.credits, method, deadline)
        path = f"/api/v2/{method}"
        body = jsonrpc.encode_request(next(self._ids), method, params)
        headers = {"content-type": "application/json"}
        if method.startswith("private/"):
            if not (self._client_id and self._client_secret):
                raise error_for_code(13009, data={"reason": "no API key configured"}, method=method)
            headers["authorization"] = http_signature_header(self._client_id, self._client_secret, "POST", path, body)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("> POST %s %s", method, orjson.dumps(redact(params)).decode())
        try:
            resp = await self._http.post(path, content=body, headers=headers,
                                         timeout=max(0.001, deadline - time.monotonic()))
        except httpx.TimeoutException:
            raise RequestTimeout("no HTTP answer within the timeout", method=method) from None
        except httpx.ConnectError as exc:
            raise ConnectError(f"cannot reach {self.base_url}: {exc}", method=method) from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"HTTP failure: {exc}", method=method) from exc
        self.stats["requests"] += 1
        try:
            msg = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise ProtocolError(f"HTTP {resp.status_code} with a body that is not JSON", method=method) from None
        return jsonrpc.reply_result(msg, method)
