"""What every live component has in common: the shared hub, a per-session refresh, HTML panes.

A :class:`LiveDashboard` is built once per browser session (or notebook cell). It registers one
periodic callback for the session (``refresh_ms``, 200 ms by default) that copies the shared feeds'
latest views into its widgets, touching a widget only when the view it shows has changed. Panel
stops the callback when the session ends, and the dashboard then gives its feeds back to the hub.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import panel as pn
import param
from bokeh.models.widgets.markups import Div

from . import render
from .app import REFRESH_MS, Feed, Hub, get_hub

log = logging.getLogger("deribit_kit.ui")
F = TypeVar("F", bound=Callable[..., Any])


def session_safe(fn: F) -> F:
    """Run a watcher that updates widgets now if the session's document is locked, else on the
    session's next tick (under the lock).

    Panel 1.9 can run a widget's pending change callbacks outside the document lock when a Bokeh
    event (a key press such as Enter, a click) arrives right behind the change; a watcher that then
    touches other widgets makes Bokeh raise "_pending_writes should be non-None ...". Outside a
    served session (notebooks, tests) the watcher runs at once.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        doc = pn.state.curdoc
        if doc is None or _document_locked(doc):
            return fn(*args, **kwargs)
        doc.add_next_tick_callback(functools.partial(fn, *args, **kwargs))
        return None

    return cast(F, wrapper)


def _document_locked(doc: Any) -> bool:
    """True when Bokeh models of ``doc`` may be changed right now (no served session, or its lock held)."""
    session = getattr(getattr(doc, "session_context", None), "session", None)
    return doc is None or session is None or getattr(session, "_pending_writes", None) is not None


def set_model_property(model: Any, name: str, value: Any) -> None:
    """Set a raw Bokeh property now if the session's document is locked, else on its next tick.

    Panel re-schedules changes of its own widgets made outside the lock (an ``asyncio`` task after
    an ``await``, say); raw Bokeh models are not, and Bokeh raises if they change unlocked.
    """
    doc = model.document
    if doc is None or _document_locked(doc):
        setattr(model, name, value)
    else:
        doc.add_next_tick_callback(functools.partial(setattr, model, name, value))


class Html(pn.viewable.Viewer):
    """An HTML fragment with the kit's stylesheet, on a plain Bokeh ``Div``.

    Setting :attr:`object` costs ~25 µs (a Bokeh property change) against ~1 ms for Panel's HTML
    pane, which re-derives its whole model on every update; the ladder, ticker and tape change
    several times a second in every open tab.
    """

    def __init__(self, text: str = "", *, width: int | None = None, css_classes: list[str] | None = None,
                 margin: Any = (5, 10), visible: bool = True) -> None:
        super().__init__()
        sizing: dict[str, Any] = {"sizing_mode": "stretch_width"} if width is None else {"width": width}
        self._text = text
        self.div = Div(text=text, stylesheets=[render.STYLE], css_classes=list(css_classes or []), **sizing)
        self._pane = pn.pane.Bokeh(self.div, margin=margin, visible=visible, **sizing)

    @property
    def object(self) -> str:
        """The HTML shown (setting it updates the browser only when it changed)."""
        return self._text

    @object.setter
    def object(self, text: str) -> None:
        if text != self._text:
            self._text = text
            set_model_property(self.div, "text", text)

    @property
    def visible(self) -> bool:
        """Whether the fragment is shown."""
        return bool(self._pane.visible)

    @visible.setter
    def visible(self, value: bool) -> None:
        self._pane.visible = value

    @property
    def sizing_mode(self) -> Any:
        """The pane's Panel sizing mode."""
        return self._pane.sizing_mode

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane


def html_pane(text: str = "", **kw: Any) -> Html:
    """An :class:`Html` fragment (``width``, ``css_classes``, ``margin``, ``visible``)."""
    return Html(text, **kw)


def new_view(holder: Any, feed: Any) -> dict[str, Any] | None:
    """``feed.view()``'s view when its key is not ``holder.key`` (then remembered), else ``None``:
    a component redraws only when what it shows changed."""
    key, view = feed.view()
    if key == holder.key:
        return None
    holder.key = key
    return view


class HtmlView(pn.viewable.Viewer):
    """A component that shows one HTML string from a shared view, updated only when its key changes."""

    title = param.String(default="")

    def __init__(self, **params: Any) -> None:
        width = params.pop("width", None)
        css_class = params.pop("css_class", "")
        super().__init__(**params)
        kw: dict[str, Any] = {} if width is None else {"width": width}
        self.pane = Html(render.message_html("connecting…", "info"), css_classes=[css_class] if css_class else [],
                         **kw)
        self.key: Any = None

    def put(self, key: Any, text: str) -> bool:
        """Show ``text`` unless ``key`` is what is already shown; True when the widget changed."""
        if key == self.key:
            return False
        self.key = key
        self.pane.object = text
        return True

    def reset(self) -> None:
        """Forget what is shown, so that the next :meth:`put` redraws."""
        self.key = None

    def __panel__(self) -> pn.viewable.Viewable:
        if self.title:
            return pn.Column(pn.pane.Markdown(f"#### {self.title}", margin=(0, 10)), self.pane,
                             sizing_mode=self.pane.sizing_mode)
        return self.pane.__panel__()


class ConnectionBanner(HtmlView):
    """The hub's connection state: shown while connecting or failed, hidden when ready."""

    def update(self, hub: Hub) -> None:
        """Show the hub's state while it connects or failed; hide once it is ready."""
        if hub.ready:
            self.put(("ready",), "")
            self.pane.visible = False
            return
        self.pane.visible = True
        kind = "err" if hub.status == "error" else "warn"
        self.put((hub.status, hub.message), render.message_html(hub.message or hub.status, kind))


class LiveDashboard(pn.viewable.Viewer):
    """Base of the dashboards: the hub, one periodic refresh per session, and the feeds it holds."""

    hub = param.ClassSelector(class_=Hub, default=None, allow_None=True, doc="shared state (default: get_hub())")
    refresh_ms = param.Integer(default=REFRESH_MS, bounds=(20, 60_000), doc="refresh period of this session")
    autostart = param.Boolean(default=True, doc="start refreshing at once (else call start())")
    updates = param.Integer(default=0, doc="refreshes that changed something")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.hub is None:
            self.hub = get_hub()
        self.shared: Hub = self.hub  # the same hub, typed (the param allows None until set)
        self.banner = ConnectionBanner()
        self._callback: Any = None
        self._started = False
        self._session_context: Any = None
        self._held: dict[str, Feed] = {}
        self._closed = False
        if self.autostart:
            self.start()

    # ------------------------------------------------------------ session lifecycle
    def start(self) -> None:
        """Register this session's periodic refresh (and the release of its feeds when it ends).

        In a served session the refresh starts once the browser has loaded the page
        (``pn.state.onload``): changes made between the websocket's connection and the page's
        first render can be lost, and a session nobody opens (a health probe) then costs nothing.
        """
        if self._started:
            return
        self._started = True
        doc = pn.state.curdoc
        self._session_context = doc.session_context if doc is not None else None
        if self._session_context is not None:
            pn.state.on_session_destroyed(lambda _ctx: self.close())
            pn.state.onload(self._begin)
        else:
            self._begin()

    def _begin(self) -> None:
        if self._closed or self._callback is not None:
            return
        self._callback = pn.state.add_periodic_callback(self._tick, period=self.refresh_ms)
        self.shared.sessions.add(self)
        self._tick()  # the first view at once, not one period later

    def close(self) -> None:
        """Stop refreshing and give every feed back to the hub."""
        self._closed = True
        self.shared.sessions.discard(self)
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        for name in list(self._held):
            self.drop(name)

    @property
    def connected(self) -> bool:
        """False while a served session has no browser connected (a closed tab waiting to be cleaned up)."""
        session = getattr(self._session_context, "session", None)
        return session is None or session.connection_count > 0

    def _tick(self) -> None:
        if self._closed or not self.connected:
            return
        hub = self.shared
        t0 = time.thread_time()
        try:
            hub.ensure_started()
            with pn.io.hold():  # every change of this refresh leaves in one patch message
                self.banner.update(hub)
                if hub.ready and self.refresh():
                    self.updates += 1
        except Exception:
            log.exception("refresh of %s failed", type(self).__name__)
        finally:
            hub.stats["refreshes"] += 1
            hub.stats["refresh_cpu_s"] += time.thread_time() - t0

    def refresh(self) -> bool:  # pragma: no cover - overridden
        """Copy the feeds' latest views into the widgets; True when something changed."""
        return False

    # ------------------------------------------------------------ feeds
    def hold(self, name: str, key: Any, acquire: Any) -> Any:
        """The feed held under ``name`` if it is ``key``'s; otherwise release it and ``acquire()`` the new one."""
        feed = self._held.get(name)
        if feed is not None and feed.key == key:
            return feed
        if feed is not None:
            self.drop(name)
        feed = acquire()
        self._held[name] = feed
        return feed

    def drop(self, name: str) -> None:
        """Release the feed held under ``name`` (if any)."""
        feed = self._held.pop(name, None)
        if feed is not None:
            feed.release()
