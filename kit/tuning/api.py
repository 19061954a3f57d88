"""``slimkit.autotune``: search compositions and per-layer settings under an accuracy budget.

1. Probes: each layer alone is set to each of its options (structured share, sparsity, bits)
   and the whole model is scored and measured (artifact bytes, or side-by-side latency).
2. A knapsack over those measured gains and drops picks one option per layer within ``max_drop``.
3. Trials: the pick is built for real (pruned, fine-tuned when ``train`` is given, quantized,
   stored sparse), scored, sized and timed side by side with the original. A missed budget backs
   off one layer one rung; a met budget pushes one layer one rung further, until nothing moves.
Every probe and trial is an event and, with ``records``, a JSON line that a rerun reuses.
"""
from __future__ import annotations

import copy
import itertools
import math
import time

import torch.nn as nn

from ..data import batches, first_inputs
from ..devices import resolve_device
from ..errors import (
    Interrupted,
    InvalidParameterError,
    InvalidTypeError,
    NothingToCompressError,
    SlimkitError,
    check_module,
    check_nonnegative,
    check_positive,
)
from ..events import Progress, as_progress
from ..measure import latency as measure_latency
from ..metrics import evaluate
from ..pruning import surgery
from ..pruning.unstructured import is_prunable
from ..quant.plan import TARGET_TYPES
from ..report import Result
from . import search
from .build import BASE, CAN, Option, build, size
from .records import Records, fingerprint, key
from .report import autotune_report

METHODS = ("quantize", "prune", "sparsify", "structured", "distill")
OBJECTIVES = ("size", "latency")
# options per layer and objective: what each method may do to one layer
GRID = {
    "size": {"bits": (8, 4, 3, 2), "sparsity": (0.5, 0.75, 0.9, 0.95), "structured": (0.5,)},
    "latency": {"bits": (8,), "sparsity": (0.95,), "structured": (0.25, 0.5, 0.75)},
}


def autotune(model: nn.Module, data, *, max_drop: float = 0.5, objective: str = "size", metric=None,
             device="cpu", backend="eager", methods=METHODS, train=None, epochs: int = 2, options=None,
             time_budget_s: float | None = None, max_trials: int | None = None, records=None,
             callbacks=None, stop=None) -> Result:
    """Find the smallest (``objective="size"``: artifact bytes) or fastest (``"latency"``: measured
    on ``device`` side by side with the original, never estimated from FLOPs) model whose score
    drops by at most ``max_drop`` (points of accuracy on ``data``, or of ``metric(model)``).

    data: labelled (X, y) data or batches: scores the models (unless ``metric``) and gives the
    latency input (its first batch). metric: None or a callable model -> score, higher is better.
    methods: what may be used, any of "quantize" (2/3/4/8 bits per layer; codebook where this
    slimkit has it), "prune" (unstructured sparsity per layer), "sparsify" (sparse storage, and
    CSR execution for latency), "structured" (units removed per layer), "distill" (fine-tuning
    after pruning learns from the original's soft targets; needs ``train`` and a pruning method;
    left out of the default set when ``train`` is None).
    train: training batches for fine-tuning each trial after pruning (``epochs`` epochs); without
    it, trials are not fine-tuned. backend: "eager" or a callable model -> runnable model (e.g. a
    ``slimkit.accel`` backend) applied to both models before timing.
    options: the per-layer values tried, overriding :data:`GRID` for the objective: a dict with any
    of "bits" (2..8), "sparsity" and "structured" (shares in (0, 1)), e.g. ``{"bits": (8, 4)}``.
    time_budget_s / max_trials / stop: end the search early with the best result so far.
    records: a JSON-lines file of every probe and trial; the same call with the same file
    resumes, reusing what is there.
    Returns ``Result(model, report)``: the pick, and a report listing every trial (settings,
    score, drop, bytes, latency), the Pareto set, and ``summary["budget_met"]`` (False: no
    compressed candidate met ``max_drop``; the model is then the closest one tried).
    """
    job = _Job(model, data, max_drop, objective, metric, device, backend, methods, train, epochs, options,
               time_budget_s, max_trials, records, callbacks, stop)
    return job.run()


class _Job:
    def __init__(self, model, data, max_drop, objective, metric, device, backend, methods, train, epochs, options,
                 time_budget_s, max_trials, records, callbacks, stop):
        check_module("model", model)
        self.max_drop = check_nonnegative("max_drop", max_drop)
        if objective not in OBJECTIVES:
            raise InvalidParameterError("objective", objective, "'size' or 'latency'")
        self.objective = objective
        self.methods = _check_methods(methods, objective, train)
        self.grid = _check_options(options, objective)
        self.dev = resolve_device(device)
        if backend != "eager" and not callable(backend):
            raise InvalidParameterError("backend", backend, "'eager' or a callable model -> runnable model")
        self.backend = backend
        if metric is not None and not callable(metric):
            raise InvalidTypeError("metric", metric, "None or a callable model -> score (higher is better)")
        if time_budget_s is not None:
            check_positive("time_budget_s", time_budget_s)
        if max_trials is not None:
            check_positive("max_trials", max_trials, integer=True)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise InvalidParameterError("epochs", epochs, "an int >= 0 (fine-tuning epochs per trial)")
        if train is not None:
            batches(train)
        self.time_budget_s, self.max_trials, self.train, self.epochs = time_budget_s, max_trials, train, epochs
        self.records = Records(records)
        self.progress = as_progress(callbacks, stop)
        self.model = copy.deepcopy(model).eval()
        self.data, self.metric = data, metric
        self.x = first_inputs(data)  # bad data: an error now
        try:
            self.base_score, self.base_loss = self._score(self.model, who="metric")
        except SlimkitError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. batches without targets: say so before any trial
            raise InvalidParameterError("data", type(data).__name__, "labelled (inputs, targets) batches or (X, y) "
                                        f"to score accuracy, or pass metric= ({type(e).__name__}: {e})") from e
        self.layers = self._layers()
        self.t0 = time.perf_counter()
        self.base_bytes = size(self.model)
        self.run_key = key(fingerprint(self.model), objective, sorted(self.methods), epochs, train is not None,
                           self.grid, str(self.dev), _backend_name(backend), CAN)
        self.trials: list[dict] = []
        self.best_model: tuple[str, nn.Module] | None = None
        self.stopped = ""

    # --- scores and measurements ------------------------------------------------------------
    def _score(self, m: nn.Module, who: str = "metric") -> tuple[float, float | None]:
        if self.metric is None:
            r = evaluate(m, self.data)  # unlabelled or bad data: a slimkit error naming data
            return 100.0 * r["accuracy"], r["loss"]
        try:
            value = float(self.metric(m))
        except Exception as e:  # noqa: BLE001 - a metric that raises is the user's to fix, said clearly
            raise InvalidParameterError(who, self.metric, f"a callable model -> score that runs "
                                        f"({type(e).__name__}: {e})") from e
        if not math.isfinite(value):
            raise InvalidParameterError(who, value, "a finite score from metric(model)")
        return value, None

    def _latency(self, models: dict[str, nn.Module]) -> dict[str, float]:
        prep = self.backend if callable(self.backend) else (lambda m: m)
        lat = measure_latency({n: prep(m) for n, m in models.items()}, self.x, rounds=5, device=self.dev)
        return lat["ms"]

    def _layers(self) -> dict[str, list[Option]]:
        """Each layer the search may change, with its options (the base first)."""
        grid = self.grid
        bits = grid["bits"] if "quantize" in self.methods else ()
        sparsity = grid["sparsity"] if {"prune", "sparsify"} & self.methods else ()
        if self.objective == "latency" and "sparsify" not in self.methods:
            sparsity = ()  # zeros in a dense layer take as long
        producers = set()
        if "structured" in self.methods:
            try:
                producers = {p for g in surgery.analyse(self.model).groups for p in g.producers[:1]}
            except Exception as e:  # noqa: BLE001 - untraceable: no structured options, said if nothing else
                if not bits and not sparsity:
                    raise NothingToCompressError(f"autotune: structured pruning needs a model torch.fx can "
                                                 f"trace ({type(e).__name__}: {e}); add 'quantize' or 'prune'") from e
        out = {}
        for name, m in self.model.named_modules():
            if not (is_prunable(m) or isinstance(m, TARGET_TYPES)):
                continue
            shares = grid["structured"] if name in producers else ()
            opts = [Option(0.0, s, b) for s, b in itertools.product((0.0, *sparsity), (None, *bits))]
            opts += [Option(c, 0.0, b) for c, b in itertools.product(shares, (None, *bits))]
            opts = [o for o in opts if not o.is_base and (is_prunable(m) or not (o.sparsity or o.structured))]
            if opts:
                out[name] = [BASE, *opts]
        if not out:
            raise NothingToCompressError(f"autotune: {type(self.model).__name__} has no layer that "
                                         f"{sorted(self.methods)} can change for objective={self.objective!r}")
        return out

    # --- the search -----------------------------------------------------------------------------
    def run(self) -> Result:
        self.progress.emit("start", "autotune", 0, self.max_trials, baseline=self.base_score)
        try:
            ladders = self._probe()
            self._search(ladders)
        except Interrupted as e:
            self.stopped = str(e)
        Progress(self.progress.callbacks).emit("end", "autotune", len(self.trials), self.max_trials)
        return self._result()

    def _check_budget(self) -> None:
        self.progress.check()
        if self.time_budget_s is not None and time.perf_counter() - self.t0 > self.time_budget_s:
            raise Interrupted(f"time_budget_s={self.time_budget_s} spent")
        if self.max_trials is not None and len(self.trials) >= self.max_trials:
            raise Interrupted(f"max_trials={self.max_trials} run")

    def _probe(self) -> dict[str, list[search.Rung]]:
        """Every (layer, option) alone: its drop and loss increase, and its bytes or milliseconds saved."""
        todo = [(n, o) for n, opts in self.layers.items() for o in opts[1:]]
        rows, fresh, models = {}, [], {}
        for i, (name, opt) in enumerate(todo):
            self._check_budget()
            k = key(self.run_key, "probe", name, opt)
            row = self.records.get(k)
            if row is None:
                m = build(self.model, {name: opt})
                score, loss = self._score(m)
                row = {"key": k, "kind": "probe", "layer": name, "option": list(opt), "label": opt.label(),
                       "score": score, "drop": self.base_score - score,
                       "loss_increase": None if loss is None else loss - self.base_loss,
                       "bytes": size(m)}
                row["gain"] = self.base_bytes - row["bytes"]
                fresh.append(row)
                if self.objective == "latency":
                    models[k] = m
                else:
                    self.records.add(row)
            rows[(name, opt)] = row
            self.progress.emit("progress", "autotune.probe", i + 1, len(todo), drop=row["drop"])
        if models:  # all new probes timed in one side-by-side run with the original
            ms = self._latency({"original": self.model, **models})
            for row in fresh:
                row["latency_ms"] = ms[row["key"]]
                row["gain"] = ms["original"] - ms[row["key"]]
                self.records.add(row)
        return {n: search.ladder([(o, rows[(n, o)]["gain"], search.cost_of(rows[(n, o)]["drop"],
                                                                           rows[(n, o)]["loss_increase"]))
                                  for o in opts[1:]]) for n, opts in self.layers.items()}

    def _search(self, ladders) -> None:
        at = search.knapsack(ladders, self.max_drop)
        if not any(at.values()):  # nothing fits the budget by the probes: still try the cheapest change
            first = search.push(ladders, at, set())
            if first is None:
                return
            at[first] = 1
        frozen, last_push = set(), None
        while any(at.values()):
            self._check_budget()
            ok = self._trial(search.settings_of(ladders, at))["ok"]
            if not ok and last_push is None:  # never met yet: back off the riskiest layer one rung
                n = search.back_off(ladders, at)
                if n is None:
                    return
                at[n] -= 1
                continue
            if not ok:  # the last push broke the budget: undo it, that layer stays where it was
                at[last_push] -= 1
                frozen.add(last_push)
            last_push = search.push(ladders, at, frozen)
            if last_push is None:
                return
            at[last_push] += 1

    def _trial(self, settings: dict[str, Option]) -> dict:
        changed = {n: o for n, o in settings.items() if not o.is_base}
        k = key(self.run_key, "trial", self.max_drop, sorted((n, list(o)) for n, o in changed.items()))
        done = next((t for t in self.trials if t["key"] == k), None)
        if done is not None:
            return done
        row = self.records.get(k)
        m = None
        if row is None:
            t = time.perf_counter()
            m = build(self.model, changed, train=self.train, epochs=self.epochs,
                      teacher_distill="distill" in self.methods, progress=self.progress)
            score, _ = self._score(m)
            ms = self._latency({"original": self.model, "candidate": m})
            row = {"key": k, "kind": "trial", "settings": {n: o.label() for n, o in changed.items()},
                   "options": {n: list(o) for n, o in changed.items()}, "score": score,
                   "drop": self.base_score - score, "bytes": size(m), "latency_ms": ms["candidate"],
                   "original_latency_ms": ms["original"], "speedup": ms["original"] / ms["candidate"],
                   "seconds": time.perf_counter() - t}
            row["size_ratio"] = self.base_bytes / row["bytes"]
            row["ok"] = row["drop"] <= self.max_drop
            self.records.add(row)
        row = {**row, "trial": len(self.trials)}
        if m is not None and row["ok"] and self._better(row, self._best()):
            self.best_model = (k, m)  # kept, so the pick is not built twice
        self.trials.append(row)
        self.progress.emit("metrics", "autotune", len(self.trials), self.max_trials,
                           message=", ".join(f"{n}: {v}" for n, v in row["settings"].items()),
                           drop=row["drop"], score=row["score"], size_bytes=row["bytes"], size_ratio=row["size_ratio"],
                           latency_ms=row["latency_ms"], speedup=row["speedup"], ok=float(row["ok"]))
        return row

    def _objective(self, row: dict) -> float:
        return row["bytes"] if self.objective == "size" else 1.0 / row["speedup"]

    def _better(self, a: dict, b: dict | None) -> bool:
        return b is None or self._objective(a) < self._objective(b)

    def _best(self, rows=None) -> dict | None:
        ok = [t for t in (rows if rows is not None else self.trials) if t["ok"]]
        return min(ok, key=self._objective) if ok else None

    def _result(self) -> Result:
        pick = self._best()
        met = pick is not None
        if pick is None and self.trials:  # nothing met the budget: the closest one, flagged
            pick = min(self.trials, key=lambda t: (t["drop"], self._objective(t)))
        if pick is None:
            model = copy.deepcopy(self.model)
        elif met and self.best_model is not None and self.best_model[0] == pick["key"]:
            model = self.best_model[1]
        else:  # resumed from records, or the closest miss: rebuilt from its settings
            model = build(self.model, {n: Option(*o) for n, o in pick["options"].items()}, train=self.train,
                          epochs=self.epochs, teacher_distill="distill" in self.methods)
        params = dict(max_drop=self.max_drop, objective=self.objective, methods=sorted(self.methods),
                      device=str(self.dev), backend=_backend_name(self.backend), epochs=self.epochs,
                      fine_tuned=self.train is not None, codebook=CAN["codebook"], entropy_coded_size=CAN["entropy"])
        report = autotune_report(self.model, model, params, self.trials, pick, met, self.stopped,
                                 self.objective, self.base_score, self.base_bytes, time.perf_counter() - self.t0)
        return Result(model, report)


def _check_methods(methods, objective: str, train) -> frozenset[str]:
    if isinstance(methods, str):
        methods = (methods,)
    if not hasattr(methods, "__iter__") or isinstance(methods, (bytes, dict)):
        raise InvalidTypeError("methods", methods, f"a collection of {', '.join(METHODS)}")
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InvalidParameterError("methods", methods, f"a non-empty collection of {', '.join(map(repr, METHODS))}")
    found = frozenset(methods)
    if "distill" in found and not {"structured", "prune"} & found:
        raise InvalidParameterError("methods", methods, "'distill' with 'structured' or 'prune' (autotune distills "
                                    "the original into its pruned models; alone it has no student to train)")
    if "distill" in found and train is None and methods == METHODS:
        found -= {"distill"}  # the default set: nothing to distill with, said in the report's params
    elif "distill" in found and train is None:
        raise InvalidParameterError("train", None, "training batches when methods include 'distill'")
    if objective == "latency" and not {"quantize", "structured", "sparsify"} & found:
        raise InvalidParameterError("methods", methods, "for objective='latency', at least one of 'quantize', "
                                    "'structured', 'sparsify' (zeros alone in dense layers change no latency)")
    return found


def _check_options(options, objective: str) -> dict[str, tuple]:
    grid = dict(GRID[objective])
    if options is None:
        return grid
    if not isinstance(options, dict) or not set(options) <= set(grid):
        raise InvalidParameterError("options", options, "None or a dict with keys among "
                                    "'bits', 'sparsity', 'structured'")
    for name, values in options.items():
        values = (values,) if isinstance(values, (int, float)) else values
        if not hasattr(values, "__iter__") or isinstance(values, (str, bytes, dict)):
            raise InvalidTypeError(f"options[{name!r}]", values, "a list of values")
        values = tuple(values)
        for v in values:
            fine = (isinstance(v, int) and 2 <= v <= 8) if name == "bits" else \
                (isinstance(v, (int, float)) and 0 < v < 1)
            if isinstance(v, bool) or not fine:
                raise InvalidParameterError(f"options[{name!r}]", v, "bits in 2..8" if name == "bits"
                                            else "shares in (0, 1)")
        grid[name] = values
    return grid


def _backend_name(backend) -> str:
    return backend if isinstance(backend, str) else getattr(backend, "__name__", type(backend).__name__)

