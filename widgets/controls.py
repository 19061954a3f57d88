"""The panel's controls, built from the verbs' configs: one widget per declared setting.

A setting's kind picks the widget (int/float: slider over a short range, else a text box;
choice: dropdown, re-reading the registry so ``register_score`` adds to it; bool: checkbox;
names: comma-separated globs), its help becomes the tooltip. Validation is constructing the
config, so the panel holds no second copy of the core's checks. What only the panel has
(student width, fine-tune epochs, which data...) is declared the same way in small configs here.

Control names are the field names; a name an earlier tab already uses gets its group's prefix
(``sparsify_sparsity``, ``prune_include``); fine-tuning's are always ``finetune_*``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ipywidgets as W

import slimkit
from slimkit.config import Config, Setting, choice, flag, integer, number
from slimkit.errors import InvalidParameterError, SlimkitError

from .step_order import StepOrder, parse_chain


@dataclass(frozen=True)
class QuantizePanel(Config):
    """quantize settings that are not QuantConfig's: calibration data is an argument of its own."""

    activations: bool = flag(False, "calibrate activations on the training data (int8 inputs)",
                             label="calibrate activations (int8 inputs)")
    # None (the control disabled or empty) or 0: no training; affine quantization trains no centroids
    centroid_epochs: int | None = integer(None, 0, 10_000, "codebook: epochs training the shared values on the "
                                          "training data (Deep Compression's trained quantization; empty or 0: "
                                          "none)", optional=True, label="centroid fine-tune epochs")


@dataclass(frozen=True)
class PrunePanel(Config):
    finetune_epochs: int = integer(2, 0, 10_000, "fine-tune epochs after pruning, on the training data (0: none)",
                                   label="fine-tune epochs")


@dataclass(frozen=True)
class DistillPanel(Config):
    width: float = number(0.5, 0, 1, "the student: slimkit.shrink(model, width)", low_open=True,
                          label="student width")
    fraction: float = number(1.0, 0, 1, "fraction of the training data distilled on", low_open=True,
                             label="train fraction")


@dataclass(frozen=True)
class SparsifyPanel(Config):
    sparsify_mode: str = choice("sparsity", ("sparsity", "threshold"),
                                "zero the smallest fraction of each layer, or every |w| below a threshold",
                                label="zero by")


@dataclass(frozen=True)
class AutoPanel(Config):
    """``slimkit.autotune``'s settings as the auto tab offers them (its data are the panel's)."""

    max_drop: float = number(0.5, 0, float("inf"), "allowed accuracy drop (points) from the original",
                             label="max drop (pts)", wording="a number >= 0 (points of accuracy)")
    objective: str = choice("size", ("size", "latency"), "smallest artifact, or fastest on the device below",
                            label="objective")
    quantize: bool = flag(True, "2/3/4/8 bits per layer (codebook where slimkit has it)", label="quantize")
    prune: bool = flag(True, "unstructured sparsity per layer", label="prune")
    sparsify: bool = flag(True, "sparse storage (and CSR execution for latency)", label="sparsify")
    structured: bool = flag(True, "units removed per layer", label="structured")
    distill: bool = flag(False, "fine-tune pruned trials on the original's soft targets (needs epochs > 0)",
                         label="distill")
    time_budget_s: float | None = number(60.0, 0, float("inf"), "stop the search after this many seconds "
                                         "with the best so far (empty: no limit)", low_open=True, optional=True,
                                         label="time budget (s)")
    max_trials: int | None = integer(None, 1, 2**31 - 1, "stop after this many whole-model trials (empty: "
                                     "no limit)", optional=True, label="max trials")
    epochs: int = integer(0, 0, 10_000, "fine-tune epochs per trial after pruning, on the training data",
                          label="fine-tune epochs")

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(m for m in AUTO_METHODS if getattr(self, m))


AUTO_METHODS = ("quantize", "prune", "sparsify", "structured", "distill")


@dataclass(frozen=True)
class Group:
    """The controls of one config on a tab. ``prefix``: always prefix the names (nested configs)."""

    key: str
    cls: type[Config]
    skip: tuple[str, ...] = ()
    prefix: bool = False


# tab -> its groups, in display order (also the naming order: earlier tabs keep bare names)
TAB_GROUPS: dict[str, tuple[Group, ...]] = {
    # keep='auto' needs a metric; data and val_data are the panel's splits; finetune_epochs allows 0
    "quantize": (Group("quantize", slimkit.QuantConfig, skip=("max_drop",)), Group("quantize_panel", QuantizePanel)),
    "prune": (Group("prune", slimkit.PruneConfig), Group("prune_panel", PrunePanel),
              Group("finetune", slimkit.Finetune, skip=("epochs",), prefix=True)),
    "distill": (Group("distill_panel", DistillPanel), Group("distill", slimkit.DistillConfig)),
    "sparsify": (Group("sparsify_panel", SparsifyPanel), Group("sparsify", slimkit.SparsifyConfig)),
    "auto": (Group("auto", AutoPanel, prefix=True),),
}
METHODS = tuple(t for t in TAB_GROUPS if t != "auto")  # the verbs a tab runs (auto searches over them)
# control names that would clash with the panel's own words (``panel.set(method, ...)``): prefixed
RESERVED = {"method"}
# the steps the pipeline tab offers; the user orders them (the library says which chains it takes)
PIPELINE_STEPS = ("distill", "prune", "quantize", "sparsify")

# the panel's starting values where they differ from the configs' defaults
DEFAULTS = {"epochs": 5, "sparsify_sparsity": 0.9, "threshold": 0.01, "format": "auto"}

# a control that applies only given another's value; disabled, its setting is unset (None)
DEPENDS = {"group_size": ("granularity", "per_group"), "sparsify_sparsity": ("sparsify_mode", "sparsity"),
           "threshold": ("sparsify_mode", "threshold"), "centroid_epochs": ("quantize_method", "codebook")}

# what a sweep varies on each tab (a control name)
SWEEP_PARAM = {"quantize": "bits", "prune": "sparsity", "distill": "temperature", "sparsify": "sparsify_sparsity"}
SWEEP_DEFAULTS = {"quantize": "8, 6, 4, 3, 2", "prune": "0.5, 0.7, 0.8, 0.9, 0.95", "distill": "1, 2, 4, 8",
                  "sparsify": "0.5, 0.8, 0.9, 0.95"}
# the settings a results row always shows for each method (with any other changed from its default)
SUMMARY = {"quantize": ("bits", "granularity", "group_size", "scheme", "activations"),  # + method etc. when changed
           "prune": ("sparsity", "score", "structured", "finetune_epochs"),
           "distill": ("width", "temperature", "alpha", "noise", "epochs", "fraction"),
           "sparsify": ("sparsify_mode", "sparsify_sparsity", "threshold", "format"),
           "auto": ("auto_max_drop", "auto_objective", *(f"auto_{m}" for m in AUTO_METHODS), "auto_time_budget_s",
                    "auto_max_trials", "auto_epochs")}
def style() -> dict:
    """A control's description width and its OWN layout (a shared Layout would share borders)."""
    return dict(style={"description_width": "120px"}, layout=W.Layout(width="340px"))


INVALID_BORDER = "2px solid #b00020"
INVALID_CSS = (".slimkit-invalid input, .slimkit-invalid select "
               "{outline: 2px solid #b00020 !important; outline-offset: -2px !important}")


@dataclass(frozen=True)
class Spec:
    """Where a control's value goes: ``group.key`` config's field ``field``."""

    group: str
    field: str
    setting: Setting
    default: Any


PLACEHOLDERS = {"centroid_epochs": "(none: no training)", "auto_max_trials": "(none: no limit)"}


def _widget(name: str, spec: Spec) -> W.ValueWidget:
    s, value = spec.setting, spec.default
    kw = dict(description=s.label or name, tooltip=s.help, **style())
    ranged = s.low is not None and s.high is not None and s.high != float("inf")
    if s.kind == "bool":
        return W.Checkbox(value, description=kw["description"], tooltip=s.help, indent=False)
    if s.kind == "choice":
        return W.Dropdown(options=s.options(), value=value, **kw)
    if value is None or s.kind == "names":  # None is a value here: typed as text, empty means None
        return W.Text("", placeholder=PLACEHOLDERS.get(name, "(none: automatic)") if s.kind != "names"
                      else "name globs, comma separated", **kw)
    # no sliders: a slider's readout clamps what is typed (1.5 -> 0.99) without a word; a text
    # box keeps it, and the config's check refuses it with a message and a red outline
    if s.kind == "int" and ranged and s.high - s.low <= 16:  # bits: pick one, nothing to clamp
        return W.Dropdown(options=list(range(int(s.low), int(s.high) + 1)), value=value, **kw)
    return W.IntText(value, **kw) if s.kind == "int" else W.FloatText(value, **kw)


def _text(value: Any) -> str:
    """What a text control shows for ``value``."""
    if value is None:
        return ""
    if isinstance(value, Iterable) and not isinstance(value, str):
        return ", ".join(map(str, value))
    return str(value)


def _parse(name: str, setting: Setting, text: str) -> Any:
    """A text control's value as its setting takes it: "" is None; globs become a list."""
    text = text.strip()
    if not text:
        return None
    if setting.kind == "names":
        return [p.strip() for p in text.split(",") if p.strip()]
    try:
        return int(text) if setting.kind == "int" else float(text)
    except ValueError:
        raise InvalidParameterError(name, text, setting.allowed()) from None


def _pct(v: float) -> str:
    return f"{100 * v:.4g}%"


# how a step's label reads: (config key, settings always shown, settings shown when changed, formats)
LABELS: dict[str, tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]] = {
    "quantize": (("quantize", ("bits", "granularity"), ("method", "group_size", "scheme", "mode")),
                 ("quantize_panel", (), ("activations", "centroid_epochs"))),
    "prune": (("prune", ("sparsity", "score"), ("structured", "scope", "steps")),
              ("prune_panel", ("finetune_epochs",), ())),
    "distill": (("distill_panel", ("width",), ("fraction",)),
                ("distill", ("temperature", "alpha"), ("noise", "epochs"))),
    "sparsify": (("sparsify", ("sparsity", "threshold", "format"), ()),),
    "auto": (("auto", ("objective", "max_drop"), ("time_budget_s", "max_trials", "epochs")),),
}
FORMATS = {"bits": lambda v: f"int{v}", "sparsity": _pct, "group_size": lambda v: f"group {v}",
           "activations": lambda v: "+int8 activations",
           "finetune_epochs": lambda v: f"+{v} epochs fine-tune" if v else "",
           "width": lambda v: f"width {_pct(v)}", "fraction": lambda v: f"on {_pct(v)} of train",
           "temperature": lambda v: f"T={v:g}", "alpha": lambda v: f"alpha={v:g}", "noise": lambda v: f"noise={v:g}",
           "epochs": lambda v: f"{v} epochs", "threshold": lambda v: f"|w|<{v:g}", "steps": lambda v: f"in {v} steps",
           "scope": lambda v: f"{v} scope", "mode": lambda v: f"{v} mode", "method": str,
           "centroid_epochs": lambda v: f"+{v} epochs centroids" if v else "",
           "objective": lambda v: "smallest" if v == "size" else "fastest",
           "max_drop": lambda v: f"within {v:g} pts", "time_budget_s": lambda v: f"{v:g} s budget",
           "max_trials": lambda v: f"<= {v} trials"}


@dataclass(frozen=True)
class Step:
    """One compression step as it will run: its configs, read from the controls at the click
    (the controls may change while the job runs), and the settings its results row shows."""

    method: str
    configs: dict[str, Config]
    settings: dict[str, Any]

    @property
    def label(self) -> str:
        """As a person writes it: ``quantize int4 per_group``, ``prune 80% magnitude``."""
        parts = [self.method]
        for key, always, changed in LABELS[self.method]:
            config = self.configs.get(key)
            if config is not None:
                keys = [*always, *(k for k in changed if k in config.changed())]
                parts.append(config.label(keys, FORMATS).removeprefix(config.verb).strip())
        return " ".join(p for p in parts if p)

    def code(self, model: str = "m") -> list[str]:
        """The lines of Python that run this step on ``model`` (rebinding it to the result), with
        the data the panel uses: ``train``, ``test``."""
        c = self.configs
        if self.method == "quantize":
            extra = {"activations": "train"} if c["quantize_panel"].activations else {}
            if c["quantize_panel"].centroid_epochs:
                extra["finetune"] = f"dict(data=train, epochs={c['quantize_panel'].centroid_epochs})"
            if c["quantize"].method == "gptq":
                extra["data"] = "train"
            return [f"{model} = {c['quantize'].code(model, extra)}.model"]
        if self.method == "prune":
            extra = {"data": "train"}
            if "finetune" in c:
                ft = c["finetune"]
                more = "".join(f", {k}={v!r}" for k, v in ft.changed().items()
                               if k not in ("data", "val_data", "epochs"))
                extra["finetune"] = f"slimkit.Finetune(train, epochs={ft.epochs}, val_data=test{more})"
            return [f"{model} = {c['prune'].code(model, extra)}.model"]
        if self.method == "sparsify":
            return [f"{model} = {c['sparsify'].code(model)}.model"]
        if self.method == "auto":
            a = c["auto"]
            args = "".join(f", {k}={v!r}" for k, v in auto_kwargs(a).items())
            train = ", train=train" if a.epochs else ""
            return [f"{model} = slimkit.autotune({model}, test{args}{train}).model  # the search's pick"]
        panel = c["distill_panel"]
        data = "train" if panel.fraction >= 1 else f"subset(train, {panel.fraction!r})"
        return [*([] if data == "train" else ["from slimkit.data import subset"]),
                f"student = slimkit.shrink({model}, {panel.width!r})",
                f"{model} = {c['distill'].code(f'{model}, student, {data}', {'val_data': 'test'})}.model"]


def auto_kwargs(a: AutoPanel) -> dict[str, Any]:
    """``slimkit.autotune``'s keywords from the auto tab (data, train and device are the panel's)."""
    return {"max_drop": a.max_drop, "objective": a.objective, "methods": a.methods,
            "time_budget_s": a.time_budget_s, "max_trials": a.max_trials, "epochs": a.epochs}


def parse_values(text: str, name: str, kind: str) -> list[float]:
    """"8, 6, 4" -> [8, 6, 4] (ints for an int setting); the configs check the values."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InvalidParameterError(f"sweep values for {name}", part, "numbers separated by commas") from None
        out.append(int(value) if value.is_integer() and kind == "int" else value)
    if not out:
        raise InvalidParameterError(f"sweep values for {name}", text, "at least one number")
    return out


class Controls:
    """Every control of the panel by name (``widgets``), and the configs they make."""

    def __init__(self, devices: list[str], backends: list[str]):
        self.specs: dict[str, Spec] = {}
        self.widgets: dict[str, W.ValueWidget] = {}
        self.pages: dict[str, list[str]] = {}
        self.invalid: set[str] = set()  # controls named by the config errors seen (see mark)
        for tab, groups in TAB_GROUPS.items():
            page = self.pages[tab] = []
            for g in groups:
                for field, (setting, default) in g.cls.settings().items():
                    if setting.kind == "any" or field in g.skip:
                        continue
                    clash = g.prefix or field in self.specs or field in RESERVED
                    name = f"{g.key}_{field}" if clash else field
                    spec = self.specs[name] = Spec(g.key, field, setting, DEFAULTS.get(name, default))
                    self.widgets[name] = _widget(name, spec)
                    page.append(name)
            if tab not in SWEEP_PARAM:
                continue
            name = f"{tab}_sweep"
            self.widgets[name] = W.Text(SWEEP_DEFAULTS[tab], description=f"sweep {SWEEP_PARAM[tab].split('_')[-1]}",
                                        tooltip="values the Sweep button runs, comma separated", **style())
            page.append(name)
        self.widgets["pipeline"] = StepOrder(PIPELINE_STEPS, ("prune", "quantize"))
        self.widgets["device"] = W.Dropdown(options=devices, value="cpu" if "cpu" in devices else devices[0],
                                            description="device", **style())
        self.widgets["backend"] = W.Dropdown(options=backends, value="eager", description="backend (latency)",
                                             **style())
        self.update()

    def mark(self, invalid: set[str]) -> None:
        """Mark in red the controls whose values were refused: a class (for the panel's CSS,
        :data:`INVALID_CSS`) and a red border through the widget's own layout, which the widget
        front-end draws as an inline style whatever CSS reaches the page."""
        for name, w in self.widgets.items():
            bad = name in invalid
            (w.add_class if bad else w.remove_class)("slimkit-invalid")
            w.layout.border = INVALID_BORDER if bad else None

    def __getitem__(self, name: str) -> W.ValueWidget:
        return self.widgets[name]

    def update(self) -> None:
        """Enable the controls whose setting applies given the others (group size only per group)."""
        for name, (other, needed) in DEPENDS.items():
            self.widgets[name].disabled = self.widgets[other].value != needed

    def raw(self) -> dict[str, Any]:
        """Every control's value as shown (text unparsed)."""
        out = {name: w.value for name, w in self.widgets.items()}
        out["pipeline"] = tuple(out["pipeline"])
        return out

    def value(self, name: str) -> Any:
        """A control's value as its setting takes it (None while the control is disabled)."""
        w, spec = self.widgets[name], self.specs.get(name)
        if spec is None or isinstance(w, W.Checkbox | W.Dropdown):
            return w.value
        if w.disabled:
            return None
        return _parse(name, spec.setting, w.value) if isinstance(w, W.Text) else w.value

    def names(self, group: str) -> dict[str, str]:
        """field -> control name for one config group."""
        return {spec.field: name for name, spec in self.specs.items() if spec.group == group}

    def config(self, group: str, override: dict[str, Any] | None = None, **extra) -> Config:
        """The group's config from the controls (``override``: control name -> value, e.g. one
        value of a sweep); a bad value raises the config's error."""
        override = override or {}
        names = self.names(group)
        values = {f: override[n] if n in override else self.value(n) for f, n in names.items()}
        cls = next(g.cls for groups in TAB_GROUPS.values() for g in groups if g.key == group)
        return cls(**values, **extra)

    def step(self, method: str, train, test, override: dict[str, Any] | None = None
             ) -> tuple[dict[str, Config], list[str]]:
        """The configs one step of ``method`` runs with (fine-tuning's only with epochs > 0), and
        what is wrong with the settings, one message per config that refused them."""
        configs, problems = {}, []
        for g in TAB_GROUPS[method]:
            extra = {}
            if g.key == "finetune":
                epochs = getattr(configs.get("prune_panel"), "finetune_epochs", 0)
                if not epochs:
                    continue
                extra = dict(data=train, epochs=epochs, val_data=test)
            try:
                configs[g.key] = self.config(g.key, override, **extra)
            except SlimkitError as e:
                problems.append(f"{method}: {e}")
                field = getattr(e, "name", "")
                self.invalid.add(self.names(g.key).get(field, field))
        return configs, problems

    def plan(self, method: str, train, test, override: dict[str, Any] | None = None) -> Step:
        configs, _ = self.step(method, train, test, override)
        return Step(method, configs, self.shown(method, configs))

    def sweep(self, method: str, train, test) -> tuple[list[tuple[float, Step]], list[str]]:
        """One step per value of the tab's sweep box, and what is wrong with any of them."""
        param = SWEEP_PARAM[method]
        problems, plan = [], []
        try:
            values = parse_values(self.widgets[f"{method}_sweep"].value, param, self.specs[param].setting.kind)
        except SlimkitError:
            self.invalid.add(f"{method}_sweep")
            raise
        for v in values:
            seen = set(self.invalid)
            configs, bad = self.step(method, train, test, {param: v})
            new = self.invalid - seen
            if param in new:  # a value of the sweep box was refused, not the control it overrides
                self.invalid = seen | (new - {param}) | {f"{method}_sweep"}
            problems += [f"sweep: {b}" for b in bad if f"sweep: {b}" not in problems]
            plan.append((v, Step(method, configs, self.shown(method, configs))))
        return plan, problems

    def shown(self, method: str, configs: dict[str, Config]) -> dict[str, Any]:
        """The settings of one step as its results row and run record show them, by control
        name: the method's summary (applicable ones), then any other setting changed."""
        out = {}
        for name in SUMMARY[method]:
            spec = self.specs[name]
            if not self.widgets[name].disabled and spec.group in configs:
                out[name] = getattr(configs[spec.group], spec.field)
        for key, config in configs.items():
            names = self.names(key)
            for f, v in config.changed().items():
                if f in names:
                    out.setdefault(names[f], v)
        return out

    def set(self, **values) -> None:
        """Set controls by name, as a user would. All or nothing: a bad name or value raises and
        leaves every control as it was."""
        for name, value in values.items():
            if name not in self.widgets:
                raise InvalidParameterError(name, value, "a control of the panel: " + ", ".join(self.widgets))
        old = {name: self.widgets[name].value for name in values}
        try:
            for name, value in values.items():
                w = self.widgets[name]
                if name == "pipeline":
                    value = parse_chain(value)
                elif isinstance(w, W.Text) and name in self.specs:
                    value = _text(value)
                w.value = value
        except Exception as e:  # traitlets rejects mistyped values and unknown options: say which control
            for n, v in old.items():
                self.widgets[n].value = v
            raise InvalidParameterError(name, value, f"a value the control accepts ({e})") from None

