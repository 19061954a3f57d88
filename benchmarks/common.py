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
