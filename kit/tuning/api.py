"""``slimkit.autotune``: search compositions and per-layer settings under an accuracy budget.

0. Starts (first trials, from known-good global recipes): for size, all weights pruned together
   (global magnitude, fine-tuned) then codebook-quantized with trained centroids, the sparsest
   share that meets the budget (Deep Compression's recipe); for latency, the largest uniform
   structured share that meets it. Per-layer refinement then goes on from there.
1. Probes: each layer alone is set to each of its options (structured share, sparsity, bits)
   and the whole model is scored (on a subsample of the data) and measured (artifact bytes, or
   side-by-side latency, each probe timed then dropped).
2. A knapsack over those measured gains and drops picks one option per layer within ``max_drop``.
3. Trials: the pick is built for real (pruned, fine-tuned when ``train`` is given, quantized with
   trained centroids, stored sparse), scored on all the data, sized and timed side by side with
   the original. A missed budget backs off one layer one rung; a met budget pushes one layer one
   rung further, until nothing moves.
Every probe and trial is an event and, with ``records``, a JSON line that a rerun reuses.
"""
from __future__ import annotations

import copy
import itertools
import math
import time

import torch
from torch import nn

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
from .checks import METHODS, OBJECTIVES, check_methods, _check_options
from .records import Records, fingerprint, key
from .report import autotune_report
from .starts import Starts

PROBE_SAMPLES = 256  # probes rank options, trials decide: probes score on a subsample



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


class _Job(Starts):
    def __init__(self, model, data, max_drop, objective, metric, device, backend, methods, train, epochs, options,
                 time_budget_s, max_trials, records, callbacks, stop):
        check_module("model", model)
        self.max_drop = check_nonnegative("max_drop", max_drop)
        if objective not in OBJECTIVES:
            raise InvalidParameterError("objective", objective, "'size' or 'latency'")
        self.objective = objective
        self.methods = check_methods(methods, objective, train)
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
        self.notes: list[str] = []  # options the search could not use, and why (in the report)
        try:
            self.base_score, self.base_loss = self._score(self.model, who="metric")
        except SlimkitError:
            raise
        except Exception as e:
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
        self.probe_data = _subsample(data) if metric is None else data
        self.start: dict | None = None  # the global start the refinement builds on (size objective)
        self._pruned: tuple[float, nn.Module] | None = None  # that start's pruned float model, cached

    # --- scores and measurements ------------------------------------------------------------
    def _score(self, m: nn.Module, who: str = "metric", data=None) -> tuple[float, float | None]:
        if self.metric is None:
            r = evaluate(m, self.data if data is None else data)  # unlabelled or bad data: a slimkit error naming data
            return 100.0 * r["accuracy"], r["loss"]
        try:
            value = float(self.metric(m))
        except Exception as e:
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
            except Exception as e:
                if not bits and not sparsity:
                    raise NothingToCompressError(f"autotune: structured pruning needs a model torch.fx can "
                                                 f"trace ({type(e).__name__}: {e}); add 'quantize' or 'prune'") from e
                self.notes.append(f"structured: not used, torch.fx cannot trace {type(self.model).__name__} "
                                  f"({type(e).__name__}: {e})")
            else:
                self.notes += [f"structured: {n} cannot be shrunk (its outputs reach the model output, a reshape "
                               "or an op structured pruning cannot follow)" for n, m in self.model.named_modules()
                               if is_prunable(m) and n not in producers]
        self.producers = sorted(producers)
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
            if self.objective == "size" and self._size_start():
                seed = self._best()
                refine = self._refine_layers()
                self._search(self._probe(refine), self.max_drop - seed["drop"], from_start=True)
            else:
                if self.objective == "latency":
                    self._uniform_structured()
                self._search(self._probe(self.layers), self.max_drop)
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

    def _probe(self, layers: dict[str, list[Option]]) -> dict[str, list[search.Rung]]:
        """Every (layer, option) alone, the others at their first option: its drop and loss increase
        on the probe data, and its bytes or milliseconds saved. Latency probes are timed side by side
        with the original one at a time, then dropped (only one probed model alive at a time)."""
        ref_key = key(self.run_key, "probe-ref", self.start)
        ref = self.records.get(ref_key)
        if ref is None:
            m = self._build({})
            score, loss = self._score(m, data=self.probe_data)
            ref = {"key": ref_key, "kind": "probe", "layer": None, "score": score, "loss": loss, "bytes": size(m)}
            self.records.add(ref)
        todo = [(n, o) for n, opts in layers.items() for o in opts[1:]]
        rows = {}
        for i, (name, opt) in enumerate(todo):
            self._check_budget()
            k = key(self.run_key, "probe", self.start, name, opt)
            row = self.records.get(k)
            if row is None:
                m = self._build({name: opt})
                score, loss = self._score(m, data=self.probe_data)
                row = {"key": k, "kind": "probe", "layer": name, "option": list(opt), "label": opt.label(),
                       "score": score, "drop": ref["score"] - score,
                       "loss_increase": None if loss is None else loss - ref["loss"], "bytes": size(m)}
                row["gain"] = ref["bytes"] - row["bytes"]
                if self.objective == "latency":
                    ms = self._latency({"original": self.model, "probe": m})
                    row["latency_ms"], row["gain"] = ms["probe"], ms["original"] - ms["probe"]
                del m
                self.records.add(row)
            rows[(name, opt)] = row
            self.progress.emit("progress", "autotune.probe", i + 1, len(todo), drop=row["drop"])
        return {n: search.ladder([(o, rows[(n, o)]["gain"], search.cost_of(rows[(n, o)]["drop"],
                                                                           rows[(n, o)]["loss_increase"]))
                                  for o in opts[1:]], base=opts[0]) for n, opts in layers.items()}

    def _build(self, changed: dict[str, Option], *, finetune: bool = False) -> nn.Module:
        """The model with these layers changed: from the original, or on top of the start (every
        other layer at the start's bits)."""
        kw = {"train": self.train, "epochs": self.epochs} if finetune else {}
        if self.start is None:
            return build(self.model, changed, teacher_distill="distill" in self.methods, progress=self.progress, **kw)
        full = {n: changed.get(n, Option(0.0, 0.0, self.start["bits"])) for n in self._quantizable()}
        return build(self._pruned_model(), full, progress=self.progress, **kw)

    def _search(self, ladders, budget: float, from_start: bool = False) -> None:
        """Knapsack, then verified one-rung moves. ``from_start``: every rung 0 is the start, a
        trial already met, so the search may come back to it and push from there."""
        at = search.knapsack(ladders, max(budget, 0.0))
        if not any(at.values()) and not from_start:  # nothing fits by the probes: still try the cheapest
            first = search.push(ladders, at, set())
            if first is None:
                return
            at[first] = 1
        frozen, last_push = set(), None
        while from_start or any(at.values()):
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
        k = key(self.run_key, "trial", self.max_drop, self.start, sorted((n, list(o)) for n, o in changed.items()))
        done = next((t for t in self.trials if t["key"] == k), None)
        if done is not None:
            return done
        row = self.records.get(k)
        m = None
        if row is None:
            t = time.perf_counter()
            m = self._build(changed, finetune=True)
            score, _ = self._score(m)
            ms = self._latency({"original": self.model, "candidate": m})
            row = {"key": k, "kind": "trial", "start": self.start, "settings": self._labels(changed),
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

    def _labels(self, changed: dict[str, Option]) -> dict[str, str]:
        if self.start is None:
            return {n: o.label() for n, o in changed.items()}
        real = self._realized()  # on top of the start: a layer's sparsity is at least the start's
        return {n: Option(o.structured, max(o.sparsity, real[n]), o.bits).label() + (" (codebook)" if CAN["codebook"]
                                                                                      and o.bits < 8 else "")
                for n, o in changed.items()}

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
        else:  # resumed from records, or the closest miss: rebuilt from its settings, past any stop
            self.start, self.progress = pick.get("start"), Progress()
            model = self._build({n: Option(*o) for n, o in pick["options"].items()}, finetune=True)
        self._pruned = None
        params = {"max_drop": self.max_drop, "objective": self.objective, "methods": sorted(self.methods),
                      "device": str(self.dev), "backend": _backend_name(self.backend), "epochs": self.epochs,
                      "fine_tuned": self.train is not None, "codebook": CAN["codebook"], "entropy_coded_size": CAN["entropy"]}
        report = autotune_report(self.model, model, params, self.trials, pick, met, self.stopped,
                                 self.objective, self.base_score, self.base_bytes, time.perf_counter() - self.t0)
        report.summary["unavailable"] = self.notes  # options the search could not use, with the reason
        return Result(model, report)


def _subsample(data, n: int = PROBE_SAMPLES):
    """Probes score on at most ``n`` samples of (X, y) tensor data (trials on all of it); other
    data (batches, loaders) is used whole."""
    try:
        x, y = data
    except (TypeError, ValueError):
        return data
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and len(x) == len(y) > n:
        return x[:n], y[:n]
    return data


def _backend_name(backend) -> str:
    return backend if isinstance(backend, str) else getattr(backend, "__name__", type(backend).__name__)

