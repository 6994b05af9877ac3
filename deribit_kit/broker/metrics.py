"""Prometheus text for the broker and its port: one writer (:class:`PromText`) and the two pages.

:func:`broker_text` renders :meth:`Broker.metrics` (upstream, channels and books, consumers);
:func:`port_text` renders :meth:`BrokerServer.metrics` (clients, requests, deliveries) — both in
the text exposition format, version 0.0.4, served at ``/metrics`` on the port.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["PromText", "broker_text", "port_text"]

Sample = tuple[dict[str, str], float | int | bool | None]


class PromText:
    """Builds one exposition page: ``# HELP``/``# TYPE`` once per metric, then its samples."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, helptext: str, samples: Iterable[Sample]) -> None:
        """Add metric ``{prefix}_{name}`` (``kind``: gauge or counter) with its samples (``None``
        values are left out)."""
        full = f"{self.prefix}_{name}"
        self.lines.append(f"# HELP {full} {helptext}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{full}{{{lab}}} {float(value):g}" if lab else f"{full} {float(value):g}")

    def one(self, name: str, kind: str, helptext: str, value: float | int | bool | None) -> None:
        """Add a metric with one unlabelled sample."""
        self.metric(name, kind, helptext, [({}, value)])

    def text(self) -> str:
        """The page, one line per ``# HELP``, ``# TYPE`` and sample."""
        return "\n".join(self.lines) + "\n"


def broker_text(m: dict[str, Any]) -> str:
    """The broker's metrics (:meth:`~deribit_kit.broker.Broker.metrics`) as Prometheus text."""
    p = PromText("deribit_kit_broker")
    up = m["upstream"]
    p.one("upstream_up", "gauge", "1 when the upstream connection is open", up["state"] == "open")
    p.one("upstream_epoch", "gauge", "connections (or source epochs) of the upstream so far", up["epoch"])
    p.one("upstream_uptime_seconds", "gauge", "seconds since the upstream (re)connected", up["uptime_s"])
    p.one("upstream_reconnects_total", "counter", "upstream reconnects", up["reconnects"])
    p.one("upstream_rate_limited_total", "counter", "10028 answers (each ends the session)", up["rate_limited"])
    p.one("upstream_rate_limit_wait_seconds_total", "counter", "seconds sending was held after 10028 answers",
          up.get("rate_limit_wait_s"))
    p.metric("upstream_state", "gauge", "1 for the upstream's current state",
             [({"state": str(up["state"]), "name": str(up.get("name") or "")}, 1)])
    p.one("upstream_rtt_ms", "gauge", "last request round-trip time", up["rtt_ms"])
    p.one("subscribe_calls_total", "counter", "subscribe calls sent upstream", up["subscribe_calls"])
    p.one("book_resyncs_total", "counter", "book resyncs asked of the upstream", up["book_resyncs"])
    p.one("unrouted_total", "counter", "notifications for channels nobody holds", up["unrouted"])
    ch = m["channels"]
    p.metric("channel_messages_total", "counter", "messages received per channel",
             [({"channel": k}, v["messages"]) for k, v in ch.items()])
    p.metric("channel_message_rate", "gauge", "messages per second per channel",
             [({"channel": k}, v["rate"]) for k, v in ch.items()])
    p.metric("channel_consumers", "gauge", "consumers per channel",
             [({"channel": k}, v["consumers"]) for k, v in ch.items()])
    p.metric("channel_latency_ms", "gauge", "exchange timestamp to broker, last message",
             [({"channel": k}, v["latency_ms"]) for k, v in ch.items()])
    books = {k: v for k, v in ch.items() if "gaps" in v}
    p.metric("book_gaps_total", "counter", "change_id gaps per book",
             [({"channel": k}, v["gaps"]) for k, v in books.items()])
    p.metric("book_resyncs_applied_total", "counter", "snapshots after the first per book",
             [({"channel": k}, v["resyncs"]) for k, v in books.items()])
    p.metric("book_malformed_total", "counter", "changes with a malformed entry per book (each resyncs it)",
             [({"channel": k}, v["malformed"]) for k, v in books.items()])
    p.metric("book_live", "gauge", "1 when the book is live (synced and its chain intact)",
             [({"channel": k}, v["book_state"] == "live") for k, v in books.items()])
    p.metric("book_state", "gauge", "1 for the book's current state (syncing, live, resyncing, stale)",
             [({"channel": k, "state": str(v["book_state"])}, 1) for k, v in books.items()])
    p.metric("book_changes_total", "counter", "changes applied per book",
             [({"channel": k}, v.get("changes")) for k, v in books.items()])
    p.metric("book_crossed_total", "counter", "crossed states seen per book",
             [({"channel": k}, v.get("crossed")) for k, v in books.items()])
    p.metric("book_change_id", "gauge", "the book's last change_id",
             [({"channel": k}, v.get("change_id")) for k, v in books.items()])
    cons = m["consumers"]
    for key, helptext in (("delivered", "messages delivered"), ("dropped", "messages dropped or conflated")):
        p.metric(f"consumer_{key}_total", "counter", helptext,
                 [({"consumer": k, "policy": v["policy"]}, v[key]) for k, v in cons.items()])
    p.metric("consumer_queue_depth", "gauge", "messages waiting per consumer",
             [({"consumer": k}, v["depth"]) for k, v in cons.items()])
    p.metric("consumer_latency_ms", "gauge", "exchange timestamp to consumer, last message",
             [({"consumer": k}, v["latency_ms"]) for k, v in cons.items()])
    _components(p, m.get("components", {}))
    return p.text()


def _components(p: PromText, comps: dict[str, dict[str, Any]]) -> None:
    """Each numeric figure of an attached component (recorder, Kafka sink/source) as one gauge,
    labelled with the component's name; its text figures (a state, an error) as ``component_info``
    samples labelled with the key and the value; nested values stay in the JSON metrics."""
    keys: dict[str, list[Sample]] = {}
    for name, stats in comps.items():
        for key, value in stats.items():
            if isinstance(value, bool | int | float) and key.replace("_", "").isalnum():
                keys.setdefault(key, []).append(({"component": name}, value))
    for key, samples in sorted(keys.items()):
        p.metric(f"component_{key}", "gauge", f"{key.replace('_', ' ')} of an attached component", samples)
    texts: list[Sample] = [({"component": name, "key": key, "value": value}, 1)
                           for name, stats in comps.items() for key, value in stats.items() if isinstance(value, str)]
    p.metric("component_info", "gauge", "text figures of attached components (a state, an error)", texts)


def port_text(m: dict[str, Any]) -> str:
    """The port's metrics (:meth:`~deribit_kit.broker.port.BrokerServer.metrics`) as Prometheus text."""
    p = PromText("deribit_kit_port")
    p.one("clients", "gauge", "connected external clients", m["clients"])
    p.one("channels", "gauge", "channels served", m["channels"])
    p.one("upstream_up", "gauge", "1 when the upstream is open", m["upstream"] == "open")
    for key in ("requests", "errors", "refused", "slow_disconnects", "deliveries"):
        p.one(f"{key}_total", "counter", f"{key.replace('_', ' ')} so far", m[key])
    clients = m["per_client"]
    p.metric("client_buffered", "gauge", "bytes waiting in the client's send buffer",
             [({"peer": c["peer"]}, c["buffered"]) for c in clients])
    p.metric("client_drops_total", "counter", "messages not sent to a lagging client",
             [({"peer": c["peer"]}, c["drops"]) for c in clients])
    p.metric("client_lagging", "gauge", "1 while the client is conflated for being slow",
             [({"peer": c["peer"]}, c["lagging"]) for c in clients])
    p.metric("client_channels", "gauge", "channels the client is subscribed to",
             [({"peer": c["peer"]}, c.get("channels")) for c in clients])
    p.metric("client_snapshots_total", "counter", "book snapshots sent to the client",
             [({"peer": c["peer"]}, c.get("snapshots")) for c in clients])
    p.metric("client_age_seconds", "gauge", "seconds since the client connected",
             [({"peer": c["peer"]}, c.get("age_s")) for c in clients])
    return p.text()


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
