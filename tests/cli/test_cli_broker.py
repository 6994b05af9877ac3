"""``deribit-kit broker``: the command prints its URL, serves Deribit's dialect on its port on the
chosen event loop (uvloop by default, asyncio on request) and stops cleanly on Ctrl-C."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import book_messages

pytestmark = pytest.mark.timeout(90)

CHANNEL = "book.BTC-PERPETUAL.100ms"


class BrokerCommand:
    """``python -m deribit_kit.cli ... broker`` in a child; its stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "deribit_kit.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line_starting(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"exited before printing {prefix!r}: {self.output}")
            self.output.append(line)
            if line.startswith(prefix):
                return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_broker_command_serves_books_and_stops_on_ctrl_c(loop: str) -> None:
    cmd = BrokerCommand("--loop", loop, "broker", "--port", "0")
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
