"""The operations page: is the kit itself healthy? The same numbers as the broker port's ``/metrics``.

It shows the upstream link (state, epoch, uptime, reconnects, 10028 answers and the seconds sending
was held after them, round-trip time), every channel with its message rate, every live book's state
and counters, the broker's consumers, the port's clients (lag as bytes waiting, drops, conflation),
and the figures of attached components (the recorder, a Kafka sink or source:
:meth:`deribit_kit.broker.Broker.attach`) — as sortable, filterable tables.

The page reads Prometheus text, parsed by :func:`parse_prometheus` into an :class:`OpsSnapshot`, from
one :class:`MetricsSource`:

* :class:`HttpMetrics` — a broker port's ``/metrics`` (``deribit-kit broker``, ``deribit-kit demo``:
  the demo gives the served page its port in ``DERIBIT_KIT_BROKER_URL``);
* :class:`LocalMetrics` — a broker (and its port) in this process: a notebook's ``dk.broker``.

::

    import panel as pn
    from deribit_kit.ui.ops import OpsDashboard
    pn.extension("tabulator", inline=True)
    OpsDashboard(broker=dk.broker)                       # or url="http://127.0.0.1:9000"
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import pandas as pd
import panel as pn
import param

from ..config import CA_FILE_ENV, trust_context
from . import render
from .base import html_pane

if TYPE_CHECKING:
    from ..broker import Broker
    from ..broker.port import BrokerServer

__all__ = ["HttpMetrics", "LocalMetrics", "MetricsSource", "OpsDashboard", "OpsSnapshot", "parse_prometheus"]

log = logging.getLogger("deribit_kit.ui")

BROKER = "deribit_kit_broker_"
PORT = "deribit_kit_port_"
Samples = dict[str, list[tuple[dict[str, str], float]]]

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_prometheus(text: str) -> Samples:
    """Prometheus text (exposition format 0.0.4) -> metric name -> ``[(labels, value), ...]``.

    Comments (``# HELP``, ``# TYPE``) and lines that do not parse are skipped.
    """
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if m is None:
            continue
        name, labels, value = m.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        labs = {k: re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], v)
                for k, v in _LABEL.findall(labels or "")}
        out.setdefault(name, []).append((labs, number))
    return out


def _one(samples: Samples, name: str) -> float | None:
    found = samples.get(name)
    return found[0][1] if found else None


def _by(samples: Samples, prefix: str, key: str, columns: dict[str, str]) -> pd.DataFrame:
    """One row per value of label ``key``, one column per metric (``columns``: column -> metric name)."""
    rows: dict[str, dict[str, Any]] = {}
    for column, metric in columns.items():
        for labels, value in samples.get(prefix + metric, []):
            row = rows.setdefault(labels.get(key, ""), {key: labels.get(key, "")})
            row[column] = value
    frame = pd.DataFrame(list(rows.values()), columns=[key, *columns])
    return _tidy(frame.sort_values(key, ignore_index=True))


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Counters as integers (Prometheus text has only floats), other figures to 3 decimals."""
    for col in frame.columns:
        values = frame[col]
        if not pd.api.types.is_float_dtype(values):
            continue
        known = values.dropna()
        if len(known) and (known == known.round()).all() and known.abs().max() < 2**53:
            frame[col] = values.round().astype("Int64")
        else:
            frame[col] = values.round(3)
    return frame


@dataclass
class OpsSnapshot:
    """What the operations page shows at one moment, from one metrics page.

    ``upstream`` and ``port`` are flat dicts (``port`` is empty without a broker port); the others
    are DataFrames with one row per channel, book, consumer, port client or attached component.
    """

    upstream: dict[str, Any] = field(default_factory=dict)
    port: dict[str, Any] = field(default_factory=dict)
    channels: pd.DataFrame = field(default_factory=pd.DataFrame)
    books: pd.DataFrame = field(default_factory=pd.DataFrame)
    consumers: pd.DataFrame = field(default_factory=pd.DataFrame)
    clients: pd.DataFrame = field(default_factory=pd.DataFrame)
    components: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def from_text(cls, text: str) -> OpsSnapshot:
        """Build the snapshot from the Prometheus text of a broker (and its port)."""
        s = parse_prometheus(text)
        states = s.get(BROKER + "upstream_state", [])
        upstream: dict[str, Any] = {
            "state": states[0][0].get("state") if states else None,
            "name": states[0][0].get("name") if states else None,
        }
        for key, metric in (("epoch", "upstream_epoch"), ("uptime_s", "upstream_uptime_seconds"),
                            ("reconnects", "upstream_reconnects_total"),
                            ("rate_limited", "upstream_rate_limited_total"),
                            ("rate_limit_wait_s", "upstream_rate_limit_wait_seconds_total"),
                            ("rtt_ms", "upstream_rtt_ms"), ("subscribe_calls", "subscribe_calls_total"),
                            ("book_resyncs", "book_resyncs_total"), ("unrouted", "unrouted_total")):
            upstream[key] = _one(s, BROKER + metric)
        port: dict[str, Any] = {}
        if PORT + "clients" in s:
            for key in ("clients", "channels", "requests_total", "errors_total", "refused_total",
                        "slow_disconnects_total", "deliveries_total"):
                port[key.removesuffix("_total")] = _one(s, PORT + key)
        channels = _by(s, BROKER, "channel", {"messages": "channel_messages_total", "rate": "channel_message_rate",
                                              "consumers": "channel_consumers", "latency_ms": "channel_latency_ms"})
        books = _by(s, BROKER, "channel", {"changes": "book_changes_total", "gaps": "book_gaps_total",
                                           "resyncs": "book_resyncs_applied_total",
                                           "malformed": "book_malformed_total", "crossed": "book_crossed_total",
                                           "change_id": "book_change_id"})
        book_state = {labels["channel"]: labels.get("state", "") for labels, _ in s.get(BROKER + "book_state", [])}
        books.insert(1, "state", [book_state.get(ch, "") for ch in books["channel"]])
        consumers = _by(s, BROKER, "consumer", {"delivered": "consumer_delivered_total",
                                                "dropped": "consumer_dropped_total", "depth": "consumer_queue_depth",
                                                "latency_ms": "consumer_latency_ms"})
        policy = {labels["consumer"]: labels.get("policy", "")
                  for labels, _ in s.get(BROKER + "consumer_delivered_total", [])}
        consumers.insert(1, "policy", [policy.get(c, "") for c in consumers["consumer"]])
        clients = _by(s, PORT, "peer", {"channels": "client_channels", "buffered": "client_buffered",
                                        "drops": "client_drops_total", "lagging": "client_lagging",
                                        "snapshots": "client_snapshots_total", "age_s": "client_age_seconds"})
        comps: dict[str, dict[str, Any]] = {}
        for name, found in s.items():
            if name == BROKER + "component_info":  # text figures: the key and the value are labels
                for labels, _ in found:
                    comps.setdefault(labels.get("component", ""), {})[labels.get("key", "")] = labels.get("value")
            elif name.startswith(BROKER + "component_"):
                figure = name.removeprefix(BROKER + "component_")
                for labels, value in found:
                    comps.setdefault(labels.get("component", ""), {})[figure] = value
        components = _tidy(pd.DataFrame([{"component": n, **figs} for n, figs in sorted(comps.items())]))
        return cls(upstream, port, channels, books, consumers, clients, components)


class MetricsSource(Protocol):
    """Where the operations page reads its numbers: Prometheus text of a broker (and its port)."""

    async def text(self) -> str:
        """The current metrics page."""
        ...


class HttpMetrics:
    """A broker port's ``/metrics`` over HTTP (``url``: the port's ``http://host:port``)."""

    def __init__(self, url: str, timeout: float = 5.0, *, ca_file: str | None = None) -> None:
        self.url = url.rstrip("/").removesuffix("/metrics").replace("ws://", "http://", 1).replace(
            "wss://", "https://", 1).removesuffix("/ws/api/v2")
        self.timeout = timeout
        self.verify: ssl.SSLContext | bool = trust_context(ca_file or os.environ.get(CA_FILE_ENV)) or True

    async def text(self) -> str:
        """GET ``{url}/metrics`` (https: trusting ``ca_file``, default ``DERIBIT_KIT_CA_FILE``, too)."""
        async with httpx.AsyncClient(timeout=self.timeout, verify=self.verify) as http:
            r = await http.get(f"{self.url}/metrics")
            r.raise_for_status()
            return r.text

    def __repr__(self) -> str:
        return f"<HttpMetrics {self.url}/metrics>"


class LocalMetrics:
    """A broker in this process, and its port when given (the same text the port serves)."""

    def __init__(self, broker: Broker, server: BrokerServer | None = None) -> None:
        self.broker = broker
        self.server = server

    async def text(self) -> str:
        """The broker's (and the port's) metrics as Prometheus text."""
        return self.server.prometheus() if self.server is not None else self.broker.prometheus()

    def __repr__(self) -> str:
        return f"<LocalMetrics {self.broker!r}{' + port' if self.server is not None else ''}>"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return render.DASH
    if isinstance(value, float) and value.is_integer() and digits == 0:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else render.esc(str(value))


def summary_html(snap: OpsSnapshot, source: str) -> str:
    """The upstream's and the port's figures as the page's header (HTML)."""
    up = snap.upstream
    state = str(up.get("state") or "unknown")
    kind = "ok" if state == "open" else "warn"
    cells = [("upstream", f'<span class="msg {kind}" data-upstream="{render.esc(state)}">{render.esc(state)}</span>'),
             ("source", render.esc(str(up.get("name") or ""))), ("epoch", _fmt(up.get("epoch"), 0)),
             ("uptime s", _fmt(up.get("uptime_s"))), ("reconnects", _fmt(up.get("reconnects"), 0)),
             ("10028s", _fmt(up.get("rate_limited"), 0)), ("10028 waits s", _fmt(up.get("rate_limit_wait_s"))),
             ("rtt ms", _fmt(up.get("rtt_ms"), 2)), ("subscribe calls", _fmt(up.get("subscribe_calls"), 0)),
             ("book resyncs", _fmt(up.get("book_resyncs"), 0)), ("unrouted", _fmt(up.get("unrouted"), 0)),
             ("channels", str(len(snap.channels))), ("books", str(len(snap.books)))]
    if snap.port:
        p = snap.port
        cells += [("port clients", _fmt(p.get("clients"), 0)), ("port requests", _fmt(p.get("requests"), 0)),
                  ("port errors", _fmt(p.get("errors"), 0)), ("deliveries", _fmt(p.get("deliveries"), 0)),
                  ("slow disconnects", _fmt(p.get("slow_disconnects"), 0))]
    body = "".join(f'<div class="stat" style="min-width:96px"><div class="k">{render.esc(k)}</div>'
                   f'<div class="v">{v}</div></div>' for k, v in cells)
    return (f'<div class="dk-ops-summary"><h3>Operations · {render.esc(source)}</h3>'
            f'<div style="display:flex;flex-wrap:wrap;gap:6px 16px">{body}</div></div>')


def _table(css: str, height: int) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True, header_filters=True,
                                sizing_mode="stretch_width", layout="fit_data_fill", height=height,
                                css_classes=[css], selectable=False, pagination=None)


class OpsDashboard(pn.viewable.Viewer):
    """The operations page: the upstream, channels, books, consumers, port clients and components.

    Give it ``url`` (a broker port) or ``broker`` (and ``server``, its port, in this process); with
    neither it reads the dashboards' shared hub's broker (:func:`deribit_kit.ui.app.get_hub`). It
    refreshes every ``refresh_ms`` (1 s); :meth:`update` refreshes once (tests, notebooks).
    """

    url = param.String(default="", doc="a broker port's URL (http://host:port); its /metrics is read")
    refresh_ms = param.Integer(default=1000, bounds=(100, 60_000), doc="refresh period")
    autostart = param.Boolean(default=True, doc="start refreshing at once")
    updates = param.Integer(default=0, doc="refreshes done")

    def __init__(self, broker: Broker | None = None, server: BrokerServer | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.source: MetricsSource | None
        if self.url:
            http = HttpMetrics(self.url)
            self.source, self.label = http, http.url
        elif server is not None:
            self.source, self.label = LocalMetrics(server.broker, server), "this process"
        elif broker is not None:
            self.source, self.label = LocalMetrics(broker), "this process"
        else:
            self.source = None  # the hub's broker, once the hub is up
            self.label = "the dashboards' hub"
        self.snapshot: OpsSnapshot | None = None
        self.error: str | None = None
        self.header = html_pane(render.message_html("reading metrics…", "info"), css_classes=["dk-ops"])
        self.tables = {name: _table(f"dk-ops-{name}", height) for name, height in (
            ("books", 300), ("channels", 260), ("clients", 200), ("consumers", 220), ("components", 140))}
        self._callback: Any = None
        self._busy = False
        if self.autostart:
            self.start()

    def _resolve(self) -> MetricsSource | None:
        if self.source is None:
            from .app import get_hub

            hub = get_hub()
            hub.ensure_started()
            if hub.ready:
                self.source = LocalMetrics(hub.broker)
        return self.source

    def start(self) -> None:
        """Refresh now and then every ``refresh_ms`` (stopped with the browser session)."""
        if self._callback is None:
            # Panel runs coroutine functions as periodic callbacks (its annotation says sync only)
            self._callback = pn.state.add_periodic_callback(self._tick, period=self.refresh_ms)  # type: ignore[arg-type]
            if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
                pn.state.on_session_destroyed(lambda _ctx: self.stop())

    def stop(self) -> None:
        """Stop refreshing."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    async def _tick(self) -> None:
        try:
            await self.update()
        except Exception:
            log.exception("refresh of the operations page failed")

    async def update(self) -> OpsSnapshot | None:
        """Read the metrics once and show them; the snapshot, or None when they could not be read."""
        if self._busy:
            return self.snapshot
        self._busy = True
        try:
            source = self._resolve()
            if source is None:
                return None
            try:
                snap = OpsSnapshot.from_text(await source.text())
            except (TimeoutError, httpx.HTTPError, OSError) as exc:
                self.error = f"metrics unavailable from {self.label}: {exc}"
                self.header.object = render.message_html(self.error, "err")
                return None
            self.error = None
            self.snapshot = snap
            self.header.object = summary_html(snap, self.label)
            for name in self.tables:
                self._put(name, getattr(snap, name))
            self.updates += 1
            return snap
        finally:
            self._busy = False

    def _put(self, name: str, frame: pd.DataFrame) -> None:
        table = self.tables[name]
        current = table.value
        if isinstance(current, pd.DataFrame) and current.equals(frame):
            return
        table.value = frame

    def __panel__(self) -> pn.viewable.Viewable:
        def section(title: str, name: str) -> pn.Column:
            return pn.Column(pn.pane.Markdown(f"#### {title}", margin=(0, 10)), self.tables[name],
                             sizing_mode="stretch_width")

        return pn.Column(
            self.header,
            pn.Row(section("Books (state and counters)", "books"), section("Channels (messages/s)", "channels"),
                   sizing_mode="stretch_width"),
            pn.Row(section("Port clients (lag = bytes waiting)", "clients"),
                   section("Consumers (policy, drops)", "consumers"), sizing_mode="stretch_width"),
            section("Attached components", "components"),
            sizing_mode="stretch_width")
