"""Compile once: a backend's prepared form (ONNX file, OpenVINO IR, AOTInductor package) saved on
disk under a key, so that another process loads it instead of exporting/compiling again.

The key holds everything the prepared form depends on: slimkit and torch versions, the CPU
(model name, torch's kernel capability, the ISA flags slimkit records), the backend and its
options, every input's name/shape/dtype, and a digest of the model (module types and every
parameter/buffer's bytes). Each key has its own folder (named by the key's digest) holding
``key.json``; an entry whose ``key.json`` differs from the wanted key is never used, so a changed
version, CPU, shape or model rebuilds. Entries are written to a temporary folder and renamed into
place, so a process that dies mid-write leaves no half entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.hardware import fingerprint

from . import inputs as _inputs

log = logging.getLogger("slimkit.accel")
_OUTPUTS = "outputs.json"


def model_digest(model: nn.Module) -> str:
    """sha256 over the module tree (names, types, each module's settings as ``extra_repr`` shows them,
    train/eval) and every parameter and buffer, non-persistent ones included (name, dtype, shape, bytes):
    two models that compute differently must not share a prepared form."""
    h = hashlib.sha256()
    for name, m in model.named_modules():
        h.update(f"{name}:{type(m).__module__}.{type(m).__qualname__}({m.extra_repr()}):{m.training};".encode())
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def device_key(device: torch.device) -> dict[str, Any]:
    """The device a form was prepared for; on CUDA its name and compute capability too."""
    out: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        out.update(name=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)))
    return out


def runtime_versions() -> dict[str, str | None]:
    """Versions of the runtimes a prepared form is loaded by (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("onnx", "onnxruntime", "openvino"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def cpu_key() -> dict[str, Any]:
    fp = fingerprint()
    return {"model": fp["cpu_model"], "arch": fp["cpu_arch"], "flags": fp["cpu_flags"],
            "capability": torch.backends.cpu.get_cpu_capability()}


def inputs_key(example: _inputs.ModelInputs) -> list:
    leaves, spec = torch.utils._pytree.tree_flatten(example if not isinstance(example, _inputs.Inputs)
                                                    else (example.args, example.kwargs))
    return [str(spec)] + [[list(t.shape), str(t.dtype)] if isinstance(t, torch.Tensor) else repr(t) for t in leaves]


def make_key(model: nn.Module, example: _inputs.ModelInputs, backend: str, options: dict[str, Any],
             device: torch.device) -> dict[str, Any]:
    import slimkit

    return {"slimkit": slimkit.__version__, "torch": torch.__version__, "runtimes": runtime_versions(),
            "cpu": cpu_key(), "device": device_key(device),
            "backend": backend, "options": {k: repr(v) for k, v in sorted(options.items())},
            "inputs": inputs_key(example), "model": model_digest(model)}


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


class PreparedCache:
    """A folder of prepared forms, one subfolder per key."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # an AOTInductor entry is a shared library that is loaded and run, and key.json is a
        # checksum, not a signature: a folder that other users can write is refused
        if self.root.stat().st_mode & 0o002:
            from slimkit.errors import InvalidParameterError

            raise InvalidParameterError("prepared_cache", str(root), "a folder other users cannot write (it holds "
                                        "compiled code that is loaded and run)")

    def lookup(self, key: dict[str, Any]) -> Path | None:
        """The entry's folder if one was stored under exactly ``key``, else None."""
        folder = self.root / digest(key)
        try:
            stored = json.loads((folder / "key.json").read_text())
        except (OSError, ValueError):
            return None
        if stored != json.loads(json.dumps(key)):  # a digest collision or a hand-edited entry: never trusted
            log.info("prepared cache: %s holds another key; rebuilding", folder)
            return None
        return folder

    def store(self, key: dict[str, Any], write: Callable[[Path], Any]) -> Path:
        """Run ``write(folder)`` into a fresh folder and publish it under ``key``; returns the folder."""
        final = self.root / digest(key)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            write(tmp)
            (tmp / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:  # another process published the same key meanwhile: use it only if it is that key
                if self.lookup(key) is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final


def output_structure(outputs) -> dict[str, Any]:
    """How a torch model's outputs are laid out: the pytree spec a runtime's flat list of arrays is
    unflattened into, and how many leaves there are and how many are tensors."""
    leaves, spec = torch.utils._pytree.tree_flatten(outputs)
    return {"spec": spec, "leaves": len(leaves), "tensors": sum(isinstance(x, torch.Tensor) for x in leaves)}


def runtime_spec(structure: dict[str, Any], n_outputs: int):
    """The spec to unflatten a runtime's ``n_outputs`` arrays with: the torch model's when every
    leaf is a tensor and the counts agree, else None (the runtime's outputs are returned as a list)."""
    return structure["spec"] if n_outputs == structure["leaves"] == structure["tensors"] else None


def save_output_structure(folder: Path, structure: dict[str, Any]) -> None:
    """Store ``structure`` beside a prepared form, so that a cache hit need not run the torch model
    to learn it (at MiniLM 32x128 that call was a third of a warm prepare). An output type pytree
    cannot serialize is left out: a hit then calls the model."""
    try:
        spec = torch.utils._pytree.treespec_dumps(structure["spec"])
    except Exception as e:  # pytree raises several types for unregistered/unserializable nodes
        log.info("prepared cache: output structure not stored (%s)", e)
        return
    (folder / _OUTPUTS).write_text(json.dumps({"spec": spec, "leaves": structure["leaves"],
                                               "tensors": structure["tensors"]}))


def load_output_structure(folder: Path) -> dict[str, Any] | None:
    """The structure :func:`save_output_structure` stored, or None (absent, or not readable as one:
    JSON naming only registered pytree node types, so nothing in it is executed)."""
    try:
        d = json.loads((folder / _OUTPUTS).read_text())
        return {"spec": torch.utils._pytree.treespec_loads(d["spec"]), "leaves": int(d["leaves"]),
                "tensors": int(d["tensors"])}
    except Exception:  # missing, hand-edited or from another torch: the caller runs the model instead
        return None


def load_or_build(root: str | os.PathLike, model: nn.Module, example: _inputs.ModelInputs, backend: str,
                  options: dict[str, Any], device: torch.device, make: Callable[[Path], Any], info: dict,
                  setup: dict[str, float]) -> Path:
    """The folder holding the prepared form for this model/inputs/options/machine: loaded from
    ``root`` when stored under the same key (``info["prepared_cache"] = "hit"``), else built by
    ``make(folder)`` and stored ("miss"). ``info`` gets the stored ``info.json`` back on a hit."""
    import time

    t0 = time.perf_counter()
    cache = PreparedCache(root)
    key = make_key(model, example, backend, options, device)
    folder = cache.lookup(key)
    setup["cache_lookup"] = time.perf_counter() - t0
    if folder is not None:
        try:
            info.update(json.loads((folder / "info.json").read_text()))
        except (OSError, ValueError):
            pass
        info.update(prepared_cache="hit", prepared_path=str(folder))
        return folder
    folder = cache.store(key, make)
    info.update(prepared_cache="miss", prepared_path=str(folder))
    return folder
