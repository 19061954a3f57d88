"""``%load_ext slimkit.widgets`` registers ``%slimkit``: open a compression panel from a cell.

    %slimkit model data          # names of a torch model and its data in the notebook
    %slimkit                     # the bundled digits CNN on the digits data

The panel is displayed and also stored as ``_slimkit_panel`` so the cell's output and
later cells share it.
"""
from __future__ import annotations

import shlex

from slimkit.errors import InvalidParameterError


def slimkit_magic(line: str, ip=None):
    from IPython import get_ipython

    from .panel import Panel

    ip = ip or get_ipython()
    args = shlex.split(line)
    if len(args) not in (0, 2):
        raise InvalidParameterError("%slimkit", line, "no arguments, or two names: MODEL DATA")
    if args:
        missing = [a for a in args if a not in ip.user_ns]
        if missing:
            raise InvalidParameterError("%slimkit", missing[0], "the name of a variable in this notebook")
        model, data = (ip.user_ns[a] for a in args)
    else:
        from slimkit.data import load_digits
        from slimkit.zoo.models import pretrained_digits

        model, data = pretrained_digits("cnn"), load_digits()
    panel = Panel(model, data)
    ip.user_ns["_slimkit_panel"] = panel
    return panel


def load_ipython_extension(ipython) -> None:
    ipython.register_magic_function(lambda line: slimkit_magic(line, ipython), "line", "slimkit")
