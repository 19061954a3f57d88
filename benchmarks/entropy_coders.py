"""Which entropy coder wins on which tensor: every candidate's bytes, per integer tensor kind,
on real compressed models (digits MLP/CNN; MiniLM with ``--minilm``), and the whole artifact
before and after ``entropy=True``. Huffman is sized exactly (canonical code lengths, table
included) though no file uses it: ANS is never larger on these tensors.

    python -m benchmarks.entropy_coders [--minilm]
"""
from __future__ import annotations

import argparse
import heapq
import time
from collections import defaultdict

import numpy as np
import torch
import zstandard

import slimkit
from slimkit import entropy
from slimkit.zoo import pretrained_digits


def huffman_bytes(stream: np.ndarray) -> int:
    """Bytes of a canonical Huffman coding of ``stream``: the bits plus a table of (symbol,
    length) varint pairs, as the ANS table is stored."""
    _, counts = np.unique(stream, return_counts=True)
    if len(counts) == 1:
        return 4
    heap = [(int(c), i, [i]) for i, c in enumerate(counts)]
    lengths = np.zeros(len(counts), dtype=np.int64)
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return int((lengths * counts).sum() + 7) // 8 + 2 * len(counts) + 2


def candidates(t: torch.Tensor) -> dict[str, int]:
    dtype = entropy._dtype_name(t)
    flat = t.contiguous().reshape(-1).numpy()
    raw = flat.tobytes()
    out = {"raw": len(raw), "zstd-9": len(zstandard.ZstdCompressor(level=9).compress(raw))}
    if len(raw) <= 2**20:  # level 19 is 15x slower
        out["zstd-19"] = len(zstandard.ZstdCompressor(level=19).compress(raw))
    for symbols, dts in entropy.SYMBOLS.items():
        if dtype in dts:
            stream = entropy._symbols(flat, symbols)
            payload = entropy._ans_encode(stream)
            if payload is not None:
                out[f"ans/{symbols}"] = len(payload)
            out[f"huffman/{symbols}"] = huffman_bytes(stream)
    return out


def kind_of(key: str, t: torch.Tensor) -> str:
    leaf = key.rsplit(".", 1)[-1]
    return f"{leaf} ({str(t.dtype).removeprefix('torch.')})"


def variants(arch: str):
    base = pretrained_digits(arch)
    pruned = slimkit.prune(base, 0.9).model
    yield "int8", slimkit.quantize(base, bits=8).model
    yield "int4", slimkit.quantize(base, bits=4).model
    yield "pruned 90% + int8", slimkit.quantize(pruned, bits=8).model
    yield "pruned 90% + int4", slimkit.quantize(pruned, bits=4).model
    yield "sparse bitmask 90%", slimkit.sparsify(pruned, 0.0, format="bitmask").model
    yield "sparse csr 90%", slimkit.sparsify(pruned, 0.0, format="csr").model


def measure(name: str, model: torch.nn.Module, per_kind: dict) -> dict:
    t0 = time.perf_counter()
    coded = slimkit.size(model, entropy=True)
    seconds = time.perf_counter() - t0
    for key, t in model.state_dict().items():
        if entropy._dtype_name(t) and t.numel():
            sizes = candidates(t)
            agg = per_kind[(name, kind_of(key, t))]
            for c, n in sizes.items():
                agg[c] += n
    return {"model": name, "plain": slimkit.size(model), "entropy": coded, "encode_s": seconds}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minilm", action="store_true")
    args = ap.parse_args(argv)
    per_kind: dict = defaultdict(lambda: defaultdict(int))
    files = []
    for arch in ("mlp", "cnn"):
        fp32 = slimkit.size(pretrained_digits(arch))
        for name, model in variants(arch):
            row = measure(f"digits {arch} {name}", model, per_kind)
            row["fp32"] = fp32
            files.append(row)
    if args.minilm:
        from slimkit.zoo import load_minilm

        m = load_minilm()
        fp32 = slimkit.size(m)
        for name, q in (("int8", slimkit.quantize(m, bits=8).model), ("int4", slimkit.quantize(m, bits=4).model)):
            row = measure(f"minilm {name}", q, per_kind)
            row["fp32"] = fp32
            files.append(row)
    print("\n## Whole artifacts (bytes)\n")
    print("| model | fp32 | saved | saved, entropy=True | entropy gain | vs fp32 | encode s |")
    print("|---|---|---|---|---|---|---|")
    for r in files:
        print(f"| {r['model']} | {r['fp32']:,} | {r['plain']:,} | {r['entropy']:,} | "
              f"{r['plain'] / r['entropy']:.2f}x | {r['fp32'] / r['entropy']:.1f}x | {r['encode_s']:.2f} |")
    print("\n## Per tensor kind: bytes under each candidate (winner in bold)\n")
    cols = ["raw", "zstd-9", "zstd-19", "huffman/bytes", "ans/bytes", "huffman/nibbles", "ans/nibbles",
            "huffman/values", "ans/values", "huffman/delta", "ans/delta"]
    print("| model | tensor kind | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (model, kind), sizes in per_kind.items():
        best = min(v for k, v in sizes.items())
        cells = [("**{:,}**" if sizes[c] == best else "{:,}").format(sizes[c]) if c in sizes else "" for c in cols]
        print(f"| {model} | {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
