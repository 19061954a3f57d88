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
# # The slimkit control panel
#
# Compress a model from a notebook: choose a method on a tab (quantize, prune, distill, sparsify, or a
# pipeline of them), set its parameters, press **Run**. The work runs in a background thread, so the
# kernel stays usable; the progress bar, the results table and five live plotly plots update while it
# runs (training curves, accuracy vs bits/sparsity in a sweep, per-layer sensitivity, weight histograms
# before/after, and a Pareto scatter of accuracy vs size and latency: click a point to see its settings).
# **Stop** abandons the step in flight: the model stays as before the run, or as the last finished step.
#
# The model is a small CNN trained here on scikit-learn's handwritten digits. The cells below drive the
# same panel from code (`panel.set(...)`, `panel.run()`), so the notebook also runs headless with
# papermill: there the panel has no widgets and each run leaves static plotly figures and the results
# table in the output notebook.
#
# `%load_ext slimkit.widgets` then `%slimkit model data` opens the same panel from any notebook.

# %% tags=["parameters"]
method: str = "quantize"  # first run's method: one of quantize, prune, distill, sparsify
bits: int = 4  # weight bits of the quantize runs, in [2, 8]
sparsity: float = 0.7  # fraction of weights the prune run removes, in [0, 1)
epochs: int = 1  # fine-tune epochs after pruning (and distillation epochs), in [0, 100]
sweep_bits: str = "8, 4, 3, 2"  # bit widths the sweep tries, comma separated
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (compression itself runs on the CPU)
backend: str = "eager"  # latency backend: "eager" or a slimkit.accel backend ("compile", "onnxruntime", ...)
seed: int = 0  # seeds the digits model (seed 0 is cached; others train one first) and fine-tuning

# %%
import json

from slimkit.data import load_digits
from slimkit.runs.runner import notebook_setup, save_metrics
from slimkit.widgets import Panel
from slimkit.zoo import pretrained_digits

notebook_setup(seed, device)  # seeds every RNG, deterministic algorithms, checks the device exists
data = load_digits(seed=0)  # the split the digits models were trained on
model = pretrained_digits("cnn", seed=seed)
print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ## The panel
#
# In JupyterLab or Notebook 7 this shows the controls and the plots. Headless it shows a static summary.

# %% tags=["nbval-ignore-output"]
panel = Panel(model, data)
panel

# %% [markdown]
# ## A first run
#
# `panel.set` moves the controls as a user would; `run(wait=True)` blocks until the run is done (the
# **Run** button never blocks). Row 0 of the table is the original model, measured alongside.

# %% tags=["nbval-ignore-output"]
panel.set(method, bits=bits, sparsity=sparsity, finetune_epochs=epochs, epochs=max(epochs, 1),
          device=device, backend=backend)
first = panel.run(wait=True)

# %% [markdown]
# ## Pruning with fine-tuning
#
# The training-curves plot follows the fine-tuning epochs (loss and test accuracy) while they run.

# %% tags=["nbval-ignore-output"]
panel.set("prune", sparsity=sparsity, finetune_epochs=epochs)
pruned = panel.run(wait=True)

# %% [markdown]
# ## A sweep and per-layer sensitivity
#
# **Sweep** runs the tab's method once per value (here bit widths) and draws accuracy against them;
# **Sensitivity** quantizes one layer at a time (bars: accuracy drop in points; hover: SQNR).

# %% tags=["nbval-ignore-output"]
panel.set("quantize", quantize_sweep=sweep_bits)
sweep = panel.sweep(wait=True)

# %% tags=["nbval-ignore-output"]
sensitivity = panel.sensitivity(wait=True)

# %% [markdown]
# ## Validation happens before anything runs
#
# Bad settings are listed in the panel in red and the Run button is disabled; from code, `run()` raises.

# %%
panel.set("quantize", granularity="per_group", group_size=7)
print("\n".join(panel.problems()))
try:
    panel.run(wait=True)
except ValueError as e:
    print("not started:", type(e).__name__)
panel.set(granularity="per_channel")
print("valid again:", panel.problems() == [])

# %% [markdown]
# ## Inspecting a run
#
# Clicking a point of the Pareto plot shows that run's settings and per-layer report; from code:

# %%
chosen = panel.show_run(first.id)
print(chosen.label)
print(json.dumps(chosen.settings, indent=1))

# %% [markdown]
# ## Metrics for batch runs
#
# A papermill run (`slimkit run notebooks/control_panel.ipynb -p bits 3`) records `metrics.json`.

# %% tags=["nbval-ignore-output"]
original = panel.results[0]
metrics = {
    "original_accuracy": original.accuracy,
    "original_size_bytes": original.size_bytes,
    "first_accuracy": first.accuracy,
    "first_size_bytes": first.size_bytes,
    "first_x_smaller": original.size_bytes / first.size_bytes,
    "first_x_faster": first.baseline_ms / first.latency_ms,
    "pruned_accuracy": pruned.accuracy,
    "sweep": {str(r.settings["bits"]): r.accuracy for r in sweep},
    "most_sensitive_layer": max(sensitivity, key=lambda r: r["drop"])["name"],
    "runs": len(panel.results) - 1,
}
save_metrics(metrics)  # metrics.json in the working directory: what `slimkit run` records
print(json.dumps(metrics, indent=1))
