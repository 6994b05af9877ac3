"""The embedded Deribit-compatible exchange: the kit's default target, so everything runs offline.

    from deribit_kit.sim import Simulator
    async with Simulator(seed=7) as sim:
        ...  # sim.ws_url, sim.http_url, sim.faults, sim.step()
"""

from . import control as _control  # noqa: F401  (registers the sim/* methods)
from . import trading as _trading  # noqa: F401  (registers the trading and account methods)
from .server import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Faults, Session, Simulator

__all__ = ["DEMO_CLIENT_ID", "DEMO_CLIENT_SECRET", "Faults", "Session", "Simulator"]
