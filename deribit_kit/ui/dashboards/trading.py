"""Trading dashboard: `panel serve deribit_kit/ui/dashboards/trading.py` (or `deribit-kit demo`).

Needs an API key in DERIBIT_CLIENT_ID/DERIBIT_CLIENT_SECRET (the demo passes the embedded exchange's).
"""

import panel as pn

from deribit_kit.ui import TradingDashboard

pn.extension("tabulator")

TradingDashboard(instrument=pn.state.session_args.get("instrument", [b"BTC-PERPETUAL"])[0].decode()
                 ).servable(title="deribit_kit · trading")
