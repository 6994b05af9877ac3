"""Parameter declarations of the embedded exchange's methods: the JSON-RPC server core's
(:mod:`deribit_kit.wire.rpcserver`), under the names the exchange's handlers import."""

from __future__ import annotations

from ..wire.rpcserver import Method, P, check_params, not_found

__all__ = ["Method", "P", "check_params", "not_found"]
