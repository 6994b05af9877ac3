"""The servable dashboard scripts, shipped with the package (``panel serve`` runs them as files).

``deribit-kit demo`` serves every script of :data:`APPS` from :func:`folder`; to serve them yourself::

    panel serve $(python -c "import deribit_kit.ui.dashboards as d; print(d.folder())")/*.py

or, from a source checkout, ``panel serve deribit_kit/ui/dashboards/*.py``. The scripts read the target
from the environment (``DERIBIT_TARGET``, ``DERIBIT_CLIENT_ID``/``DERIBIT_CLIENT_SECRET``). Importing
this package does not import Panel; the scripts do.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["APPS", "folder", "scripts"]

APPS = ("market", "options", "trading", "ops")
"""The dashboards ``deribit-kit demo`` serves, in the order it lists them."""


def folder() -> Path:
    """The folder that holds the dashboard scripts (inside the installed package)."""
    return Path(__file__).resolve().parent


def scripts(where: Path | None = None) -> list[Path]:
    """The scripts of :data:`APPS` in ``where`` (default: :func:`folder`)."""
    base = folder() if where is None else where
    return [base / f"{name}.py" for name in APPS]
