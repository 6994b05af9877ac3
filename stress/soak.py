"""Soak: many clients churning subscriptions for a long time while the upstream drops every minute.

The embedded exchange runs in a process of its own (so that the memory measured is the broker's,
its port's and the clients'); this one holds the broker's upstream client, the broker, its port and
the clients. ``--clients`` clients (50 by default) churn for ``--minutes`` minutes (30 by default; ``--minutes 2``
is the smoke run): half are external WebSocket clients of the port (a bare JSON-RPC peer each,
rebuilding every book it subscribes from the notifications and counting chain breaks), half are
in-process broker consumers (``drop_oldest`` readers, conflating book readers, callbacks, book
holds). Every second or three each client subscribes to a channel, leaves one, or goes away and
comes back, over a pool of book, ticker, trades and index channels. Every ``--drop-every`` seconds
(60) the exchange drops every connection (``sim.faults.drop_connections()``, asked of its process):
the broker's upstream reconnects and its books resync.

Printed while it runs (one line per sample, at most ~40 lines): resident memory, live asyncio tasks,
Python's allocated blocks and tracked objects, port clients, port topics, broker channels,
reconnects, resyncs, and the exchange process's resident memory. At the end: the instruments of the
pool are halted (``sim.faults.halt``) so that the books stop moving, then every live book (each of
the broker's and each port client's rebuilt one) is compared level by level with the exchange's
``public/get_order_book``; then every client leaves and nothing may stay subscribed.

Targets: 0 chain breaks, every book equal to the exchange's, nothing left subscribed, memory and
tasks bounded (the last third of the run no higher than the first third by more than 10 % / 16 MiB),
no unhandled exception.

    .venv/bin/python stress/soak.py --minutes 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import websockets
from harness import (
    Chain,
    Child,
    Figures,
    FollowsChains,
    Outcome,
    Peer,
    PeerClosed,
    Problems,
    campaign_options,
    finish,
    instrument_names,
    mib,
    rss_kib,
    serve_commands,
    wait_until,
)

from deribit_kit import Deribit
from deribit_kit.broker import Broker, ConsumerClosed, Gap, LiveBook
from deribit_kit.broker.consumer import Consumer, Policy
from deribit_kit.broker.port import BrokerServer
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator

BOOK_INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL", "BTC_USDC-PERPETUAL", "SOL_USDC-PERPETUAL", "BTC_USDC")


def channel_pool(names: list[str]) -> list[str]:
    """The channels the clients churn over (``names``: the exchange's instruments): books of
    perpetuals, a future, options and spot, tickers, trades, indices."""
    futures = [n for n in names if n.startswith("BTC-") and n.count("-") == 1 and n != "BTC-PERPETUAL"][:1]
    options = [n for n in names if n.startswith("BTC-") and n.count("-") == 3][:2]
    books = [*BOOK_INSTRUMENTS, *futures, *options]
    return ([f"book.{n}.100ms" for n in books] + [f"ticker.{n}.100ms" for n in books[:5]]
            + [f"trades.{n}.100ms" for n in books[:3]] + ["deribit_price_index.btc_usd", "deribit_price_index.eth_usd"])


def is_book(channel: str) -> bool:
    return channel.startswith("book.")


@dataclass
class Sample:
    t_s: float
    rss_kib: int
    tasks: int
    port_clients: int
    topics: int
    channels: int
    reconnects: int
    resyncs: int
    blocks: int  # allocated Python memory blocks
    objects: int  # objects the garbage collector tracks
    exchange_rss_kib: int  # the exchange's process


@dataclass
class SoakResult(Outcome):
    """Figures of one soak run."""

    minutes: float = 0.0
    clients: int = 0
    samples: list[Sample] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    drops: int = 0
    reconnects: int = 0
    resyncs: int = 0
    breaks: int = 0
    bad: int = 0
    port_snapshots: int = 0
    port_changes: int = 0
    in_process_messages: int = 0
    gaps: int = 0  # Gap markers (drop_oldest readers that fell behind)
    books_compared: int = 0
    books_equal: int = 0
    books_unsettled: int = 0  # never reached the exchange's change_id after the halt
    left_subscribed: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # what the clients' own calls raised

    def bounded(self, values: list[int], slack: int) -> bool:
        """The last third of the run is no higher than the first third by more than ``slack``."""
        if len(values) < 3:
            return True
        third = max(1, len(values) // 3)
        return max(values[-third:]) <= max(values[:third]) + slack

    @property
    def rss_bounded(self) -> bool:
        rss = [s.rss_kib for s in self.samples]
        return self.bounded(rss, max(16 * 1024, (max(rss[: max(1, len(rss) // 3)]) if rss else 0) // 10))

    @property
    def tasks_bounded(self) -> bool:
        return self.bounded([s.tasks for s in self.samples], 50)

    @property
    def ok(self) -> bool:
        return (self.breaks == self.bad == 0 and self.books_equal == self.books_compared > 0
                and not self.left_subscribed and not self.unhandled and self.rss_bounded and self.tasks_bounded)

    def figures(self) -> Figures:
        f = Figures("soak")
        f.add("duration", f"{self.minutes:.1f} min")
        f.add("clients", f"{self.clients} ({self.clients - self.clients // 2} on the port, {self.clients // 2} "
                         "in process)")
        f.add("client actions", dict(self.actions))
        f.add("upstream drops", self.drops)
        f.add("broker reconnects", self.reconnects)
        f.add("broker book resyncs", self.resyncs)
        f.add("port clients' snapshots / changes", f"{self.port_snapshots} / {self.port_changes}")
        f.add("in-process messages read", self.in_process_messages)
        f.add("gap markers (drop_oldest readers)", self.gaps)
        f.add("chain breaks (port clients)", self.breaks, 0)
        f.add("malformed book messages", self.bad, 0)
        rss = [s.rss_kib for s in self.samples]
        tasks = [s.tasks for s in self.samples]
        if rss:
            f.add("RSS first / max / last", f"{mib(rss[0])} / {mib(max(rss))} / {mib(rss[-1])}", "bounded",
                  ok=self.rss_bounded)
            blocks = [s.blocks for s in self.samples]
            f.add("Python blocks first / max / last", f"{blocks[0] // 1000}k / {max(blocks) // 1000}k / "
                                                      f"{blocks[-1] // 1000}k")
            ex = [s.exchange_rss_kib for s in self.samples]
            f.add("exchange process RSS first / last", f"{mib(ex[0])} / {mib(ex[-1])}")
            f.add("live tasks first / max / last", f"{tasks[0]} / {max(tasks)} / {tasks[-1]}", "bounded",
                  ok=self.tasks_bounded)
        f.add("books equal to get_order_book", f"{self.books_equal} of {self.books_compared}", "all",
              ok=self.books_equal == self.books_compared > 0)
        f.add("books that never settled", self.books_unsettled, 0)
        f.add("left subscribed after all left", len(self.left_subscribed), 0)
        f.add("client call errors", dict(self.errors))
        f.add("unhandled exceptions", sum(self.unhandled.values()), 0)
        f.add("kit ERROR records", sum(self.logged_errors.values()))
        return f

    def report(self) -> str:
        return self.figures().text("\n".join(self.problem_lines()))


def sample_line(s: Sample) -> str:
    return (f"  {s.t_s:7.0f} s  RSS {mib(s.rss_kib):>10}  tasks {s.tasks:4}  port clients {s.port_clients:3}  "
            f"topics {s.topics:3}  broker channels {s.channels:3}  reconnects {s.reconnects:3}  resyncs {s.resyncs:4}  "
            f"blocks {s.blocks // 1000}k  objects {s.objects // 1000}k  exchange RSS {mib(s.exchange_rss_kib)}")


# ---------------------------------------------------------------- the clients


class PortClient(FollowsChains):
    """An external client of the port: subscribes, leaves, reconnects; rebuilds its books."""

    def __init__(self, url: str, pool: list[str], rng: random.Random, res: SoakResult) -> None:
        self.url, self.pool, self.rng, self.res = url, pool, rng, res
        self.peer: Peer | None = None
        self.subs: set[str] = set()
        self.chains: dict[str, Chain] = {}

    async def _connect(self) -> Peer:
        self.peer = await Peer.open(self.url, self._note, timeout=10)
        self.subs = set()
        return self.peer

    def _retire(self, channels: set[str]) -> None:
        """Count what the chains of ``channels`` saw, and let them go."""
        res = self.res
        for ch in channels:
            chain = self.chains.pop(ch, None)
            if chain is None:
                continue
            res.breaks += chain.breaks
            res.bad += chain.bad
            res.port_snapshots += chain.snapshots
            res.port_changes += chain.changes
            if chain.first_break:
                res.example(f"port client chain break on {ch}: {chain.first_break}")

    async def step(self) -> None:
        r = self.rng
        peer = self.peer if self.peer is not None and not self.peer.closed.is_set() else await self._connect()
        x = r.random()
        if x < 0.08:  # away and back
            self.res.actions["port reconnect"] += 1
            if r.random() < 0.5:
                peer.abort()
            await peer.close()
            self._retire(set(self.chains))
            await self._connect()
            return
        if x < 0.55 or not self.subs:
            ch = r.choice(self.pool)
            if ch in self.subs:
                return
            if is_book(ch):
                self.chains[ch] = Chain()
            got = await peer.result("public/subscribe", {"channels": [ch]}, timeout=30)
            self.res.actions["port subscribe"] += 1
            if ch in got:
                self.subs.add(ch)
            else:
                self.res.example(f"the port refused {ch}: {got}")
            return
        ch = r.choice(sorted(self.subs))
        await peer.result("public/unsubscribe", {"channels": [ch]}, timeout=30)
        self.res.actions["port unsubscribe"] += 1
        self.subs.discard(ch)
        self._retire({ch})

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()
        self._retire(set(self.chains))


class LocalClient:
    """An in-process client of the broker: a consumer (reader or callback) or a held live book."""

    def __init__(self, broker: Broker, pool: list[str], rng: random.Random, res: SoakResult) -> None:
        self.broker, self.pool, self.rng, self.res = broker, pool, rng, res
        self.consumers: dict[str, tuple[Consumer, asyncio.Task[None] | None]] = {}
        self.books: dict[str, LiveBook] = {}

    async def _read(self, c: Consumer) -> None:
        with contextlib.suppress(ConsumerClosed):
            while True:
                self._count(await c.get())

    async def step(self) -> None:
        r = self.rng
        held = len(self.consumers) + len(self.books)
        x = r.random()
        if x < 0.08 and held:  # away and back: let everything go
            self.res.actions["in-process reset"] += 1
            for ch in list(self.consumers):
                await self._leave(ch)
            for ch in list(self.books):
                self._release(ch)
            return
        if x < 0.55 or not held:
            ch = r.choice(self.pool)
            if ch in self.consumers or ch in self.books:
                return
            how = r.choice(("reader", "callback", "hold") if is_book(ch) else ("reader", "callback"))
            if how == "hold":
                self.books[ch] = self.broker.hold_book(ch)
            else:
                policy: Policy = "conflate" if is_book(ch) and r.random() < 0.5 else "drop_oldest"
                cb = self._count if how == "callback" else None
                c = self.broker.consumer([ch], policy, maxsize=r.choice((1, 10, 1000)), callback=cb,
                                         name=f"soak-{how}")
                await asyncio.wait_for(c.start(), 30)
                task = asyncio.get_running_loop().create_task(self._read(c)) if cb is None else None
                self.consumers[ch] = (c, task)
            self.res.actions[f"in-process {how}"] += 1
            return
        ch = r.choice(sorted([*self.consumers, *self.books]))
        if ch in self.books:
            self._release(ch)
        else:
            await self._leave(ch)
        self.res.actions["in-process leave"] += 1

    def _count(self, item: Any) -> None:
        if isinstance(item, Gap):
            self.res.gaps += 1
        else:
            self.res.in_process_messages += 1

    def _release(self, ch: str) -> None:
        self.books.pop(ch).release()

    async def _leave(self, ch: str) -> None:
        c, task = self.consumers.pop(ch)
        await c.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for ch in list(self.consumers):
            await self._leave(ch)
        for ch in list(self.books):
            self._release(ch)


async def _churn(client: PortClient | LocalClient, stop: asyncio.Event, rng: random.Random, res: SoakResult) -> None:
    while not stop.is_set():
        try:
            await client.step()
        except (PeerClosed, TimeoutError, OSError, websockets.WebSocketException) as exc:
            res.errors[type(exc).__name__] += 1  # the port client's link: reconnects on its next step
        except Exception as exc:  # a kit error is a figure, never the end of the soak
            res.errors[type(exc).__name__] += 1
            res.example(f"{type(client).__name__}: {type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(1.0, 3.0))


# ---------------------------------------------------------------- the end: halted books against the exchange


def _levels(rows: Any) -> list[tuple[float, float]]:
    return [(float(p), float(a)) for p, a, *_ in rows]


async def compare_books(exchange: Child, broker: Broker, port_clients: list[PortClient], pool: list[str],
                        res: SoakResult, timeout: float = 20.0) -> None:
    """Halt the pool's instruments, wait until every book has the exchange's last change_id, compare."""
    names = sorted({ch.split(".")[1] for ch in pool if is_book(ch)})
    await exchange.ask("halt " + ",".join(names))
    observer = await Peer.open(exchange.first["ws_url"])
    try:
        truth: dict[str, dict[str, Any]] = {}

        async def fetch() -> None:
            for n in names:
                truth[n] = await observer.result("public/get_order_book", {"instrument_name": n, "depth": 10000})

        await fetch()
        books: list[tuple[str, str, Any]] = []  # (what, instrument, book)
        for name, live in broker.books.items():
            if name in truth:
                books.append(("broker", name, live))
        for pc in port_clients:
            for ch, chain in pc.chains.items():
                if ch.split(".")[1] in truth and chain.snapshots:
                    books.append(("port client", ch.split(".")[1], chain))

        def settled(b: Any, name: str) -> bool:
            cid = b.book.change_id if isinstance(b, LiveBook) else b.last
            return bool(cid == truth[name]["change_id"])

        await wait_until(lambda: all(settled(b, n) for _, n, b in books), timeout, 0.05)
        await fetch()  # the exchange's book after everything in flight had landed
        for what, name, b in books:
            res.books_compared += 1
            if not settled(b, name):
                res.books_unsettled += 1
                res.example(f"{what} book {name} never reached change_id {truth[name]['change_id']}")
                continue
            if isinstance(b, LiveBook):
                lv = b.book.snapshot_levels()
                bids, asks = _levels(lv["bids"]), _levels(lv["asks"])
            else:
                bids, asks = b.levels()
            if bids == _levels(truth[name]["bids"]) and asks == _levels(truth[name]["asks"]):
                res.books_equal += 1
            else:
                res.example(f"{what} book {name} differs from get_order_book at change_id {truth[name]['change_id']}")
    finally:
        await observer.close()
        await exchange.ask("resume " + ",".join(names))


# ---------------------------------------------------------------- the run


async def run(minutes: float = 30.0, clients: int = 50, seed: int = 1, *, drop_every: float = 60.0,
              sample_every: float | None = None, verbose: bool = True) -> SoakResult:
    """Soak for ``minutes`` and return the figures (samples are printed as they come when ``verbose``)."""
    rng = random.Random(seed)
    res = SoakResult(clients=clients)
    seconds = minutes * 60
    every = sample_every or max(5.0, seconds / 36)
    exchange = await Child.start(os.path.abspath(__file__), "--serve-exchange", str(seed))
    url: str = exchange.first["ws_url"]
    with Problems.watch() as problems:
        try:
            dk = await Deribit.connect(url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET,
                                       backoff_initial=0.05, backoff_max=2.0)
            broker = dk.broker
            srv = await BrokerServer(broker).start()
            pool = channel_pool(await instrument_names(url))
            port_clients = [PortClient(srv.ws_url, pool, random.Random(rng.random()), res)
                            for _ in range(clients - clients // 2)]
            local_clients = [LocalClient(broker, pool, random.Random(rng.random()), res) for _ in range(clients // 2)]
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            started = loop.time()
            everyone: list[PortClient | LocalClient] = [*port_clients, *local_clients]
            tasks = [loop.create_task(_churn(c, stop, random.Random(rng.random()), res)) for c in everyone]

            def sample() -> Sample:
                s = Sample(loop.time() - started, rss_kib(), len(asyncio.all_tasks()), len(srv.clients),
                           len(srv.topics), len(broker.channels), broker.reconnects, broker.book_resyncs,
                           sys.getallocatedblocks(), len(gc.get_objects()), exchange.rss_kib)
                res.samples.append(s)
                if verbose:
                    print(sample_line(s), flush=True)
                return s

            try:
                next_drop, next_sample = started + drop_every, started
                while (now := loop.time()) < started + seconds:
                    if now >= next_sample:
                        sample()
                        next_sample += every
                    if now >= next_drop:
                        await exchange.ask("drop")
                        res.drops += 1
                        next_drop += drop_every
                    await asyncio.sleep(min(next_sample, next_drop, started + seconds) - now)
                sample()
                stop.set()
                await asyncio.gather(*tasks)
                with contextlib.suppress(Exception):
                    await broker.settle(30)
                await compare_books(exchange, broker, port_clients, pool, res)
            finally:
                stop.set()
                for c in everyone:
                    with contextlib.suppress(Exception):
                        await c.close()
                with contextlib.suppress(Exception):
                    await wait_until(lambda: not srv.clients, 10)
                    await broker.settle(30)
                on_exchange = (await exchange.ask("subscribed " + ",".join(pool)))["subscribed"]
                res.left_subscribed = sorted(set(broker.channels) | set(on_exchange))
                res.reconnects, res.resyncs = broker.reconnects, broker.book_resyncs
                res.minutes = (loop.time() - started) / 60
                await srv.stop()
                await dk.close()
        finally:
            await exchange.stop()
        problems.flush()
    res.unhandled = problems.unhandled
    res.logged_errors = problems.logged_errors
    return res


def add_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument(f"--{prefix}minutes", type=float, default=30.0, help="how long (default 30; 2 for a smoke run)")
    p.add_argument(f"--{prefix}clients", type=int, default=50, help="clients, half on the port (default 50)")
    p.add_argument(f"--{prefix}drop-every", type=float, default=60.0,
                   help="drop the upstream connection every this many seconds (default 60)")


async def serve_exchange(seed: int) -> None:
    """The exchange's own process, driven by :func:`harness.serve_commands`: ``report``, ``drop``
    (every connection, ``sim.faults.drop_connections``), ``halt A,B`` / ``resume A,B``
    (``sim.faults.halt``), ``subscribed A,B`` (those of the channels someone holds), ``stop``."""
    async with Simulator(seed=seed) as sim:
        def report(**more: Any) -> dict[str, Any]:
            return {"ws_url": sim.ws_url, "rss_kib": rss_kib(), **more}

        async def answer(line: str) -> dict[str, Any]:
            command, _, arg = line.partition(" ")
            names = [a for a in arg.split(",") if a]
            if command == "drop":
                return report(dropped=sim.faults.drop_connections())
            if command in ("halt", "resume"):
                for n in names:
                    sim.faults.halt(n, command == "halt")
            if command == "subscribed":
                return report(subscribed=[ch for ch in names if sim.subscriber_count(ch)])
            return report()

        await serve_commands(answer, report())


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--serve-exchange":
        asyncio.run(serve_exchange(int(sys.argv[2])))
        return 0
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_arguments(p)
    campaign_options(p)
    a = p.parse_args(argv)
    print(f"soak: {a.clients} clients for {a.minutes:g} min, the upstream dropped every {a.drop_every:g} s", flush=True)
    r = asyncio.run(run(a.minutes, a.clients, a.seed, drop_every=a.drop_every))
    return finish(r, a.strict)


if __name__ == "__main__":
    raise SystemExit(main())
