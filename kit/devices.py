"""Which device a run uses: asked for by name, checked against what this machine has.

Asking for a device that is absent is an error naming the devices that exist, or, when the
caller says ``fallback=True``, a logged warning and the best device that does exist. A run
never lands on the CPU silently. The one place that decides which devices exist: the CLI, the
notebooks' setup, ``slimkit.measure``, the widgets and ``slimkit.accel`` all ask here.
"""
from __future__ import annotations

import logging
import re

import torch

from .errors import DeviceUnavailableError, InvalidParameterError, InvalidTypeError

log = logging.getLogger("slimkit")

_PATTERN = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The devices this machine can run on, best first is not implied: ``["cpu", "cuda:0", ...]``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def _best() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _missing(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None when it can."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            built = "this torch build has no CUDA support" if torch.version.cuda is None else "none is visible"
            return f"{device} was requested but this machine has 0 CUDA devices (no CUDA device: {built})"
        if index and int(index) >= torch.cuda.device_count():
            return f"{device} was requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
    if kind == "mps" and not _mps_available():
        return f"{device} was requested but Apple MPS is not available on this machine"
    return None


def resolve_device(device: str | torch.device = "auto", *, fallback: bool = False) -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` (or a ``torch.device``) into a device
    that exists here.

    ``"auto"`` picks CUDA, then MPS, then CPU. An absent device raises
    :class:`~slimkit.errors.DeviceUnavailableError` naming the devices that exist; with
    ``fallback=True`` it logs a warning and uses the best device that does exist instead.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise InvalidTypeError("device", device, 'a torch device name such as "auto", "cpu", "cuda", "cuda:0" or "mps"')
    if not isinstance(fallback, bool):
        raise InvalidTypeError("fallback", fallback, "a bool")
    name = device.strip().lower()
    m = _PATTERN.match(name)
    if m is None or (m.group(2) is not None and m.group(1) not in ("cuda",)):
        raise InvalidParameterError("device", device, '"auto", "cpu", "cuda", "cuda:N" or "mps"')
    if name == "auto":
        return _best()
    why = _missing(name)
    if why is None:
        if name == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(name)
    here = ", ".join(available_devices())
    if not fallback:
        raise DeviceUnavailableError(f"{why}. Devices on this machine: {here}. "
                                     "Pass fallback=True to run on the best available one instead.")
    chosen = _best()
    log.warning("%s; falling back to %s as fallback=True asked (devices here: %s)", why, chosen, here)
    return chosen


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU) so a clock reading means something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
