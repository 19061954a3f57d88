"""Notebook front end of slimkit: ``Panel(model, data)`` with controls and live plotly plots.

Importing this module imports ipywidgets and plotly (the core ``slimkit`` never does).
In a notebook, ``%load_ext slimkit.widgets`` then ``%slimkit model data`` opens a panel.
"""
from .frontend import frontend_is_live
from .magic import load_ipython_extension
from .panel import Panel, PanelBusyError
from .plots import Plots, static_bundle
from .results import Run

__all__ = ["Panel", "PanelBusyError", "Plots", "Run", "frontend_is_live", "load_ipython_extension",
           "static_bundle"]
