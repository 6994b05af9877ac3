"""Deribit authentication text, without I/O: client_signature for ``public/auth`` and the
``deri-hmac-sha256`` HTTP header. The client signs with these functions and the embedded
exchange verifies with the same ones; :class:`ReplayGuard` refuses stale and replayed signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

SIGNATURE_WINDOW_MS = 60_000
"""A signed timestamp more than this far from the server's clock is refused."""


def sign(secret: str, timestamp: int, nonce: str, data: str = "") -> str:
    r"""``hex(HMAC_SHA256(secret, f"{timestamp}\n{nonce}\n{data}"))`` as ``public/auth`` wants."""
    text = f"{timestamp}\n{nonce}\n{data}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def signature_params(client_id: str, secret: str, *, timestamp: int | None = None, nonce: str | None = None,
                     data: str = "") -> dict[str, str | int]:
    """Params for ``public/auth`` with ``grant_type=client_signature``."""
    ts = timestamp if timestamp is not None else int(time.time() * 1000)
    nonce = nonce or secrets.token_hex(8)
    return {
        "grant_type": "client_signature",
        "client_id": client_id,
        "timestamp": ts,
        "nonce": nonce,
        "data": data,
        "signature": sign(secret, ts, nonce, data),
    }


def http_request_data(method: str, uri: str, body: bytes | str = b"") -> str:
    r"""``UPPER(method) + "\n" + uri + "\n" + body + "\n"`` for ``deri-hmac-sha256``."""
    text = body.decode() if isinstance(body, bytes | bytearray) else body
    return f"{method.upper()}\n{uri}\n{text}\n"


def http_signature_header(client_id: str, secret: str, method: str, uri: str, body: bytes | str = b"",
                          *, timestamp: int | None = None, nonce: str | None = None) -> str:
    """An ``Authorization`` header value for ``deri-hmac-sha256``."""
    ts = timestamp if timestamp is not None else int(time.time() * 1000)
    nonce = nonce or secrets.token_hex(8)
    sig = sign(secret, ts, nonce, http_request_data(method, uri, body))
    return f"deri-hmac-sha256 id={client_id},ts={ts},sig={sig},nonce={nonce}"


@dataclass(slots=True, frozen=True)
class HmacHeader:
    """A parsed ``deri-hmac-sha256`` header."""

    client_id: str
    timestamp: int
    signature: str
    nonce: str


def parse_http_signature_header(value: str) -> HmacHeader | None:
    """Parse ``deri-hmac-sha256 id=..,ts=..,sig=..,nonce=..`` in any order and spacing."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "deri-hmac-sha256":
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key.strip()] = val.strip()
    try:
        return HmacHeader(fields["id"], int(fields["ts"]), fields["sig"], fields.get("nonce", ""))
    except (KeyError, ValueError):
        return None


def verify(secret: str, signature: str, timestamp: int, nonce: str, data: str = "") -> bool:
    """Constant-time check of a client signature."""
    return hmac.compare_digest(sign(secret, timestamp, nonce, data), signature.lower())


class ReplayGuard:
    """Refuses signatures whose timestamp is outside the window, and exact replays.

    A replay is the same ``(client_id, timestamp, nonce, signature)`` seen before within the
    window. Two *different* requests that share a timestamp and a nonce (ccxt uses the current
    millisecond for both, so two calls in one millisecond do) sign different text, so their
    signatures differ and both pass. :meth:`check` returns a reason to refuse, or ``None``.
    """

    def __init__(self, window_ms: int = SIGNATURE_WINDOW_MS, *, clock: Callable[[], float] = time.time,
                 max_entries: int = 100_000) -> None:
        self.window_ms = window_ms
        self.clock = clock
        self.max_entries = max_entries
        self._seen: dict[tuple[str, int, str, str], float] = {}

    def check(self, client_id: str, timestamp: int, nonce: str, signature: str) -> str | None:
        """``None`` (and the signature remembered) when it may be used; else why not."""
        now = self.clock()
        if abs(now * 1000 - timestamp) > self.window_ms:
            return "timestamp out of window"
        key = (client_id, timestamp, nonce, signature.lower())
        if key in self._seen:
            return "signature already used (replay)"
        if len(self._seen) >= self.max_entries:  # forget what has left the window; bounded either way
            horizon = self.window_ms / 1000 * 2
            self._seen = {k: t for k, t in self._seen.items() if now - t < horizon}
            while len(self._seen) >= self.max_entries:
                del self._seen[next(iter(self._seen))]
        self._seen[key] = now
        return None


def redact(params: dict[str, object]) -> dict[str, object]:
    """A copy of request params safe to log: secrets, signatures and tokens masked."""
    out = dict(params)
    for key in ("client_secret", "signature", "access_token", "refresh_token"):
        if key in out:
            out[key] = "***"
    return out
