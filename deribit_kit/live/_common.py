"""Small pieces the live objects share (no I/O of their own): starting once, and iterating over
versions of an object that counts its changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

V = TypeVar("V", bound="Versioned")


class Versioned(Protocol):
    """An object that counts its changes in ``version`` and can wait for the next one."""

    version: int

    async def wait_version(self, after: int, timeout: float | None = None) -> int: ...


async def versions(obj: V) -> AsyncIterator[V]:
    """Yield ``obj`` now and after each change (skipping intermediate ones when the reader is slow)."""
    seen = -1
    while True:
        if obj.version <= seen:
            await obj.wait_version(seen)
        seen = obj.version
        yield obj


class Once:
    """Run a start-up coroutine once: later callers wait for the first run; after a failure the
    next caller tries again (the failing caller gets the exception)."""

    def __init__(self) -> None:
        self._done: asyncio.Future[None] | None = None

    async def run(self, start: Callable[[], Awaitable[None]]) -> None:
        """Run ``start()`` if it has not run (or has failed), else wait for the first run."""
        if self._done is not None:
            await asyncio.shield(self._done)
            return
        done = self._done = asyncio.get_running_loop().create_future()
        try:
            await start()
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: the caller gets it
            self._done = None
            raise
        done.set_result(None)
