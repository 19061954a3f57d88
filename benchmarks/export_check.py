"""Issue 13's export checks on all-MiniLM-L6-v2 (a quick run, not the timing table):
fidelity of slimkit's int8 recipe after export to ONNX Runtime / OpenVINO against the same model
in torch, and the prepared-form cache's cold vs warm first call (a second process reloads).

    python -m benchmarks.export_check [--sentences N] [--cache DIR] [--warm-only]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .common import log, minilm_inputs, quiet_libraries


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=96)
    ap.add_argument("--cache", type=Path, default=None, help="prepared-form cache folder (cold/warm check)")
    ap.add_argument("--backends", default="onnxruntime,openvino")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    quiet_libraries()
    import psutil

    import slimkit
    from slimkit import accel
    from slimkit.zoo.minilm import agreement, bundled_sentences, embed, load_minilm, reference_embeddings
    started = psutil.Process().create_time()
    log(f"process start to main (python + torch + slimkit imports): {time.time() - started:.1f} s")
    torch.set_num_threads(a.threads)
    texts = bundled_sentences()[: a.sentences]
    fp32 = load_minilm()
    q, _ = slimkit.quantize(fp32, bits=8)
    ref = reference_embeddings(texts)
    from slimkit.quant.kernels import cpu_kernel, reference_arithmetic

    with torch.inference_mode(), reference_arithmetic():  # what the exports write (torch._int_mm)
        base = agreement(embed(q, texts, 32, fixed_shape=True), ref)
    out = {"torch int8 (reference arithmetic, torch._int_mm)": base}
    log(f"slimkit int8 in torch, reference arithmetic: {base}")
    if cpu_kernel() != "int_mm":
        name = f"torch int8 ({cpu_kernel()}, this CPU's eager kernel)"
        with torch.inference_mode():
            out[name] = agreement(embed(q, texts, 32, fixed_shape=True), ref)
        log(f"slimkit int8 in {name}: {out[name]}")
    example = minilm_inputs(32, 128)
    for backend in a.backends.split(","):
        t0 = time.perf_counter()
        opts = {"prepared_cache": str(a.cache)} if a.cache else {}
        run = accel.prepare(q, example, backend, **opts)
        prep = time.perf_counter() - t0
        fid = agreement(embed(run, texts, 32, fixed_shape=True), ref)
        out[backend] = {**fid, "prepare_s": prep, "process_age_after_prepare_s": time.time() - started, "setup_s": run.setup_seconds,
                        "cache": run.info.get("prepared_cache"), "precision": run.info.get("precision"),
                        "size_bytes": run.size_bytes,
                        "cos_gap_vs_torch_int8": abs(fid["mean_cosine"] - base["mean_cosine"])}
        log(f"{backend}: {json.dumps(out[backend], default=str)}")
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
