"""The subscription broker: the only fan-out between an upstream and every consumer.

:mod:`~deribit_kit.broker.broker` (refcounted channels, the one worker that keeps the wire in
order, live books, option chains, metrics), :mod:`~deribit_kit.broker.consumer` (bounded
consumers and their overflow policies), :mod:`~deribit_kit.broker.port` (the broker's own
Deribit-compatible port) and :mod:`~deribit_kit.broker.metrics` (Prometheus text).
"""

from ..errors import ConsumerClosed
from ..live.chain import OptionChain
from ..live.livebook import LiveBook
from ..wire.channels import chunk_channels
from .broker import Broker
from .consumer import POLICIES, Consumer, Gap, Notification, Policy

__all__ = ["POLICIES", "Broker", "Consumer", "ConsumerClosed", "Gap", "LiveBook", "Notification", "OptionChain",
           "Policy", "chunk_channels"]
