"""The client layer: one Deribit-compatible connection and its typed requests.

:class:`~deribit_kit.client.rpc.Client` (requests, session, auth refresh, reconnect and restore,
one notification sink), :class:`~deribit_kit.client.methods.Methods` (the typed API calls),
:mod:`~deribit_kit.client.rules` (amount, tick and label checks) and
:mod:`~deribit_kit.client.placement` (idempotent placement by label). Nothing here fans out:
streams go through the broker (:mod:`deribit_kit.broker`).
"""

from .methods import Methods
from .placement import PlacedOrder
from .rpc import Client

__all__ = ["Client", "Methods", "PlacedOrder"]
