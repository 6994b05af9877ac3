"""Settings: which exchange to talk to (the embedded one by default, Deribit's testnet or
production by one setting), credentials from the environment, timeouts and limits.

    Settings()                         # embedded exchange, started in-process
    Settings(target="test")            # wss://test.deribit.com, keys from DERIBIT_CLIENT_ID/SECRET
    Settings(target="ws://127.0.0.1:8765/ws/api/v2")   # an embedded exchange or broker elsewhere

``DERIBIT_TARGET`` in the environment overrides the default target. ``DERIBIT_KIT_CA_FILE`` names a
certificate (PEM) that wss:// and https:// trust besides the system's: an embedded exchange or a
broker port serving a self-signed one (``deribit-kit demo --certfile`` gives it to its dashboards
so). Secrets never appear in a repr or in logs.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, replace
from typing import Any

URLS: dict[str, tuple[str, str]] = {
    "test": ("wss://test.deribit.com/ws/api/v2", "https://test.deribit.com"),
    "prod": ("wss://www.deribit.com/ws/api/v2", "https://www.deribit.com"),
}


CA_FILE_ENV = "DERIBIT_KIT_CA_FILE"
"""The environment variable naming a certificate (PEM) to trust besides the system's (:attr:`Settings.ca_file`)."""


def trust_context(ca_file: str | None) -> ssl.SSLContext | None:
    """A client TLS context that trusts the system's CAs and ``ca_file`` (a CA or a self-signed
    certificate, PEM); ``None`` without one (the default context of each library)."""
    if not ca_file:
        return None
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=ca_file)
    return ctx


def http_url_for(ws_url: str) -> str:
    """The HTTP base URL that serves the same API as ``ws_url`` (``.../ws/api/v2`` -> base)."""
    base = ws_url.split("/ws/api/v2", 1)[0]
    if base.startswith("wss://"):
        return "https://" + base[len("wss://"):]
    if base.startswith("ws://"):
        return "http://" + base[len("ws://"):]
    return base


@dataclass(frozen=True)
class Settings:
    """Everything the client needs to reach an exchange."""

    target: str = field(default_factory=lambda: os.environ.get("DERIBIT_TARGET", "sim"))
    client_id: str | None = field(default_factory=lambda: os.environ.get("DERIBIT_CLIENT_ID"), repr=False)
    client_secret: str | None = field(default_factory=lambda: os.environ.get("DERIBIT_CLIENT_SECRET"), repr=False)
    auth_method: str = "client_credentials"  # or "client_signature"
    request_timeout: float = 10.0
    connect_timeout: float = 10.0
    heartbeat: int | None = None  # seconds; asks the exchange for test_requests and watches for silence
    reconnect: bool = True
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    client_rate_limit: bool = True  # pace requests with Deribit's credit model
    rate_limit_retries: int = 6
    cancel_on_disconnect: bool = False
    ws_ping_interval: float | None = 20.0
    sim_options: dict[str, Any] = field(default_factory=dict, repr=False)
    ca_file: str | None = field(default_factory=lambda: os.environ.get(CA_FILE_ENV) or None)  # trusted for wss/https

    @property
    def is_sim(self) -> bool:
        """True when the client starts its own embedded exchange."""
        return self.target == "sim"

    @property
    def testnet(self) -> bool:
        """False for Deribit production (``prod`` or its URL), True for everything else."""
        return self.target != "prod" and not self.target.startswith(URLS["prod"][0].split("/ws/")[0])

    def urls(self) -> tuple[str, str]:
        """(WebSocket URL, HTTP base URL) of the target; not for ``sim``, which picks a port."""
        if self.target in URLS:
            return URLS[self.target]
        if self.target.startswith(("ws://", "wss://")):
            return self.target, http_url_for(self.target)
        raise ValueError(f"unknown target {self.target!r}: use sim, test, prod or a ws:// URL")

    @property
    def has_credentials(self) -> bool:
        """True when both a client id and a client secret are set."""
        return bool(self.client_id and self.client_secret)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)
