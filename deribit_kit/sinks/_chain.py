"""The consumer side of a chain a sink follows (:class:`~deribit_kit.live.OptionChain`): what the
chain moves goes through the sink's consumer, and the sink hears of each channel that joins
(``hold`` before its subscribe, ``joined`` after) and leaves (``left``). Shared by the recorder and
the Kafka sink."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..broker.consumer import Consumer

__all__ = ["ChainChannels"]


class ChainChannels:
    """A chain's channels on a sink's consumer, with the sink told of each move."""

    def __init__(self, consumer: Consumer, hold: Callable[[list[str]], None], joined: Callable[[list[str]], Any],
                 left: Callable[[list[str]], None]) -> None:
        self.consumer = consumer
        self._hold = hold
        self._joined = joined
        self._left = left

    @property
    def channels(self) -> list[str]:
        return self.consumer.channels

    @channels.setter
    def channels(self, value: list[str]) -> None:
        self.consumer.channels = value

    async def add_channels(self, channels: list[str]) -> None:
        self._hold(channels)
        try:
            await self.consumer.add_channels(channels)
        finally:
            done = self._joined(channels)
            if inspect.isawaitable(done):
                await done

    async def remove_channels(self, channels: list[str]) -> None:
        await self.consumer.remove_channels(channels)
        self._left(channels)

    async def close(self) -> None:
        await self.consumer.close()
