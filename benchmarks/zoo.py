"""The zoo grid: every zoo model (tests/zoo/models.py) through every operation, in one process,
torch.compile and ONNX Runtime included; writes benchmarks/ZOO.md.

    .venv/bin/python -m benchmarks.zoo                      # the full grid (~20-40 min on 2 busy cores)
    .venv/bin/python -m benchmarks.zoo --models bert gpt2 --ops int8 compile

A cell is judged exactly as the tests judge it (tests/zoo/cells.py): ok, refused (a slimkit error:
its message head), WRONG (a check failed: fidelity below threshold, input modified, report
incomplete, not smaller), CRASH (any other exception: its type) or TIMEOUT (over --timeout
seconds). The target: no CRASH, no WRONG, at least 85% of cells ok.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from slimkit.table import markdown

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the zoo lives with the tests

TARGET_OK = 0.85


class CellTimeout(BaseException):
    """A BaseException, so that no library's ``except Exception`` (torch.compile's fallbacks,
    slimkit's own wrapping into BackendError) turns a cut-off cell into a refusal or swallows it."""


@contextmanager
def _time_limit(seconds: int):
    """SIGALRM after ``seconds``: a cell stuck compiling is cut off at its next Python step. The
    alarm re-arms every second, since a raise inside a weakref callback or __del__ is ignored."""
    def stop(signum, frame):
        signal.alarm(1)
        raise CellTimeout(f"over {seconds} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _run(z, op: str, timeout: int):
    from zoo.cells import Cell, run_cell

    t0 = time.perf_counter()
    try:
        with _time_limit(timeout):
            return run_cell(z, op)
    except CellTimeout as e:
        import torch._dynamo

        torch._dynamo.reset()  # a compile cut off midway leaves nothing behind for the next cell
        return Cell(z.name, op, "TIMEOUT", str(e), seconds=time.perf_counter() - t0)


def _head(text: str, n: int = 90) -> str:
    line = " ".join(text.split())
    return (line[:n] + "...") if len(line) > n else line


def _status(c) -> str:
    if c.status == "refused":
        return f"refused: {_head(c.detail.split(': ', 1)[-1], 70)}"
    if c.status in ("CRASH", "WRONG", "TIMEOUT", "n/a"):
        return f"{c.status}: {_head(c.detail, 90)}"
    return "ok"


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def render(cells: list, fingerprint: str, wall: float) -> str:
    cells_all, cells = cells, [c for c in cells if c.status != "n/a"]  # n/a: the operation does not apply
    n = len(cells)
    counts = {s: sum(c.status == s for c in cells) for s in ("ok", "refused", "WRONG", "CRASH", "TIMEOUT")}
    share = counts["ok"] / n if n else 0.0
    verdict = ("target met" if share >= TARGET_OK and not counts["WRONG"] and not counts["CRASH"]
               else "target NOT met")
    lines = [
        "# Zoo grid", "",
        "Every zoo model (tests/zoo/models.py) through every operation; judged as in tests/zoo/cells.py. "
        "cosine: result vs an independent reference (fake-quantized / magnitude-zeroed float copy, the float "
        "model for static int8 and the backends); size: slimkit artifact bytes (ONNX file for onnxruntime, "
        "params for distill) over the float model's.", "",
        "```", fingerprint.strip(), "```", "",
        f"**{counts['ok']}/{n} cells ok ({share:.0%})**, refused {counts['refused']}, WRONG {counts['WRONG']}, "
        f"CRASH {counts['CRASH']}, TIMEOUT {counts['TIMEOUT']}; target: no crash, no wrong result, >= "
        f"{TARGET_OK:.0%} ok -> {verdict}. Time {wall / 60:.1f} min (summed over runs when merged).", "",
        markdown(["model", "operation", "status", "cosine", "size", "seconds"],
                 [[c.model, c.op, _status(c), _num(c.cosine, ".4f"), _num(c.size_ratio, ".3f"), f"{c.seconds:.1f}"]
                  for c in cells_all]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from zoo.cells import OPS
    from zoo.models import NAMES

    p = argparse.ArgumentParser(prog="python -m benchmarks.zoo", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=NAMES, default=NAMES)
    p.add_argument("--ops", nargs="+", choices=OPS, default=OPS)
    p.add_argument("--timeout", type=int, default=60, help="seconds per cell before it is cut off (TIMEOUT)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared machine)")
    p.add_argument("--out", type=Path, default=HERE / "ZOO.md")
    p.add_argument("--cells", type=Path, help="also save the cells as JSON here (to merge split runs)")
    p.add_argument("--merge", type=Path, nargs="+", help="render --out from saved cell files instead of running")
    args = p.parse_args(argv)
    if args.merge:
        return _merge(args.merge, args.out)

    from .common import log, quiet_libraries

    quiet_libraries()
    import copy
    import tempfile

    import torch

    import slimkit.hardware as hw
    from zoo.models import build

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="slimkit-zoo-inductor-"))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cells = []
    for name in args.models:
        z = build(name)
        for op in args.ops:
            cell = _run(copy.deepcopy(z), op, args.timeout)
            cells.append(cell)
            log(f"{name:12s} {op:12s} {cell.seconds:6.1f}s {_status(cell)}")
    versions = ", ".join(f"{k} {v}" for k, v in hw.package_versions(
        ("slimkit", "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "torchao")).items())
    header = f"{hw.summary()}\n{versions}\nthreads {args.threads}, cell timeout {args.timeout} s"
    text = render(cells, header, time.perf_counter() - t0)
    args.out.write_text(text)
    if args.cells:
        args.cells.write_text(json.dumps({"fingerprint": header, "wall_s": time.perf_counter() - t0,
                                          "cells": [asdict(c) for c in cells]}))
    print(text)
    return 0


def _merge(paths: list[Path], out: Path) -> int:
    """One table from split runs (e.g. processes over disjoint models side by side on a busy
    machine); a cell in a later file replaces the same cell in an earlier one (a rerun)."""
    from zoo.cells import Cell

    runs = [json.loads(p.read_text()) for p in paths]
    cells = {(c["model"], c["op"]): Cell(**c) for r in runs for c in r["cells"]}
    header = runs[0]["fingerprint"] + f"\nmerged from {len(runs)} runs, side by side (later reruns replace cells)"
    out.write_text(render(list(cells.values()), header, sum(r["wall_s"] for r in runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
