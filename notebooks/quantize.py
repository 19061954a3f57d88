# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (slimkit)
#     language: python
#     name: slimkit
# ---

# %% [markdown]
# # Quantization: fewer bits per weight
#
# The article's affine min-max mapping, done right: values are **rounded** to integers with a
# scale and a zero point, so they can be mapped back (dequantized). Symmetric (zero point 0)
# or asymmetric, one scale per tensor, per output channel or per group of weights, 2 to 8 bits.
# int8 layers run real integer matmuls on the CPU; 2-4 bit weights are really packed into bytes;
# anything only emulated in float is labelled *simulated*.
#
# Run it headless (papermill underneath; one directory per run with the output notebook,
# `params.yaml`, `metrics.json`, `status.json`, an HTML report and a row in the run records):
#
# ```bash
# slimkit params notebooks/quantize.ipynb            # the parameters below, with their types and help
# slimkit run notebooks/quantize.ipynb -p bits 4 -p granularity per_group
# ```

# %% tags=["parameters"]
seed: int = 0  # seeds the teacher's training, fine-tuning and distillation
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (accuracy is computed on the CPU)
latency_batch: int = 64  # inputs per timed forward pass, in [1, 4096]
timing_rounds: int = 7  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]

bits: int = 8  # weight bits, in [2, 8]
granularity: str = "per_channel"  # one scale per: one of per_channel, per_tensor, per_group
scheme: str = "symmetric"  # one of symmetric, asymmetric
group_size: int = 32  # weights per scale with per_group (must divide each layer's inputs), in [1, 4096]
calibrate: bool = False  # calibrate activation ranges on training images (static int8 activations)
bits_sweep: list = [8, 6, 4, 3, 2]  # bit widths compared per granularity at the end
arch: str = "cnn"  # the digits teacher: one of cnn, mlp

# %%
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

import slimkit
from slimkit.data import load_digits
from slimkit.runs.runner import notebook_setup, save_metrics
from slimkit.runs.static import show
from slimkit.table import markdown_table
from slimkit.zoo import pretrained_digits

dev = notebook_setup(seed, device)  # seeds every RNG, deterministic algorithms, checks the device exists
# the digits split the cached teachers were trained on (the test set stays unseen), and the teacher,
# trained here on scikit-learn's digits and cached after the first run
data, teacher = load_digits(seed=0), pretrained_digits(arch, seed=seed)
teacher_acc = slimkit.evaluate(teacher, data.test)["accuracy"]
print(f"{arch} teacher: {sum(p.numel() for p in teacher.parameters()):,} parameters, test accuracy {teacher_acc:.1%}")

# %% [markdown]
# ## The formula on five numbers
# `X_q = clip(round(X / scale) + zero_point, q_min, q_max)` and back `X ≈ (X_q - zero_point) * scale`.
# The article's own example, `[8.5, -8.5]` in 8 bits, plus three values in between:

# %%
from slimkit.quant.affine import dequantize_tensor, quantize_tensor

x = torch.tensor([8.5, -8.5, 3.2, 0.0, -1.7])
for s in ("symmetric", "asymmetric"):
    qt = quantize_tensor(x, bits=8, scheme=s)
    back = dequantize_tensor(qt)
    print(f"{s:10s} scale {qt.scale.item():.5f} zero point {qt.zero_point.item():4d}  X_q {qt.q.tolist()}  "
          f"back {[round(v, 3) for v in back.tolist()]}  max error {(back - x).abs().max().item():.4f}")

# %% [markdown]
# ## The model, with this notebook's parameters

# %%
options = dict(bits=bits, granularity=granularity, scheme=scheme)
if granularity == "per_group":
    options["group_size"] = group_size
if calibrate:
    options["activations"] = data.train.X[:512]
model, report = slimkit.quantize(teacher, **options)
display(Markdown(report.to_markdown()))
q = slimkit.evaluate(model, data.test, reference=teacher)
print(f"\naccuracy {q['accuracy']:.1%} (teacher {teacher_acc:.1%}), agrees with the teacher on {q['agreement']:.1%}; "
      f"{slimkit.size(teacher) / slimkit.size(model):.2f}x smaller; simulated: {report.simulated}")

# %% tags=["nbval-ignore-output"]
lat = slimkit.latency({"base": teacher, "new": model}, data.test.X[:latency_batch],
                      rounds=timing_rounds, num_threads=timing_threads or None, device=device)
base_ms, new_ms = lat["ms"]["base"], lat["ms"]["new"]  # medians of alternating rounds
print(f"latency per batch of {latency_batch} on {lat['device']}, {lat['threads']} thread(s): "
      f"fp32 {base_ms:.3f} ms, int{bits} {new_ms:.3f} ms ({base_ms / new_ms:.2f}x)")

# %% [markdown]
# ## Per-layer error and the quantization grid
# SQNR (signal-to-quantization-noise ratio, dB) per layer: higher is better, every bit adds about 6 dB.
# The histogram shows one layer's weights before and after: after, they sit on the grid.

# %% tags=["nbval-ignore-output"]
measured = [l for l in report.layers if l.sqnr_db is not None]
name = max(measured, key=lambda l: l.params_before).name  # the largest layer
before = teacher.get_submodule(name).weight.detach().flatten()
after = model.get_submodule(name).dequantized_weight().detach().flatten()
fig = make_subplots(rows=1, cols=2, subplot_titles=("weight SQNR per layer (dB)", f"{name}: weights before/after"))
fig.add_bar(x=[l.name for l in measured], y=[l.sqnr_db for l in measured], name="SQNR", row=1, col=1)
# binned here, not in the browser: raw values would store every weight twice in the notebook
lo, hi = min(before.min(), after.min()).item(), max(before.max(), after.max()).item()
for label, w in (("fp32", before), (f"int{bits}", after)):
    counts, edges = torch.histogram(w.float(), bins=200, range=(lo, hi))
    fig.add_bar(x=((edges[:-1] + edges[1:]) / 2).tolist(), y=counts.tolist(), name=label, opacity=0.6,
                row=1, col=2)
fig.update_layout(barmode="overlay", template="plotly_white", height=400, title=f"int{bits} {granularity} {scheme}")
show(fig)

# %% [markdown]
# ## How many bits?
# Accuracy and size per bit width, per-tensor against per-channel scales: per-channel keeps
# far more accuracy at 4 bits and below, for a few bytes of extra scales.

# %%
sweep = []
for g in ("per_tensor", "per_channel"):
    for b in bits_sweep:
        m, r = slimkit.quantize(teacher, bits=b, granularity=g, scheme=scheme)
        sweep.append(dict(granularity=g, bits=b, accuracy=slimkit.evaluate(m, data.test)["accuracy"],
                          size_bytes=slimkit.size(m), simulated=r.simulated))
display(Markdown(markdown_table([{
    "granularity": s["granularity"], "bits": s["bits"], "test accuracy": f"{s['accuracy']:.1%}",
    "size (KiB)": f"{s['size_bytes'] / 1024:,.1f}", "simulated": s["simulated"]} for s in sweep])))

# %% tags=["nbval-ignore-output"]
fig = go.Figure()
for g in ("per_tensor", "per_channel"):
    pts = [s for s in sweep if s["granularity"] == g]
    fig.add_scatter(x=[s["bits"] for s in pts], y=[100 * s["accuracy"] for s in pts], mode="lines+markers", name=g)
fig.add_hline(y=100 * teacher_acc, line_dash="dot", annotation_text="fp32")
fig.update_layout(title="accuracy vs weight bits", xaxis_title="bits", yaxis_title="test accuracy (%)",
                  template="plotly_white", height=400)
show(fig)

# %%
metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "accuracy": q["accuracy"],
           "agreement": q["agreement"], "size_bytes": slimkit.size(model), "teacher_size_bytes": slimkit.size(teacher),
           "latency_ms": new_ms, "teacher_latency_ms": base_ms, "simulated": report.simulated,
           "weight_sqnr_db_min": report.summary["weight_sqnr_db_min"]}
metrics.update({f"{s['granularity']}_int{s['bits']}_accuracy": s["accuracy"] for s in sweep})
print("metrics ->", save_metrics(metrics))
