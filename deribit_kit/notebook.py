"""Notebook conveniences: kit errors read as one clear line instead of a wall of internals.

    import deribit_kit.notebook
    deribit_kit.notebook.setup()          # or: %load_ext deribit_kit.notebook

After :func:`setup`, an exception of the kit (:class:`~deribit_kit.errors.DeribitKitError`: a
wrong instrument, a rejected order, a missing key, a blocking call inside the notebook's loop)
raised by a cell shows as one line::

    InstrumentNotFoundError: public/ticker: not_found (13020): instrument_name: instrument not found

The full traceback stays available: ``%tb`` in the next cell prints it, and
``DERIBIT_KIT_TRACEBACK=full`` in the environment (or ``setup(full_tracebacks=True)``) keeps the
usual IPython tracebacks. Other exceptions are untouched. Outside IPython :func:`setup` does nothing.

When to use which API (see also :mod:`deribit_kit.sync`):

* notebooks: ``dk = await deribit_kit.Deribit.connect()`` and ``await`` in cells: Jupyter runs
  top-level ``await`` on the kernel's loop, so streams, live books and servers keep running
  between cells;
* plain scripts and the REPL: ``deribit_kit.sync.Deribit.connect()``, a blocking twin;
* ``deribit_kit.sync.allow_nested_loops()`` only when code you cannot change must block inside a
  notebook (it patches asyncio process-wide).
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any

from .errors import AuthenticationError, DeribitKitError

__all__ = ["format_error", "load_ipython_extension", "setup", "teardown", "unload_ipython_extension"]

TRACEBACK_ENV = "DERIBIT_KIT_TRACEBACK"
_RED, _RESET = "\x1b[1;31m", "\x1b[0m"
_AUTH_HINT = "check DERIBIT_CLIENT_ID and DERIBIT_CLIENT_SECRET (the embedded exchange needs none)"

_installed: dict[str, Any] = {}


def format_error(exc: BaseException, *, color: bool = False) -> str:
    """One line for a person: ``ClassName: method: message (code): param: reason``."""
    name = type(exc).__name__
    text = " ".join(str(exc).split()) or repr(exc)
    if isinstance(exc, AuthenticationError):
        text += f" ({_AUTH_HINT})"
    return f"{_RED}{name}{_RESET}: {text}" if color else f"{name}: {text}"


def _full_wanted(explicit: bool | None) -> bool:
    if explicit is not None:
        return explicit
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "full", "true", "yes")


def _handler(shell: Any, etype: type[BaseException], value: BaseException, tb: TracebackType | None,
             tb_offset: int | None = None) -> list[str] | None:
    # keep what %tb and %debug read (IPython's custom path does not store it)
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = value
    if _installed.get("full", False):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    shell._showtraceback(etype, value, [format_error(value, color=True)])
    return None


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def setup(*, full_tracebacks: bool | None = None, shell: Any = None) -> bool:
    """Show kit errors as one line in this IPython/Jupyter session; True when installed.

    ``full_tracebacks`` (default: ``DERIBIT_KIT_TRACEBACK=full`` in the environment) keeps
    IPython's usual tracebacks. Calling it again updates the setting.
    """
    ip = shell if shell is not None else _shell()
    if ip is None or not hasattr(ip, "set_custom_exc"):
        return False
    full = _full_wanted(full_tracebacks)
    if not _installed:
        _installed["previous"] = (getattr(ip, "custom_exceptions", ()), getattr(ip, "CustomTB", None))
    _installed["full"] = full
    _installed["shell"] = ip
    ip.set_custom_exc((DeribitKitError,), _handler)
    return True


def teardown() -> None:
    """Restore IPython's own error display."""
    ip = _installed.get("shell")
    if ip is not None:
        ip.custom_exceptions, custom_tb = _installed["previous"]
        if custom_tb is not None:
            ip.CustomTB = custom_tb
    _installed.clear()


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext deribit_kit.notebook``."""
    setup(shell=ip)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext deribit_kit.notebook``: the full tracebacks again (:func:`teardown`)."""
    teardown()
