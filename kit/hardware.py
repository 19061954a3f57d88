"""The hardware and software a run happened on, recorded with every result.

Fields follow the system description MLPerf asks of a submission: processor model and
core counts, memory, accelerator model/memory/driver, OS, Python and framework versions.
"""
from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("slimkit", "torch", "numpy", "scikit-learn", "safetensors", "transformers", "torchao",
            "onnx", "onnxruntime", "plotly", "ipywidgets", "papermill", "distributed")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def package_versions(names=PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def _static() -> dict:
    return {
        "cpu_model": _cpu_model(),
        "cpu_arch": platform.machine(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


def fingerprint() -> dict:
    """A JSON-able description of this machine and the software stack."""
    import torch

    info = dict(_static())
    info["torch_threads"] = torch.get_num_threads()
    info["packages"] = package_versions()
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_bytes": p.total_memory,
                         "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
        info["gpus"] = gpus
        info["cuda_runtime"] = torch.version.cuda
        try:
            import subprocess

            info["gpu_driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["gpu_driver"] = None
    return info


def summary(info: dict | None = None) -> str:
    info = info or fingerprint()
    gpu = ", ".join(g["name"] for g in info.get("gpus", [])) or "no GPU"
    mem = f"{info['memory_bytes'] / 2**30:.0f} GiB" if info.get("memory_bytes") else "? GiB"
    return (f"{info['cpu_model']} ({info['cpu_usable_cores']} cores usable, {mem}), {gpu}, "
            f"{info['os']}, Python {info['python']}, torch {info['packages'].get('torch', '?')}")
