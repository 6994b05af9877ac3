"""The reliability campaigns of ``make stress`` (stress/), in short, so that a regression turns the
suite red: 100 orders under connection drops, 10,000 hostile frames in 2 rounds at one broker port
(followers' chains, new subscribers after each round, nothing left held), and a soak of a few
seconds (clients churning, the upstream dropped, halted books compared with the exchange's).

Their targets are asserted; no figure that depends on timing is (elapsed times and memory are only
printed by the full campaigns).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stress"))

import orders_under_drops  # (stress/ is not a package: its scripts run as files)
import port_fuzz
import soak

pytestmark = pytest.mark.timeout(120)


async def test_orders_under_drops_lose_nothing_and_place_nothing_twice() -> None:
    r = await orders_under_drops.run(100, seed=3, max_seconds=90)
    assert r.trials == 100 and not r.stopped_early
    assert r.drops == 100 and r.client_reconnects >= 100
    assert (r.lost, r.duplicated, r.wrong, r.orphaned, r.mismatched) == (0, 0, 0, 0, 0), r.report()
    assert not r.non_retryable, r.report()  # only retryable errors (ConnectionClosed)
    assert not r.unhandled and r.reconnect_timeouts == 0, r.report()


async def test_the_port_under_fuzz_keeps_chains_and_serves_new_subscribers() -> None:
    r = await port_fuzz.run(5_000, rounds=2, seed=3, check_timeout=6.0)
    assert r.frames >= 5_000 and r.rounds == 2
    assert len(r.by_kind) >= 11 and r.endings["reset"] > 0 and r.connections > 20
    assert r.follower_breaks == r.follower_bad == r.follower_stalls == r.follower_disconnects == 0, r.report()
    assert r.follower_changes > 0
    assert all(n > 0 for n in r.checked) and r.new_sub_failures == 0 and r.refused == 0, r.report()
    assert not r.leftovers, r.report()  # every reference let go: port topics, broker channels, the exchange's
    assert r.unanswered == 0, r.report()
    assert not r.unhandled and not r.logged_errors and not r.driver_unhandled, r.report()


async def test_a_short_soak_ends_with_every_book_equal_to_the_exchange() -> None:
    r = await soak.run(0.15, clients=10, seed=3, drop_every=3.0, sample_every=3.0, verbose=False)
    assert r.drops >= 2 and r.reconnects >= 2
    assert r.breaks == r.bad == 0, r.report()
    assert r.books_compared > 0 and r.books_equal == r.books_compared, r.report()
    assert r.left_subscribed == [], r.report()
    assert not r.unhandled, r.report()
