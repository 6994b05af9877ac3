"""Shared pieces of the reliability campaigns (not a campaign itself): what they measure with.

* :func:`rss_kib` - resident memory of this process or another (``VmRSS`` of ``/proc/PID/status``);
* :class:`Child`, :func:`serve_commands` - a helper process (the broker, the exchange) driven by
  JSON lines, so that its memory is measured apart from the campaign's;
* :class:`Problems` - unhandled asyncio exceptions (the loop's exception handler: "Task exception
  was never retrieved", failing callbacks) and the kit's own ERROR log records, counted by kind;
* :class:`Peer` - a bare WebSocket JSON-RPC peer (no kit code on the wire) used to observe the
  exchange and the broker port independently of the client under test;
* :class:`Chain` - follows one book channel's notifications and counts breaks of the
  ``change_id``/``prev_change_id`` chain (a change that does not follow the last one without a
  snapshot in between);
* :func:`expect`, :func:`wait_until` - bounded waits (an event's next emission, a condition that
  no event announces);
* :class:`Figures` - prints ``name  value  (target ...)`` lines and tells which targets were missed;
  :class:`Outcome` - the first problems and the unhandled exceptions every result keeps.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import socket
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from deribit_kit.events import Event

MAX_SIZE = 2**24


def rss_kib(pid: int | None = None) -> int:
    """Resident memory of this process (or of ``pid``) in KiB (0 where ``/proc`` is not available)."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


# ---------------------------------------------------------------- unhandled exceptions and logged errors


class _CountingHandler(logging.Handler):
    def __init__(self, problems: Problems) -> None:
        super().__init__(logging.WARNING)
        self.problems = problems

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}: {record.msg}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            key += f" [{type(exc).__name__}: {str(exc)[:80]}]"
            if record.levelno >= logging.ERROR and len(self.problems.tracebacks) < 5:
                self.problems.tracebacks.append("".join(traceback.format_exception(exc)))
        if record.levelno >= logging.ERROR:
            self.problems.logged_errors[key] += 1
        else:
            self.problems.warnings[key] += 1


@dataclass
class Problems:
    """Unhandled exceptions reaching the event loop, and the kit's WARNING/ERROR log records.

    ``with Problems.watch() as p:`` installs a loop exception handler and a counting handler on
    the ``deribit_kit`` logger (its records then go nowhere else) and restores both on exit.
    """

    unhandled: Counter[str] = field(default_factory=Counter)
    logged_errors: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    tracebacks: list[str] = field(default_factory=list)

    def _loop_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        key = str(context.get("message", "unhandled"))
        if isinstance(exc, BaseException):
            key += f": {type(exc).__name__}: {str(exc)[:100]}"
            if len(self.tracebacks) < 5:
                self.tracebacks.append("".join(traceback.format_exception(exc)))
        self.unhandled[key] += 1

    @classmethod
    @contextlib.contextmanager
    def watch(cls) -> Iterator[Problems]:
        p = cls()
        loop = asyncio.get_running_loop()
        old_handler = loop.get_exception_handler()
        loop.set_exception_handler(p._loop_handler)
        logger = logging.getLogger("deribit_kit")
        handler = _CountingHandler(p)
        old_propagate = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False  # the campaigns count the kit's records instead of printing thousands
        try:
            yield p
        finally:
            gc.collect()  # tasks whose exception nobody retrieved are reported when collected
            logger.removeHandler(handler)
            logger.propagate = old_propagate
            loop.set_exception_handler(old_handler)

    def flush(self) -> None:
        """Collect garbage now, so that unretrieved task exceptions are reported by now."""
        gc.collect()

    @property
    def unhandled_total(self) -> int:
        return sum(self.unhandled.values())

    @property
    def logged_error_total(self) -> int:
        return sum(self.logged_errors.values())


# ---------------------------------------------------------------- waiting


def expect(event: Event) -> asyncio.Future[Any]:
    """A future for the next emission of ``event``, registered now (no race with the emitter)."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def handler(*args: Any) -> None:
        event.disconnect(handler)
        if not fut.done():
            fut.set_result(args[0] if len(args) == 1 else args)

    event.connect(handler)
    return fut


async def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Wait at most ``timeout`` s for ``pred()`` (for states no event announces); whether it held."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def bounded(aw: Awaitable[Any], timeout: float) -> bool:
    """Await ``aw`` for at most ``timeout`` s; whether it completed (its errors are swallowed)."""
    try:
        await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        return False
    except Exception:
        return True
    return True


# ---------------------------------------------------------------- helper processes


class Child:
    """A helper process of a campaign (the broker, the exchange), so that its memory is its own:
    it prints one JSON object per line on stdout (the first when it is ready) and answers one line
    per command read on stdin (:func:`serve_commands` is its side)."""

    def __init__(self, proc: asyncio.subprocess.Process, first: dict[str, Any]) -> None:
        self.proc = proc
        self.first = first

    @classmethod
    async def start(cls, *args: str, timeout: float = 60.0) -> Child:
        """``python *args`` with pipes; returns once its first line (its URLs) has come."""
        proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            await proc.wait()
            raise RuntimeError(f"{args[0]} ended before it was ready (status {proc.returncode})")
        return cls(proc, json.loads(line))

    @property
    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    async def ask(self, command: str = "report", timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the helper process ended")
        out: dict[str, Any] = json.loads(line)
        return out

    async def stop(self) -> dict[str, Any]:
        """Its last report (after ``stop``); it is killed if it does not end by itself."""
        try:
            return await self.ask("stop")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 10)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


async def serve_commands(answer: Callable[[str], Awaitable[dict[str, Any]]], first: dict[str, Any]) -> None:
    """The child's side of :class:`Child`: print ``first``, then one answer per stdin line until
    ``stop`` (answered too) or the end of stdin."""
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    say(first)
    while line := (await reader.readline()).decode().strip():
        say(await answer(line))
        if line == "stop":
            return


# ---------------------------------------------------------------- a bare JSON-RPC peer


class PeerClosed(Exception):
    """The peer's connection is closed."""


class PeerError(Exception):
    """The other side answered an error object."""

    def __init__(self, method: str, error: Any) -> None:
        super().__init__(f"{method}: {error}")
        self.method = method
        self.error = error
        self.code = error.get("code") if isinstance(error, dict) else None


class Peer:
    """A bare WebSocket JSON-RPC connection: requests matched by id, notifications to a callback."""

    def __init__(self, ws: ClientConnection, on_note: Callable[[str, Any], None] | None = None) -> None:
        self.ws = ws
        self.on_note = on_note
        self.ids = itertools.count(1)
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.notes = 0
        self.other = 0  # messages that are neither a notification nor the answer to a call() of ours
        self.answers = 0  # messages with an "id": answers to any request, ours or raw frames
        self.codes: Counter[Any] = Counter()  # answers by error code ("ok" for results)
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, url: str, on_note: Callable[[str, Any], None] | None = None,
                   timeout: float = 5.0) -> Peer:
        ws = await websockets.connect(url, max_size=MAX_SIZE, open_timeout=timeout, ping_interval=None,
                                      compression=None, close_timeout=1.0)
        return cls(ws, on_note)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                try:
                    msg = orjson.loads(frame)
                except orjson.JSONDecodeError:
                    self.other += 1
                    continue
                if not isinstance(msg, dict):
                    self.other += 1
                    continue
                if msg.get("method") == "subscription":
                    self.notes += 1
                    params = msg.get("params") or {}
                    if self.on_note is not None and isinstance(params, dict):
                        self.on_note(str(params.get("channel")), params.get("data"))
                    continue
                if "id" in msg:
                    self.answers += 1
                    err = msg.get("error")
                    self.codes[err.get("code") if isinstance(err, dict) else "ok"] += 1
                rid = msg.get("id")
                fut = self.replies.pop(rid, None) if type(rid) is int else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                else:
                    self.other += 1
        except websockets.ConnectionClosed:
            pass
        finally:
            code = self.ws.close_code
            self.close_code = code if code is not None else 1006
            self.closed.set()
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(PeerClosed(f"closed ({self.close_code})"))
                    fut.exception()
            self.replies.clear()

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send a request; the whole reply (``result`` or ``error``). Raises :class:`PeerClosed`, ``TimeoutError``."""
        if self.closed.is_set():
            raise PeerClosed("closed")
        rid = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        try:
            await self.ws.send(orjson.dumps(msg).decode())
        except websockets.ConnectionClosed:
            self.replies.pop(rid, None)
            raise PeerClosed("closed while sending") from None
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.replies.pop(rid, None)

    async def result(self, method: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        reply = await self.call(method, params, timeout)
        if "error" in reply:
            raise PeerError(method, reply["error"])
        return reply.get("result")

    def abort(self) -> None:
        """Reset the TCP connection (RST, no closing handshake)."""
        transport = self.ws.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2.0)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


async def instrument_names(url: str) -> list[str]:
    """Every instrument the exchange (or a port) at ``url`` lists, sorted (``public/get_instruments``)."""
    peer = await Peer.open(url)
    try:
        listed = await peer.result("public/get_instruments", {"currency": "any"}, timeout=30)
    finally:
        await peer.close()
    return sorted(str(i["instrument_name"]) for i in listed)


# ---------------------------------------------------------------- book chains


class Chain:
    """One subscriber's view of one book channel: the book rebuilt from its notifications (plain
    dicts, no kit code) and the breaks of its ``change_id`` chain."""

    __slots__ = ("asks", "bad", "bids", "breaks", "changes", "first_break", "last", "last_at", "max_gap",
                 "snapshots")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.snapshots = 0
        self.changes = 0
        self.breaks = 0  # a change whose prev_change_id is not the last change_id (no snapshot between)
        self.bad = 0  # messages that are not a well-formed snapshot or change
        self.last: int | None = None
        self.last_at: float | None = None
        self.max_gap = 0.0  # longest silence between two messages, seconds
        self.first_break: str | None = None

    def feed(self, data: Any) -> None:
        now = time.monotonic()
        if self.last_at is not None:
            self.max_gap = max(self.max_gap, now - self.last_at)
        self.last_at = now
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "snapshot":
            self.snapshots += 1
            self.bids, self.asks = {}, {}
        elif kind == "change":
            if data.get("prev_change_id") != self.last or self.last is None:
                self.breaks += 1
                if self.first_break is None:
                    self.first_break = f"prev_change_id {data.get('prev_change_id')} after {self.last}"
            self.changes += 1
        else:
            self.bad += 1
            return
        try:
            for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
                for action, price, amount in levels:
                    if action == "delete" or not amount:
                        side.pop(float(price), None)
                    else:
                        side[float(price)] = float(amount)
        except (KeyError, TypeError, ValueError):
            self.bad += 1
        self.last = data.get("change_id")

    def levels(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(bids best first, asks best first)."""
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())


class FollowsChains:
    """A client that keeps a :class:`Chain` for each book channel it follows: ``_note`` (its peer's
    ``on_note``) feeds the channel's chain, and skips channels it does not keep."""

    chains: dict[str, Chain]

    def _note(self, channel: str, data: Any) -> None:
        chain = self.chains.get(channel)
        if chain is not None:
            chain.feed(data)


# ---------------------------------------------------------------- printing


@dataclass
class Outcome:
    """What every campaign's result keeps beside its own figures: the first problems seen, and the
    unhandled exceptions and kit ERROR log records of the process under test."""

    examples: list[str] = field(default_factory=list)
    unhandled: Counter[str] = field(default_factory=Counter)
    logged_errors: Counter[str] = field(default_factory=Counter)

    def example(self, text: str) -> None:
        """Keep ``text`` among the first 50 problems."""
        if len(self.examples) < 50:
            self.examples.append(text)

    def problem_lines(self, where: str = "", shown: int = 12) -> list[str]:
        """Report lines: unhandled exceptions and ERROR records by kind, then the first problems."""
        tag = f" ({where})" if where else ""
        out = counter_lines(f"unhandled exceptions{tag}", self.unhandled)
        out += counter_lines(f"kit ERROR log records{tag}", self.logged_errors)
        if self.examples:
            out.append("  first problems:")
            out += [f"    {e}" for e in self.examples[:shown]]
        return out


@dataclass
class Figures:
    """Lines of ``name  value  (target)``; remembers which targets were missed."""

    title: str
    lines: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def add(self, name: str, value: Any, target: Any = None, ok: bool | None = None) -> None:
        if target is not None and ok is None:
            ok = value == target
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        tgt = "" if target is None else f"  (target {target})"
        self.lines.append(f"  {name:<34} {_fmt(value)}{tgt}{mark}")
        if ok is False:
            self.missed.append(name)

    def text(self, more: str = "") -> str:
        head = f"== {self.title}"
        verdict = f"   targets missed: {', '.join(self.missed)}" if self.missed else "   all targets met"
        return "\n".join([head, *self.lines, *([more] if more else []), verdict])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict | Counter):
        if not value:
            return "{}"
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items(), key=lambda kv: (-kv[1], str(kv[0]))))
    return str(value)


def counter_lines(title: str, counts: Counter[str] | dict[str, int], limit: int = 12) -> list[str]:
    """``title`` then one indented line per key, most frequent first."""
    if not counts:
        return []
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out = [f"  {title}:"]
    out += [f"    {v:>7}  {k}" for k, v in items[:limit]]
    if len(items) > limit:
        out.append(f"    ... and {len(items) - limit} more kinds")
    return out


# ---------------------------------------------------------------- the command line


class Reported(Protocol):
    """A campaign's result as its command line ends: the report and whether every target was met."""

    @property
    def ok(self) -> bool: ...

    def report(self) -> str: ...


def campaign_options(p: argparse.ArgumentParser, verbose: str | None = None) -> None:
    """The options every campaign takes after its own: ``--seed``, ``--verbose`` (with ``verbose`` as
    its help, when the campaign has it) and ``--strict``."""
    p.add_argument("--seed", type=int, default=1)
    if verbose is not None:
        p.add_argument("--verbose", action="store_true", help=verbose)
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")


def finish(result: Reported, strict: bool) -> int:
    """Print the report; the exit status (1 when ``strict`` and a target is missed)."""
    print(result.report())
    return 1 if strict and not result.ok else 0
