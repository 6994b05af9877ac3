"""Options dashboard: `panel serve deribit_kit/ui/dashboards/options.py` (or `deribit-kit demo`)."""

import panel as pn

from deribit_kit.ui import OptionsDashboard

pn.extension()

OptionsDashboard(currency=pn.state.session_args.get("currency", [b"BTC"])[0].decode()
                 ).servable(title="deribit_kit · options")
