"""Market dashboard: `panel serve deribit_kit/ui/dashboards/market.py` (or `deribit-kit demo`).

Target from the environment: DERIBIT_TARGET (sim | test | prod | ws://...), DERIBIT_CLIENT_ID/SECRET.
"""

import panel as pn

from deribit_kit.ui import MarketDashboard

pn.extension()

MarketDashboard(instrument=pn.state.session_args.get("instrument", [b"BTC-PERPETUAL"])[0].decode()
                ).servable(title="deribit_kit · market")
