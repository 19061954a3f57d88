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
# # Sparse representation: store only what is not zero
#
# The article's rule: weights whose score falls under a threshold θ become zeros (here |w| < θ,
# or a target sparsity, smallest magnitudes first), then the weights are **stored sparse**. The
# bytes are counted honestly: CSR pays index bytes for every nonzero, so it is *larger* than
# dense until sparsity is high; a bitmask pays one bit per weight. `format="auto"` picks the
# smallest per layer. Without fine-tuning, a high sparsity costs accuracy: prune.ipynb recovers it.
#
# Run it headless (papermill underneath; one directory per run with the output notebook,
# `params.yaml`, `metrics.json`, `status.json`, an HTML report and a row in the run records):
#
# ```bash
# slimkit params notebooks/sparsify.ipynb            # the parameters below, with their types and help
# slimkit run notebooks/sparsify.ipynb -p sparsity 0.95 -p format csr
# ```

# %% tags=["parameters"]
seed: int = 0  # seeds the teacher's training, fine-tuning and distillation
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (accuracy is computed on the CPU)
latency_batch: int = 64  # inputs per timed forward pass, in [1, 4096]
timing_rounds: int = 7  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]

sparsity: float = 0.5  # per layer, fraction of weights zeroed (smallest magnitudes first), in [0, 1)
threshold: float = None  # instead of sparsity (None: use sparsity): zero every weight with |w| < threshold, the article's rule
format: str = "auto"  # storage: one of auto, csr, bitmask, 2:4
sweep_sparsities: list = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]  # sparsities of the size comparison
arch: str = "cnn"  # the digits teacher: one of cnn, mlp

# %%
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display

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

# %%
rule = dict(threshold=threshold) if threshold is not None else dict(sparsity=sparsity)
sparse, report = slimkit.sparsify(teacher, format=format, **rule)
display(Markdown(report.to_markdown()))
s = slimkit.evaluate(sparse, data.test, reference=teacher)
print(f"\naccuracy {s['accuracy']:.1%} (teacher {teacher_acc:.1%}); saved {slimkit.size(sparse):,} bytes "
      f"vs {slimkit.size(teacher):,} dense ({slimkit.size(teacher) / slimkit.size(sparse):.2f}x smaller)")

# %% [markdown]
# ## Save, load, same outputs
# The artifact is safetensors plus JSON metadata; loading rebuilds the sparse layers.

# %%
import tempfile
from pathlib import Path

with tempfile.TemporaryDirectory() as tmp:
    path = slimkit.save(sparse, Path(tmp) / "sparse.slim")
    loaded = slimkit.load(path)
    on_disk = path.stat().st_size
with torch.inference_mode():
    same = torch.equal(loaded(data.test.X), sparse(data.test.X))
print(f"file {on_disk:,} bytes (slimkit.size said {slimkit.size(sparse):,}); identical outputs after loading: {same}")

# %% [markdown]
# ## Bytes per format against sparsity
# The crossover points are where each format starts to pay.

# %%
sizes = []
for sp in sweep_sparsities:
    for f in ("csr", "bitmask", "auto"):
        m, r = slimkit.sparsify(teacher, sparsity=sp, format=f)
        sizes.append(dict(sparsity=sp, format=f, size_bytes=slimkit.size(m)))
dense = slimkit.size(teacher)
display(Markdown(markdown_table([{"sparsity": f"{sp:.0%}", "dense (KiB)": f"{dense / 1024:,.1f}",
                                  **{f"{f} (KiB)": f"{z['size_bytes'] / 1024:,.1f}" for f in ("csr", "bitmask", "auto")
                                     for z in sizes if z["sparsity"] == sp and z["format"] == f}}
                                 for sp in sweep_sparsities])))

# %% tags=["nbval-ignore-output"]
fig = go.Figure()
fig.add_scatter(x=[100 * sp for sp in sweep_sparsities], y=[dense / 1024] * len(sweep_sparsities), name="dense",
                line=dict(dash="dot", color="grey"))
for f in ("csr", "bitmask", "auto"):
    pts = [z for z in sizes if z["format"] == f]
    fig.add_scatter(x=[100 * z["sparsity"] for z in pts], y=[z["size_bytes"] / 1024 for z in pts],
                    mode="lines+markers", name=f)
fig.update_layout(title="saved size vs sparsity", xaxis_title="sparsity (%)", yaxis_title="KiB",
                  template="plotly_white", height=400)
show(fig)

# %% tags=["nbval-ignore-output"]
lat = slimkit.latency({"base": teacher, "new": sparse}, data.test.X[:latency_batch],
                      rounds=timing_rounds, num_threads=timing_threads or None, device=device)
base_ms, new_ms = lat["ms"]["base"], lat["ms"]["new"]  # medians of alternating rounds
print(f"latency per batch of {latency_batch} on {lat['device']}, {lat['threads']} thread(s): "
      f"dense {base_ms:.3f} ms, sparse {new_ms:.3f} ms ({base_ms / new_ms:.2f}x); execution per layer: {report.summary['execution']}")

# %%
metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "accuracy": s["accuracy"],
           "agreement": s["agreement"], "sparsity": report.summary["sparsity"], "size_bytes": slimkit.size(sparse),
           "teacher_size_bytes": dense, "latency_ms": new_ms, "teacher_latency_ms": base_ms,
           "roundtrip_identical": same}
metrics.update({f"{z['format']}_{z['sparsity']:g}_size_bytes": z["size_bytes"] for z in sizes})
print("metrics ->", save_metrics(metrics))
