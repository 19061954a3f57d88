"""Where the time goes on all-MiniLM-L6-v2 (issue 13): a per-op table for fp32 eager and slimkit
int8 eager (torch.profiler, self CPU time), and per-node-type tables for the OpenVINO rows
(its CPU plugin's ``PERF_COUNT`` counters: NNCF int8 and slimkit's recipe via ``openvino``).
Writes benchmarks/results/profile_minilm.md (and .json).

    python -m benchmarks.profile_minilm [--threads 2] [--calls 10] [--top 12] [--no-openvino]

Profiled calls are slower than unprofiled ones (the profiler's own cost); read the shares, not
the absolute ms, and take latencies from the timing table (``python -m benchmarks --only minilm``).
"""
from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

import torch

from .common import HERE, log, minilm_inputs, quiet_libraries

SHAPES = ((1, 128), (32, 128))


def torch_ops(fn, inputs: dict, calls: int) -> tuple[list[dict], float]:
    """Per-op self CPU ms per call (over ``calls`` profiled calls after 2 warm-up calls), total ms."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(2):
            fn(**inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn(**inputs)
    rows = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3 / calls, "count": e.count // calls}
            for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(r["self_ms"] for r in rows)
    return sorted(rows, key=lambda r: -r["self_ms"]), total


def openvino_nodes(prepared, inputs: dict, calls: int) -> tuple[list[dict], float]:
    """Per node type (and the kernel OpenVINO picked, e.g. ``brgemm_avx2_I8``) real ms per call,
    from a compiled model built with ``PERF_COUNT``."""
    request = prepared.fn.request
    names = prepared.fn.input_names
    feed = {n: inputs[n].numpy() for n in names}
    for _ in range(2):
        request.infer(feed)
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for _ in range(calls):
        request.infer(feed)
        for p in request.profiling_info:
            if p.status.name != "EXECUTED":
                continue
            k = (p.node_type, p.exec_type)
            acc[k][0] += p.real_time.total_seconds() * 1e3 / calls
            acc[k][1] += 1
    rows = [{"op": f"{t} [{e}]", "self_ms": ms, "count": n // calls} for (t, e), (ms, n) in acc.items()]
    total = sum(r["self_ms"] for r in rows)
    return sorted(rows, key=lambda r: -r["self_ms"]), total


def _openvino_rows(fp32, q, example, threads: int) -> dict:
    """The OpenVINO rows rebuilt with performance counters on (export/quantize as in minilm_bench)."""
    import openvino as ov

    from slimkit import accel

    from .common import openvino_nncf_int8

    out = {}
    core_compile = ov.Core.compile_model

    def with_counters(self, model, device_name="CPU", config=None, **kw):  # NNCF passes device_name=
        return core_compile(self, model, device_name, {**(config or {}), "PERF_COUNT": True}, **kw)

    ov.Core.compile_model = with_counters  # both builders compile through ov.Core(); counters on for them
    try:
        out["OpenVINO int8, NNCF PTQ"] = openvino_nncf_int8(fp32, example, threads, precision="f32")
        out["slimkit int8 via OpenVINO (export)"] = accel.prepare(q, example, "openvino", precision="f32",
                                                                  threads=threads)
    finally:
        ov.Core.compile_model = core_compile
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-openvino", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)
    quiet_libraries()
    import slimkit
    from slimkit.hardware import fingerprint, summary
    from slimkit.zoo.minilm import load_minilm

    torch.set_num_threads(a.threads)
    fp32 = load_minilm()
    q, _ = slimkit.quantize(fp32, bits=8)
    models = {"fp32 eager": fp32, "slimkit int8 (eager)": q}
    if not a.no_openvino:
        try:
            models.update(_openvino_rows(fp32, q, minilm_inputs(32, 128), a.threads))
        except ImportError:
            log("openvino/nncf not installed: OpenVINO rows skipped")
    load = [os.getloadavg()]
    result: dict = {"threads": a.threads, "calls": a.calls, "machine": summary(fingerprint()),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(), "tables": {}}
    for b, s in SHAPES:
        shape = f"{b}x{s}"
        inputs = minilm_inputs(b, s)
        for name, m in models.items():
            log(f"profiling {name} at {shape} ...")
            is_ov = not isinstance(m, torch.nn.Module)
            calls = max(2, a.calls // (4 if b > 1 else 1))
            rows, total = openvino_nodes(m, inputs, calls) if is_ov else torch_ops(m, inputs, calls)
            result["tables"][f"{name} @ {shape}"] = {"total_ms": total, "rows": rows[: a.top],
                                                     "kind": "openvino" if is_ov else "torch"}
    load.append(os.getloadavg())
    result["load"] = load
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "profile_minilm.json").write_text(json.dumps(result, indent=1))
    (a.out / "profile_minilm.md").write_text(render(result))
    log(f"wrote {a.out / 'profile_minilm.md'}")


def render(r: dict) -> str:
    out = ["# Where MiniLM's time goes (per op)", "",
           (f"Machine: {r['machine']}; torch CPU capability {r['cpu_capability']}; {r['threads']} threads; "
           f"load average start/end {r['load'][0]} / {r['load'][1]}."),
           ("Command: `python -m benchmarks.profile_minilm`. torch rows: torch.profiler self CPU time per call "
           "(mean of profiled calls, profiler overhead included: read shares). OpenVINO rows: the CPU plugin's "
           "PERF_COUNT real time per node type [kernel], f32 inference precision."), ""]
    for name, t in r["tables"].items():
        out += [f"## {name} (sum {t['total_ms']:.1f} ms per call)", "", "| op | ms/call | share | calls |",
                "|---|---|---|---|"]
        out += [f"| `{x['op']}` | {x['self_ms']:.2f} | {100 * x['self_ms'] / t['total_ms']:.1f}% | {x['count']} |"
                for x in t["rows"]]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
