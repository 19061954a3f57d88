"""Peak memory of one MiniLM forward pass per shape, measured in a fresh process.

In a process that has already run a shape, freed activations stay resident (glibc keeps freed
heap blocks; ONNX Runtime keeps its arena), so a second measurement shows no growth. Here:
glibc is told to serve blocks >= 64 KiB with mmap and give them back on free, ONNX Runtime runs
without its arena, and each shape's figure is the resident-set high-water mark during one call
minus the resident set just before it (weights are already resident: this is what activations
and workspaces add). scaling.py runs one process per shape, so nothing freed by an earlier
shape is reused. Prints one JSON line.

    python -m benchmarks.memory_probe --variant "fp32 eager" --shapes 1x128,8x128 [--onnx F | --artifact F]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys


def _mmap_large_blocks() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(libc.mallopt(m_trim_threshold, 64 * 1024))
    except OSError:
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", required=True)
    p.add_argument("--shapes", required=True)
    p.add_argument("--onnx", help="the ONNX file of an ORT variant")
    p.add_argument("--artifact", help="a slimkit artifact of an int8 variant (loading it frees no fp32 copy)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    exact = _mmap_large_blocks()

    import torch

    import slimkit
    from slimkit.accel.bench import _peak_rss_bytes, _reset_peak_rss, _rss_bytes
    from slimkit.zoo.minilm import load_minilm

    from .common import minilm_inputs, quiet_libraries

    quiet_libraries()
    torch.set_num_threads(args.threads)
    if args.variant.startswith("ORT"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.enable_cpu_mem_arena = False
        so.intra_op_num_threads = args.threads
        session = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(x):
            session.run(None, {n: x[n].numpy() for n in names})
    else:
        model = slimkit.load(args.artifact) if "int8" in args.variant else load_minilm()

        def run(x):
            with torch.inference_mode():
                model(**x)
    run(minilm_inputs(1, 8))  # one-time costs (kernel setup, thread pools) are not activations
    out = {}
    for shape in args.shapes.split(","):
        b, n = map(int, shape.split("x"))
        x = minilm_inputs(b, n)
        before = _rss_bytes()
        _reset_peak_rss()
        run(x)
        peak = _peak_rss_bytes()
        out[shape] = {"peak_rss_bytes": peak, "growth_bytes": peak - before if peak and before else None}
    print(json.dumps({"variant": args.variant, "exact": exact, "shapes": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
