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
# # Knowledge distillation: a small student learns from a large teacher
#
# `slimkit.shrink` makes a narrower copy of the teacher (every hidden layer keeps `width` of its
# units, freshly initialised); `slimkit.distill` trains it on the teacher's temperature-softened
# outputs mixed with the labels (Hinton et al.). With `noise > 0` the soft targets are the
# article's noise-averaged teacher: the expected output over random perturbations of the
# teacher's weights. A student trained on labels alone, same recipe, is the baseline.
#
# Run it headless (papermill underneath; one directory per run with the output notebook,
# `params.yaml`, `metrics.json`, `status.json`, an HTML report and a row in the run records):
#
# ```bash
# slimkit params notebooks/distill.ipynb            # the parameters below, with their types and help
# slimkit run notebooks/distill.ipynb -p epochs 30 -p fraction 0.2
# ```

# %% tags=["parameters"]
seed: int = 0  # seeds the teacher's training, fine-tuning and distillation
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (accuracy is computed on the CPU)
latency_batch: int = 64  # inputs per timed forward pass, in [1, 4096]
timing_rounds: int = 7  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]

width: float = 0.5  # student width relative to the teacher, in (0, 1]
temperature: float = 4.0  # softens both distributions, in (0, 100]
alpha: float = 0.7  # weight of the soft-target term (0: labels only, 1: teacher only), in [0, 1]
noise: float = 0.0  # relative std of the teacher's weight noise (the article's noise-averaged teacher), in [0, 1]
epochs: int = 6  # training epochs, in [1, 500]
lr: float = 0.005  # learning rate (Adam), in (0, 1]
fraction: float = 1.0  # share of the training set used (soft targets matter most on little data), in (0, 1]
baseline: bool = True  # also train the same student on labels only
arch: str = "cnn"  # the digits teacher: one of cnn, mlp

# %%
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

# %%
from slimkit.data import subset

train = data.train if fraction >= 1 else subset(data.train, fraction, seed=seed)
student = slimkit.shrink(teacher, width, seed=seed)
n_teacher, n_student = (sum(p.numel() for p in m.parameters()) for m in (teacher, student))
print(f"student: {n_student:,} parameters, {n_student / n_teacher:.1%} of the teacher's; "
      f"training on {len(train)} images")

def curve(into):  # collects the per-epoch numbers distill/fit report through callbacks
    return lambda event: into.append(dict(event.metrics)) if event.kind == "metrics" else None

runs = {}
for name, a in [("distilled", alpha)] + ([("labels only", 0.0)] if baseline else []):
    history = []
    model, report = slimkit.distill(teacher, student, train, temperature=temperature, alpha=a,
                                    noise=noise if a else 0.0, epochs=epochs, lr=lr, val_data=data.test, seed=seed,
                                    callbacks=curve(history))
    runs[name] = dict(model=model, history=history, **slimkit.evaluate(model, data.test, reference=teacher))
display(Markdown(markdown_table([{
    "student": name, "test accuracy": f"{r['accuracy']:.1%}", "agrees with teacher": f"{r['agreement']:.1%}",
    "size (KiB)": f"{slimkit.size(r['model']) / 1024:,.1f}"} for name, r in runs.items()]
    + [{"student": "(teacher)", "test accuracy": f"{teacher_acc:.1%}", "agrees with teacher": "100.0%",
        "size (KiB)": f"{slimkit.size(teacher) / 1024:,.1f}"}])))

# %% tags=["nbval-ignore-output"]
fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "test accuracy per epoch"))
for i, (name, r) in enumerate(runs.items()):
    epochs_x = list(range(1, len(r["history"]) + 1))
    color = ("#1f77b4", "#d62728")[i]
    fig.add_scatter(x=epochs_x, y=[h["loss"] for h in r["history"]], name=name, line=dict(color=color), row=1, col=1)
    fig.add_scatter(x=epochs_x, y=[100 * h["val_accuracy"] for h in r["history"]], name=name, showlegend=False,
                    line=dict(color=color), row=1, col=2)
fig.update_xaxes(title_text="epoch")
fig.update_layout(template="plotly_white", height=400, title=f"student x{width:g}: distilled vs labels only")
show(fig)

# %% tags=["nbval-ignore-output"]
lat = slimkit.latency({"base": teacher, "new": runs["distilled"]["model"]}, data.test.X[:latency_batch],
                      rounds=timing_rounds, num_threads=timing_threads or None, device=device)
base_ms, new_ms = lat["ms"]["base"], lat["ms"]["new"]  # medians of alternating rounds
print(f"latency per batch of {latency_batch} on {lat['device']}, {lat['threads']} thread(s): "
      f"teacher {base_ms:.3f} ms, student {new_ms:.3f} ms ({base_ms / new_ms:.2f}x)")

# %%
metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "params_ratio": n_student / n_teacher,
           "accuracy": runs["distilled"]["accuracy"], "agreement": runs["distilled"]["agreement"],
           "size_bytes": slimkit.size(runs["distilled"]["model"]), "teacher_size_bytes": slimkit.size(teacher),
           "latency_ms": new_ms, "teacher_latency_ms": base_ms}
if baseline:
    metrics["labels_only_accuracy"] = runs["labels only"]["accuracy"]
print("metrics ->", save_metrics(metrics))
