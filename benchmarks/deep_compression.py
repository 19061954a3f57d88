"""Deep Compression on the digits models: pruned -> + quantized -> + entropy-coded, each stage's
artifact ratio and accuracy, as Han et al. tabulate it (LeNet-300-100: 40x, no accuracy loss).

    .venv/bin/python -m benchmarks.deep_compression            # ~3-6 min on 2 quiet cores
    .venv/bin/python -m benchmarks.deep_compression --quick    # smoke run, numbers not meaningful

Every size is a real artifact's bytes (``slimkit.size``, what ``slimkit.save`` writes: indices,
scales/codebooks, masks and metadata counted); ratios are fp32 artifact bytes / stage bytes.
The quantization stage is codebook quantization with trained centroids where this slimkit has
``quantize(method="codebook")``, else affine per-channel int (the table says which).
Issue 12's target: the CNN >= 40x smaller at <= 0.5 pt accuracy drop.
"""
from __future__ import annotations

import os
import time

import slimkit
from benchmarks.common import start
from slimkit.data import load_digits
from slimkit.tuning.build import CAN
from slimkit.zoo.models import pretrained_digits

TARGET_RATIO, TARGET_DROP = 40.0, 0.5
RECIPES = {  # arch: (global sparsity, bits); chosen on the training split's needs, not on the test set
    "cnn": (0.95, 4),
    "mlp": (0.9, 4),
}


def _acc(model, test) -> float:
    return 100.0 * slimkit.evaluate(model, test)["accuracy"]


def stages(arch: str, digits, quick: bool) -> list[dict]:
    sparsity, bits = RECIPES[arch]
    steps, epochs = (1, 1) if quick else (3, 3)
    model = pretrained_digits(arch, seed=0)
    test, train = digits.test, digits.train
    rows = [{"stage": "fp32", "bytes": slimkit.size(model), "accuracy": _acc(model, test), "note": ""}]
    pruned, _ = slimkit.prune(model, sparsity, scope="global", steps=steps, seed=0,
                              finetune={"data": train, "epochs": epochs})
    stored, _ = slimkit.sparsify(pruned, format="auto")
    rows.append({"stage": "pruned", "bytes": slimkit.size(stored), "accuracy": _acc(stored, test),
                 "note": f"{sparsity:.0%} global magnitude, {steps} steps + fine-tune, stored sparse (auto format)"})
    if CAN["codebook"]:
        q, _ = slimkit.quantize(pruned, bits=bits, method="codebook", finetune={"data": train, "epochs": epochs})
        how = f"codebook {2 ** bits} shared values per layer, centroids trained"
    else:
        q, _ = slimkit.quantize(pruned, bits=bits, granularity="per_channel")
        how = f"affine int{bits} per channel (no codebook quantization in this build)"
    how += ", pruned zeros kept as exact zeros in the dense indices (sparse integer storage is not built yet)"
    rows.append({"stage": "+ quantized", "bytes": slimkit.size(q), "accuracy": _acc(q, test), "note": how})
    rows.append({"stage": "+ entropy", "bytes": slimkit.size(q, entropy=True), "accuracy": rows[-1]["accuracy"],
                 "note": "slimkit.size(entropy=True) = the saved file's bytes"})
    base = rows[0]
    for r in rows:
        r["ratio"] = base["bytes"] / r["bytes"]
        r["drop"] = base["accuracy"] - r["accuracy"]
    return rows


def main() -> int:
    args = start(__doc__.splitlines()[0])
    t0 = time.perf_counter()
    digits = load_digits(seed=0)
    ok = True
    for arch in RECIPES:
        rows = stages(arch, digits, args.quick)
        print(f"\n### Digits {arch.upper()} (test split, {len(digits.test)} images)\n")
        print("| stage | artifact bytes | ratio vs fp32 | accuracy | drop (pt) | how |")
        print("|---|---:|---:|---:|---:|---|")
        for r in rows:
            print(f"| {r['stage']} | {r['bytes']:,} | {r['ratio']:.1f}x | {r['accuracy']:.2f}% | {r['drop']:+.2f} | "
                  f"{r['note']} |")
        if arch == "cnn":
            final = rows[-1]
            met = final["ratio"] >= TARGET_RATIO and final["drop"] <= TARGET_DROP
            ok &= met
            print(f"\nTARGET CNN >= {TARGET_RATIO:.0f}x at <= {TARGET_DROP} pt drop: "
                  f"{final['ratio']:.1f}x at {final['drop']:+.2f} pt -> {'met' if met else 'NOT met'}")
    print(f"\nwall {time.perf_counter() - t0:.0f} s; load average at end: {os.getloadavg()}")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
