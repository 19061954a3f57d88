"""Section 3: how MiniLM's latency and memory grow with batch size and sequence length.

Eager rows only (a compiled row would recompile per shape): fp32, slimkit int8 and ONNX
Runtime int8. Latency: medians of alternating rounds per shape. Memory: what one forward pass
adds to the resident set above the loaded model (activations, workspaces), measured in a fresh
process per variant (``memory_probe.py`` says why).
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import slimkit
from slimkit import accel
from slimkit.zoo.minilm import load_minilm

from .common import HERE, Settings, log, minilm_inputs

BATCHES = (1, 4, 16, 64)
SEQ_AT = 128
SEQS = (16, 32, 64, 128, 256)
BATCH_AT = 8


def run(s: Settings) -> dict[str, Any]:
    batches, seqs = ((1, 8), (32, 128)) if s.quick else (BATCHES, SEQS)
    with accel.fixed_threads(s.threads):
        fp32 = load_minilm()
        q, _ = slimkit.quantize(fp32, bits=8)
        ex = minilm_inputs(2, 16)
        variants = {"fp32 eager": accel.prepare(fp32, ex, "eager"),
                    "slimkit int8 (eager)": accel.prepare(q, ex, "eager"),
                    "ORT int8 per-channel (fused)": accel.prepare(load_minilm("eager"), ex, "onnxruntime",
                                                                  quantize="int8", workdir=s.workdir / "onnx-scaling")}
        points = []
        shapes = [(b, SEQ_AT, "batch") for b in batches] + [(BATCH_AT, n, "seq") for n in seqs]
        for batch, seq, axis in shapes:
            x = minilm_inputs(batch, seq)
            work = batch * seq
            rounds = max(3, min(s.rounds_small, (s.rounds_large * 4096) // work)) if not s.quick else 3
            log(f"  scaling {axis}: {batch}x{seq}, {rounds} rounds ...")
            res = accel.time_variants(variants, x, rounds=rounds, warmup=1, threads=s.threads)
            for name, m in res.items():
                points.append({"axis": axis, "variant": name, "batch": batch, "seq": seq,
                               "median_ms": 1e3 * m.median_s, "p90_ms": 1e3 * m.p90_s,
                               "tokens_per_s": work / m.median_s, "speedup": m.speedup_vs(res["fp32 eager"])})
        files = ["--onnx", variants["ORT int8 per-channel (fused)"].info["onnx_path"],
                 "--artifact", str(slimkit.save(q, s.workdir / "minilm-int8.slim"))]
        # one fresh process per (variant, shape): memory freed by an earlier shape cannot be reused
        memory = {name: {k: v for b, n, _ in shapes for k, v in _probe(name, [f"{b}x{n}"], files, s.threads).items()}
                  for name in variants}
    for p in points:
        got = memory[p["variant"]].get(f"{p['batch']}x{p['seq']}", {})
        p["peak_rss_growth_bytes"], p["peak_rss_bytes"] = got.get("growth_bytes"), got.get("peak_rss_bytes")
    return {"points": points, "batch_axis_seq": SEQ_AT, "seq_axis_batch": BATCH_AT, "threads": s.threads}


def _probe(variant: str, shapes: list[str], files: list[str], threads: int) -> dict[str, Any]:
    log(f"  memory of {variant} at {','.join(shapes)} in a fresh process ...")
    cmd = [sys.executable, "-m", "benchmarks.memory_probe", "--variant", variant, "--shapes", ",".join(shapes),
           "--threads", str(threads), *files]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        log(f"  memory probe failed: {out.stderr[-500:]}")
        return {}
    return json.loads(lines[-1])["shapes"]


def plot(result: dict[str, Any], out_stem) -> dict[str, str]:
    """Latency and memory against batch and sequence: a PNG (matplotlib) and an HTML (plotly,
    self-contained: it opens offline)."""
    files = {}
    pts = result["points"]
    variants = list(dict.fromkeys(p["variant"] for p in pts))
    panels = [("batch", "median_ms", "batch (seq 128)", "latency (ms)"),
              ("seq", "median_ms", f"sequence length (batch {result['seq_axis_batch']})", "latency (ms)"),
              ("batch", "peak_rss_growth_bytes", "batch (seq 128)", "peak RSS growth (MiB)"),
              ("seq", "peak_rss_growth_bytes", f"sequence length (batch {result['seq_axis_batch']})",
               "peak RSS growth (MiB)")]

    def series(axis, key, v):
        sel = [p for p in pts if p["axis"] == axis and p["variant"] == v and p[key] is not None]
        xs = [p["batch"] if axis == "batch" else p["seq"] for p in sel]
        ys = [p[key] / 2**20 if "bytes" in key else p[key] for p in sel]
        return xs, ys

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 2, figsize=(11, 8))
        for ax, (axis, key, xl, yl) in zip(axes.flat, panels):
            for v in variants:
                xs, ys = series(axis, key, v)
                ax.plot(xs, ys, marker="o", label=v)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log" if key == "median_ms" else "linear")
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.grid(True, which="both", alpha=0.3)
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"MiniLM on CPU, {result['threads']} threads: scaling with batch and sequence length")
        fig.tight_layout()
        fig.savefig(f"{out_stem}.png", dpi=110)
        plt.close(fig)
        files["png"] = f"{out_stem}.png"
    except ImportError as e:
        log(f"  no PNG: {e}")
    try:
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=2, cols=2, subplot_titles=[f"{yl} vs {xl}" for _, _, xl, yl in panels])
        colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
        for i, (axis, key, xl, yl) in enumerate(panels):
            r, c = divmod(i, 2)
            for j, v in enumerate(variants):
                xs, ys = series(axis, key, v)
                fig.add_scatter(x=xs, y=ys, name=v, legendgroup=v, showlegend=i == 0, row=r + 1, col=c + 1,
                                mode="lines+markers", line={"color": colors[j % len(colors)]})
            fig.update_xaxes(type="log", title_text=xl, row=r + 1, col=c + 1)
            fig.update_yaxes(type="log" if key == "median_ms" else "linear", title_text=yl, row=r + 1, col=c + 1)
        fig.update_layout(height=750, width=1100, title="MiniLM on CPU: scaling with batch and sequence length")
        fig.write_html(f"{out_stem}.html", include_plotlyjs=True)
        files["html"] = f"{out_stem}.html"
    except ImportError as e:
        log(f"  no HTML: {e}")
    return files
