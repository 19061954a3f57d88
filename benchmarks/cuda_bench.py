"""Section 4: the CUDA rows. They run where a CUDA GPU exists and are recorded as
"not measured: no GPU" elsewhere (the rows are still listed, so the table shows what is missing).

Two workloads: one large Linear (8192 x 8192, 4096 tokens: tensor-core bound) and MiniLM at
32 x 128. Timing is CUDA events between synchronisations (``slimkit.accel.time_variants``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from slimkit import accel

from .common import Settings, log, minilm_inputs

LINEAR = (8192, 8192, 4096)  # in, out, tokens
ROWS = [  # (name, backend, options, needs)
    ("fp32 eager", "eager", {}, None),
    ("fp16 eager", "eager", {"dtype": "float16"}, None),
    ("bf16 eager", "eager", {"dtype": "bfloat16"}, None),
    ("bf16 + torch.compile", "compile", {"dtype": "bfloat16"}, None),
    ("torchao int8 weight-only (bf16)", "torchao", {"config": "int8_weight_only", "dtype": "bfloat16"}, None),
    ("torchao int8 dynamic + compile (bf16)", "torchao",
     {"config": "int8_dynamic", "dtype": "bfloat16", "compile": True}, None),
    ("torchao fp8 + compile (bf16)", "torchao", {"config": "fp8", "dtype": "bfloat16", "compile": True}, (8, 9)),
    ("2:4 sparse fp16 (magnitude-pruned)", "sparse24", {"dtype": "float16"}, (8, 0)),
    ("2:4 sparse fp16 + compile", "sparse24", {"dtype": "float16", "compile": True}, (8, 0)),
]
NO_GPU = "not measured: no GPU"


def _workloads():
    from slimkit.zoo.minilm import load_minilm

    torch.manual_seed(0)
    lin = nn.Linear(LINEAR[0], LINEAR[1])
    return {"Linear 8192x8192, 4096 tokens": (lin, torch.randn(LINEAR[2], LINEAR[0])),
            "MiniLM 32x128": (load_minilm(), minilm_inputs(32, 128))}


def run(s: Settings) -> dict[str, Any]:
    names = [r[0] for r in ROWS]
    if not torch.cuda.is_available():
        return {"measured": False, "reason": NO_GPU,
                "workloads": {w: {n: {"status": NO_GPU} for n in names}
                              for w in ("Linear 8192x8192, 4096 tokens", "MiniLM 32x128")}}
    out: dict[str, Any] = {"measured": True, "device": torch.cuda.get_device_name(0), "workloads": {}}
    cap = torch.cuda.get_device_capability(0)
    for wname, (model, x) in _workloads().items():
        built, rows = {}, {}
        for name, backend, opts, needs in ROWS:
            if needs and cap < needs:
                rows[name] = {"status": f"not measured: needs compute capability >= {needs[0]}.{needs[1]}"}
                continue
            if "compile" in opts or backend == "compile":
                opts = {**opts, "cache_dir": s.inductor_cache}
            log(f"  CUDA {wname}: building {name} ...")
            try:
                built[name] = accel.prepare(model, x, backend, device="cuda", **opts)
                rows[name] = {"status": "measured", "setup_s": built[name].setup_seconds,
                              "size_bytes": built[name].size_bytes, "info": built[name].describe()["info"]}
            except Exception as e:
                rows[name] = {"status": f"failed: {type(e).__name__}: {str(e)[:300]}"}
        if built:
            res = accel.time_variants(built, x, rounds=s.rounds_large * 2, warmup=3)
            base = res.get("fp32 eager")
            ref = built["fp32 eager"].run(built["fp32 eager"].move(x)).float() if base else None
            for name, m in res.items():
                rows[name].update(m.summary(), speedup=m.speedup_vs(base) if base else None)
                if ref is not None:
                    out_ = built[name].run(built[name].move(x)).float()
                    rows[name]["cosine_vs_fp32"] = torch.nn.functional.cosine_similarity(
                        out_.flatten(), ref.flatten(), dim=0).item()
            torch.cuda.reset_peak_memory_stats()
        out["workloads"][wname] = rows
    return out
