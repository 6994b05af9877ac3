"""Blocking facade for plain scripts and the REPL: the same methods as :class:`deribit_kit.Deribit`,
run on a private event loop in a background thread.

    from deribit_kit.sync import Deribit
    dk = Deribit.connect()                  # embedded exchange
    print(dk.ticker("BTC-PERPETUAL").mark_price)
    for msg in dk.subscribe("ticker.BTC-PERPETUAL.100ms"):
        ...
    dk.close()

Inside Jupyter (or any running event loop) use ``await`` with the async client instead: calling
this facade there raises :class:`BlockingCallInLoopError`, because blocking the notebook's loop
would freeze the very loop the kernel runs on. If you must call blocking code inside a notebook
(a library that calls ``asyncio.run`` itself, say), :func:`allow_nested_loops` applies
``nest-asyncio`` as an explicit opt-in.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from . import deribit as _facade
from .broker.consumer import Consumer, Item
from .errors import BlockingCallInLoopError as BlockingCallInLoopError
from .errors import DeribitKitError

T = TypeVar("T")


_nested_allowed = False


def _refuse_inside_loop(what: str) -> None:
    if _nested_allowed:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    use = "`dk = await deribit_kit.Deribit.connect()`"
    if what != "connect":
        use += f" and `await dk.{what}(...)`"
    raise BlockingCallInLoopError(
        f"deribit_kit.sync.{what} blocks, and an event loop is running in this thread (Jupyter?). "
        f"Use the async client instead: {use}; "
        "or, only if you must, call deribit_kit.sync.allow_nested_loops() first."
    )


class _LoopThread:
    """A private event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="deribit_kit.sync", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


class SyncSubscription:
    """A blocking iterator over a :class:`deribit_kit.broker.Consumer`."""

    def __init__(self, owner: Deribit, sub: Consumer) -> None:
        self._owner = owner
        self._sub = sub

    def __iter__(self) -> Iterator[Item]:
        try:
            while True:
                yield self.get()
        finally:
            self.close()

    def get(self, timeout: float | None = None) -> Item:
        """The next message (or a ``Gap`` marker), waiting at most ``timeout`` s."""
        return self._owner._run(self._sub.get(timeout))

    def close(self) -> None:
        """Stop the subscription (the broker unsubscribes when nobody else reads the channels)."""
        if not self._owner.closed:
            self._owner._run(self._sub.close())

    def __enter__(self) -> SyncSubscription:
        self._owner._run(self._sub.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Deribit:
    """Blocking twin of :class:`deribit_kit.Deribit`; every public coroutine method blocks."""

    def __init__(self, client: _facade.Deribit, loop: _LoopThread) -> None:
        self._client = client
        self._loop = loop
        self.closed = False

    @classmethod
    def connect(cls, target: str | None = None, **kwargs: Any) -> Deribit:
        """Connect like :meth:`deribit_kit.Deribit.connect`, blocking until ready."""
        _refuse_inside_loop("connect")
        loop = _LoopThread()
        try:
            client = loop.run(_facade.Deribit.connect(target, **kwargs))
        except BaseException:
            loop.stop()
            raise
        return cls(client, loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.closed:
            coro.close()
            raise DeribitKitError("the client is closed")
        return self._loop.run(coro)

    def close(self) -> None:
        """Close the connection and stop the private loop."""
        if self.closed:
            return
        try:
            self._loop.run(self._client.close(), timeout=10)
        finally:
            self.closed = True
            self._loop.stop()

    def __enter__(self) -> Deribit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(self, *channels: str, maxsize: int = 10_000) -> SyncSubscription:
        """A blocking iterator of notifications; leaving the ``for`` loop unsubscribes."""
        _refuse_inside_loop("subscribe")
        return SyncSubscription(self, self._client.subscribe(*channels, maxsize=maxsize))

    @property
    def client(self) -> _facade.Deribit:
        """The async client underneath (lives on the private loop's thread)."""
        return self._client

    def __getattr__(self, name: str) -> Any:
        # properties and plain attributes of the async client (events, settings, sim, ...)
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"<sync {self._client!r}>"


def _mirror(name: str) -> Callable[..., Any]:
    method = getattr(_facade.Deribit, name)

    @functools.wraps(method)
    def call(self: Deribit, *args: Any, **kwargs: Any) -> Any:
        _refuse_inside_loop(name)
        return self._run(getattr(self._client, name)(*args, **kwargs))

    return call


def public_methods(cls: type) -> list[str]:
    """Names of the public coroutine methods of ``cls`` (what the blocking facade mirrors)."""
    return sorted(n for n, v in inspect.getmembers(cls) if not n.startswith("_") and inspect.iscoroutinefunction(v))


for _name in public_methods(_facade.Deribit):
    if _name not in ("connect", "subscribe") and _name not in Deribit.__dict__:
        setattr(Deribit, _name, _mirror(_name))


def allow_nested_loops() -> None:
    """Opt in to ``nest-asyncio`` so blocking calls work inside a running loop (e.g. a notebook).

    Prefer ``await`` in notebooks; this patches asyncio process-wide and is meant for code you
    cannot change. Requires the ``notebooks`` extra (``nest-asyncio``).
    """
    try:
        import nest_asyncio
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise DeribitKitError("allow_nested_loops needs nest-asyncio: pip install 'deribit-kit[notebooks]'") from exc
    nest_asyncio.apply()
    global _nested_allowed
    _nested_allowed = True
