"""CPU cost of the live dashboards: ``deribit-kit demo`` with 0, 1 and 10 browser sessions open on the
market dashboard (headless Chromium tabs driven by Playwright), printed as a table.

Processes measured (/proc utime + stime over each window, as % of one core):

* exchange + broker port: the demo process (embedded exchange, its upstream client, the broker
  and its Deribit-compatible WebSocket port);
* dashboard server: the ``panel serve`` process, split with the hub's own counters
  (``DERIBIT_UI_STATS_FILE``) into *upstream* (frames parsed and dispatched: client, broker, live
  books, shared feeds), *session refreshes* (every tab's periodic copy of the shared views into
  its widgets) and the rest (Bokeh/Tornado: serializing patches, websockets, session upkeep);
* the browser (every Chromium process of the run), for scale.

    .venv/bin/python bench/dashboard_cpu.py [--seconds 15] [--sessions 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from deribit_kit.ui.demo import DemoProcess  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-background-timer-throttling", "--disable-renderer-backgrounding"]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def browser_pids(exclude: set[int]) -> list[int]:
    pids = []
    for p in descendants(os.getpid()):
        if p in exclude:
            continue
        try:
            if "chrom" in Path(f"/proc/{p}/comm").read_text():
                pids.append(p)
        except OSError:
            pass
    return pids


def measure(demo_pid: int, panel_pid: int, stats_file: Path, seconds: float, exclude: set[int]) -> dict[str, float]:
    def snap() -> tuple[float, float, float, float, dict[str, Any]]:
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        chrome = sum(cpu_seconds(p) for p in browser_pids(exclude))
        return time.monotonic(), cpu_seconds(demo_pid), cpu_seconds(panel_pid), chrome, stats

    t0, d0, p0, c0, s0 = snap()
    time.sleep(seconds)  # the measurement window itself
    t1, d1, p1, c1, s1 = snap()
    dt = t1 - t0

    def pct(x: float) -> float:
        return 100.0 * x / dt

    up = s1.get("upstream_cpu_s", 0.0) - s0.get("upstream_cpu_s", 0.0)
    ref = s1.get("refresh_cpu_s", 0.0) - s0.get("refresh_cpu_s", 0.0)
    n_ref = s1.get("refreshes", 0) - s0.get("refreshes", 0)
    server = p1 - p0
    return {"exchange_broker": pct(d1 - d0), "server": pct(server), "upstream": pct(up), "refresh": pct(ref),
            "bokeh_rest": pct(max(server - up - ref, 0.0)), "browser": pct(c1 - c0),
            "refreshes_per_s": n_ref / dt, "us_per_refresh": 1e6 * ref / n_ref if n_ref else 0.0,
            "sessions": s1.get("sessions", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="measurement window per row")
    ap.add_argument("--sessions", type=int, default=10)
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit("needs Debian chromium (apt-get install chromium)")
    tmp = Path(tempfile.mkdtemp(prefix="dashboard-cpu-"))
    stats_file = tmp / "hub-stats.json"
    rows: list[tuple[str, dict[str, float]]] = []
    with DemoProcess(env={"DERIBIT_UI_STATS_FILE": str(stats_file)}) as demo:
        panel_pid = demo.children()[0]
        exclude = {demo.pid, panel_pid}
        url = demo.urls["Market"]
        print(f"demo pid {demo.pid}, dashboard server pid {panel_pid}, {url}", flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            rows.append(("0 sessions", measure(demo.pid, panel_pid, stats_file, args.seconds, exclude)))
            pages = []
            for target in (1, args.sessions):
                while len(pages) < target:
                    page = browser.new_page(viewport={"width": 1440, "height": 900})
                    page.goto(url, wait_until="domcontentloaded")
                    pages.append(page)
                for page in pages:  # every tab shows a live book before the window starts
                    expect(page.locator(".bid-row .price").first).to_have_text(re.compile(r"\d"), timeout=30_000)
                    expect(page.locator("[data-state='live']")).to_be_visible(timeout=30_000)
                label = f"{target} session{'s' if target > 1 else ''}"
                rows.append((label, measure(demo.pid, panel_pid, stats_file, args.seconds, exclude)))
            browser.close()
    print()
    print(f"CPU, % of one core, {args.seconds:.0f} s per row; market dashboard on BTC-PERPETUAL, "
          f"refresh {os.environ.get('DERIBIT_UI_REFRESH_MS', '200')} ms")
    head = ("", "exchange+broker port", "dashboard server", "  upstream+broker", "  session refresh",
            "  bokeh/tornado", "browser", "refreshes/s", "µs/refresh")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, m in rows:
        cells = [label, f"{m['exchange_broker']:.1f}", f"{m['server']:.1f}", f"{m['upstream']:.1f}",
                 f"{m['refresh']:.1f}", f"{m['bokeh_rest']:.1f}", f"{m['browser']:.1f}",
                 f"{m['refreshes_per_s']:.1f}", f"{m['us_per_refresh']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard_cpu.json").write_text(json.dumps({label: m for label, m in rows}, indent=2))


if __name__ == "__main__":
    main()
