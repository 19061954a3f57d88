"""The hardware and software a run happened on, recorded with every result.

Fields follow the system description MLPerf asks of a submission (its ``system_desc`` JSON):
host processor model, sockets, cores, frequency and caches, memory capacity, accelerator
model/count/memory, driver and CUDA versions, OS and kernel, framework and the rest of the
software stack, plus what decides speed on a CPU (ISA extensions torch uses, BLAS/oneDNN,
thread counts, whether it is a virtual machine).
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("slimkit", "torch", "numpy", "scikit-learn", "safetensors", "transformers", "torchao",
            "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "plotly", "ipywidgets", "papermill",
            "distributed")
X86_ARCHES = ("x86_64", "amd64", "i386", "i686")
# ISA extensions that decide which int8/bf16 kernels run (VNNI: int8 dot products; AMX: tiles).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_int8", "amx_bf16", "neon", "asimd", "sve")


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty off Linux)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if out:
                        break
                    continue
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def _cpu_model(info: dict[str, str]) -> str:
    return info.get("model name") or platform.processor() or platform.machine()


def _sockets() -> int | None:
    try:
        with open("/proc/cpuinfo") as f:
            ids = {line.split(":", 1)[1].strip() for line in f if line.startswith("physical id")}
        return len(ids) or None
    except OSError:
        return None


def _caches() -> dict[str, str]:
    """{"L1d": "32K", "L2": "1024K", ...} of cpu0, from sysfs (empty where unavailable)."""
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in sorted(os.listdir(base)):
            if not d.startswith("index"):
                continue
            read = lambda n: open(f"{base}/{d}/{n}").read().strip()  # noqa: E731
            kind = read("type")
            name = f"L{read('level')}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
            out[name] = read("size")
    except OSError:
        pass
    return out


def _max_mhz(info: dict[str, str]) -> float | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read()) / 1000
    except (OSError, ValueError):
        pass
    try:
        return float(info["cpu MHz"])
    except (KeyError, ValueError):
        return None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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


def _torch_stack() -> dict:
    """What torch was built with and uses here (BLAS, oneDNN, the ISA level of its kernels)."""
    import torch

    cfg = torch.__config__.show()
    found = lambda pattern: (m.group(1).strip() if (m := re.search(pattern, cfg)) else None)  # noqa: E731
    out = {"blas": found(r"BLAS_INFO=(\w+)"), "onednn": found(r"MKL-DNN (v[\d.]+)"),
           "openmp": found(r"OpenMP (\d+)"), "compiler": found(r"- (GCC [\d.]+|clang [\d.]+)")}
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        out["cpu_capability"] = None
    out["cuda_build"] = torch.version.cuda
    return out


@lru_cache(maxsize=1)
def _static() -> dict:
    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    return {
        "cpu_model": _cpu_model(info),
        "cpu_arch": platform.machine(),
        "cpu_sockets": _sockets(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_usable_cores": usable_cores(),
        "cpu_max_mhz": _max_mhz(info),
        "cpu_caches": _caches(),
        "cpu_flags": sorted(f for f in CPU_FLAGS if f in flags),
        "virtualized": "hypervisor" in flags,
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "torch_build": _torch_stack(),
    }


@lru_cache(maxsize=1)
def _gpus() -> dict:
    """Accelerators: model, memory, compute capability of each CUDA GPU; driver, CUDA, cuDNN."""
    import torch

    if not torch.cuda.is_available():
        return {}
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"name": p.name, "memory_bytes": p.total_memory,
                     "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
    out = {"gpus": gpus, "gpu_count": len(gpus), "cuda_runtime": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        lines = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
        out["gpu_driver"] = lines[0] if lines else None
    except (OSError, subprocess.SubprocessError):
        out["gpu_driver"] = None
    return out


def cpu_flags() -> tuple[str, ...]:
    """The kernel-relevant ISA extensions of this CPU (from :data:`CPU_FLAGS`)."""
    return tuple(_static()["cpu_flags"])


def x86_without_int8_dot() -> bool:
    """An x86 CPU without an int8 dot-product instruction (VNNI, AMX): its int8 GEMM kernels multiply
    with AVX2's ``vpmaddubsw``, whose int16 pair sums saturate on full-range 8-bit weights, and
    ``torch._int_mm`` has no fast path. Measured on x86 only: other architectures are not flagged."""
    if str(_static().get("cpu_arch", "")).lower() not in X86_ARCHES:
        return False
    return not any("vnni" in f or f == "amx_int8" for f in cpu_flags())


def fingerprint() -> dict:
    """A JSON-able description of this machine and the software stack."""
    import torch

    info = dict(_static())
    info["torch_threads"] = torch.get_num_threads()
    info["torch_interop_threads"] = torch.get_num_interop_threads()
    info["env_threads"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    info["packages"] = package_versions()
    info["cuda_available"] = torch.cuda.is_available()
    info.update(_gpus())
    return info


def summary(info: dict | None = None) -> str:
    info = info or fingerprint()
    gpu = ", ".join(g["name"] for g in info.get("gpus", [])) or "no GPU"
    if info.get("gpus"):
        gpu += f" (driver {info.get('gpu_driver') or '?'}, CUDA {info.get('cuda_runtime') or '?'})"
    mem = f"{info['memory_bytes'] / 2**30:.0f} GiB" if info.get("memory_bytes") else "? GiB"
    isa = "/".join(f for f in info.get("cpu_flags", []) if "vnni" in f or "amx" in f or f == "avx512f")
    return (f"{info['cpu_model']} ({info['cpu_usable_cores']} cores usable{', ' + isa if isa else ''}, {mem}), "
            f"{gpu}, {info['os']}, Python {info['python']}, torch {info['packages'].get('torch', '?')}")
