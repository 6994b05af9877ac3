"""The subscription broker: one upstream connection shared by many in-process consumers.

See :mod:`deribit_kit.broker.broker` (refcounted channels, live books, option chains, metrics)
and :mod:`deribit_kit.broker.subscription` (bounded consumers and their overflow policies).
"""

from .broker import Broker, LiveBook, OptionChain, chunk_channels
from .subscription import POLICIES, Consumer, ConsumerClosed, Gap, Policy

__all__ = ["POLICIES", "Broker", "Consumer", "ConsumerClosed", "Gap", "LiveBook", "OptionChain", "Policy",
           "chunk_channels"]
