"""slimkit.autotune on the digits CNN, side by side with what a user or another tool would do by hand.

    .venv/bin/python -m benchmarks.autotune_bench            # ~10-15 min on 2 quiet cores
    .venv/bin/python -m benchmarks.autotune_bench --quick    # smoke run, numbers not meaningful

Size (max_drop 0.5 pt, bytes = entropy-coded artifact, what ``slimkit.save(entropy=True)`` writes):
- the hand composition: benchmarks/deep_compression.py's recipe (prune 95% global + fine-tune ->
  codebook 4-bit, trained centroids -> entropy-coded), imported, not copied;
- ``autotune(objective="size")``: composed, per-layer;
- one global quantization setting (bits 8/4/3/2 per channel, the smallest within the budget: what
  Intel Neural Compressor's autotune and NNCF's accuracy control search).
Latency (batch 256, 2 threads, timed side by side in one run):
- structured 50% + fine-tune only (slimkit.zoo.demo's recipe, the best single method);
- ``autotune(objective="latency")``.
Accuracy on the digits test split (450 images); fine-tuning on the training split. Writes
benchmarks/results/autotune.md and .json.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

import slimkit
from benchmarks.common import start
from benchmarks.deep_compression import stages
from slimkit.data import load_digits
from slimkit.zoo import demo
from slimkit.zoo.models import pretrained_digits

MAX_DROP = 0.5
OUT = Path(__file__).parent / "results"


def _acc(model, test) -> float:
    return 100.0 * slimkit.evaluate(model, test)["accuracy"]


def _shapes(model) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(p.shape)) for n, p in model.state_dict().items()]


def global_quant_search(model, test, base_acc) -> dict:
    """The smallest single global bit width within the budget (INC/NNCF-style search)."""
    best, trials, t = None, 0, time.perf_counter()
    for bits in (8, 4, 3, 2):
        q, _ = slimkit.quantize(model, bits=bits, granularity="per_channel")
        trials += 1
        drop = base_acc - _acc(q, test)
        row = {"how": f"global int{bits} per channel", "bytes": slimkit.size(q, entropy=True), "drop": drop}
        if drop <= MAX_DROP and (best is None or row["bytes"] < best["bytes"]):
            best = row
    return {**(best or {"how": "none within budget", "bytes": None, "drop": None}), "trials": trials,
            "wall_s": time.perf_counter() - t}


def hand_composition(digits, quick: bool) -> dict:
    t = time.perf_counter()
    final = stages("cnn", digits, quick)[-1]
    return {"how": "prune 95% global + FT -> codebook 4b trained -> entropy (deep_compression.py)",
            "bytes": final["bytes"], "drop": final["drop"], "trials": 1, "wall_s": time.perf_counter() - t}


def autotuned(cnn, digits, objective: str, quick: bool, budget: float) -> tuple[torch.nn.Module, dict]:
    test, train = digits.test, digits.train
    if objective == "size":
        kw = {"methods": ("quantize", "prune", "sparsify"), "epochs": 1 if quick else 3,
              "options": {"bits": (8, 4, 3, 2), "sparsity": (0.9, 0.95)}}
    else:
        kw = {"methods": ("quantize", "structured", "distill"), "epochs": 1 if quick else 4,
              "options": {"bits": (8,), "structured": (0.25, 0.5, 0.75)}}
    t = time.perf_counter()
    model, report = slimkit.autotune(cnn, test, max_drop=MAX_DROP, objective=objective, train=train,
                                     time_budget_s=budget, **kw)
    s = report.summary
    pick = report.trials[s["pick_trial"]]["settings"] if s.get("pick_trial") is not None else {}
    return model, {"how": "; ".join(f"{n}: {v}" for n, v in pick.items()), "bytes": s.get("bytes"),
                   "drop": s.get("drop"), "trials": s["trials"], "wall_s": time.perf_counter() - t,
                   "budget_met": s["budget_met"], "stopped": s["stopped"], "unavailable": s.get("unavailable"),
                   "trial_rows": [{k: v for k, v in r.items() if k not in ("key", "options", "start")}
                                  for r in report.trials]}


def main() -> int:
    args = start(__doc__.splitlines()[0])
    t0 = time.perf_counter()
    digits = load_digits(seed=0)
    test, train = digits.test, digits.train
    cnn = pretrained_digits("cnn", seed=0)
    base_acc, base_bytes = _acc(cnn, test), slimkit.size(cnn)
    budget = 120 if args.quick else 600  # seconds per autotune run (the cap is said in the output)
    lines = [f"# autotune on the digits CNN (max_drop {MAX_DROP} pt)", "",
             (f"Command: `.venv/bin/python -m benchmarks.autotune_bench{' --quick' if args.quick else ''}`; "
             f"load average at start {os.getloadavg()[0]:.1f}; each autotune run capped at {budget} s."), ""]

    size_rows = {"hand composition (best hand-made)": hand_composition(digits, args.quick),
                 "one global quantization setting (INC/NNCF-style)": global_quant_search(cnn, test, base_acc)}
    _, size_rows["slimkit.autotune size pick (per layer, composed)"] = autotuned(cnn, digits, "size", args.quick,
                                                                               budget)
    lines += ["## size (bytes entropy-coded, fp32 artifact {} bytes)".format(f"{base_bytes:,}"), "",
              "| search | pick | artifact bytes | ratio vs fp32 | drop (pt) | whole-model trials | wall s |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in size_rows.items():
        ratio = f"{base_bytes / r['bytes']:.1f}x" if r["bytes"] else "-"
        drop = f"{r['drop']:+.2f}" if r["drop"] is not None else "-"
        lines.append(f"| {name} | {r['how']} | {r['bytes'] or 0:,} | {ratio} | {drop} | {r['trials']} | "
                     f"{r['wall_s']:.0f} |")
    auto = size_rows["slimkit.autotune size pick (per layer, composed)"]
    hand = size_rows["hand composition (best hand-made)"]
    lines += ["", (f"autotune size: budget met {auto['budget_met']}, stopped: {auto['stopped']}; target "
              f"'at least as small as the hand composition': "
              f"{'met' if auto['bytes'] and auto['bytes'] <= hand['bytes'] else 'NOT met'}"), ""]

    t = time.perf_counter()
    structured, _ = demo.structured(cnn, train, 0, demo.Settings.quick() if args.quick else demo.Settings())
    hand_s = time.perf_counter() - t
    lmodel, lauto = autotuned(cnn, digits, "latency", args.quick, budget)
    x = torch.cat([test.X] * 2)[:256]
    ms = slimkit.latency({"fp32": cnn, "structured": structured, "autotune": lmodel}, x, rounds=9)["ms"]
    lat_rows = [("fp32", cnn, "fp32", "-", "-", 0.0), ("structured 50% + FT only (best single method)", structured,
                                                       "structured", "demo.structured", 1, hand_s),
                ("slimkit.autotune latency pick", lmodel, "autotune", lauto["how"], lauto["trials"],
                 lauto["wall_s"])]
    lines += ["## latency (batch 256, timed side by side in one run)", "",
              "| model | pick | accuracy | drop (pt) | latency ms | speed-up | trials | wall s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, m, k, how, trials, wall in lat_rows:
        acc = _acc(m, test)
        lines.append(f"| {name} | {how} | {acc:.2f}% | {base_acc - acc:+.2f} | {ms[k]:.3f} | "
                     f"{ms['fp32'] / ms[k]:.2f}x | {trials} | {wall:.0f} |")
    lauto["speedup"], structured_speedup = ms["fp32"] / ms["autotune"], ms["fp32"] / ms["structured"]
    # the same layer shapes run the same kernels: a gap between them is timing noise, not a result
    lauto["same_shapes_as_structured"] = _shapes(lmodel) == _shapes(structured)
    verdict = ("tie: the pick has the structured recipe's layer shapes (the gap is timing noise)"
               if lauto["same_shapes_as_structured"] else
               "met" if lauto["speedup"] >= structured_speedup else "NOT met")
    lines += ["", (f"autotune latency: budget met {lauto['budget_met']}, stopped: {lauto['stopped']}; target 'at "
              f"least as fast as structured only': {verdict} ({lauto['speedup']:.2f}x vs {structured_speedup:.2f}x)"),
              f"options autotune could not use: {lauto['unavailable'] or 'none'}", "",
              f"wall {time.perf_counter() - t0:.0f} s; load average at end {os.getloadavg()}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:  # a smoke run's numbers are not results
        OUT.mkdir(exist_ok=True)
        (OUT / "autotune.md").write_text(text, encoding="utf-8")
        (OUT / "autotune.json").write_text(json.dumps({
            "baseline": {"accuracy": base_acc, "bytes": base_bytes}, "size": size_rows,
            "latency": {"ms": ms, "autotune": lauto, "structured_speedup": structured_speedup},
            "load_average_end": os.getloadavg(), "wall_s": time.perf_counter() - t0}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
