"""The logger handed to ``websockets``: its DEBUG frame trace prints every frame verbatim,
``public/auth`` with the client secret and tokens included, so that trace is turned off here.
INFO and above (connection closed, handshake failures) pass through to ``websockets.*`` as usual.
The kit's own request trace (``deribit_kit.transport.ws`` at DEBUG) redacts secrets.
"""

from __future__ import annotations

import logging


class NoFrameTrace(logging.LoggerAdapter):
    """A logger adapter that reports DEBUG as disabled."""

    def isEnabledFor(self, level: int) -> bool:
        """False for DEBUG (so ``websockets`` skips its frame trace); otherwise the logger's own answer."""
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


def websockets_logger(side: str) -> NoFrameTrace:
    """``websockets.client`` or ``websockets.server`` without the frame trace."""
    return NoFrameTrace(logging.getLogger(f"websockets.{side}"), {})
