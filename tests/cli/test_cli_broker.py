"""``deribit-kit broker``: the command prints its URL, serves Deribit's dialect on its port on the
chosen event loop (uvloop by default, asyncio on request) and stops cleanly on Ctrl-C."""

from __future__ import annotations

import httpx
import pytest
from conftest import Command, book_messages

pytestmark = pytest.mark.timeout(90)

CHANNEL = "book.BTC-PERPETUAL.100ms"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_broker_command_serves_books_and_stops_on_ctrl_c(loop: str) -> None:
    cmd = Command("--loop", loop, "broker", "--port", "0")
    try:
        url = cmd.line_starting("broker: ").split()[1]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws/api/v2")
        assert cmd.line_starting("event loop: ") == f"event loop: {loop}"
        health = httpx.get(url.replace("ws://", "http://").replace("/ws/api/v2", "/healthz"), timeout=10).json()
        assert health["upstream"] == "open"
        seen = book_messages(url, CHANNEL, 3)
        assert seen[0]["type"] == "snapshot"
        assert [d["prev_change_id"] for d in seen[1:]] == [d["change_id"] for d in seen[:-1]]
    finally:
        code = cmd.stop()
    assert code == 0, cmd.output
