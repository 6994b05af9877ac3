"""Drive ccxt.pro's Deribit message handlers without a network: the few attributes of its
WebSocket ``Client`` that ``handle_text_or_binary_message`` and the deribit handlers use. Shared
by the benchmarks that compare our parsing with ccxt's on the same frames."""

from __future__ import annotations

from typing import Any

from ccxt.async_support.base.ws.client import Client


class OfflineClient:
    """Stands in for ccxt's WebSocket client; frames are fed by calling its handler directly."""

    resolve = Client.resolve
    handle_text_or_binary_message = Client.handle_text_or_binary_message

    def __init__(self, exchange: Any) -> None:
        self.futures: dict[str, Any] = {}
        self.rejections: dict[str, Any] = {}
        self.verbose = False
        self.decompressBinary = False
        self.on_message_callback = exchange.handle_message
