"""Orders under drops: does an order survive a connection drop at a random moment of its request?

Measures, over ``--trials`` trials (1,000 by default) against an in-process embedded exchange:
limit orders that rest and limit orders that cross, market orders, buys and sells, on an inverse
BTC and ETH perpetual and a linear USDC one, and edits and cancels of resting orders. Each trial's
request goes through ``deribit_kit.Deribit`` (authenticated with the exchange's demo key); 0-5 ms
after it is sent, every connection of the exchange is dropped at the TCP level
(``sim.faults.drop_connections()``, scheduled with ``loop.call_later``); half the trials also get
1-3 ms of latency on every answer (``sim.faults.set_latency``).

After each trial an independent observer (a bare WebSocket JSON-RPC connection, no kit code) asks
the exchange for the orders carrying the trial's unique label (``private/get_order_state_by_label``)
or for the order's state (``private/get_order_state``), and the trial is classified:

* lost - the client reported success, the exchange has no order with that label;
* duplicated - the exchange holds two or more orders with that label;
* wrong - the order the client reported is not the exchange's (id, instrument, direction, amount);
* orphaned - the client raised, but an order with that label lives on the exchange;
* mismatched - an edit or cancel the client reported done is not what the exchange holds;
* errors by kind (exception class -> count), and which of them are not retryable
  (``deribit_kit.errors.is_retryable``).

Targets: 0 lost, 0 duplicated, 0 wrong, 0 orphaned, 0 mismatched, only retryable errors.

    .venv/bin/python stress/orders_under_drops.py --trials 1000 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import websockets
from harness import (
    Figures,
    Outcome,
    Peer,
    PeerClosed,
    PeerError,
    Problems,
    campaign_options,
    counter_lines,
    expect,
    finish,
)

from deribit_kit import Deribit, DeribitKitError
from deribit_kit.errors import is_retryable
from deribit_kit.models import Instrument
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator

INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL", "BTC_USDC-PERPETUAL")
KINDS = ("limit_rest", "limit_cross", "market", "edit", "cancel")
PLACEMENTS = ("limit_rest", "limit_cross", "market")


@dataclass
class OrdersResult(Outcome):
    """Figures of one run of the campaign."""

    trials: int = 0
    elapsed_s: float = 0.0
    by_kind: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    orphaned: int = 0
    mismatched: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # exception class -> count, every trial
    non_retryable: Counter[str] = field(default_factory=Counter)
    setup_errors: Counter[str] = field(default_factory=Counter)  # placing the order an edit/cancel works on
    reconciled: Counter[str] = field(default_factory=Counter)  # PlacedOrder.reconciled: found / resent
    applied_despite_error: Counter[str] = field(default_factory=Counter)  # edit/cancel raised yet took effect
    drops: int = 0
    drops_before_answer: int = 0  # the drop fired while the request was still in flight
    reconnect_timeouts: int = 0
    client_reconnects: int = 0
    observer_reopens: int = 0
    stopped_early: str = ""

    @property
    def ok(self) -> bool:
        return (self.lost == self.duplicated == self.wrong == self.orphaned == self.mismatched == 0
                and not self.non_retryable and not self.unhandled)

    def figures(self) -> Figures:
        f = Figures("orders under drops")
        f.add("trials", self.trials)
        f.add("trials by kind", dict(self.by_kind))
        f.add("elapsed", f"{self.elapsed_s:.1f} s")
        f.add("drops (in flight / all)", f"{self.drops_before_answer} / {self.drops}")
        f.add("client reconnects", self.client_reconnects)
        f.add("lost", self.lost, 0)
        f.add("duplicated", self.duplicated, 0)
        f.add("wrong", self.wrong, 0)
        f.add("orphaned", self.orphaned, 0)
        f.add("mismatched (edit/cancel)", self.mismatched, 0)
        f.add("errors by kind", dict(self.errors))
        f.add("non-retryable errors", sum(self.non_retryable.values()), 0)
        f.add("unhandled loop exceptions", sum(self.unhandled.values()), 0)
        f.add("reconciled by label", dict(self.reconciled))
        f.add("edit/cancel applied despite error", dict(self.applied_despite_error))
        f.add("setup errors (edit/cancel)", dict(self.setup_errors))
        f.add("reconnect timeouts", self.reconnect_timeouts, 0)
        return f

    def report(self) -> str:
        more = counter_lines("non-retryable errors", self.non_retryable) + self.problem_lines(shown=10)
        if self.stopped_early:
            more.append(f"  stopped early: {self.stopped_early}")
        return self.figures().text("\n".join(more))


class Observer:
    """The independent view of the exchange: a bare authenticated WebSocket, reopened after drops."""

    def __init__(self, sim: Simulator, result: OrdersResult) -> None:
        self.sim = sim
        self.result = result
        self.peer: Peer | None = None

    async def _open(self) -> Peer:
        peer = await Peer.open(self.sim.ws_url)
        await peer.result("public/auth", {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID,
                                          "client_secret": DEMO_CLIENT_SECRET})
        return peer

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        last: BaseException | None = None
        for _ in range(20):
            try:
                if self.peer is not None and self.peer.closed.is_set():
                    await self._drop_peer()
                if self.peer is None:
                    self.peer = await self._open()
                return await self.peer.result(method, params)
            except (PeerClosed, OSError, TimeoutError, websockets.WebSocketException) as exc:
                last = exc
                await self._drop_peer()
        raise RuntimeError(f"observer could not reach the exchange: {last}")

    async def _drop_peer(self) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            self.result.observer_reopens += 1
            peer.abort()
            await peer.close()

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()


def round_price(inst: Instrument, price: float) -> float:
    """``price`` on the instrument's tick grid (the instruments used here have one fixed tick)."""
    tick = Decimal(str(inst.tick_size))
    return float((Decimal(str(price)) / tick).to_integral_value(ROUND_HALF_EVEN) * tick)


def _currency(inst: Instrument) -> str:
    return inst.settlement_currency or inst.quote_currency


async def run(trials: int = 1000, seed: int = 1, *, latency_share: float = 0.5,
              latency_ms: tuple[float, float] = (1, 3), drop_ms: float = 5.0, cleanup_every: int = 25,
              max_seconds: float = 600.0,
              request_timeout: float = 5.0, backoff_initial: float = 0.01, backoff_max: float = 0.2,
              fresh_backoff: bool = True, verbose: bool = False) -> OrdersResult:
    """Run ``trials`` trials (bounded by ``max_seconds``) and return the figures.

    ``fresh_backoff``: every reconnect starts from ``backoff_initial`` (the transport's
    ``stable_after`` set to 0); otherwise the backoff keeps growing over the campaign's short-lived
    links, as it does for a flapping link (up to ``backoff_max`` per reconnect: slower, same checks).
    """
    rng = random.Random(seed)
    res = OrdersResult()
    started = time.monotonic()
    with Problems.watch() as problems:
        async with Simulator(seed=seed, rate_limits=False, client_id=DEMO_CLIENT_ID,
                             client_secret=DEMO_CLIENT_SECRET) as sim:
            dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET,
                                       backoff_initial=backoff_initial, backoff_max=backoff_max,
                                       client_rate_limit=False, request_timeout=request_timeout)
            if fresh_backoff and hasattr(dk.transport, "stable_after"):
                dk.transport.stable_after = 0.0
            obs = Observer(sim, res)
            try:
                insts = {n: await dk.instrument(n) for n in INSTRUMENTS}  # cached: no request inside a trial
                for i in range(trials):
                    if time.monotonic() - started > max_seconds:
                        res.stopped_early = f"max_seconds={max_seconds} reached after {i} trials"
                        break
                    kind = KINDS[i % len(KINDS)]
                    inst = insts[rng.choice(INSTRUMENTS)]
                    await _trial(i, kind, inst, sim, dk, obs, rng, res, seed=seed, latency_share=latency_share,
                                 latency_ms=latency_ms, drop_ms=drop_ms)
                    res.trials += 1
                    res.by_kind[kind] += 1
                    if (i + 1) % cleanup_every == 0:
                        await obs.call("private/cancel_all", {})
                    if verbose and (i + 1) % 100 == 0:
                        print(f"  {i + 1} trials, {time.monotonic() - started:.1f} s", flush=True)
                await obs.call("private/cancel_all", {})
            finally:
                sim.faults.set_latency(0)
                res.client_reconnects = int(dk.transport.stats.get("reconnects", 0))
                await obs.close()
                await dk.close()
        problems.flush()
    res.unhandled = problems.unhandled
    res.logged_errors = problems.logged_errors
    res.elapsed_s = time.monotonic() - started
    return res


def _prices(inst: Instrument, book: dict[str, Any], direction: str, kind: str, rng: random.Random) -> float:
    bid = book.get("best_bid_price") or book.get("mark_price")
    ask = book.get("best_ask_price") or book.get("mark_price")
    assert isinstance(bid, int | float) and isinstance(ask, int | float)
    if kind == "limit_cross":  # through the touch: fills at once (what is left rests)
        raw = ask * 1.002 if direction == "buy" else bid * 0.998
    else:  # 1-2 % away from the touch: rests
        away = rng.uniform(0.01, 0.02)
        raw = bid * (1 - away) if direction == "buy" else ask * (1 + away)
    return round_price(inst, raw)


def _amount(inst: Instrument, rng: random.Random) -> float:
    step = inst.contract_size if inst.is_inverse else max(inst.min_trade_amount, inst.contract_size)
    return round(step * rng.randint(1, 3), 8)


async def _trial(i: int, kind: str, inst: Instrument, sim: Simulator, dk: Deribit, obs: Observer,
                 rng: random.Random, res: OrdersResult, *, seed: int, latency_share: float,
                 latency_ms: tuple[float, float], drop_ms: float) -> None:
    loop = asyncio.get_running_loop()
    name = inst.instrument_name
    direction = rng.choice(("buy", "sell"))
    label = f"stress-{seed}-{i}"
    book = await obs.call("public/get_order_book", {"instrument_name": name, "depth": 1})
    amount = _amount(inst, rng)
    resting: Any = None
    if kind in ("edit", "cancel"):  # the order to work on, placed without a drop
        price = _prices(inst, book, direction, "limit_rest", rng)
        try:
            resting = await getattr(dk, direction)(name, amount, price, label=label)
        except DeribitKitError as exc:
            res.setup_errors[type(exc).__name__] += 1
            return
    latency = rng.uniform(*latency_ms) / 1000 if rng.random() < latency_share else 0.0
    delay = rng.uniform(0, drop_ms) / 1000
    reconnected = expect(dk.reconnected)
    fired: asyncio.Future[float] = loop.create_future()
    in_flight = True

    def drop() -> None:
        res.drops += 1
        if in_flight:
            res.drops_before_answer += 1
        sim.faults.drop_connections()
        fired.set_result(time.monotonic())

    sim.faults.set_latency(latency)
    error: BaseException | None = None
    outcome: Any = None
    handle = loop.call_later(delay, drop)
    try:
        if kind in PLACEMENTS:
            typ = "market" if kind == "market" else "limit"
            price_arg = None if typ == "market" else _prices(inst, book, direction, kind, rng)
            outcome = await getattr(dk, direction)(name, amount, price_arg, type=typ, label=label)
        elif kind == "edit":
            new_amount = round(amount + _amount(inst, rng), 8)
            old = float(resting.order.price)
            new_price = round_price(inst, old * (0.997 if direction == "buy" else 1.003))
            outcome = (await dk.edit(resting.order.order_id, new_amount, new_price, instrument=name), new_amount,
                       new_price)
        else:
            outcome = await dk.cancel(resting.order.order_id)
    except Exception as exc:  # whatever the client raises is a figure, never a crash of the campaign
        error = exc
    finally:
        in_flight = False
    try:
        await asyncio.wait_for(asyncio.shield(fired), 1.0)
    except TimeoutError:
        handle.cancel()
    sim.faults.set_latency(0)
    try:
        await asyncio.wait_for(reconnected, 10.0)
    except TimeoutError:
        res.reconnect_timeouts += 1
        reconnected.cancel()
    if error is not None:
        cls = type(error).__name__
        res.errors[cls] += 1
        if not is_retryable(error):
            res.non_retryable[f"{cls}: {str(error)[:120]}"] += 1
            res.example(f"trial {i} {kind} {direction} {name}: {cls}: {error}")

    if kind in PLACEMENTS:
        found = [o for o in await obs.call("private/get_order_state_by_label",
                                           {"currency": _currency(inst), "label": label})
                 if o.get("label") == label and o.get("instrument_name") == name]
        if len(found) > 1:
            res.duplicated += 1
            res.example(f"trial {i} {kind}: label {label} names {len(found)} orders "
                          f"{[o['order_id'] for o in found]}")
        if error is None:
            placed = outcome.order
            res.reconciled[str(outcome.reconciled)] += 1
            if not found:
                res.lost += 1
                res.example(f"trial {i} {kind}: client reported {placed.order_id} ({outcome.reconciled}), "
                              f"exchange has no order labelled {label}")
            else:
                ex = {o["order_id"]: o for o in found}.get(placed.order_id)
                if ex is None or ex["direction"] != direction or abs(float(ex["amount"]) - amount) > 1e-9 \
                        or placed.instrument_name != name:
                    res.wrong += 1
                    held = [(o["order_id"], o["direction"], o["amount"]) for o in found]
                    res.example(f"trial {i} {kind}: client reported {placed.order_id} {placed.direction} "
                                  f"{placed.amount}, exchange holds {held}")
        elif found:
            res.orphaned += 1
            res.example(f"trial {i} {kind}: client raised {type(error).__name__}, exchange holds "
                          f"{[(o['order_id'], o['order_state']) for o in found]}")
        return

    order_id = resting.order.order_id
    try:
        state = await obs.call("private/get_order_state", {"order_id": order_id})
    except PeerError as exc:
        res.mismatched += 1
        res.example(f"trial {i} {kind}: exchange does not know order {order_id}: {exc}")
        return
    if kind == "edit":
        if error is None:
            result, new_amount, new_price = outcome
            got = result.order
            same = (got.order_id == order_id and abs(float(state["amount"]) - new_amount) < 1e-9
                    and float(state["price"]) == new_price and abs(float(got.amount or 0) - new_amount) < 1e-9
                    and float(got.price) == new_price)
            if not same:
                res.mismatched += 1
                res.example(f"trial {i} edit: client reported {got.order_id} {got.amount}@{got.price}, exchange "
                              f"holds {state['order_id']} {state['amount']}@{state['price']}")
        elif abs(float(state["amount"]) - amount) > 1e-9:
            res.applied_despite_error["edit"] += 1
        if state["order_state"] == "open":
            await obs.call("private/cancel", {"order_id": order_id})
    else:
        if error is None:
            if outcome.order_state != "cancelled" or state["order_state"] != "cancelled":
                res.mismatched += 1
                res.example(f"trial {i} cancel: client said {outcome.order_state}, exchange says "
                              f"{state['order_state']}")
        elif state["order_state"] == "cancelled":
            res.applied_despite_error["cancel"] += 1
        elif state["order_state"] == "open":
            await obs.call("private/cancel", {"order_id": order_id})


def add_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument(f"--{prefix}trials", type=int, default=1000, help="order trials (default 1000)")
    p.add_argument(f"--{prefix}max-seconds", type=float, default=600.0, help="stop after this long (default 600)")
    p.add_argument(f"--{prefix}latency-share", type=float, default=0.5,
                   help="share of trials with 1-3 ms added latency (default 0.5)")
    p.add_argument(f"--{prefix}drop-ms", type=float, default=5.0,
                   help="the drop comes 0..this many ms after the send (default 5)")
    p.add_argument(f"--{prefix}growing-backoff", action="store_true",
                   help="keep the client's anti-flap backoff growth (reconnects up to backoff_max=0.2 s apart)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_arguments(p)
    campaign_options(p, verbose="print progress every 100 trials")
    a = p.parse_args(argv)
    r = asyncio.run(run(a.trials, a.seed, latency_share=a.latency_share, drop_ms=a.drop_ms,
                        max_seconds=a.max_seconds, fresh_backoff=not a.growing_backoff, verbose=a.verbose))
    return finish(r, a.strict)


if __name__ == "__main__":
    raise SystemExit(main())
