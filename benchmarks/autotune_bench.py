"""slimkit.autotune on the digits CNN, against what a user or another tool would do by hand.

    .venv/bin/python -m benchmarks.autotune_bench            # ~10-20 min on 2 quiet cores
    .venv/bin/python -m benchmarks.autotune_bench --quick    # smoke run, numbers not meaningful

- size: ``autotune(max_drop=0.5, objective="size")`` vs a search over ONE global quantization
  setting (bits 8/4/3/2 per channel, the smallest within the budget: what Intel Neural
  Compressor's autotune and NNCF's accuracy control search), sizes entropy-coded for both.
  (The best hand composition is benchmarks/deep_compression.py's table.)
- latency: ``autotune(max_drop=0.5, objective="latency")`` vs the best single method today,
  structured 50% + fine-tune (slimkit.zoo.demo's recipe), timed side by side in one run.
Accuracy on the digits test split (450 images); fine-tuning on the training split.
"""
from __future__ import annotations

import os
import time

import torch

import slimkit
from benchmarks.common import start
from slimkit.data import load_digits
from slimkit.zoo import demo
from slimkit.zoo.models import pretrained_digits

MAX_DROP = 0.5


def _acc(model, test) -> float:
    return 100.0 * slimkit.evaluate(model, test)["accuracy"]


def global_quant_search(model, test, base_acc) -> tuple[dict, int]:
    """The smallest single global bit width within the budget (INC/NNCF-style search)."""
    best, trials = None, 0
    for bits in (8, 4, 3, 2):
        q, _ = slimkit.quantize(model, bits=bits, granularity="per_channel")
        trials += 1
        drop = base_acc - _acc(q, test)
        row = {"how": f"global int{bits} per channel", "bytes": slimkit.size(q, entropy=True), "drop": drop}
        if drop <= MAX_DROP and (best is None or row["bytes"] < best["bytes"]):
            best = row
    return best, trials


def main() -> int:
    args = start(__doc__.splitlines()[0])
    digits = load_digits(seed=0)
    test, train = digits.test, digits.train
    cnn = pretrained_digits("cnn", seed=0)
    base_acc, base_bytes = _acc(cnn, test), slimkit.size(cnn)
    epochs = 1 if args.quick else 2
    budget = 120 if args.quick else 420  # seconds per autotune run (a loaded machine ends it early: said below)

    print("\n## size objective (digits CNN, max_drop 0.5 pt)\n")
    t = time.perf_counter()
    glob_best, glob_trials = global_quant_search(cnn, test, base_acc)
    glob_s = time.perf_counter() - t
    t = time.perf_counter()
    model, report = slimkit.autotune(cnn, test, max_drop=MAX_DROP, objective="size", train=train, epochs=epochs,
                                     methods=("quantize", "prune", "sparsify"), time_budget_s=budget,
                                     options={"bits": (8, 4, 2), "sparsity": (0.75, 0.9, 0.95)})
    auto_s = time.perf_counter() - t
    s = report.summary
    print("| search | pick | artifact bytes | ratio vs fp32 | drop (pt) | whole-model trials | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print(f"| one global quantization setting | {glob_best['how']} | {glob_best['bytes']:,} | "
          f"{base_bytes / glob_best['bytes']:.1f}x | {glob_best['drop']:+.2f} | {glob_trials} | {glob_s:.0f} |")
    if s.get("bytes"):
        pick = "; ".join(f"{n}: {v}" for n, v in report.trials[s["pick_trial"]]["settings"].items())
        print(f"| slimkit.autotune (per layer, composed) | {pick} | {s['bytes']:,} | {s['size_ratio']:.1f}x | "
              f"{s['drop']:+.2f} | {s['trials']} | {auto_s:.0f} |")
    print(f"\nautotune: budget met {s['budget_met']}, stopped: {s['stopped']}; "
          f"{sum(1 for _ in report.trials)} trials, Pareto {report.pareto}")

    print("\n## latency objective (digits CNN, max_drop 0.5 pt, batch 256, 1 thread)\n")
    t = time.perf_counter()
    structured, _ = demo.structured(cnn, train, 0, demo.Settings.quick() if args.quick else demo.Settings())
    hand_s = time.perf_counter() - t
    t = time.perf_counter()
    x = test.X[:256]
    lmodel, lreport = slimkit.autotune(cnn, (x, test.y[:256]) if args.quick else test, max_drop=MAX_DROP,
                                       objective="latency", train=train, epochs=4 if not args.quick else 1,
                                       methods=("quantize", "structured", "distill"), time_budget_s=budget,
                                       options={"bits": (8,), "structured": (0.25, 0.5, 0.75)})
    lauto_s = time.perf_counter() - t
    lat = slimkit.latency({"fp32": cnn, "structured 50% + FT": structured, "autotune pick": lmodel},
                          torch.cat([test.X] * 2)[:256], rounds=9)
    ms = lat["ms"]
    print("| model | accuracy | drop (pt) | latency ms | speed-up | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m, wall in (("fp32", cnn, 0), ("structured 50% + FT (best single method)", structured, hand_s),
                          ("slimkit.autotune latency pick", lmodel, lauto_s)):
        key = name if name in ms else ("structured 50% + FT" if name.startswith("structured") else "autotune pick")
        acc = _acc(m, test)
        print(f"| {name} | {acc:.2f}% | {base_acc - acc:+.2f} | {ms[key]:.3f} | {ms['fp32'] / ms[key]:.2f}x | "
              f"{wall:.0f} |")
    ls = lreport.summary
    print(f"\nautotune latency: budget met {ls['budget_met']}, stopped: {ls['stopped']}; {ls['trials']} trials; "
          f"pick {lreport.trials[ls['pick_trial']]['settings'] if ls.get('pick_trial') is not None else None}")
    print(f"\nload average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
