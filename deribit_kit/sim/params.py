"""Parameter declarations and checking for the embedded exchange's JSON-RPC methods.

Values may arrive typed (JSON-RPC) or as strings (HTTP GET query); both are coerced the way
Deribit does, and anything wrong is answered with -32602 ``Invalid params`` naming the
``param`` and the ``reason``. Unknown params are ignored (ccxt and cryptofeed send a few).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import error_for_code, invalid_params


@dataclass(slots=True, frozen=True)
class P:
    """One declared parameter."""

    name: str
    type: str = "str"  # str | int | float | bool | list | dict | any
    required: bool = False
    enum: tuple[Any, ...] | None = None
    default: Any = None


def _coerce(spec: P, value: Any) -> Any:
    t = spec.type
    if t == "any":
        return value
    if t == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid_params(spec.name, "must be a string")
        return str(value)
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise invalid_params(spec.name, "must be a boolean")
    if t == "int":
        if isinstance(value, bool):
            raise invalid_params(spec.name, "must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    pass
                else:
                    if f.is_integer():
                        return int(f)
        raise invalid_params(spec.name, "must be an integer")
    if t == "float":
        if isinstance(value, bool):
            raise invalid_params(spec.name, "must be a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise invalid_params(spec.name, "must be a number")
    if t == "list":
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        raise invalid_params(spec.name, "must be an array")
    if t == "dict":
        if isinstance(value, dict):
            return value
        raise invalid_params(spec.name, "must be an object")
    raise AssertionError(t)


def check_params(specs: tuple[P, ...], params: dict[str, Any]) -> dict[str, Any]:
    """Coerce and check ``params`` against ``specs``; returns the clean dict (with defaults)."""
    out: dict[str, Any] = {}
    for spec in specs:
        value = params.get(spec.name)
        if value is None:
            if spec.required:
                raise invalid_params(spec.name, "missing required parameter")
            if spec.default is not None:
                out[spec.name] = spec.default
            continue
        value = _coerce(spec, value)
        if spec.enum is not None and value not in spec.enum:
            allowed = ", ".join(str(e) for e in spec.enum)
            raise invalid_params(spec.name, f"must be one of: {allowed}")
        out[spec.name] = value
    return out


@dataclass(slots=True, frozen=True)
class Method:
    """A registered JSON-RPC method."""

    name: str
    func: Callable[..., Any]
    params: tuple[P, ...]
    private: bool
    ws_only: bool


def not_found(param: str = "instrument_name", what: str = "instrument") -> Exception:
    """Deribit's 13020 ``not_found`` for an unknown instrument (or other named thing)."""
    return error_for_code(13020, data={"param": param, "reason": f"{what} not found"})
