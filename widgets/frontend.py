"""Which kind of front end runs this kernel: widgets render live, or only static outputs do."""
from __future__ import annotations

import os

import ipywidgets as W


def frontend_is_live() -> bool:
    """Whether a widget-capable front end (JupyterLab, Notebook 7, VS Code) runs this kernel.

    ``SLIMKIT_PANEL=live|static`` decides when set. Otherwise: live when the ipywidgets
    control channel is open, or when the running cell came with front-end metadata
    (JupyterLab/Notebook 7 send ``cellId``/``recordTiming``; papermill and nbconvert send
    none). No IPython kernel at all means static.
    """
    forced = os.environ.get("SLIMKIT_PANEL", "").strip().lower()
    if forced in ("live", "static"):
        return forced == "live"
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return False
    if getattr(W.Widget, "_control_comm", None) is not None:
        return True
    try:
        meta = (kernel.get_parent("shell") or {}).get("metadata") or {}
    except Exception:  # older ipykernel
        meta = {}
    return bool({"cellId", "recordTiming", "deletedCells"} & set(meta))


def in_ipython() -> bool:
    try:
        from IPython import get_ipython
        return get_ipython() is not None
    except ImportError:
        return False
