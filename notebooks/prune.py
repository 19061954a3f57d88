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
# # Pruning: remove what matters least
#
# Which weights matter? The article scores each by `R(w) = E[(dL/dw)^2]` (a Fisher-style
# gradient-squared score). Here it stands beside **magnitude** (|w|), **obd** (the second-order
# saliency `E[(dL/dw)^2] w^2`) and **random** as a baseline, measured rather than assumed.
# Unstructured pruning zeroes weights (then fine-tuning recovers accuracy, pruned weights held
# at zero); **structured** pruning removes whole neurons/channels and resizes the layers that
# read them, so the model really gets smaller and faster.
#
# Run it headless (papermill underneath; one directory per run with the output notebook,
# `params.yaml`, `metrics.json`, `status.json`, an HTML report and a row in the run records):
#
# ```bash
# slimkit params notebooks/prune.ipynb            # the parameters below, with their types and help
# slimkit run notebooks/prune.ipynb -p sparsity 0.9 -p score fisher -p finetune_epochs 3
# ```

# %% tags=["parameters"]
seed: int = 0  # seeds the teacher's training, fine-tuning and distillation
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (accuracy is computed on the CPU)
latency_batch: int = 64  # inputs per timed forward pass, in [1, 4096]
timing_rounds: int = 7  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]

sparsity: float = 0.8  # fraction of weights (or, structured, of units) removed, in [0, 1)
score: str = "magnitude"  # importance score: one of magnitude, fisher, obd, random
structured: bool = False  # remove whole neurons/channels instead of single weights
scope: str = "layer"  # one of layer, global
steps: int = 1  # prune in this many steps (cubic schedule), fine-tuning in between, in [1, 100]
finetune_epochs: int = 1  # fine-tuning epochs per step (0: none), in [0, 100]
scores: list = ["magnitude", "fisher", "obd", "random"]  # scores compared at the end (no fine-tuning)
score_sparsities: list = [0.5, 0.9]  # sparsities of that comparison
arch: str = "cnn"  # the digits teacher: one of cnn, mlp

# %%
import plotly.graph_objects as go
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

# %% [markdown]
# ## Prune with this notebook's parameters

# %%
finetune = dict(data=data.train, epochs=finetune_epochs) if finetune_epochs else None
pruned, report = slimkit.prune(teacher, sparsity, score=score, structured=structured, scope=scope,
                               data=data.train, steps=steps, finetune=finetune, seed=seed)
display(Markdown(report.to_markdown()))
p = slimkit.evaluate(pruned, data.test, reference=teacher)
print(f"\naccuracy {p['accuracy']:.1%} (teacher {teacher_acc:.1%}) after {finetune_epochs} fine-tune epoch(s) per step; "
      f"saved size {slimkit.size(pruned):,} bytes (teacher {slimkit.size(teacher):,})")
if not structured:
    print("unstructured zeros are stored dense here: see sparsify.ipynb for sparse storage")

# %% tags=["nbval-ignore-output"]
lat = slimkit.latency({"base": teacher, "new": pruned}, data.test.X[:latency_batch],
                      rounds=timing_rounds, num_threads=timing_threads or None, device=device)
base_ms, new_ms = lat["ms"]["base"], lat["ms"]["new"]  # medians of alternating rounds
print(f"latency per batch of {latency_batch} on {lat['device']}, {lat['threads']} thread(s): "
      f"original {base_ms:.3f} ms, pruned {new_ms:.3f} ms ({base_ms / new_ms:.2f}x)")

# %% [markdown]
# ## Which score wins?
# Each score at several sparsities, one shot, no fine-tuning, so the score alone decides.

# %%
one_shot = []
for s in scores:
    for sp in score_sparsities:
        m, _ = slimkit.prune(teacher, sp, score=s, structured=structured, data=data.train, seed=seed)
        one_shot.append(dict(score=s, sparsity=sp, accuracy=slimkit.evaluate(m, data.test)["accuracy"]))
table = {s: {c["sparsity"]: c["accuracy"] for c in one_shot if c["score"] == s} for s in scores}
display(Markdown(markdown_table([{"score": s, **{f"{sp:.0%}": f"{a:.1%}" for sp, a in accs.items()}}
                                 for s, accs in table.items()])))
best = {sp: max(scores, key=lambda s: table[s][sp]) for sp in score_sparsities}
print("best score per sparsity:", ", ".join(f"{sp:.0%}: {s}" for sp, s in best.items()))

# %% tags=["nbval-ignore-output"]
fig = go.Figure()
for s in scores:
    fig.add_scatter(x=[100 * sp for sp in score_sparsities], y=[100 * table[s][sp] for sp in score_sparsities],
                    mode="lines+markers", name=s)
fig.add_hline(y=100 * teacher_acc, line_dash="dot", annotation_text="unpruned")
fig.update_layout(title="one-shot pruning without fine-tuning: accuracy vs sparsity",
                  xaxis_title="sparsity (%)", yaxis_title="test accuracy (%)", template="plotly_white", height=400)
show(fig)

# %%
metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "accuracy": p["accuracy"],
           "agreement": p["agreement"], "size_bytes": slimkit.size(pruned), "teacher_size_bytes": slimkit.size(teacher),
           "latency_ms": new_ms, "teacher_latency_ms": base_ms, "params_ratio": report.summary.get("params_ratio")}
metrics.update({f"{c['score']}_{c['sparsity']:g}_accuracy": c["accuracy"] for c in one_shot})
print("metrics ->", save_metrics(metrics))
