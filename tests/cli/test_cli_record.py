"""``deribit-kit record`` for a few seconds, then the recording served by ``deribit-kit broker
--upstream replay:DIR`` (a Deribit client subscribes and gets a snapshot and an unbroken chain) and
by ``deribit-kit demo --replay DIR`` (the dashboards and the broker port on a recording); and the
dashboards' hub running on a replay in-process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import Command, book_messages

from deribit_kit import recording

pytestmark = pytest.mark.timeout(150)

BOOK = "book.BTC-PERPETUAL.100ms"
TICKER = "ticker.BTC-PERPETUAL.100ms"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "rec"
    done = subprocess.run([sys.executable, "-m", "deribit_kit.cli", "record", "--channels", BOOK, TICKER,
                           f"trades.{BOOK.split('.')[1]}.100ms", "deribit_price_index.btc_usd",
                           "--out", str(out), "--seconds", "3"],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"into {out} for 3 s" in done.stdout and BOOK in done.stdout
    assert "recorded " in done.stdout and "ended: seconds" in done.stdout and "gaps: none" in done.stdout
    return out


def test_record_writes_a_recording(recorded: Path) -> None:
    m = recording.read_manifest(recorded)
    assert m["ended"] == "seconds" and m["counts"][BOOK] >= 20 and m["counts"][TICKER] >= 20
    assert 2.5 < (m["end_ns"] - m["start_ns"]) / 1e9 < 6
    assert recording.book_tops(recorded, "1s").instrument.unique().tolist() == ["BTC-PERPETUAL"]


def test_the_broker_command_serves_a_replay(recorded: Path) -> None:
    cmd = Command("broker", "--upstream", f"replay:{recorded}", "--port", "0")
    try:
        line = cmd.line_starting("broker: ")
        url = line.split()[1]
        assert any(ln.startswith(f"replay {recorded}") for ln in cmd.output)
        health = httpx.get(url.replace("ws://", "http://").replace("/ws/api/v2", "/healthz"), timeout=10).json()
        assert health["upstream"] == "open"
        seen = book_messages(url, BOOK, 5)
        assert seen[0]["type"] == "snapshot"
        assert [d["prev_change_id"] for d in seen[1:]] == [d["change_id"] for d in seen[:-1]]
        first = next(r for r in recording.read(recorded, channels=[BOOK], kinds=["frame"]))
        assert seen[0] == first.data  # the recording's own first snapshot
    finally:
        code = cmd.stop()
    assert code == 0, cmd.output


def test_the_dashboards_hub_runs_on_a_replay(recorded: Path) -> None:
    pytest.importorskip("panel", reason="the dashboards extra")
    from deribit_kit.ui.app import Hub

    async def run() -> None:
        hub = Hub(f"replay:{recorded}?speed=4")
        await asyncio.wait_for(hub.start(), 20)
        assert "BTC-PERPETUAL" in hub.instruments
        feed = hub.market("BTC-PERPETUAL")
        try:
            async def live() -> None:
                while feed.live is None or feed.live.state != "live" or feed.ticker is None:
                    await asyncio.sleep(0.02)  # bounded poll of the feed the dashboards render
            await asyncio.wait_for(live(), 20)
            assert "waiting for" not in feed.ladder()[1]  # the ladder shows the replayed book
            assert feed.ticker is not None and feed.ticker.mark_price > 0
            assert hub.upstream_state == "open"  # the replay's state, not a connection's
            feed.housekeeping(asyncio.get_running_loop().time())  # staleness on the replay's clock
            assert feed.live.state == "live"
        finally:
            feed.release()
            await hub.close()

    asyncio.run(run())


def test_demo_runs_the_dashboards_on_a_replay(recorded: Path) -> None:
    pytest.importorskip("panel", reason="the demo serves the dashboards: needs the dashboards extra")
    from deribit_kit.ui.demo import DemoProcess, free_port

    demo = DemoProcess(free_port(), "--replay", str(recorded), "--speed", "2").start()
    try:
        urls = demo.urls
        assert {"Market", "Broker", "Replay"} <= set(urls) and "Exchange" not in urls, demo.output
        assert "the replay, the broker port and the dashboards are up" in demo.output
        r = httpx.get(urls["Market"], timeout=20)
        assert r.status_code == 200 and "bokeh" in r.text.lower()
        seen = book_messages(urls["Broker"], BOOK, 2)
        assert seen[0]["type"] == "snapshot" and seen[1]["prev_change_id"] == seen[0]["change_id"]
    finally:
        code = demo.stop()
    assert code == 0, demo.output
