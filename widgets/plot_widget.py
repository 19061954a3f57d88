"""A plotly figure as a widget that survives a page reload: :class:`PlotWidget`.

plotly's own ``FigureWidget`` goes blank for good after a browser reload (its views cannot
rebuild from the model's state). Here the figure's JSON is the model's state (``spec``), so
the widget manager hands a reconnecting view the same data and ``plot.js`` draws it again.
Each :meth:`PlotWidget.show` sends the whole figure in one message: the panel's figures are
small (binned histograms, one point per run or epoch), so a full redraw is cheaper than
plotly's per-property diffs and can never drift out of step.

plotly.js is read from the installed plotly package (never a CDN) into one shared model,
gzipped (4.8 MB -> ~1.4 MB), which every figure references: the browser receives and
evaluates it once per page, not once per figure.
"""
from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as W
import plotly
import plotly.graph_objects as go
import plotly.io as pio
import traitlets

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class PlotlyJS(anywidget.AnyWidget):
    """plotly.js itself, gzipped: a model no one displays, shared by every :class:`PlotWidget`."""

    _esm = "export default {};"
    source = traitlets.Bytes().tag(sync=True)
    version = traitlets.Unicode().tag(sync=True)


_lib: PlotlyJS | None = None
_lib_lock = threading.Lock()


def plotly_js() -> PlotlyJS:
    """The kernel's one :class:`PlotlyJS` (made again if someone closed it)."""
    global _lib
    with _lib_lock:
        if _lib is None or _lib.comm is None:
            _lib = PlotlyJS(source=gzip.compress(PLOTLY_JS.read_bytes(), 6, mtime=0), version=plotly.__version__)
        return _lib


def figure_spec(fig: go.Figure) -> dict[str, Any]:
    """The figure as plotly.js takes it (NaN as null); the template is left out, since the
    front end colours the figure after JupyterLab's theme."""
    spec = json.loads(pio.to_json(fig, validate=False))
    spec.get("layout", {}).pop("template", None)
    return {"data": spec.get("data", []), "layout": spec.get("layout", {})}


class PlotWidget(anywidget.AnyWidget):
    """Draws ``figure`` in the browser; :meth:`show` draws a new one.

    ``data`` is the figure's traces (as on a ``go.Figure``); ``figure`` the whole figure.
    ``on_click(trace, point, id)`` is called with the indexes of a clicked point and its id
    (customdata; None when the browser sent none).
    """

    _esm = Path(__file__).with_name("plot.js")
    spec = traitlets.Dict().tag(sync=True)
    lib = traitlets.Instance(PlotlyJS).tag(sync=True, **W.widget_serialization)

    def __init__(self, figure: go.Figure, on_click: Callable[[int, int, int | None], Any] | None = None, **kwargs):
        # fills its share of a row, shrinks with the output area; its height is the figure's
        kwargs.setdefault("layout", W.Layout(flex="1 1 360px", min_width="0", width="auto"))
        super().__init__(lib=plotly_js(), **kwargs)
        self.on_click = on_click
        self.on_msg(self._message)
        self.show(figure)

    def show(self, figure: go.Figure) -> None:
        self.figure = figure
        self.spec = figure_spec(figure)

    @property
    def data(self):
        return self.figure.data

    def _message(self, _, content: dict, buffers=None) -> None:
        """A click in the browser: ``on_click(trace, point, id)`` with ``id`` the point's
        customdata as the browser drew it (None when it sent none). Indexes are checked against
        this figure, never trusted; a message with an id skips that check, since the figure may
        have been redrawn since the click (the receiver checks the id against what it holds)."""
        if not isinstance(content, dict) or content.get("event") != "click" or self.on_click is None:
            return
        trace, point, ident = content.get("trace"), content.get("point"), content.get("id")
        if not (isinstance(trace, int) and isinstance(point, int)) or isinstance(trace, bool):
            return
        if isinstance(ident, int) and not isinstance(ident, bool):
            self.on_click(trace, point, ident)
        elif ident is None and 0 <= trace < len(self.figure.data) and 0 <= point < len(self.figure.data[trace].x or ()):
            self.on_click(trace, point, None)
