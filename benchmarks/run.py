"""Run the benchmark suite and write benchmarks/RESULTS.md and benchmarks/results.json.

    .venv/bin/python -m benchmarks                # full suite (~30-40 min on 2 busy cores)
    .venv/bin/python -m benchmarks --quick        # smoke run (a few minutes; numbers not meaningful)
    .venv/bin/python -m benchmarks --only minilm  # one section: minilm, digits, scaling, cuda

Sections: 1 MiniLM against its peers (torch.compile, torchao, ONNX Runtime), 2 the digits CNN's
methods, 3 scaling with batch and sequence length (table + PNG/HTML plot), 4 CUDA rows (run
where a GPU exists, listed as not measured elsewhere). Every figure is a ratio against fp32
eager measured in the same run; the hardware fingerprint is in both files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

SECTIONS = ("minilm", "digits", "scaling", "cuda")


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few rounds, subset of rows/sizes")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/ORT intra-op threads (default 1: on a shared machine, a second thread makes "
                        "torch wait on a busy core at every parallel op; use 2+ on a quiet machine)")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="include torch.compile rows in --quick (always in a full run)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave out torch.compile rows")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="folder for the results")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")

    from .common import Settings, log, quiet_libraries

    quiet_libraries()
    s = Settings.make(args.quick, args.threads, args.compile, args.out)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = s.inductor_cache  # never inductor's shared temp folder

    import torch

    import slimkit.hardware as hw

    from . import cuda_bench, digits_bench, minilm_bench, report, scaling

    sections = args.only or list(SECTIONS)
    command = ".venv/bin/python -m benchmarks" + (" --quick" if args.quick else "") + (
        "".join(f" --only {x}" for x in args.only) if args.only else "") + (
        f" --threads {args.threads}" if args.threads != 1 else "")
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {"command": command, "quick": args.quick, "threads": args.threads, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "load_start": _load(), "settings": {k: str(v) for k, v in vars(s).items()}, "torch_seed": 0},
        "fingerprint": hw.fingerprint(), "sections": {}, "errors": {}, "files": {}}
    torch.manual_seed(0)
    runners = {"minilm": minilm_bench.run, "digits": digits_bench.run, "scaling": scaling.run, "cuda": cuda_bench.run}
    for name in SECTIONS:
        if name not in sections:
            continue
        log(f"section {name} ...")
        try:
            results["sections"][name] = runners[name](s)
        except Exception as e:  # one failing section must not lose the others' numbers
            import traceback

            traceback.print_exc()
            results["errors"][name] = f"{type(e).__name__}: {e}"
        if name == "scaling" and name in results["sections"]:
            results["files"] = scaling.plot(results["sections"]["scaling"], str(s.out / "scaling"))
    results["meta"]["seconds"] = time.perf_counter() - t0
    results["meta"]["load_end"] = _load()
    s.out.mkdir(parents=True, exist_ok=True)
    (s.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (s.out / "RESULTS.md").write_text(report.render(results))
    shutil.rmtree(s.workdir, ignore_errors=True)
    log(f"wrote {s.out / 'RESULTS.md'} and results.json in {results['meta']['seconds']:.0f} s")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
