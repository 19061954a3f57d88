"""What every benchmark section shares: the run's settings, MiniLM inputs, row helpers."""
from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slimkit import accel

HERE = Path(__file__).resolve().parent


@dataclass
class Settings:
    """One run's knobs. ``quick``: a smoke run (few rounds, a subset of rows and sizes);
    its numbers show that everything runs, not how fast it runs."""

    quick: bool = False
    threads: int = 1
    rounds_small: int = 30      # timed rounds at batch 1 (fast calls: more of them)
    rounds_large: int = 10      # timed rounds at batch 32
    compile: bool = True        # the torch.compile rows (minutes of one-time compile)
    compile_mode: str | None = "max-autotune-no-cudagraphs"
    sentences: int | None = None  # fidelity over the first N bundled sentences (None: all)
    out: Path = HERE
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="slimkit-bench-")))

    @classmethod
    def make(cls, quick: bool, threads: int, compile: bool | None, out: Path) -> "Settings":
        if quick:
            return cls(quick=True, threads=threads, rounds_small=5, rounds_large=3,
                       compile=bool(compile), compile_mode=None, sentences=64, out=out)
        return cls(threads=threads, compile=True if compile is None else compile, out=out)

    @property
    def inductor_cache(self) -> str:
        return str(self.workdir / "inductor")


def start(description: str):
    """The digits benchmarks' command line (``--quick``), 2 torch threads, and the load average
    printed first (a loaded machine skews every time that follows)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="fewer steps and epochs: a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"load average at start: {os.getloadavg()}")
    return args


def quiet_libraries() -> None:
    """Silence the chatter that would drown the progress log (exporter warnings, torchao's
    "Failed to load _C" lines, ORT's pre-processing advice)."""
    warnings.filterwarnings("ignore")
    for name in ("torch._dynamo", "torch._inductor", "torch.onnx", "torchao", "onnxruntime", "root",
                 "fusion_skiplayernorm", "onnx_model", "onnx_model_bert"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def minilm_inputs(batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids of real vocabulary entries, [CLS] ... [SEP], no padding: a full (batch, seq)
    workload (what a latency figure "at batch x seq" means)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def first_call_seconds(prepared, inputs) -> float:
    """One untimed-for-latency call at a new shape: what a compiled row pays to compile it."""
    return accel.benchmark(prepared, inputs, warmup=0, repeat=1, memory=False, fingerprint=False).times_s[0]


# --- peers that quantize on their own -----------------------------------------------------------

# The physical limit on 2 cores: MiniLM's int8 GEMMs at 64 int8 MAC/cycle/core (AVX-512 VNNI, issue 13).
LIMIT_MS = {"1x128": 3.5, "32x128": 115.0}
# Without VNNI (AVX2 only, e.g. Zen 3): vpmaddubsw + vpmaddwd on 256-bit registers, 2 ports, about
# 32 int8 MAC/cycle/core: half of VNNI's rate, so about twice the time. An assumption, not a measurement.
LIMIT_MS_AVX2 = {k: 2 * v for k, v in LIMIT_MS.items()}


def cpu_limit() -> tuple[dict[str, float], str]:
    """The int8 GEMM limit for this CPU and the assumption behind it (for the table text)."""
    from slimkit.hardware import x86_without_int8_dot

    cap = torch.backends.cpu.get_cpu_capability()
    if not x86_without_int8_dot():
        return LIMIT_MS, f"{cap} with VNNI: 64 int8 MAC/cycle/core (vpdpbusd), 2 cores"
    return LIMIT_MS_AVX2, (f"{cap} without VNNI: ~32 int8 MAC/cycle/core (vpmaddubsw + vpmaddwd), 2 cores: "
                           "2x the VNNI limit")


def calibration_batches(n: int = 8, batch: int = 8, seq: int = 128) -> list[dict[str, torch.Tensor]]:
    """Calibration inputs for peers that need them: token batches from other seeds than any timed or
    scored input (the fidelity sentences are never calibrated on)."""
    return [minilm_inputs(batch, seq, seed=1000 + i) for i in range(n)]


def openvino_nncf_int8(fp32, example, threads: int, precision=None, subset: int = 64):
    """Peer: OpenVINO's own int8 (NNCF post-training quantization, transformer preset: SmoothQuant and
    fast bias correction) on the fp32 model's IR, compiled for the CPU. Returns an accel.Prepared."""
    import nncf
    import openvino as ov

    from slimkit import export
    from slimkit.accel.openvino_backend import wrap_compiled

    workdir = Path(tempfile.mkdtemp(prefix="slimkit-nncf-"))
    t0 = time.perf_counter()
    export(fp32, example, workdir / "fp32.xml", format="openvino")
    t1 = time.perf_counter()
    core = ov.Core()
    model = core.read_model(str(workdir / "fp32.xml"))
    names = [p.get_any_name() for p in model.inputs]
    items = [{n: b[n].numpy() for n in names} for b in calibration_batches()]
    q = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                      subset_size=min(subset, sum(len(i[names[0]]) for i in items)))
    ov.save_model(q, str(workdir / "int8.xml"), compress_to_fp16=False)
    t2 = time.perf_counter()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(str(workdir / "int8.xml"), "CPU", config)
    t3 = time.perf_counter()
    size = sum((workdir / f"int8.{ext}").stat().st_size for ext in ("xml", "bin"))
    return wrap_compiled(compiled, fp32, "openvino+nncf", options={"precision": precision},
                         setup_seconds={"export": t1 - t0, "quantize": t2 - t1, "compile": t3 - t2}, size_bytes=size,
                         info={"nncf": nncf.__version__})
