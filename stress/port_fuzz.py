"""The broker port under fuzz: hostile connections against ONE broker port, while followers keep book chains.

The broker and its port run in a child process (``--serve``: ``Deribit`` client -> ``Broker`` ->
``BrokerServer``), so that its resident memory is the broker's alone; the embedded exchange, the
hostile connections, the followers and the checks run in this process. ``--rounds`` rounds (3 by
default) send ``--frames`` frames in all (100,000 by default) from ``--connections`` hostile
connections at a time (6, plus one raw-TCP one), each living a random number of frames and ending
with a TCP reset, a close or a server-side close:

* random bytes (text and binary frames), deep nesting (up to 15,000 levels), fragmented messages;
* every method the port answers with a wrong type in turn for each of its params, bad envelopes
  (ids, methods and params of every JSON type), unknown methods (``sim/*`` included: never forwarded);
* huge channel lists (up to ~1,200 names: duplicates, unknown and good channels), frames over
  32 kB (answered -32600) and over 1 MB (closed with 1009);
* subscribe / unsubscribe / unsubscribe_all churn of the round's channels (sent without waiting,
  a channel named twice), resets right after a subscribe (while it is in flight upstream);
* raw TCP: garbage instead of an HTTP request, and garbage after a valid WebSocket handshake.

Measured, with targets:

* follower breaks: three followers hold four book channels (shared with the hostile ones) for
  the whole run; a change that does not chain from the last one is a break (target 0), and a
  follower whose books stop moving during a round while the exchange's move is a stall (target 0);
* after each round, once the hostile connections are gone: what the port and the broker still hold
  beyond the followers' channels, and which channels the exchange still has subscribed for the
  broker (targets: nothing left, every reference let go);
* then NEW subscribers to every channel the round touched: each must get a snapshot and two
  chained changes (books) or two notifications (the rest) - judged against a reference subscriber
  on the exchange itself, so a channel with no traffic is "quiet", not a failure (target 0 failures);
* unanswered requests on connections that closed normally (every frame gets exactly one answer);
* the broker process's resident memory after each round (it must plateau) and its live tasks;
* unhandled exceptions and the kit's ERROR log records in the broker process (target 0).

    .venv/bin/python stress/port_fuzz.py --frames 100000 --rounds 3 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
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
    counter_lines,
    finish,
    instrument_names,
    mib,
    rss_kib,
    serve_commands,
    wait_until,
)

from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator

FOLLOWED = ("book.BTC-PERPETUAL.100ms", "book.ETH-PERPETUAL.100ms", "book.BTC-PERPETUAL.agg2")
FOLLOWERS = 3
MAX_CHANNELS = 1000  # the port's per-connection limit (its default)

# the methods the port answers itself or forwards, with their params (the fuzz sends each a wrong type)
PORT_METHODS: dict[str, tuple[str, ...]] = {
    "public/subscribe": ("channels",),
    "public/unsubscribe": ("channels",),
    "public/unsubscribe_all": (),
    "public/test": ("expected_result",),
    "public/hello": ("client_name", "client_version"),
    "public/get_time": (),
    "public/set_heartbeat": ("interval",),
    "public/disable_heartbeat": (),
    "public/auth": ("grant_type", "client_id", "client_secret", "refresh_token", "timestamp", "signature",
                    "nonce", "data", "scope"),
    "public/get_order_book": ("instrument_name", "depth"),
    "public/get_instruments": ("currency", "kind", "expired"),
    "public/get_instrument": ("instrument_name",),
    "public/ticker": ("instrument_name",),
    "public/get_index_price": ("index_name",),
    "public/get_book_summary_by_currency": ("currency", "kind"),
    "public/get_last_trades_by_instrument": ("instrument_name", "start_seq", "end_seq", "count", "sorting"),
    "public/get_currencies": (),
    "public/get_index_price_names": (),
    "public/get_contract_size": ("instrument_name",),
    "public/status": (),
    "private/subscribe": ("channels",),
    "private/unsubscribe": ("channels",),
    "private/buy": ("instrument_name", "amount", "price", "type", "label"),
    "private/get_positions": ("currency", "kind"),
}
GOOD: dict[str, Any] = {
    "expected_result": "exception", "client_name": "fuzz", "client_version": "1", "interval": 10,
    "grant_type": "client_credentials", "client_id": "x", "client_secret": "y", "refresh_token": "z",
    "timestamp": 0, "signature": "s", "nonce": "n", "data": "", "scope": "session:a",
    "instrument_name": "BTC-PERPETUAL", "depth": 5, "currency": "BTC", "kind": "future", "expired": False,
    "index_name": "btc_usd", "start_seq": 1, "end_seq": 2, "count": 3, "sorting": "asc", "amount": 10,
    "price": 1000, "type": "limit", "label": "fuzz",
}
WRONG: tuple[Any, ...] = (None, True, False, 0, -1, 2**63, -(2**63), 1.5, -0.0, 1e308, "", "x" * 300, "\u0000\ud7ff",
                          [], [None], [1, "a"], {}, {"a": {"b": []}}, ["BTC-PERPETUAL"])
ODD_IDS: tuple[Any, ...] = (None, 0, -1, 2**64 - 1, 1.5, "", "abc", [], [1], {}, {"id": 1}, True)
UNKNOWN = ("public/nope", "private/nope", "sim/drop_connections", "sim/halt", "sim/step", "public/", "/", "",
           "public/subscribe/", "PUBLIC/TEST", "public/test\u0000", "private/logout", "public/exchange_token")


@dataclass
class FuzzResult(Outcome):
    """Figures of one run of the fuzz campaign."""

    frames: int = 0
    rounds: int = 0
    elapsed_s: float = 0.0
    by_kind: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    endings: Counter[str] = field(default_factory=Counter)  # how hostile connections ended
    answers: Counter[Any] = field(default_factory=Counter)  # answers to hostile frames by error code
    unanswered: int = 0  # frames without an answer on connections that ended normally
    follower_breaks: int = 0
    follower_bad: int = 0
    follower_stalls: int = 0
    follower_disconnects: int = 0
    follower_changes: int = 0
    follower_snapshots: int = 0
    touched: list[int] = field(default_factory=list)  # channels touched per round
    checked: list[int] = field(default_factory=list)  # new-subscriber checks that had traffic, per round
    quiet: list[int] = field(default_factory=list)  # no traffic on the exchange either
    new_sub_failures: int = 0
    refused: int = 0  # good channels the port left out of a new subscriber's answer
    leftovers: Counter[str] = field(default_factory=Counter)  # held after a round, beyond the followers
    rss_kib: list[int] = field(default_factory=list)  # broker process after each round
    tasks: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)  # the broker's allocated Python memory blocks after each round
    objects: list[int] = field(default_factory=list)  # objects the broker's garbage collector tracks
    broker_rss_start_kib: int = 0
    tracebacks: list[str] = field(default_factory=list)
    broker: dict[str, Any] = field(default_factory=dict)  # the broker's own counters at the end
    driver_unhandled: Counter[str] = field(default_factory=Counter)

    @property
    def warm(self) -> int:
        """The round after which growth is judged: the first one warms the allocator up (every
        structure of ~640 channels' worth made once), so from the second on when there are 3+."""
        return 1 if len(self.rss_kib) >= 3 else 0

    @property
    def rss_growth_kib(self) -> int:
        """Growth of the broker's resident memory from the end of the warm round to the end of the last."""
        return self.rss_kib[-1] - self.rss_kib[self.warm] if len(self.rss_kib) > 1 else 0

    @property
    def plateau(self) -> bool:
        """RSS within 8 MiB (or 10 %) of the warm round's, and Python's allocated blocks within 2 %."""
        if not self.rss_kib:
            return False
        w = self.warm
        return (self.rss_growth_kib <= max(8 * 1024, self.rss_kib[w] // 10)
                and self.blocks[-1] <= self.blocks[w] * 1.02)

    @property
    def ok(self) -> bool:
        return (self.follower_breaks == self.follower_bad == self.follower_stalls == self.follower_disconnects == 0
                and self.new_sub_failures == self.refused == self.unanswered == 0 and not self.leftovers
                and not self.unhandled and not self.logged_errors and self.plateau)

    def figures(self) -> Figures:
        f = Figures("broker port under fuzz")
        f.add("frames", self.frames)
        f.add("rounds", self.rounds)
        f.add("elapsed", f"{self.elapsed_s:.1f} s")
        f.add("frames by kind", dict(self.by_kind))
        f.add("hostile connections", self.connections)
        f.add("how they ended", dict(self.endings))
        f.add("answers by code", {str(k): v for k, v in self.answers.items()})
        f.add("unanswered (normal closes)", self.unanswered, 0)
        f.add("follower chains", f"{FOLLOWERS} x {len(FOLLOWED)}: {self.follower_snapshots} snapshots, "
                                 f"{self.follower_changes} changes")
        f.add("follower breaks", self.follower_breaks, 0)
        f.add("follower malformed messages", self.follower_bad, 0)
        f.add("follower stalls", self.follower_stalls, 0)
        f.add("follower disconnects", self.follower_disconnects, 0)
        f.add("channels touched per round", self.touched)
        f.add("new subscribers checked / quiet", f"{self.checked} / {self.quiet}")
        f.add("new-subscriber failures", self.new_sub_failures, 0)
        f.add("good channels refused", self.refused, 0)
        held = Counter(k.split(":")[0] for k in self.leftovers.elements())
        f.add("left held after rounds", dict(held) or 0, 0, ok=not self.leftovers)
        f.add("broker RSS at start", mib(self.broker_rss_start_kib))
        f.add("broker RSS after each round", ", ".join(mib(k) for k in self.rss_kib))
        f.add(f"broker RSS growth after round {self.warm + 1}", mib(self.rss_growth_kib), "plateau", ok=self.plateau)
        f.add("broker live tasks after each round", self.tasks)
        f.add("broker Python blocks / objects", ", ".join(f"{b // 1000}k / {o // 1000}k"
                                                          for b, o in zip(self.blocks, self.objects, strict=True)))
        f.add("broker resyncs / reconnects", f"{self.broker.get('book_resyncs')} / {self.broker.get('reconnects')}")
        f.add("unhandled exceptions (broker)", sum(self.unhandled.values()), 0)
        f.add("kit ERROR records (broker)", sum(self.logged_errors.values()), 0)
        f.add("unhandled exceptions (driver)", sum(self.driver_unhandled.values()))
        return f

    def report(self) -> str:
        more = counter_lines("unhandled exceptions (driver)", self.driver_unhandled)
        more += counter_lines("left held after rounds (port topics, broker channels, exchange)", self.leftovers, 8)
        more += self.problem_lines("broker")
        more += [f"  traceback:\n{t}" for t in self.tracebacks[:2]]
        return self.figures().text("\n".join(more))


# ---------------------------------------------------------------- the broker process


async def serve(upstream: str) -> None:
    """The child: a broker and its port over ``upstream``, driven by :func:`harness.serve_commands`
    (``report``, ``settle``: the same after ``broker.settle()``, ``stop``)."""
    from deribit_kit import Deribit
    from deribit_kit.broker import Broker
    from deribit_kit.broker.port import BrokerServer

    with Problems.watch() as problems:
        dk = await Deribit.connect(upstream, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET,
                                   backoff_initial=0.01, backoff_max=0.5, client_rate_limit=False)
        broker = Broker(dk)
        srv = await BrokerServer(broker, rate_limits=False, max_channels=MAX_CHANNELS).start()

        def report() -> dict[str, Any]:
            problems.flush()
            return {"ws_url": srv.ws_url, "rss_kib": rss_kib(), "tasks": len(asyncio.all_tasks()),
                    "blocks": sys.getallocatedblocks(), "objects": len(gc.get_objects()),
                    "clients": len(srv.clients), "topics": sorted(srv.topics), "channels": sorted(broker.channels),
                    "books": sorted(broker.books), "book_resyncs": broker.book_resyncs,
                    "reconnects": broker.reconnects, "port": dict(srv.stats),
                    "unhandled": dict(problems.unhandled), "logged_errors": dict(problems.logged_errors),
                    "tracebacks": problems.tracebacks[:3]}

        async def answer(command: str) -> dict[str, Any]:
            if command == "settle":
                with contextlib.suppress(Exception):
                    await broker.settle(10.0)
            elif command == "stop":
                await srv.stop()
                await broker.close()
                await dk.close()
            return report()

        await serve_commands(answer, report())


async def start_broker(upstream: str) -> Child:
    """The broker process over ``upstream`` (its first report has its ``ws_url``)."""
    return await Child.start(os.path.abspath(__file__), "--serve", upstream)


# ---------------------------------------------------------------- frames


class Frames:
    """Hostile frames for one round: its channels, junk, wrong types, oversize and nested frames."""

    KINDS = ("churn", "wrong_type", "envelope", "unknown_method", "random_text", "binary", "nested",
             "huge_list", "oversize", "fragmented", "valid")
    WEIGHTS = (22, 20, 8, 6, 10, 6, 5, 3, 2, 2, 16)

    def __init__(self, rng: random.Random, channels: list[str], names: list[str]) -> None:
        self.rng = rng
        self.channels = channels  # the round's good channels
        self.names = names  # every instrument of the exchange
        self.ids = 0
        self.cycle = [(m, p) for m, ps in PORT_METHODS.items() for p in ps]
        self.cursor = rng.randrange(len(self.cycle))
        self.touched: set[str] = set()  # good channels this maker put in a subscribe

    def _req(self, method: Any, params: Any = None, rid: Any = ...) -> bytes:
        self.ids += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.ids if rid is ... else rid, "method": method}
        if params is not None:
            msg["params"] = params
        return orjson.dumps(msg)

    def _some_channels(self, n: int, subscribe: bool = True) -> list[str]:
        r = self.rng
        out = [r.choice(self.channels) for _ in range(n)]
        if subscribe:
            self.touched.update(out)
        if r.random() < 0.3:
            out += [r.choice(out)]  # named twice
        if r.random() < 0.3:
            out.insert(r.randrange(len(out) + 1), r.choice(("book.NOPE-PERPETUAL.100ms", "nonsense", "ticker.",
                                                            "book.BTC-PERPETUAL.1ms", "book.BTC-PERPETUAL.raw",
                                                            "user.orders.any.any.raw")))
        return out

    def next(self) -> tuple[str, str | bytes | list[str]]:
        """(kind, frame): a str is a text frame, bytes a binary frame, a list a fragmented text message."""
        kind = self.rng.choices(self.KINDS, self.WEIGHTS)[0]
        return kind, getattr(self, f"_{kind}")()

    def _churn(self) -> str:
        r = self.rng
        x = r.random()
        if x < 0.5:
            return self._req(r.choice(("public/subscribe", "public/subscribe", "private/subscribe")),
                             {"channels": self._some_channels(r.randint(1, 6))}).decode()
        if x < 0.9:
            return self._req("public/unsubscribe", {"channels": self._some_channels(r.randint(1, 6), False)}).decode()
        return self._req(r.choice(("public/unsubscribe_all", "private/unsubscribe_all"))).decode()

    def _wrong_type(self) -> str:
        r = self.rng
        method, param = self.cycle[self.cursor % len(self.cycle)]
        self.cursor += 1
        params = {p: GOOD.get(p) for p in PORT_METHODS[method] if r.random() < 0.7}
        params[param] = r.choice(WRONG)
        return self._req(method, params).decode()

    def _envelope(self) -> str:
        r = self.rng
        x = r.random()
        if x < 0.3:
            return self._req("public/test", None, r.choice(ODD_IDS)).decode()
        if x < 0.5:
            return self._req(r.choice(WRONG), {}).decode()
        if x < 0.7:
            return self._req(r.choice(("public/test", "public/subscribe")), r.choice(([], "x", 1, [1, 2], True)))\
                .decode()
        if x < 0.8:
            return orjson.dumps({"id": 1, "method": "public/test", "jsonrpc": r.choice(("1.0", 2, None))}).decode()
        if x < 0.85:  # numbers no 64-bit integer or double holds
            return '{"jsonrpc":"2.0","id":' + "9" * r.randint(20, 400) + ',"method":"public/test","params":{"x":1e999}}'
        return orjson.dumps(r.choice(([], [1, 2], "x", 1, None, {"method": "public/test"}, {"id": 3}))).decode()

    def _unknown_method(self) -> str:
        r = self.rng
        m = r.choice(UNKNOWN) if r.random() < 0.6 else "".join(chr(r.randint(33, 0x2FF))
                                                              for _ in range(r.randint(1, 40)))
        return self._req(m, {"instrument_name": "BTC-PERPETUAL"}).decode()

    def _random_text(self) -> str:
        r = self.rng
        raw = r.randbytes(r.randint(0, 400))
        text = raw.decode("utf-8", "replace")
        if r.random() < 0.3:  # almost JSON
            text = '{"jsonrpc":"2.0","id":' + str(r.randint(0, 9)) + ',"method":"public/test"' + text[:20]
        return text

    def _binary(self) -> bytes:
        r = self.rng
        if r.random() < 0.5:
            return r.randbytes(r.randint(1, 600))
        return self._req(r.choice(("public/test", "public/subscribe", "public/get_time")),
                         {"channels": self._some_channels(2)})

    def _nested(self) -> str:
        r = self.rng
        depth = r.choice((100, 600, 1100, 3000, 15000))
        opener, closer = r.choice((("[", "]"), ('{"a":', "}")))
        inner = opener * depth + "1" + closer * depth
        return '{"jsonrpc":"2.0","id":7,"method":"public/subscribe","params":{"channels":' + inner + "}}"

    def _huge_list(self) -> str:
        r = self.rng
        n = r.randint(300, 1200)
        if r.random() < 0.2:  # many good distinct channels at once (refused past the port's limit)
            chans = [f"ticker.{name}.100ms" for name in r.sample(self.names, min(len(self.names), n))]
            if len(chans) <= MAX_CHANNELS:
                self.touched.update(chans)
        else:
            chans = [r.choice(self.channels) if r.random() < 0.1 else f"book.NOPE-{r.randint(0, 10**6)}.100ms"
                     for _ in range(n)]
            self.touched.update(ch for ch in chans if ch in self.channels)
        return self._req("public/subscribe", {"channels": chans}).decode()

    def _oversize(self) -> str | bytes:
        r = self.rng
        size = r.choice((33_000, 40_000, 200_000, 1_200_000))
        frame = self._req("public/test", {"pad": "a" * size}).decode()
        return frame if r.random() < 0.7 else frame.encode()

    def _fragmented(self) -> list[str]:
        r = self.rng
        if r.random() < 0.3:  # a message over the server's 1 MB limit, 64 kB at a time
            return ["[" + "0," * 32_000] * 40 + ["0]"]
        frame = self._req("public/subscribe", {"channels": self._some_channels(3)}).decode()
        cuts = sorted(r.sample(range(1, len(frame)), min(3, len(frame) - 1)))
        return [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)], strict=True)]

    def _valid(self) -> str:
        r = self.rng
        m = r.choice(("public/test", "public/get_time", "public/hello", "public/get_order_book", "public/ticker",
                      "public/get_instrument", "public/set_heartbeat", "public/disable_heartbeat", "public/status"))
        params = {p: GOOD[p] for p in PORT_METHODS[m]}
        if "instrument_name" in params:
            params["instrument_name"] = r.choice(self.names)
        return self._req(m, params).decode()


# ---------------------------------------------------------------- the campaign


@dataclass
class Round:
    """What one round's hostile connections did (shared by its workers)."""

    budget: int
    touched: set[str]
    sent: int = 0


async def _hostile(url: str, rnd: Round, frames: Frames, res: FuzzResult, rng: random.Random) -> None:
    """One hostile worker: connection after connection until the round's budget is spent."""
    while rnd.sent < rnd.budget:
        try:
            peer = await Peer.open(url, timeout=10.0)
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            res.example(f"could not connect to the port: {exc!r}")
            await asyncio.sleep(0.05)
            continue
        res.connections += 1
        life = rng.choice((5, 50, 300, 1500))
        sent, server_closed = 0, False
        try:
            while sent < life and rnd.sent < rnd.budget:
                kind, frame = frames.next()
                await peer.ws.send(frame)
                sent += 1
                rnd.sent += 1
                res.frames += 1
                res.by_kind[kind] += 1
                if kind == "churn" and rng.random() < 0.02:  # reset while that subscribe is in flight upstream
                    break
                if sent % 200 == 0:
                    await peer.call("public/test", timeout=20.0)  # keeps the port's backlog bounded
        except (websockets.ConnectionClosed, PeerClosed):
            server_closed = True
        except TimeoutError:
            res.example("a hostile connection's public/test got no answer in 20 s")
        how = "server closed" if server_closed or peer.closed.is_set() else rng.choice(("reset", "reset", "close"))
        if how == "close":  # every frame sent gets its answer (unless the port closes: a frame over 1 MB)
            await wait_until(lambda: peer.answers >= sent or peer.closed.is_set(), 10.0)  # noqa: B023
            if peer.closed.is_set():
                how = "server closed"
            elif peer.answers < sent:
                res.unanswered += sent - peer.answers
                res.example(f"{sent - peer.answers} of {sent} frames unanswered on a connection that closed normally")
            await peer.close()
        else:
            if how == "reset":
                peer.abort()
            await peer.close()
        # 1009: a frame over 1 MB; 1006: the same, when the port's close met unread data (a TCP reset)
        res.endings[f"{how} ({peer.close_code})" if how == "server closed" else how] += 1
        res.answers.update(peer.codes)


async def _raw_tcp(host: str, port: int, rnd: Round, res: FuzzResult, rng: random.Random) -> None:
    """Garbage at the TCP level: instead of an HTTP request, or after a valid WebSocket handshake."""
    while rnd.sent < rnd.budget:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            if rng.random() < 0.5:
                key = base64.b64encode(rng.randbytes(16)).decode()
                writer.write(f"GET /ws/api/v2 HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                res.by_kind["tcp_garbage_after_handshake"] += 1
            else:
                res.by_kind["tcp_garbage"] += 1
            for _ in range(rng.randint(1, 5)):
                writer.write(rng.randbytes(rng.randint(1, 3000)))
            await asyncio.wait_for(writer.drain(), 5)
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(reader.read(65536), 0.2)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()
        rnd.sent += 1
        res.frames += 1
        res.connections += 1
        res.endings["raw tcp"] += 1
        await asyncio.sleep(0.01)


class Follower(FollowsChains):
    """A client that holds the followed book channels for the whole run and keeps their chains."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.chains: dict[str, Chain] = {ch: Chain() for ch in FOLLOWED}
        peer.on_note = self._note

    @classmethod
    async def open(cls, url: str) -> Follower:
        f = cls(await Peer.open(url))
        got = await f.peer.result("public/subscribe", {"channels": list(FOLLOWED)}, timeout=30)
        if sorted(got) != sorted(FOLLOWED):
            raise RuntimeError(f"the port refused a follower's channels: {got}")
        return f

    def changes(self) -> dict[str, int]:
        return {ch: c.changes for ch, c in self.chains.items()}


async def _check_new_subscribers(url: str, sim: Simulator, channels: list[str], res: FuzzResult,
                                 timeout: float) -> tuple[int, int]:
    """New subscribers to ``channels`` (one connection per port limit's worth) and a reference
    subscriber on the exchange: (channels checked, quiet channels)."""
    seen: dict[str, Chain] = {ch: Chain() for ch in channels}
    notes: Counter[str] = Counter()
    ref_notes: Counter[str] = Counter()
    ref_chains: dict[str, Chain] = {ch: Chain() for ch in channels}

    def on_port(ch: str, data: Any) -> None:
        notes[ch] += 1
        if ch in seen:
            seen[ch].feed(data)

    def on_ref(ch: str, data: Any) -> None:
        ref_notes[ch] += 1
        if ch in ref_chains:
            ref_chains[ch].feed(data)

    def done(ch: str, chains: dict[str, Chain], counts: Counter[str], scale: int = 1) -> bool:
        """A snapshot and 2 chained changes (books), or 2 notifications; ``scale`` times that."""
        if ch.startswith("book.") and ch.count(".") == 2:
            c = chains[ch]
            return c.snapshots >= 1 and c.changes >= 2 * scale and c.breaks == 0
        return counts[ch] >= 2 * scale

    ref = await Peer.open(sim.ws_url, on_ref)
    await ref.result("public/auth", {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID,
                                     "client_secret": DEMO_CLIENT_SECRET})
    peers: list[Peer] = []
    try:
        for i in range(0, len(channels), 500):
            part = channels[i:i + 500]
            await ref.result("private/subscribe", {"channels": part}, timeout=30)
            p = await Peer.open(url, on_port)
            peers.append(p)
            reply = await p.call("public/subscribe", {"channels": part}, timeout=30)
            got = reply.get("result") or []
            if "error" in reply:
                res.example(f"a new subscriber's subscribe was refused: {reply['error']}")
            for ch in set(part) - set(got):
                res.refused += 1
                res.example(f"the port left {ch} out of a new subscriber's answer")
        await wait_until(lambda: all(done(ch, seen, notes) for ch in channels), timeout, 0.05)
        quiet = 0
        for ch in channels:
            if done(ch, seen, notes):
                continue
            if not done(ch, ref_chains, ref_notes, 3):  # the exchange itself sent too little to judge
                quiet += 1
                continue
            res.new_sub_failures += 1
            c = seen[ch]
            res.example(f"new subscriber to {ch}: {notes[ch]} notifications ({c.snapshots} snapshots, {c.changes} "
                        f"changes, {c.breaks} breaks) while the exchange sent {ref_notes[ch]}")
        return len(channels) - quiet, quiet
    finally:
        for p in [*peers, ref]:
            await p.close()


def _round_channels(rng: random.Random, names: list[str]) -> list[str]:
    """The good channels one round works on: the followed books plus a random mix of families."""
    perps = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC_USDC-PERPETUAL", "SOL_USDC-PERPETUAL"]
    picked = perps + rng.sample(names, 12)
    chans = list(FOLLOWED)
    for name in picked:
        chans.append(f"book.{name}.100ms")
        chans.append(rng.choice((f"ticker.{name}.100ms", f"book.{name}.agg2", f"book.{name}.none.10.100ms",
                                 f"trades.{name}.100ms", f"quote.{name}")))
    chans += ["deribit_price_index.btc_usd", "perpetual.BTC-PERPETUAL.100ms", "trades.future.BTC.100ms"]
    return list(dict.fromkeys(chans))


async def run(frames: int = 100_000, rounds: int = 3, seed: int = 1, *, connections: int = 6,
              check_timeout: float = 10.0, max_seconds: float = 900.0, verbose: bool = False) -> FuzzResult:
    """Run the campaign and return its figures."""
    rng = random.Random(seed)
    res = FuzzResult()
    started = time.monotonic()
    with Problems.watch() as driver_problems:
        async with Simulator(seed=seed, rate_limits=False) as sim:
            names = await instrument_names(sim.ws_url)
            broker = await start_broker(sim.ws_url)
            url: str = broker.first["ws_url"]
            host, port = "127.0.0.1", int(url.split(":")[2].split("/")[0])
            res.broker_rss_start_kib = broker.first["rss_kib"]
            followers = [await Follower.open(url) for _ in range(FOLLOWERS)]
            try:
                for r in range(rounds):
                    if time.monotonic() - started > max_seconds:
                        res.example(f"max_seconds={max_seconds} reached after {r} rounds")
                        break
                    chans = _round_channels(rng, names)
                    rnd = Round(budget=frames // rounds + (1 if r < frames % rounds else 0), touched=set(FOLLOWED))
                    before = [f.changes() for f in followers]
                    t0 = time.monotonic()
                    makers = [Frames(random.Random(rng.random()), chans, names) for _ in range(connections)]
                    workers = [_hostile(url, rnd, m, res, random.Random(rng.random())) for m in makers]
                    workers.append(_raw_tcp(host, port, rnd, res, random.Random(rng.random())))
                    await asyncio.gather(*workers)
                    for m in makers:
                        rnd.touched |= m.touched
                    t_hostile = time.monotonic() - t0
                    res.rounds += 1
                    for f, b in zip(followers, before, strict=True):
                        if f.peer.closed.is_set():
                            continue
                        for ch, n in f.changes().items():
                            if n == b[ch]:
                                res.follower_stalls += 1
                                res.example(f"round {r + 1}: a follower's {ch} did not move")
                    # every hostile connection gone: what is held beyond the followers' channels
                    report: dict[str, Any] = {}

                    async def left() -> bool:
                        nonlocal report
                        report = await broker.ask("settle")
                        return set(report["topics"]) <= set(FOLLOWED) and set(report["channels"]) <= set(FOLLOWED)

                    deadline = time.monotonic() + 15
                    while not await left() and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                    for what in ("topics", "channels"):
                        for ch in set(report[what]) - set(FOLLOWED):
                            res.leftovers[f"{what}:{ch}"] += 1
                    stray = [ch for ch in rnd.touched if ch not in FOLLOWED and sim.subscriber_count(ch) > 0]
                    for ch in stray:
                        res.leftovers[f"exchange:{ch}"] += 1
                    touched = sorted(rnd.touched)
                    res.touched.append(len(touched))
                    checked, quiet = await _check_new_subscribers(url, sim, touched, res, check_timeout)
                    res.checked.append(checked)
                    res.quiet.append(quiet)
                    gc.collect()
                    report = await broker.ask("settle")
                    res.rss_kib.append(report["rss_kib"])
                    res.tasks.append(report["tasks"])
                    res.blocks.append(report["blocks"])
                    res.objects.append(report["objects"])
                    if verbose:
                        print(f"  round {r + 1}: {rnd.sent} frames in {t_hostile:.1f} s (with the checks "
                              f"{time.monotonic() - t0:.1f} s), broker RSS "
                              f"{mib(report['rss_kib'])}, {report['tasks']} tasks, {report['blocks']} blocks, "
                              f"{report['objects']} objects, {checked} new subscribers "
                              f"checked ({quiet} quiet), failures so far {res.new_sub_failures}", flush=True)
            finally:
                for f in followers:
                    if f.peer.closed.is_set():
                        res.follower_disconnects += 1
                    for c in f.chains.values():
                        res.follower_breaks += c.breaks
                        res.follower_bad += c.bad
                        res.follower_changes += c.changes
                        res.follower_snapshots += c.snapshots
                        if c.first_break:
                            res.example(f"follower chain break: {c.first_break}")
                    await f.peer.close()
                final = await broker.stop()
        driver_problems.flush()
    res.unhandled = Counter(final["unhandled"])
    res.logged_errors = Counter(final["logged_errors"])
    res.tracebacks = final["tracebacks"]
    res.broker = {k: final[k] for k in ("book_resyncs", "reconnects", "port")}
    res.driver_unhandled = driver_problems.unhandled
    res.elapsed_s = time.monotonic() - started
    return res


def add_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument(f"--{prefix}frames", type=int, default=100_000, help="hostile frames in all (default 100000)")
    p.add_argument(f"--{prefix}rounds", type=int, default=3, help="rounds against the same broker (default 3)")
    p.add_argument(f"--{prefix}connections", type=int, default=6, help="hostile connections at a time (default 6)")


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2]))
        return 0
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_arguments(p)
    campaign_options(p, verbose="print a line after each round")
    a = p.parse_args(argv)
    r = asyncio.run(run(a.frames, a.rounds, a.seed, connections=a.connections, verbose=a.verbose))
    return finish(r, a.strict)


if __name__ == "__main__":
    raise SystemExit(main())
