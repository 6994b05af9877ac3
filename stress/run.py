"""``make stress``: the three reliability campaigns in a row, each with its figures, then a summary.

    .venv/bin/python stress/run.py              # 1,000 order trials, 100,000 frames in 3 rounds, 30-min soak
    .venv/bin/python stress/run.py --quick      # 100 trials, 10,000 frames in 2 rounds, a 2-minute soak
    .venv/bin/python stress/run.py --only fuzz --frames 200000 --rounds 6
    make stress STRESS_ARGS="--minutes 10 --strict"

Every option of the three scripts is accepted here (``--trials``, ``--frames``, ``--rounds``,
``--connections``, ``--minutes``, ``--clients``, ``--drop-every``, ...). Nothing is timed: the
figures are printed, and ``--strict`` exits with status 1 when a target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import orders_under_drops
import port_fuzz
import soak

CAMPAIGNS = ("orders", "fuzz", "soak")
QUICK = {"trials": 100, "frames": 10_000, "rounds": 2, "minutes": 2.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--only", choices=CAMPAIGNS, action="append", help="run only this campaign (repeatable)")
    p.add_argument("--quick", action="store_true", help="100 trials, 10,000 frames in 2 rounds, a 2-minute soak")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    orders_under_drops.add_arguments(p)
    port_fuzz.add_arguments(p)
    soak.add_arguments(p)
    a = p.parse_args(argv)
    if a.quick:  # the quick sizes, where no size was given
        for name, value in QUICK.items():
            if getattr(a, name) == p.get_default(name):
                setattr(a, name, value)
    wanted = a.only or list(CAMPAIGNS)
    verdicts: list[tuple[str, bool, float]] = []
    for name in CAMPAIGNS:
        if name not in wanted:
            continue
        t0 = time.monotonic()
        ok: bool
        if name == "orders":
            print(f"\n-- orders under drops: {a.trials} trials", flush=True)
            r1 = asyncio.run(orders_under_drops.run(a.trials, a.seed, latency_share=a.latency_share, drop_ms=a.drop_ms,
                                                    max_seconds=a.max_seconds, fresh_backoff=not a.growing_backoff))
            print(r1.report(), flush=True)
            ok = r1.ok
        elif name == "fuzz":
            print(f"\n-- the port under fuzz: {a.frames} frames in {a.rounds} rounds", flush=True)
            r2 = asyncio.run(port_fuzz.run(a.frames, a.rounds, a.seed, connections=a.connections, verbose=True))
            print(r2.report(), flush=True)
            ok = r2.ok
        else:
            print(f"\n-- soak: {a.clients} clients for {a.minutes:g} min, the upstream dropped every "
                  f"{a.drop_every:g} s", flush=True)
            r3 = asyncio.run(soak.run(a.minutes, a.clients, a.seed, drop_every=a.drop_every))
            print(r3.report(), flush=True)
            ok = r3.ok
        verdicts.append((name, ok, time.monotonic() - t0))
    print("\n== make stress")
    for name, ok, secs in verdicts:
        print(f"  {name:<8} {'all targets met' if ok else 'TARGETS MISSED'}  ({secs / 60:.1f} min)")
    return 1 if a.strict and not all(ok for _, ok, _ in verdicts) else 0


if __name__ == "__main__":
    raise SystemExit(main())
