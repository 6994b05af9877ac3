"""Upstreams: where the broker's frames come from (see :mod:`deribit_kit.upstream.protocol`).

:class:`~deribit_kit.upstream.live.LiveUpstream` is a Deribit-compatible connection through the
client (the embedded exchange, testnet or production).
"""

from .live import LiveUpstream
from .protocol import Sink, Upstream

__all__ = ["LiveUpstream", "Sink", "Upstream"]
