"""Section 1: all-MiniLM-L6-v2 on the CPU, slimkit's int8 against what a user would pick instead.

Every row is built with the public APIs (``slimkit.quantize``, ``slimkit.accel.prepare``), timed
side by side with ``slimkit.accel.time_variants`` (order alternating round by round), and scored
with ``slimkit.zoo.minilm`` fidelity over the bundled sentences, computed by the row itself
(a compiled or exported copy rounds differently from its eager original).
"""
from __future__ import annotations

from typing import Any

import torch

import slimkit
from slimkit import accel
from slimkit.hardware import x86_without_int8_dot
from slimkit.quant.layers import QuantLinear
from slimkit.quant.smoothquant import smooth
from slimkit.zoo.minilm import agreement, bundled_sentences, embed, load_minilm, reference_embeddings

from .common import (Settings, calibration_batches, cpu_limit, first_call_seconds, log, minilm_inputs,
                     openvino_nncf_int8, timed)

SHAPES = ((1, 128), (32, 128))
BASELINE = "fp32 eager"
SLIMKIT_BEST = ("slimkit int8 + AOTInductor", "slimkit int8 + compile", "slimkit int8 (eager)")
ORT_INT8 = ("ORT int8 per-channel (fused)", "ORT int8 per-tensor (fused)")
TARGETS = {"cosine_min": 0.995, "top1_min": 0.99, "size_ratio_min": 3.9}
OPENVINO_PEER = "OpenVINO int8, NNCF PTQ"
# issue 13: slimkit's best int8 row (any backend running slimkit's recipe) against OpenVINO + NNCF
OV_TARGETS = {"cosine_min": 0.998, "size_ratio_min": 3.5}
SQ_ALPHA = 0.5
# A row whose single call takes this many times fp32's is timed once, not for rounds (torch._int_mm
# without VNNI runs 20x slower than fp32 at 32x128: rounds of it would take most of an hour).
SLOW_FACTOR = 8.0
SLOW_SENTENCES = 64


def _rows(s: Settings, example, fp32) -> dict[str, dict[str, Any]]:
    """Build every row once (one-time costs recorded): {name: {"run": Prepared, ...}}."""
    fp32_eager_attn = load_minilm("eager")  # ORT's attention fusion needs the plain-matmul attention
    (q, qreport), q_seconds = timed(slimkit.quantize, fp32, bits=8)
    fp32_bytes = slimkit.size(fp32)
    rows: dict[str, dict[str, Any]] = {}

    def add(name, build, size_bytes=None, note="", extra_setup=None, size_note=""):
        log(f"  building {name} ...")
        try:
            run = build()
        except Exception as e:  # a row that cannot be built is reported, not fatal
            log(f"  {name}: FAILED ({type(e).__name__}: {e})")
            rows[name] = {"error": f"{type(e).__name__}: {e}", "note": note}
            return
        setup = dict(extra_setup or {}, **run.setup_seconds)
        rows[name] = {"run": run, "size_bytes": size_bytes if size_bytes is not None else run.size_bytes,
                      "setup_s": setup, "note": note, "size_note": size_note, "describe": run.describe()}

    compile_opts = dict(freezing=True, mode=s.compile_mode, cache_dir=s.inductor_cache)
    add(BASELINE, lambda: accel.prepare(fp32, example, "eager"), fp32_bytes, "torch SDPA attention")
    add("slimkit int8 (eager)", lambda: accel.prepare(q, example, "eager"), slimkit.size(q),
        f"slimkit.quantize(model, bits=8): int8 per-channel weights; {_kernel(q)}",
        {"quantize": q_seconds})
    add("bf16 eager", lambda: accel.prepare(fp32, example, "eager", dtype="bfloat16"), fp32_bytes // 2,
        "yardstick: whole model in bfloat16 (half the bytes, not a 4x candidate)", size_note="fp32 size / 2")
    if s.compile:
        add("slimkit int8 + compile", lambda: accel.prepare(q, example, "compile", **compile_opts), slimkit.size(q),
            f"the same int8 model, torch.compile (inductor, freezing, mode={s.compile_mode})",
            {"quantize": q_seconds})
        add("slimkit int8 + AOTInductor",
            lambda: accel.prepare(q, example, "aoti", mode=s.compile_mode, cache_dir=s.inductor_cache,
                                  workdir=s.workdir / "aoti"), slimkit.size(q),
            f"the same int8 model, torch.export + AOTInductor (freezing, mode={s.compile_mode}): no per-call "
            "dynamo guards; one package per shape", {"quantize": q_seconds})
        add("torch.compile fp32", lambda: accel.prepare(fp32, example, "compile", **compile_opts), fp32_bytes,
            f"inductor, freezing, mode={s.compile_mode}")
    add("torchao int8 dynamic", lambda: accel.prepare(fp32, example, "torchao", config="int8_dynamic"), None,
        "torchao Int8DynamicActivationInt8WeightConfig on every Linear (embeddings stay fp32)",
        size_note="in-memory tensor bytes")
    if s.compile:
        add("torchao int8 dynamic + compile",
            lambda: accel.prepare(fp32, example, "torchao", config="int8_dynamic", compile=True,
                                  cache_dir=s.inductor_cache), None,
            "the same, torch.compile (default mode)", size_note="in-memory tensor bytes")
    ort_dir = s.workdir / "onnx"
    add("ORT fp32 (fused)", lambda: accel.prepare(fp32_eager_attn, example, "onnxruntime", workdir=ort_dir / "fp32"),
        None, "TorchScript export + ORT BERT fusions (Attention, SkipLayerNorm, EmbedLayerNorm, BiasGelu)")
    add(ORT_INT8[0], lambda: accel.prepare(fp32_eager_attn, example, "onnxruntime", quantize="int8",
                                           workdir=ort_dir / "int8pc"),
        None, "fused graph + quantize_dynamic(per_channel=True, QInt8 weights, uint8 per-tensor activations)")
    if not s.quick:
        add(ORT_INT8[1], lambda: accel.prepare(fp32_eager_attn, example, "onnxruntime", quantize="int8",
                                               per_channel=False, workdir=ort_dir / "int8pt"),
            None, "the same with per-tensor weight scales")
    # slimkit's own int8 recipe leaving torch: slimkit.export (QDQ / OpenVINO IR), then the runtime
    add("slimkit int8 via ORT (export)",
        lambda: accel.prepare(q, example, "onnxruntime", workdir=ort_dir / "slimkit"), None,
        "slimkit.export's QDQ graph of the same int8 model (int8 weights + DequantizeLinear, per-token dynamic "
        "activations written out) in ONNX Runtime", {"quantize": q_seconds})
    # lever: static activation scales after SmoothQuant-style migration (slimkit.quant.smoothquant)
    calib = calibration_batches(2)
    (smoothed, _), sm_seconds = timed(smooth, fp32, calib, alpha=SQ_ALPHA)
    (qd, _), qd_seconds = timed(slimkit.quantize, smoothed, bits=8)
    add("slimkit int8 dynamic + SmoothQuant (eager)", lambda: accel.prepare(qd, example, "eager"), slimkit.size(qd),
        f"smooth(fp32, 16 random-token sequences, alpha={SQ_ALPHA}) then slimkit.quantize(bits=8): per-token "
        f"activations; {_kernel(qd)}", {"smooth": sm_seconds, "quantize": qd_seconds})
    (qs, _), qs_seconds = timed(slimkit.quantize, smoothed, bits=8, activations=calib)
    sq_note = (f"smooth(fp32, 16 random-token sequences, alpha={SQ_ALPHA}) then slimkit.quantize(bits=8, "
               "activations=the same data): static per-tensor int8 activations")
    add("slimkit int8 static + SmoothQuant (eager)", lambda: accel.prepare(qs, example, "eager"), slimkit.size(qs),
        sq_note, {"quantize": qs_seconds})
    # without VNNI, ORT's and OpenVINO's u8 x s8 kernels saturate on full-range 8-bit weights (the backends
    # refuse them): the static model for the runtimes then has 7-bit weights (in int8 bytes), NNCF's overflow fix
    no_vnni = x86_without_int8_dot()
    if no_vnni:
        (qs, _), qs_seconds = timed(lambda: slimkit.quantize(smoothed, bits=7, activations=calib))
    static = "SmoothQuant, 7-bit weights" if no_vnni else "SmoothQuant"
    add(f"slimkit int8 static + {static} via ORT (export)",
        lambda: accel.prepare(qs, example, "onnxruntime", workdir=ort_dir / "slimkit-sq"), None,
        f"the static {static} model as slimkit.export's QDQ graph (calibrated QuantizeLinear/DequantizeLinear) in "
        "ONNX Runtime" + (" (7-bit weights: no VNNI here, see accel.runtime_call.check_saturation)" if no_vnni else ""),
        {"quantize": qs_seconds})
    try:
        import openvino  # noqa: F401
    except ImportError:
        log("  openvino not installed (pip install 'slimkit[openvino]'): OpenVINO rows skipped")
        return _ratios(rows, fp32_bytes)
    add("slimkit int8 via OpenVINO (export)", lambda: accel.prepare(q, example, "openvino"), None,
        "slimkit.export(format='openvino') of the same int8 model, OpenVINO CPU plugin at its default precision "
        "(recorded in describe.info.precision)", {"quantize": q_seconds})
    add("slimkit int8 via OpenVINO, its dynamic quantization",
        lambda: accel.prepare(q, example, "openvino", dynamic_quantization=2**20), None,
        "slimkit's int8 weights, activations left float in the IR; OpenVINO's DYNAMIC_QUANTIZATION_GROUP_SIZE "
        "quantizes them at run time (if its kernels for this CPU do)", {"quantize": q_seconds})
    add(f"slimkit int8 static + {static} via OpenVINO (export)", lambda: accel.prepare(qs, example, "openvino"),
        None, f"the static {static} model as an OpenVINO IR (QDQ with slimkit's calibrated scales)",
        {"quantize": qs_seconds})
    add("OpenVINO fp32 IR (default precision)", lambda: accel.prepare(fp32, example, "openvino"), None,
        "peer: the fp32 model's IR; OpenVINO runs float parts in bf16 by default where the CPU has AVX-512 BF16")
    add(OPENVINO_PEER, lambda: openvino_nncf_int8(fp32, example, s.threads), None,
        "peer: nncf.quantize(model_type=TRANSFORMER: SmoothQuant, fast bias correction) calibrated on 64 "
        "random-token sequences (none of the scored sentences), OpenVINO's default precision")
    return _ratios(rows, fp32_bytes)


def _kernel(q) -> str:
    """What slimkit's int8 Linear layers run on this machine (their ``execution``)."""
    return next((m.execution for m in q.modules() if isinstance(m, QuantLinear)), "?")


def _ratios(rows, fp32_bytes):
    for row in rows.values():
        if row.get("size_bytes"):
            row["size_ratio"] = fp32_bytes / row["size_bytes"]
    return rows


def _fidelity(rows, texts: list[str], ref: torch.Tensor, slow=frozenset()) -> None:
    for name, row in rows.items():
        if "run" not in row:
            continue
        # rows too slow to time for rounds are scored on the first sentences only (and say so)
        n = min(len(texts), SLOW_SENTENCES) if name in slow else len(texts)
        log(f"  fidelity of {name} ({n} sentences) ...")
        # one shape (32 x 128) for every row: compiled rows were compiled for it
        emb, seconds = timed(embed, row["run"], texts[:n], 32, fixed_shape=True, device=row["run"].device)
        row["fidelity"] = agreement(emb, ref[:n])
        row["fidelity"]["seconds"] = seconds


def _fp32_activations(model):
    """The int8 Linear layers of ``model`` keep int8 weights but take fp32 inputs."""
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.act = "none"
    return model


def _ablation(fp32, texts: list[str], ref: torch.Tensor) -> dict[str, dict[str, float]]:
    """Fidelity of partial int8 models: which part of the quantization costs the top-1 ties."""
    variants = {
        "int8 Linear weights only (fp32 activations and embeddings)":
            lambda: _fp32_activations(slimkit.quantize(fp32, bits=8, exclude=["*embeddings*"])[0]),
        "int8 weights everywhere, fp32 activations": lambda: _fp32_activations(slimkit.quantize(fp32, bits=8)[0]),
        "int8 embeddings only": lambda: slimkit.quantize(fp32, bits=8, include=["*embeddings*"])[0],
    }
    out = {}
    for name, build in variants.items():
        log(f"  fidelity of {name} ...")
        with torch.inference_mode():
            out[name] = agreement(embed(build(), texts, 32, fixed_shape=True), ref)
    return out


def run(s: Settings) -> dict[str, Any]:
    torch.manual_seed(0)
    big = minilm_inputs(*SHAPES[1])
    fp32 = load_minilm()
    limit, limit_note = cpu_limit()
    texts = bundled_sentences()[: s.sentences] if s.sentences else bundled_sentences()
    with accel.fixed_threads(s.threads):
        ref = reference_embeddings(texts)  # shared by every row's fidelity and the ablation
        rows = _rows(s, big, fp32)
        built = {k: r["run"] for k, r in rows.items() if "run" in r}
        timings: dict[str, dict[str, Any]] = {}
        for batch, seq in SHAPES:
            shape = f"{batch}x{seq}"
            ex = minilm_inputs(batch, seq)
            for name, run_ in built.items():  # compile rows compile the new shape here, once
                if (batch, seq) != SHAPES[1]:
                    rows[name]["setup_s"][f"first_call_{shape}"] = first_call_seconds(run_, ex)
            once = {k: first_call_seconds(r, ex) for k, r in built.items()}
            slow = {k: t for k, t in once.items() if t > SLOW_FACTOR * once[BASELINE]}
            rounds = s.rounds_small if batch == 1 else s.rounds_large
            fast = {k: r for k, r in built.items() if k not in slow}
            log(f"  timing {len(fast)} rows at {shape}, {rounds} alternating rounds, {s.threads} threads"
                f"{'; timed once (too slow for rounds): ' + ', '.join(slow) if slow else ''} ...")
            res = accel.time_variants(fast, ex, rounds=rounds, warmup=2, threads=s.threads)
            base = res[BASELINE]
            timings[shape] = {k: {**m.summary(), "speedup": m.speedup_vs(base),
                                  "x_limit": m.summary()["median_ms"] / limit[shape]} for k, m in res.items()}
            for k, t in slow.items():
                ms = 1000 * t
                timings[shape][k] = {"median_ms": ms, "p90_ms": ms, "timed_once": True,
                                     "speedup": base.summary()["median_ms"] / ms, "x_limit": ms / limit[shape]}
        _fidelity(rows, texts, ref, slow={k for t in timings.values() for k, v in t.items() if v.get("timed_once")})
        ablation = _ablation(fp32, texts, ref)
    for name, row in rows.items():
        row["latency"] = {shape: t[name] for shape, t in timings.items() if name in t}
        if "run" in row:  # again: a runtime that picks kernels at the first call reports them now
            row["describe"] = row.pop("run").describe()
    return {"shapes": [f"{b}x{q}" for b, q in SHAPES], "rows": rows, "verdict": verdict(rows),
            "verdict_openvino": verdict_openvino(rows), "ablation": ablation, "threads": s.threads,
            "sentences": len(texts),
            "limit_ms": limit, "limit_note": limit_note, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def verdict_openvino(rows) -> dict[str, Any]:
    """Issue 13's target: slimkit's fastest int8 row (any backend running slimkit's recipe: eager,
    compile, aoti, ORT or OpenVINO via slimkit.export) among those with mean cosine >= 0.998 and
    >= 3.5x smaller than fp32, against OpenVINO int8 + NNCF, per shape: at least as fast."""
    peer = rows.get(OPENVINO_PEER, {})
    if "latency" not in peer or not peer["latency"]:
        return {"note": f"no {OPENVINO_PEER!r} row (openvino/nncf not installed or it failed)"}
    ours = [n for n, r in rows.items() if n.startswith("slimkit int8") and r.get("latency") and "fidelity" in r]
    good = [n for n in ours if rows[n]["fidelity"]["mean_cosine"] >= OV_TARGETS["cosine_min"]
            and rows[n].get("size_ratio", 0) >= OV_TARGETS["size_ratio_min"]]
    out: dict[str, Any] = {}
    for shape, theirs in peer["latency"].items():
        cands = [n for n in good if shape in rows[n]["latency"]]
        fastest_any = min((n for n in ours if shape in rows[n]["latency"]),
                          key=lambda n: rows[n]["latency"][shape]["median_ms"], default=None)
        if not cands:
            out[shape] = {"slimkit_row": None, "met": False, "fastest_any": fastest_any,
                          "note": "no slimkit int8 row reaches mean cosine >= 0.998 and >= 3.5x smaller"}
            continue
        best = min(cands, key=lambda n: rows[n]["latency"][shape]["median_ms"])
        mine = rows[best]["latency"][shape]["median_ms"]
        out[shape] = {"slimkit_row": best, "met": mine <= theirs["median_ms"], "fastest_any": fastest_any,
                      "openvino_over_slimkit": theirs["median_ms"] / mine,
                      "slimkit_mean_cos": rows[best]["fidelity"]["mean_cosine"],
                      "openvino_mean_cos": peer.get("fidelity", {}).get("mean_cosine")}
    return out


def verdict(rows) -> dict[str, Any]:
    """Issue 3's target: slimkit's best CPU int8 row against the fastest ONNX Runtime int8 row,
    per shape: at least as fast, mean cosine >= 0.995 and higher, >= 3.9x smaller. The core's
    MiniLM target (issue 2: top-1 agreement >= 99%) is reported beside it, not folded in."""
    out: dict[str, Any] = {}
    ours = [n for n in SLIMKIT_BEST if "latency" in rows.get(n, {})]
    theirs = [n for n in ORT_INT8 if "latency" in rows.get(n, {})]
    if not ours or not theirs:
        return {"note": "missing rows: " + ", ".join(n for n in (*SLIMKIT_BEST, *ORT_INT8) if n not in rows)}
    for shape in rows[ours[0]]["latency"]:
        best = min(ours, key=lambda n: rows[n]["latency"][shape]["median_ms"])
        peer = min(theirs, key=lambda n: rows[n]["latency"][shape]["median_ms"])
        a, b = rows[best], rows[peer]
        checks = {
            "as fast as the fastest ORT int8": a["latency"][shape]["median_ms"] <= b["latency"][shape]["median_ms"],
            "mean cosine >= 0.995": a["fidelity"]["mean_cosine"] >= TARGETS["cosine_min"],
            "mean cosine above ORT int8's": a["fidelity"]["mean_cosine"] > b["fidelity"]["mean_cosine"],
            "artifact >= 3.9x smaller than fp32": a["size_ratio"] >= TARGETS["size_ratio_min"],
        }
        out[shape] = {"slimkit_row": best, "ort_row": peer, "checks": checks, "met": all(checks.values()),
                      "top1_met": a["fidelity"]["top1_agreement"] >= TARGETS["top1_min"],
                      "latency_ratio_ort_over_slimkit": b["latency"][shape]["median_ms"] / a["latency"][shape]["median_ms"]}
    return out
