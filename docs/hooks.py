"""MkDocs hook: the kit's docstrings use Sphinx roles (``:meth:`x```, ``:class:`~a.B```); in the API
reference they render as plain code spans, without the role's name."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:meth|class|func|mod|attr|data|exc|obj|const):(<code>)~?")


def on_page_content(html: str, **kwargs: Any) -> str:
    """Drop the role names in front of code spans."""
    return _ROLE.sub(r"\1", html)
