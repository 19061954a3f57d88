"""Deep Compression on the digits models: pruned -> + quantized -> + entropy-coded, each stage's
artifact ratio and accuracy, as Han et al. tabulate it (LeNet-300-100: 40x, no accuracy loss).

    .venv/bin/python -m benchmarks.deep_compression            # ~3-6 min on 2 quiet cores
    .venv/bin/python -m benchmarks.deep_compression --quick    # smoke run, numbers not meaningful

Every size is a real artifact's bytes (``slimkit.size``, what ``slimkit.save`` writes: indices,
scales/codebooks, masks and metadata counted); ratios are fp32 artifact bytes / stage bytes.
The quantization stage is codebook quantization with trained centroids where this slimkit has
``quantize(method="codebook")``, else affine per-channel int (the table says which).
Issue 12's target: the CNN >= 40x smaller at <= 0.5 pt accuracy drop; the MLP within the same 0.5 pt.
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
RECIPES = {  # arch: (global sparsity, bits, pruning steps = epochs per step, layers left dense)
    "cnn": (0.95, 4, 3, ()),
    # MLP: 90% global pruning of all three layers cost 1.1 pt; the 128x10 output layer (1,280
    # weights, 2.5% of the model) is where global magnitude ranking cuts too deep. Left dense, with
    # 92% of the rest pruned in 5 steps of 5 epochs. Chosen on a validation split carved from the
    # training set (80/20, stratified, seed 1): the largest ratio among 85/88/90/92% whose val drop
    # was <= 0.5 pt (0.37 pt; 90% with the output layer pruned: 2.2 pt), never on the test set.
    "mlp": (0.92, 4, 5, ("net.5",)),
}


def _acc(model, test) -> float:
    return 100.0 * slimkit.evaluate(model, test)["accuracy"]


def _dense_note(dense) -> str:
    return f" ({', '.join(dense)} left dense)" if dense else ""


def stages(arch: str, digits, quick: bool) -> list[dict]:
    sparsity, bits, steps, dense = RECIPES[arch]
    steps, epochs = (1, 1) if quick else (steps, steps)
    model = pretrained_digits(arch, seed=0)
    test, train = digits.test, digits.train
    rows = [{"stage": "fp32", "bytes": slimkit.size(model), "accuracy": _acc(model, test), "note": ""}]
    pruned, _ = slimkit.prune(model, sparsity, scope="global", steps=steps, seed=0,
                              finetune={"data": train, "epochs": epochs}, exclude=list(dense) or None)
    stored, _ = slimkit.sparsify(pruned, format="auto")
    rows.append({"stage": "pruned", "bytes": slimkit.size(stored), "accuracy": _acc(stored, test),
                 "note": f"{sparsity:.0%} global magnitude{_dense_note(dense)}, {steps} steps x {epochs} epochs "
                         "fine-tune, stored sparse (auto format)"})
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
        final = rows[-1]
        ratio = TARGET_RATIO if arch == "cnn" else 1.0  # the MLP's budget is the accuracy drop alone
        met = final["ratio"] >= ratio and final["drop"] <= TARGET_DROP
        ok &= met
        print(f"\nTARGET {arch.upper()} {f'>= {ratio:.0f}x ' if arch == 'cnn' else ''}at <= {TARGET_DROP} pt drop: "
              f"{final['ratio']:.1f}x at {final['drop']:+.2f} pt -> {'met' if met else 'NOT met'}")
    print(f"\nwall {time.perf_counter() - t0:.0f} s; load average at end: {os.getloadavg()}")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
