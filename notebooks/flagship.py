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
# # slimkit end to end: one model, four methods, one table
#
# The article's four ways to make a trained model cheaper to run, done for real on the digits
# CNN trained here: **quantization** (int8 and int4 weights), **pruning** (90% of the weights
# zeroed and fine-tuned; and structured pruning that physically removes half the neurons and
# channels), **knowledge distillation** (a student a quarter of the teacher's size learns from
# its soft targets) and **sparse representation** (the pruned weights stored as CSR/bitmask).
# Every result is compared on test accuracy, saved size and latency, in a table and a Pareto plot.
# The defaults run in well under a minute on two CPU cores; raise the epochs for better students.
#
# Run it headless (papermill underneath; one directory per run with the output notebook,
# `params.yaml`, `metrics.json`, `status.json`, an HTML report and a row in the run records):
#
# ```bash
# slimkit params notebooks/flagship.ipynb            # the parameters below, with their types and help
# slimkit run notebooks/flagship.ipynb --out runs/ -p distill_epochs 20
# ```

# %% tags=["parameters"]
seed: int = 0  # seeds the teacher's training, fine-tuning and distillation
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (accuracy is computed on the CPU)
latency_batch: int = 64  # inputs per timed forward pass, in [1, 4096]
timing_rounds: int = 7  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]

quant_bits: list = [8, 4]  # weight bits of the quantized variants (per-channel, symmetric), each in 2..8
prune_sparsity: float = 0.9  # unstructured pruning: fraction of the weights zeroed, in [0, 1)
structured_sparsity: float = 0.5  # structured pruning: fraction of neurons/channels removed, in [0, 1)
prune_steps: int = 3  # unstructured pruning in this many steps (cubic schedule), fine-tuning after each, in [1, 20]
prune_scope: str = "global"  # rank weights within each layer or across all layers (spares small layers): one of layer, global
finetune_epochs: int = 1  # fine-tuning epochs after each pruning step (0: none), in [0, 100]
student_width: float = 0.5  # distillation student's width relative to the teacher, in (0, 1]
finetune_lr: float = 0.004  # fine-tuning learning rate (Adam), in (0, 1]
distill_epochs: int = 8  # distillation epochs, in [1, 500]
distill_lr: float = 0.005  # distillation learning rate (Adam), in (0, 1]
temperature: float = 4.0  # distillation temperature, in (0, 100]
alpha: float = 0.7  # weight of the teacher's soft targets (0: labels only), in [0, 1]
sparse_format: str = "auto"  # how the pruned weights are stored: one of auto, csr, bitmask
arch: str = "cnn"  # the digits teacher: one of cnn, mlp

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
# ## The results, as they come
# `results` maps a short key to *(label, model, what was done)*. Every method returns a new
# model and a per-layer report; the teacher is never modified.

# %%
results = {"fp32": ("fp32 teacher", teacher, "the original")}
finetune = dict(data=data.train, epochs=finetune_epochs, lr=finetune_lr) if finetune_epochs else None

for bits in quant_bits:  # 1. quantization: real integer storage (int8 also runs int8 matmuls)
    model, report = slimkit.quantize(teacher, bits=bits)
    kind = "simulated" if report.simulated else "real"
    results[f"int{bits}"] = (f"int{bits}", model, f"{bits}-bit per-channel weights ({kind})")
    print(f"int{bits}: {report.summary['quantized_layers']} layers, weight SQNR "
          f"{report.summary['weight_sqnr_db_min']:.1f} dB at worst, {kind} quantization")

# 2. pruning: unstructured (magnitude), fine-tuned with the pruned weights held at zero. A global
#    ranking leaves the tiny first conv most of its weights (90% of each layer would cost it dearly).
pruned, report = slimkit.prune(teacher, prune_sparsity, scope=prune_scope, steps=prune_steps,
                               finetune=finetune, seed=seed)
results["pruned"] = (f"pruned {prune_sparsity:.0%}", pruned, f"{prune_sparsity:.0%} of weights zeroed in "
                     f"{prune_steps} steps, {finetune_epochs} fine-tune epoch(s) each, stored dense")
# ... and structured: whole neurons/channels removed, so the layers really shrink
slim, report = slimkit.prune(teacher, structured_sparsity, structured=True, finetune=finetune, seed=seed)
results["structured"] = (f"structured {structured_sparsity:.0%}", slim,
                         f"{structured_sparsity:.0%} of units removed, {finetune_epochs} fine-tune epoch(s)")
display(Markdown(report.to_markdown()))

# %%
# 3. distillation: a narrower copy of the teacher, re-initialised, learns from its soft targets
student = slimkit.shrink(teacher, student_width, seed=seed)
distilled, report = slimkit.distill(teacher, student, data.train, temperature=temperature, alpha=alpha,
                                    epochs=distill_epochs, lr=distill_lr, seed=seed)
results["distilled"] = (f"student x{student_width:g}", distilled,
                        f"{report.summary['params_ratio']:.0%} of the teacher's parameters, {distill_epochs} epochs")

# 4. sparse representation: the pruned model's zeros stored sparse (index bytes counted)
sparse, report = slimkit.sparsify(pruned, format=sparse_format)
results["sparse"] = (f"pruned {prune_sparsity:.0%} + sparse", sparse,
                     "formats: " + ", ".join(f"{n} {k}" for k, n in report.summary["formats"].items() if n))
display(Markdown(report.to_markdown()))

# %% [markdown]
# ## Compare: accuracy and size
# `slimkit.compare` measures every model the same way; size is the saved artifact
# (`slimkit.size`: bytes of `slimkit.save`, metadata included).

# %%
rows = slimkit.compare(teacher, {k: model for k, (_, model, _) in results.items() if k != "fp32"}, data.test,
                       original_name="fp32")  # one row per model: accuracy, drop, saved bytes, size ratio
for r in rows:
    r["label"], _, r["how"] = results[r["method"]]
    r["group"] = r["label"]
display(Markdown(markdown_table([{
    "method": r["label"], "what was done": r["how"], "test accuracy": f"{r['accuracy']:.1%}",
    "drop": f"{r['drop_pts']:.1f} pt", "size (KiB)": f"{r['size_bytes'] / 1024:,.1f}",
    "smaller": f"{r['size_ratio']:.1f}x"} for r in rows])))

# %% [markdown]
# ## Latency
# Timed side by side in this run by `slimkit.latency`, the models alternating round by round (a
# shared machine makes absolute numbers noisy; the ratios are what to compare). The int8 model runs
# integer matmuls; int4 stores packed weights and computes in fp32; structured pruning and the
# student do less work; unstructured zeros only pay off where a sparse kernel is faster than dense,
# which on a CPU needs very high sparsity.

# %% tags=["nbval-ignore-output"]
lat = slimkit.latency({k: model for k, (_, model, _) in results.items()}, data.test.X[:latency_batch],
                      rounds=timing_rounds, num_threads=timing_threads or None, device=device)
for r in rows:
    r["latency_ms"] = lat["ms"][r["method"]]
print(f"batch of {lat['batch']} on {lat['device']}, {lat['threads']} thread(s); failed: {lat['errors'] or 'none'}")
display(Markdown(markdown_table([{
    "method": r["label"], "latency (ms)": f"{r['latency_ms']:.3f}",
    "speed-up": f"{rows[0]['latency_ms'] / r['latency_ms']:.2f}x"} for r in rows])))

# %% [markdown]
# ## The trade-off: Pareto plot
# Points on the dotted line are not beaten on both axes by any other result.

# %% tags=["nbval-ignore-output"]
fig = pareto_figure(rows, "digits CNN: accuracy vs size and latency", dev)
show(fig)  # plotly JSON (interactive in JupyterLab) + a small SVG (reports, other viewers; no CDN)

# %%
metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc}
for r in rows:
    metrics.update({f"{r['method']}_{k}": r[k] for k in ("accuracy", "size_bytes", "size_ratio", "latency_ms")})
print("metrics ->", save_metrics(metrics))  # metrics.json beside the output notebook: what `slimkit run` records
