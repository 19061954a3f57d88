"""MiniLM compression: issue 12's two MiniLM targets, each stage's artifact ratio and fidelity.

    .venv/bin/python -m benchmarks.minilm_compress            # ~5-10 min on 2 quiet cores
    .venv/bin/python -m benchmarks.minilm_compress --quick    # smoke run: 64 sentences, numbers not meaningful
    .venv/bin/python -m benchmarks.minilm_compress --target gptq   # one recipe (size, mixed, gptq, gptq_ffn5)

Targets (all-MiniLM-L6-v2, ``slimkit.zoo.minilm.load_minilm``):
1. an artifact >= 8x smaller than fp32 at mean cosine >= 0.99;
2. per-layer mixed precision at top-1 retrieval agreement >= 99% and >= 3.5x smaller.

Sizes are ``slimkit.size(model, entropy=True)``, checked equal to the bytes ``slimkit.save(model,
path, entropy=True)`` writes (indices, scales/codebooks and metadata counted); ratios are fp32
artifact bytes / stage bytes. Fidelity is ``agreement(embed(model, texts, 32, fixed_shape=True),
reference_embeddings(texts))`` over ``bundled_sentences()``. Top-1 is also given on each half of the
sentences (retrieval within the half): the mixed-precision recipe was chosen looking at half A
only (the first half); half B (the second half) is held out.

The GPTQ recipes (``method="gptq"``) are calibrated on half A only (its sentences' token inputs);
cosine on all sentences and top-1 on each half are reported as for the others.

Recipes are sequences of ``slimkit.quantize`` calls, each on a group of layers (``include``):
a later call leaves the layers an earlier one compressed alone. This is how per-layer bits are
set with today's API (there is no per-layer bits map). Execution: codebook layers gather their
weight into float per call (SIMULATED compute, real storage); affine per-group layers hold real
integer weights with fp32 activations (no int8 kernel for per-group scales: "int8 weights,
float inputs"). Neither is a speed claim.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import slimkit
from benchmarks.common import HERE, quiet_libraries, start
from slimkit.zoo.minilm import agreement, bundled_sentences, embed, load_minilm, reference_embeddings, tokenize

EMB = ["*word_embeddings"]
OTHER_EMB = ["*position_embeddings", "*token_type_embeddings"]
ATTENTION = ["*.attention.*"]
FFN = ["*.intermediate.dense", "*[0-9].output.dense"]  # not attention.output.dense
LINEAR = ATTENTION + FFN


def group(bits: int, include: list[str], group_size: int | None = None, **more) -> dict:
    """One quantize call: affine per-group weights (32 values per scale unless group_size)."""
    return {"bits": bits, "granularity": "per_group", "group_size": group_size, "include": include, **more}


CALIB = "bundled sentences of half A"  # in a recipe: replaced by those sentences' batches at run time


def gptq(bits: int, include: list[str], group_size: int = 128) -> dict:
    """One quantize call: GPTQ-rounded per-group weights (act-order, fp16 scales), calibrated on half A."""
    return group(bits, include, group_size, method="gptq", act_order=True, scale_dtype="float16", data=CALIB)


def calibration(texts: list[str]) -> list[tuple]:
    """Half A as (input_ids, attention_mask) batches of 32, sentences of similar length together
    (little padding: padded positions feed the Linears' Hessians too)."""
    a = sorted(texts[halves(len(texts))[0]], key=len)
    return [tuple(tokenize(a[i:i + 32]).values()) for i in range(0, len(a), 32)]


# Target 1, stage by stage (each row adds its calls to the previous row's model). Explored with
# dynamic-shape embeddings (faster; see the report): a codebook of 16 shared values per layer
# everywhere reached 10.2x but mean cosine 0.907 (one codebook cannot follow per-channel scales);
# the word embeddings alone at int4 per row cost cosine 0.977 (top-1 85%), at int4 per group of
# 32 cosine 0.9986 (top-1 95.3%). The Linears are the wall: at int4 per group of 128, attention
# alone costs cosine 0.028, the FFN alone 0.037, all of them 0.062 (per group of 32: 0.044 at 7.3x).
# One-layer-at-a-time sensitivity (int4/128, 48 sentences of A) spreads it: the worst layer
# (layer.5 value) costs 0.009, the sum over 36 layers 0.055, so raising a few layers cannot reach
# 0.99 within 8x. Target 1 is NOT met with these tools (see the report).
SIZE_STAGES = [
    ("embeddings: word int4 per group of 64, position/type int8 per group",
     [group(4, EMB, 64), group(8, OTHER_EMB)]),
    ("+ every Linear int4 per group of 128", [group(4, LINEAR, 128)]),
]

# Target 2, chosen on half A. Explored with dynamic-shape embeddings: int8 per group everywhere
# 1 miss on A (3 on all), word embeddings alone at int6 per group 1 on A, at int5 per group of 64
# 1 on A (6 on B). Word embeddings int6 + the rest int8 (4.16x) then missed 2 of A with fixed
# shapes (6 of all: 98.1%), so every layer stays int8 per group. Linear weights are real int8 with
# fp32 activations (per-group scales have no int8 kernel: "int8 weights, float inputs"); int8
# activations (the 95.7% row of RESULTS.md) are not used. One row (each costs a fidelity pass).
MIXED_STAGES = [
    ("every embedding and Linear int8 per group of 32, fp32 activations",
     [group(8, EMB + OTHER_EMB), group(8, LINEAR)]),
]
# Target 1 with GPTQ (kit/quant/gptq.py): error-compensating rounding instead of round-to-nearest,
# and fp16 per-group scales (half the scale bytes). Explored with dynamic-shape embeddings (cosine
# over all 322 sentences), word embeddings int4/g64 + Linears at int4 per group of 128:
# round-to-nearest 0.936 (8.26x); GPTQ 0.978; GPTQ act-order 0.982; GPTQ asymmetric 0.985 but 7.93x
# (16 levels: the codes' entropy grows); GPTQ int4/g64 fp16 scales 0.982. With fp16 scales on the
# word embeddings too, GPTQ act-order int4/g128 is 8.67x at 0.982. The FFN (2/3 of the Linear
# weights) is the more sensitive part: the second recipe gives it 5 bits (7.95x at 0.9897: both
# limits missed narrowly, see benchmarks/results/minilm_compress_gptq*.md).
EMB16 = [group(4, EMB, 64, scale_dtype="float16"), group(8, OTHER_EMB)]
GPTQ_STAGES = [
    ("embeddings: word int4 per group of 64 (fp16 scales), position/type int8 per group", EMB16),
    ("+ every Linear GPTQ int4 per group of 128, act-order, fp16 scales (calibrated on half A)", [gptq(4, LINEAR)]),
]
GPTQ_FFN5_STAGES = [
    ("embeddings: word int4 per group of 64 (fp16 scales), position/type int8 per group", EMB16),
    ("+ attention Linears GPTQ int4, FFN Linears GPTQ int5, per group of 128, act-order, fp16 scales (half A)",
     [gptq(4, ATTENTION), gptq(5, FFN)]),
]
# Attention's value and output projections join the FFN at 5 bits: in the one-layer-at-a-time
# sensitivity on half A they are the attention Linears that cost most (layer 5's value is the worst
# layer of all); query and key stay at 4 bits. The word embeddings take one fp16 scale per 128
# values instead of 64 (half their scale bytes) to pay for it. Only layer 5's value/output and layer
# 4's value at 5 bits: 8.16x at 0.99188, but 0.98961 on the held-out half B.
SENSITIVE = ["*.attention.self.value", "*.attention.output.dense"]
GPTQ_MIX_STAGES = [
    ("embeddings: word int4 per group of 128 (fp16 scales), position/type int8 per group",
     [group(4, EMB, 128, scale_dtype="float16"), group(8, OTHER_EMB)]),
    ("+ attention query/key GPTQ int4, value/output and FFN GPTQ int5, per group of 128, act-order, fp16 scales "
     "(half A)", [{**gptq(4, ATTENTION), "exclude": SENSITIVE}, gptq(5, FFN + SENSITIVE)]),
]
TARGETS = {  # name: (title, stages, min ratio, metric, floor)
    "size": ("Target 1: >= 8x smaller at mean cosine >= 0.99", SIZE_STAGES, 8.0, "mean_cos", 0.99),
    "mixed": ("Target 2: per-layer mixed precision, top-1 >= 99% at >= 3.5x", MIXED_STAGES, 3.5, "top1", 0.99),
    "gptq": ("Target 1 with GPTQ: >= 8x smaller at mean cosine >= 0.99", GPTQ_STAGES, 8.0, "mean_cos", 0.99),
    "gptq_ffn5": ("Target 1 with GPTQ, FFN at 5 bits: >= 8x smaller at mean cosine >= 0.99", GPTQ_FFN5_STAGES, 8.0,
                  "mean_cos", 0.99),
    "gptq_mix": ("Target 1 with GPTQ, sensitive layers at 5 bits: >= 8x smaller at mean cosine >= 0.99",
                 GPTQ_MIX_STAGES, 8.0, "mean_cos", 0.99),
}


def halves(n: int) -> tuple[slice, slice]:
    """Selection half A (first) and held-out half B (second) of n sentences."""
    return slice(0, n // 2), slice(n // 2, n)


def fidelity_row(emb, ref) -> dict:
    """Mean/min cosine and top-1 over all sentences, plus mean cosine and top-1 within each half."""
    a = agreement(emb, ref)
    row = {"mean_cos": a["mean_cosine"], "min_cos": a["min_cosine"], "top1": a["top1_agreement"],
           "misses": int(a["top1_misses"])}
    for tag, part in zip("AB", halves(len(ref))):
        half = agreement(emb[part], ref[part])
        row[f"top1_{tag}"], row[f"mean_cos_{tag}"] = half["top1_agreement"], half["mean_cosine"]
    return row


def run_stages(model, stages, texts, ref, base_bytes: int) -> list[dict]:
    rows, calib = [], None
    for label, calls in stages:
        t0 = time.perf_counter()
        for kwargs in calls:  # one quantize call per group of layers; earlier groups are left alone
            if kwargs.get("data") == CALIB:
                calib = calib or calibration(texts)
                kwargs = {**kwargs, "data": calib}
            model = slimkit.quantize(model, **kwargs).model
        row = {"stage": label, "settings": calls,
               "bytes": slimkit.size(model), "bytes_entropy": slimkit.size(model, entropy=True)}
        row.update(fidelity_row(embed(model, texts, 32, fixed_shape=True), ref))
        row["ratio"], row["ratio_entropy"] = base_bytes / row["bytes"], base_bytes / row["bytes_entropy"]
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"  {label}: {row['ratio_entropy']:.2f}x (entropy), cos {row['mean_cos']:.4f}, "
              f"top-1 {row['top1']:.2%} ({row['seconds']:.0f} s)", flush=True)
    rows[-1]["saved_bytes"] = saved_bytes(model)
    return rows


def saved_bytes(model) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        slimkit.save(model, path, entropy=True)
        return path.stat().st_size


def _halves_cos(r: dict) -> str:
    return f" (A {r['mean_cos_A']:.5f}, B {r['mean_cos_B']:.5f})" if "mean_cos_B" in r else ""


def table(rows: list[dict]) -> list[str]:
    out = [("| stage | bytes | x smaller | entropy-coded bytes | x smaller | mean cos | min cos | top-1 all | "
           "top-1 A (chosen on) | top-1 B (held out) | misses |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['stage']} | {r['bytes']:,} | {r['ratio']:.2f}x | {r['bytes_entropy']:,} | "
                   f"{r['ratio_entropy']:.2f}x | {r['mean_cos']:.5f}{_halves_cos(r)} | {r['min_cos']:.4f} | {r['top1']:.1%} | "
                   f"{r['top1_A']:.1%} | {r['top1_B']:.1%} | {r['misses']} |")
    return out


def verdict(name: str, rows: list[dict], ratio: float, key: str, floor: float) -> tuple[bool, str]:
    last = rows[-1]
    met = last["ratio_entropy"] >= ratio and last[key] >= floor
    same = last["saved_bytes"] == last["bytes_entropy"]
    return met and same, (f"TARGET {name}: {last['ratio_entropy']:.2f}x (>= {ratio}x) at {key} {last[key]:.4f} "
                          f"(>= {floor}) -> {'met' if met else 'NOT met'}; saved file {last['saved_bytes']:,} bytes "
                          f"{'==' if same else '!='} slimkit.size(entropy=True)")


def _pop_target() -> list[str]:
    """``--target size|mixed`` (before ``start`` parses ``--quick``): run one target, e.g. the two
    in parallel processes; each then writes its own results file."""
    import sys

    if "--target" not in sys.argv:
        return list(TARGETS)
    i = sys.argv.index("--target")
    name = sys.argv[i + 1] if i + 1 < len(sys.argv) else ""
    if name not in TARGETS:
        raise SystemExit(f"--target: one of {', '.join(TARGETS)}")
    del sys.argv[i:i + 2]
    return [name]


def main() -> int:
    names = _pop_target()
    args = start(__doc__.splitlines()[0])
    quiet_libraries()
    t0 = time.perf_counter()
    texts = bundled_sentences()[: 64 if args.quick else None]
    ref = reference_embeddings(texts)
    fp32 = load_minilm()
    base = slimkit.size(fp32)
    lines = [f"fp32 artifact: {base:,} bytes; {len(texts)} sentences (A = first {len(texts) // 2}, B = the rest)", ""]
    results, ok = {"fp32_bytes": base, "sentences": len(texts)}, True
    for name in names:
        title, stages, ratio, metric, floor = TARGETS[name]
        print(title, flush=True)
        rows = run_stages(fp32, stages, texts, ref, base)
        met, line = verdict(name, rows, ratio, metric, floor)
        ok &= met
        results[name] = rows
        lines += [f"### {title}", "", *table(rows), "", line, ""]
    lines.append(f"wall {time.perf_counter() - t0:.0f} s; load average at end: {os.getloadavg()}")
    text = "\n".join(lines)
    print("\n" + text)
    stem = "minilm_compress" + ("" if len(names) > 1 else f"_{names[0]}") + ("_quick" if args.quick else "")
    out = HERE / "results" / stem
    out.with_suffix(".md").write_text(f"# MiniLM compression (benchmarks/minilm_compress.py)\n\n{text}\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
