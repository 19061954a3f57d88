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
# # Which method should I pick?
#
# The article's answer: *it depends on the model, the hardware and the application; try several
# and measure*. This notebook automates that: it sweeps each method over a few settings on the
# digits CNN, measures accuracy, saved size and latency on this machine, plots the trade-offs,
# and picks the best result that fits a budget (largest accuracy drop, largest size). Then
# `slimkit.autotune` searches compositions and per-layer settings under the same budget, and its
# pick is compared with the grid's.
#
# Run it headless (papermill underneath; one directory per run with the output notebook,
# `params.yaml`, `metrics.json`, `status.json`, an HTML report and a row in the run records):
#
# ```bash
# slimkit params notebooks/which_method.ipynb            # the parameters below, with their types and help
# slimkit run notebooks/which_method.ipynb -p max_drop 0.5 -p objective latency
# ```

# %% tags=["parameters"]
seed: int = 0  # seeds the teacher's training, fine-tuning and distillation
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (accuracy is computed on the CPU)
latency_batch: int = 64  # inputs per timed forward pass, in [1, 4096]
timing_rounds: int = 7  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]

max_drop: float = 1.0  # accuracy budget: the largest drop from the teacher allowed, in points, in [0, 100]
max_size_kib: float = 0.0  # size budget of the saved artifact in KiB (0: no limit), in [0, 1e9]
objective: str = "size"  # what the pick minimises within the budget: one of size, latency
bits_grid: list = [8, 4, 2]  # quantization: weight bits tried (per-channel)
sparsity_grid: list = [0.5, 0.9]  # pruning + sparse storage: sparsities tried
structured_grid: list = [0.25, 0.5]  # structured pruning: fractions of units removed
width_grid: list = [0.5]  # distillation: student widths tried
finetune_epochs: int = 1  # fine-tuning epochs after each pruning, in [0, 100]
finetune_lr: float = 0.001  # fine-tuning learning rate (Adam), in (0, 1]
distill_epochs: int = 3  # distillation epochs per student, in [1, 500]
distill_lr: float = 0.005  # distillation learning rate (Adam), in (0, 1]
arch: str = "cnn"  # the digits teacher: one of cnn, mlp
autotune_budget_s: float = 60.0  # autotune: seconds the search may take (probes and trials), in (0, 1e6]
autotune_trials: int = 4  # autotune: whole-model trials at most, in [1, 1000]
autotune_bits: list = [4]  # autotune, objective size: per-layer bit widths tried (few: a quick search)
autotune_sparsity: list = [0.9]  # autotune, objective size: per-layer sparsities tried

# %%
from IPython.display import Markdown, display

import slimkit
from slimkit.data import load_digits
from slimkit.runs.figures import pareto_figure
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
# ## Try every setting

# %%
finetune = dict(data=data.train, epochs=finetune_epochs, lr=finetune_lr) if finetune_epochs else None
candidates = [("quantize", f"int{b}", lambda b=b: slimkit.quantize(teacher, bits=b).model) for b in bits_grid]
candidates += [("prune + sparse", f"{s:.0%} sparse",
                lambda s=s: slimkit.sparsify(slimkit.prune(teacher, s, finetune=finetune, seed=seed).model,
                                             format="auto").model) for s in sparsity_grid]
candidates += [("structured", f"{s:.0%} units removed",
                lambda s=s: slimkit.prune(teacher, s, structured=True, finetune=finetune, seed=seed).model)
               for s in structured_grid]
candidates += [("distill", f"student x{w:g}",
                lambda w=w: slimkit.distill(teacher, slimkit.shrink(teacher, w, seed=seed), data.train,
                                            epochs=distill_epochs, lr=distill_lr, seed=seed).model) for w in width_grid]
models = {f"{group}: {setting}": make() for group, setting, make in candidates}
tried = slimkit.compare(teacher, models, data.test, original_name="fp32: teacher")
for t in tried:
    t["label"], t["group"] = t["method"], t["method"].split(":")[0]
display(Markdown(markdown_table([{
    "method": t["label"], "test accuracy": f"{t['accuracy']:.1%}", "drop": f"{t['drop_pts']:.1f} pt",
    "size (KiB)": f"{t['size_bytes'] / 1024:,.1f}"} for t in tried])))

# %% tags=["nbval-ignore-output"]
lat = slimkit.latency({"fp32: teacher": teacher, **models}, data.test.X[:latency_batch],
                      rounds=timing_rounds, num_threads=timing_threads or None, device=device)
for t in tried:
    t["latency_ms"] = lat["ms"][t["label"]]
display(Markdown(markdown_table([{"method": t["label"], "latency (ms)": f"{t['latency_ms']:.3f}",
                                  "speed-up": f"{tried[0]['latency_ms'] / t['latency_ms']:.2f}x"} for t in tried])))

# %% [markdown]
# ## The trade-offs

# %% tags=["nbval-ignore-output"]
fig = pareto_figure(tried, "which method? accuracy vs size and latency, every setting tried", dev)
floor = 100 * teacher_acc - max_drop
fig.add_hline(y=floor, line_dash="dash", line_color="red", annotation_text=f"budget: -{max_drop:g} points")
if max_size_kib:
    fig.add_vline(x=max_size_kib, line_dash="dash", line_color="red", row=1, col=1)
show(fig)

# %% [markdown]
# ## The pick
# Among the results within budget, the one with the smallest size (or latency).

# %%
fits = [t for t in tried if 100 * (teacher_acc - t["accuracy"]) <= max_drop + 1e-9
        and (not max_size_kib or t["size_bytes"] / 1024 <= max_size_kib)]
if not fits:
    print(f"nothing fits: no setting loses at most {max_drop:g} points"
          + (f" within {max_size_kib:g} KiB" if max_size_kib else "") + "; loosen the budget or train longer")
    pick = None
else:
    key = "size_bytes" if objective == "size" else "latency_ms"
    pick = min(fits, key=lambda t: (t[key], -t["accuracy"]))
    print(f"{len(fits)} of {len(tried)} results fit the budget (drop <= {max_drop:g} points"
          + (f", size <= {max_size_kib:g} KiB" if max_size_kib else "") + f"); smallest {objective}:")
    print(f"  {pick['label']}: accuracy {pick['accuracy']:.1%}, {pick['size_bytes'] / 1024:,.1f} KiB "
          f"({tried[0]['size_bytes'] / pick['size_bytes']:.1f}x smaller than fp32)")

# %% [markdown]
# ## The same budget, searched: `slimkit.autotune`
# The grid above tries one method and one global setting at a time. `slimkit.autotune` measures
# each layer's sensitivity to each option (bits, sparsity, units removed), picks per-layer
# settings with a knapsack under the budget, builds and scores whole models, and backs off or
# pushes layer by layer. Its sizes are of the entropy-coded artifact, so the grid's pick is
# measured the same way here. A small time budget and few options per layer keep this notebook
# quick; more time and `options=None` (autotune's full grid) search further.

# %% tags=["nbval-ignore-output"]
tuned, tune_report = slimkit.autotune(teacher, data.test, max_drop=max_drop, objective=objective, device=dev,
                                      methods=("quantize", "prune", "sparsify", "structured"),
                                      train=data.train if finetune_epochs else None, epochs=finetune_epochs,
                                      time_budget_s=autotune_budget_s, max_trials=autotune_trials,
                                      options={"bits": autotune_bits, "sparsity": autotune_sparsity,
                                               "structured": structured_grid[-1:]} if objective == "size" else None)
summary = tune_report.summary
auto_acc = slimkit.evaluate(tuned, data.test)["accuracy"]
auto_coded = slimkit.size(tuned, entropy=True)
grid_coded = slimkit.size(models[pick["label"]], entropy=True) if pick else None
auto_ms = slimkit.latency({"fp32: teacher": teacher, "autotune": tuned}, data.test.X[:latency_batch],
                          rounds=timing_rounds, num_threads=timing_threads or None, device=device)["ms"]["autotune"]
print(f"autotune: {summary['trials']} trials in {summary['wall_s']:.1f} s, budget "
      f"{'met' if summary['budget_met'] else 'NOT met'}" + (f" ({summary['stopped']})" if summary["stopped"] else ""))
rows = [{"pick": "autotune", "test accuracy": f"{auto_acc:.1%}", "entropy-coded KiB": f"{auto_coded / 1024:,.1f}",
         "latency (ms)": f"{auto_ms:.3f}"}]
if pick:
    rows.insert(0, {"pick": f"grid: {pick['label']}", "test accuracy": f"{pick['accuracy']:.1%}",
                    "entropy-coded KiB": f"{grid_coded / 1024:,.1f}", "latency (ms)": f"{pick['latency_ms']:.3f}"})
display(Markdown(markdown_table(rows)))
if pick:
    print(f"autotune's pick is {grid_coded / auto_coded:.2f}x smaller (entropy-coded) and "
          f"{pick['latency_ms'] / auto_ms:.2f}x as fast as the grid's")
display(Markdown(tune_report.to_markdown()))

# %%
metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "fits": len(fits),
           "pick": pick["label"] if pick else None,
           "pick_accuracy": pick["accuracy"] if pick else None, "pick_size_bytes": pick["size_bytes"] if pick else None,
           "pick_latency_ms": pick["latency_ms"] if pick else None,
           "tried": tried,
           "autotune_trials": summary["trials"], "autotune_budget_met": summary["budget_met"],
           "autotune_wall_s": summary["wall_s"], "autotune_accuracy": auto_acc, "autotune_size_bytes": auto_coded,
           "autotune_latency_ms": auto_ms, "grid_pick_size_bytes_entropy": grid_coded,
           "autotune_vs_grid_size": grid_coded / auto_coded if pick else None}
print("metrics ->", save_metrics(metrics))
