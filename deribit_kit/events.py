"""A small event type in the style of ib_insync's: ``obj.updated += handler``, ``obj.updated.emit(x)``,
and ``await obj.updated.wait()`` for the next emission.

Handlers run synchronously in emission order; a handler that raises is logged and does not stop
the others. Coroutine functions are scheduled as tasks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("deribit_kit.events")
_tasks: set[asyncio.Future[Any]] = set()  # keeps handler tasks alive until they finish


class Event:
    """A named event with handlers and awaitable emissions."""

    __slots__ = ("_handlers", "_waiters", "name")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._handlers: list[Callable[..., Any]] = []
        self._waiters: list[asyncio.Future[Any]] = []

    def connect(self, handler: Callable[..., Any]) -> None:
        """Call ``handler(*args)`` on every emission (once, however often it is connected); ``event += handler``."""
        if handler not in self._handlers:
            self._handlers.append(handler)

    def disconnect(self, handler: Callable[..., Any]) -> None:
        """Stop calling ``handler`` (no error when it was not connected); ``event -= handler``."""
        try:
            self._handlers.remove(handler)
        except ValueError:
            pass

    def __iadd__(self, handler: Callable[..., Any]) -> Event:
        self.connect(handler)
        return self

    def __isub__(self, handler: Callable[..., Any]) -> Event:
        self.disconnect(handler)
        return self

    def __len__(self) -> int:
        return len(self._handlers)

    def __bool__(self) -> bool:
        """True when anyone listens: a handler, or a coroutine in :meth:`wait`."""
        return bool(self._handlers or self._waiters)

    def emit(self, *args: Any) -> None:
        """Call every handler with ``args`` and wake :meth:`wait` (a coroutine handler runs as a
        task; a handler that raises is logged and the others still run)."""
        for handler in list(self._handlers):
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    _tasks.add(task)
                    task.add_done_callback(_tasks.discard)
            except Exception:
                log.exception("handler of event %s failed", self.name)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            value = args[0] if len(args) == 1 else args
            for fut in waiters:
                if not fut.done():
                    fut.set_result(value)

    async def wait(self, timeout: float | None = None) -> Any:
        """The arguments of the next emission (one value, or a tuple)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, handlers={len(self._handlers)})"
