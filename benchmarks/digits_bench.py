"""Section 2: the digits CNN, each compression method's size / latency / accuracy, through
``slimkit.zoo.demo`` (the same recipes the CLI demo and the notebooks use). The deeper study
(batch sizes, thread counts, seeds, importance scores) is ``benchmarks/digits_study.py``.
"""
from __future__ import annotations

from typing import Any

from slimkit.zoo import demo

from .common import Settings, log


def run(s: Settings) -> dict[str, Any]:
    # The demo measures latency with 1 thread at batch 256 by default: these models are too
    # small for intra-op threads to pay. Keep that, and say so.
    rows = demo.run(seed=0, quick=s.quick, num_threads=1, log=lambda *a: log(" ", *a))
    return {"rows": rows, "threads": 1, "batch": rows[0].get("latency_batch"),
            "study": "benchmarks/results/digits_study.md (benchmarks/digits_study.py)"}
