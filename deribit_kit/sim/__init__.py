"""The embedded Deribit-compatible exchange: the kit's default target, so everything runs offline.

    from deribit_kit.sim import Simulator
    async with Simulator(seed=7) as sim:
        ...  # sim.ws_url, sim.http_url, sim.faults, sim.step()

Its parts: :mod:`.exchange` (pure state: market, accounts, the engine split by job),
:mod:`.rpc` (the method handlers, in one explicit table), :mod:`.pubsub` (channels and
publishing), :mod:`.server` (the adapter between the endpoint and the rest).
"""

from .server import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Faults, Session, Simulator

__all__ = ["DEMO_CLIENT_ID", "DEMO_CLIENT_SECRET", "Faults", "Session", "Simulator"]
