"""The embedded exchange's JSON-RPC methods, by job: :mod:`.session` (test, hello, auth, logout,
subscriptions), :mod:`.public` (market data and reference), :mod:`.trading` (orders, positions,
account), :mod:`.control` (``sim/*``), and the endpoint's heartbeat methods. :data:`METHODS` is
assembled here, explicitly; :mod:`deribit_kit.sim.server` answers through it with
:class:`deribit_kit.wire.rpcserver.RpcServer`.
"""

from __future__ import annotations

from ...transport.endpoint import heartbeat_methods
from ...wire.rpcserver import MethodTable
from . import control, public, session, trading
from .context import Context

METHODS = MethodTable.merged(session.METHODS, heartbeat_methods(), public.METHODS, trading.METHODS,
                             control.METHODS)
"""Every method of the embedded exchange, by name."""

__all__ = ["METHODS", "Context"]
