"""Accounts, API keys and access tokens of the embedded exchange.

``public/auth`` (client_credentials, client_signature, refresh_token) issues an access token and
a refresh token; HTTP calls authenticate with ``Authorization: Bearer``, ``Basic`` or
``deri-hmac-sha256``. Tokens expire after ``token_ttl`` seconds; a signature outside the time
window, or an exact replay of one already used, is refused (:class:`~deribit_kit.wire.auth.ReplayGuard`).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import AuthenticationError, error_for_code, invalid_params
from ...wire import auth as wire_auth
from ...wire.credits import CreditPools
from .clock import Clock

DEFAULT_SCOPE = "account:read_write trade:read_write wallet:read_write block_trade:read_write connection"


@dataclass(eq=False)
class Account:
    """A (sub)account with one API key."""

    client_id: str
    client_secret: str
    name: str = "demo"
    user_id: int = 1
    pools: CreditPools = field(default_factory=CreditPools)
    state: Any = None  # trading state, owned by the exchange


@dataclass(slots=True)
class Token:
    """An access token granted by ``public/auth``: its refresh token, expiry (``expires_at`` on
    the accounts' clock, seconds), granted scope and whether it is bound to its connection
    (``session:`` scope)."""

    account: Account
    access_token: str
    refresh_token: str
    expires_at: float
    scope: str
    session_scoped: bool


class Accounts:
    """API keys and tokens."""

    def __init__(self, *, token_ttl: float = 900.0, clock: Clock | Callable[[], float] | None = None) -> None:
        self.by_client_id: dict[str, Account] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh: dict[str, Token] = {}
        self.token_ttl = token_ttl
        self.clock = Clock.of(clock)
        self._replays = wire_auth.ReplayGuard(clock=self.clock)

    def create(self, client_id: str, client_secret: str, name: str = "demo") -> Account:
        """The account with API key ``client_id`` (created with the next user_id; an existing one gets
        ``client_secret`` as its new secret)."""
        acct = self.by_client_id.get(client_id)
        if acct is None:
            acct = Account(client_id, client_secret, name, user_id=len(self.by_client_id) + 1)
            self.by_client_id[client_id] = acct
        else:
            acct.client_secret = client_secret
        return acct

    def _issue(self, account: Account, scope: str | None) -> dict[str, Any]:
        requested = (scope or "").split()
        session = any(s.startswith("session:") for s in requested)
        granted = [s for s in DEFAULT_SCOPE.split() if not (session and s == "connection")]
        granted += [s for s in requested if s.startswith(("session:", "expires:"))]
        ttl = self.token_ttl
        for s in requested:
            if s.startswith("expires:"):
                try:
                    ttl = min(ttl, float(s.split(":", 1)[1]))
                except ValueError:
                    raise invalid_params("scope", f"bad expires value in {s!r}") from None
        tok = Token(account, secrets.token_urlsafe(24), secrets.token_urlsafe(24), self.clock() + ttl,
                    " ".join(granted) + f" name:{account.name}", session)
        self.tokens[tok.access_token] = tok
        self.refresh[tok.refresh_token] = tok
        return {
            "access_token": tok.access_token,
            "token_type": "bearer",
            "expires_in": int(ttl),
            "refresh_token": tok.refresh_token,
            "scope": tok.scope,
            "enabled_features": [],
        }

    def _check_replay(self, client_id: str, timestamp: int, nonce: str, signature: str) -> None:
        reason = self._replays.check(client_id, timestamp, nonce, signature)
        if reason is not None:
            raise error_for_code(13009, data={"reason": reason})

    def authenticate(self, params: dict[str, Any]) -> tuple[Account, dict[str, Any]]:
        """Carry out ``public/auth``; returns the account and the result object."""
        grant = params.get("grant_type")
        scope = params.get("scope")
        if grant == "client_credentials":
            acct = self.by_client_id.get(str(params.get("client_id", "")))
            if acct is None or params.get("client_secret") != acct.client_secret:
                raise error_for_code(13004)
            return acct, self._issue(acct, scope)
        if grant == "client_signature":
            acct = self.by_client_id.get(str(params.get("client_id", "")))
            if acct is None:
                raise error_for_code(13004)
            try:
                ts = int(params["timestamp"])
                sig = str(params["signature"])
            except (KeyError, ValueError, TypeError):
                raise invalid_params("signature", "timestamp and signature are required") from None
            nonce = str(params.get("nonce", ""))
            data = str(params.get("data", "") or "")
            if not wire_auth.verify(acct.client_secret, sig, ts, nonce, data):
                raise error_for_code(13009, data={"reason": "invalid signature"})
            self._check_replay(acct.client_id, ts, nonce, sig)
            return acct, self._issue(acct, scope)
        if grant == "refresh_token":
            old = self.refresh.pop(str(params.get("refresh_token", "")), None)
            if old is None:
                raise error_for_code(13009, data={"reason": "invalid refresh token"})
            self.tokens.pop(old.access_token, None)
            return old.account, self._issue(old.account, scope or old.scope)
        raise invalid_params("grant_type", "must be client_credentials, client_signature or refresh_token")

    def check_token(self, token: str) -> Account:
        """The account of a valid access token; 13009 otherwise."""
        tok = self.tokens.get(token)
        if tok is None:
            raise error_for_code(13009, data={"reason": "invalid_token"})
        if tok.expires_at <= self.clock():
            del self.tokens[token]
            raise error_for_code(13009, data={"reason": "token_expired"})
        return tok.account

    def revoke(self, token: str) -> None:
        """Forget an access token and its refresh token (``private/logout``); unknown tokens are ignored."""
        tok = self.tokens.pop(token, None)
        if tok is not None:
            self.refresh.pop(tok.refresh_token, None)

    def http_account(self, authorization: str | None, method: str, target: str, body: bytes) -> Account | None:
        """The account an HTTP ``Authorization`` header names (None when absent)."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self.check_token(value.strip())
        if scheme == "basic":
            try:
                cid, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise error_for_code(13009, data={"reason": "malformed basic credentials"}) from None
            acct = self.by_client_id.get(cid)
            if acct is None or acct.client_secret != secret:
                raise error_for_code(13004)
            return acct
        if scheme == "deri-hmac-sha256":
            hdr = wire_auth.parse_http_signature_header(authorization)
            if hdr is None:
                raise error_for_code(13009, data={"reason": "malformed deri-hmac-sha256 header"})
            acct = self.by_client_id.get(hdr.client_id)
            if acct is None:
                raise error_for_code(13004)
            data = wire_auth.http_request_data(method, target, body)
            if not wire_auth.verify(acct.client_secret, hdr.signature, hdr.timestamp, hdr.nonce, data):
                raise AuthenticationError(13009, "unauthorized", {"reason": "invalid signature"})
            self._check_replay(acct.client_id, hdr.timestamp, hdr.nonce, hdr.signature)
            return acct
        raise error_for_code(13009, data={"reason": f"unsupported authorization scheme {scheme!r}"})
