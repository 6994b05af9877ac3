"""Operations page: `panel serve deribit_kit/ui/dashboards/ops.py` (or `deribit-kit demo`).

Reads a broker port's /metrics when DERIBIT_KIT_BROKER_URL is set (the demo sets it to its port),
else the broker of this server's own hub (DERIBIT_TARGET, as the other dashboards).
"""

import os

import panel as pn

from deribit_kit.ui.ops import OpsDashboard

pn.extension("tabulator")

OpsDashboard(url=os.environ.get("DERIBIT_KIT_BROKER_URL", "")).servable(title="deribit_kit · operations")
