"""Several compressed models side by side: accuracy, artifact bytes, CPU latency.

Used by ``slimkit demo``, the benchmarks and the notebooks, so that every table of
"original vs compressed" is measured the same way::

    rows = compare(original, {"int8": q, "pruned": p}, digits.test, latency_input=x)
    print(format_table(rows))

Latency is measured side by side in one process: each round times every model, the order
alternating round by round (forward, then reversed), and the median over rounds is reported.
On a shared machine absolute times drift; ratios taken this way stay meaningful.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from .artifact import size
from .devices import resolve_device, synchronize
from .errors import InvalidParameterError, InvalidTypeError, check_int, check_module
from .nn import param_count
from .metrics import evaluate


@contextmanager
def threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if n is not None:
        check_int("threads", n, 1, 1024)
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _number_for(run, x, target_s: float = 0.02) -> int:
    """Calls per timed block so that one block lasts about ``target_s`` (timer noise stays small)."""
    t = time.perf_counter()
    run(x)
    once = max(time.perf_counter() - t, 1e-6)
    return max(1, min(1000, round(target_s / once)))


def latency(models: Mapping[str, nn.Module], x: torch.Tensor, *, rounds: int = 7, number: int | None = None,
            warmup: int = 2, num_threads: int | None = 1, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Median milliseconds per forward pass of each model on input ``x``, measured side by side.

    rounds: timed rounds; each round times every model once (``number`` calls in a block),
    in forward order on even rounds and reversed on odd ones. number: calls per block (default:
    about 20 ms worth for the fastest model). warmup: untimed rounds first. num_threads: torch
    threads during the measurement (1 by default: reproducible on a shared machine; None keeps
    the current setting). device: where to run; other than CPU, copies of the models are moved
    there, and a model that cannot run there gets ``nan`` and its error in ``"errors"``.
    Returns ``{"ms": {name: median}, "rounds": {name: [ms, ...]}, "threads": n,
    "number": calls per block, "batch": len(x), "device": str, "errors": {name: str}}``.
    """
    if not isinstance(models, Mapping) or not models:
        raise InvalidTypeError("models", models, "a non-empty dict of name -> torch.nn.Module")
    check_int("rounds", rounds, 1, 10_000)
    check_int("warmup", warmup, 0, 10_000)
    dev = resolve_device(device)
    sync = lambda: synchronize(dev)  # noqa: E731
    x = x.to(dev)
    runs, errors = {}, {}
    with threads(num_threads) as used, torch.inference_mode():
        for n, m in models.items():
            m = m.eval() if dev.type == "cpu" else copy.deepcopy(m).to(dev).eval()
            try:
                m(x)  # first call: kernels that refuse this device/shape fail here
                runs[n] = m
            except Exception as e:  # noqa: BLE001 - reported per model, the others still run
                errors[n] = f"{type(e).__name__}: {e}"
        names = list(runs)
        if number is None:
            number = min((_number_for(runs[n], x) for n in names), default=1)
        check_int("number", number, 1, 10**6)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(warmup + rounds):
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                sync()
                t = time.perf_counter()
                for _ in range(number):
                    runs[n](x)
                sync()
                if r >= warmup:
                    times[n].append(1000 * (time.perf_counter() - t) / number)
    ms = {n: statistics.median(times[n]) if n in times else math.nan for n in models}
    return {"ms": ms, "rounds": times, "threads": used, "number": number, "batch": int(x.shape[0]),
            "device": str(dev), "errors": errors}


def compare(original: nn.Module, candidates: Mapping[str, nn.Module], data, *,
            latency_input: torch.Tensor | None = None, rounds: int = 7, num_threads: int | None = 1,
            device: str = "cpu", original_name: str = "original") -> list[dict[str, Any]]:
    """One row per model (the original first): accuracy on ``data``, drop in points, artifact
    bytes (``slimkit.size``), size ratio (original / model, higher is smaller), parameters, and
    with ``latency_input`` the median CPU latency and speed-up (original / model, > 1 is faster),
    measured side by side with :func:`latency` on ``device`` (accuracy is always CPU)."""
    check_module("original", original)
    if not isinstance(candidates, Mapping):
        raise InvalidTypeError("candidates", candidates, "a dict of name -> torch.nn.Module")
    if original_name in candidates:
        raise InvalidParameterError("candidates", list(candidates), f"names other than {original_name!r}")
    models = {original_name: original, **candidates}
    for name, m in models.items():
        check_module(f"candidates[{name!r}]", m)
    rows = []
    for name, m in models.items():
        metrics = evaluate(m, data)
        rows.append({"method": name, "accuracy": metrics["accuracy"], "samples": int(metrics["n"]),
                     "size_bytes": size(m), "params": param_count(m)})
    base = rows[0]
    for row in rows:
        row["drop_pts"] = 100 * (base["accuracy"] - row["accuracy"])
        row["size_ratio"] = base["size_bytes"] / row["size_bytes"]
    if latency_input is not None:
        lat = latency(models, latency_input, rounds=rounds, num_threads=num_threads, device=device)
        for row in rows:
            row["latency_ms"] = lat["ms"][row["method"]]
            row["speedup"] = lat["ms"][original_name] / row["latency_ms"]
            row["latency_batch"], row["latency_threads"] = lat["batch"], lat["threads"]
            row["latency_device"] = lat["device"]
            if row["method"] in lat["errors"]:
                row["latency_error"] = lat["errors"][row["method"]]
    return rows


COLUMNS = [("method", "method", "{}"), ("accuracy", "accuracy", "{:.2%}"), ("drop_pts", "drop (pt)", "{:+.2f}"),
            ("size_bytes", "artifact bytes", "{:,}"), ("size_ratio", "size ratio", "{:.2f}x"),
            ("latency_ms", "latency ms", "{:.3f}"), ("speedup", "speed-up", "{:.2f}x")]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]] | None = None) -> str:
    """A plain-text table of :func:`compare` rows (columns absent from every row are left out).
    ``columns``: (key, heading, format) triples; extra keys such as a "note" may be added."""
    columns = [c for c in (columns or COLUMNS) if any(c[0] in r for r in rows)]
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([_fmt(r.get(k), f) for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)
