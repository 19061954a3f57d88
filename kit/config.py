"""Settings declared once: frozen config dataclasses whose fields say their type, range, choices
and help. The verbs validate with them (``quantize(model, bits=4)`` is sugar for
``quantize(model, QuantConfig(bits=4))``), the panel builds its controls from them, and the
run layer and "copy code" print them back as the Python call that reproduces a result.

    @dataclass(frozen=True)
    class QuantConfig(Config):
        bits: int = integer(8, 2, 8, "bits per weight")
        scheme: str = choice("symmetric", ("symmetric", "asymmetric"), "zero point 0, or min-max")
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from .errors import InvalidParameterError, InvalidTypeError, check_choice

class Word(str, Enum):
    """A closed vocabulary (statuses, actions, execution kinds): typed for control flow, yet a str
    that compares, prints and serialises as its word, so records and JSON keep plain words."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Setting:
    """What one config field accepts. ``choices`` may be a callable (a registry's current names)."""

    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    low_open: bool = False
    choices: tuple | Callable[[], Iterable] | None = None
    optional: bool = False  # None is allowed (and means "not set" / "automatic")
    label: str | None = None  # short name for controls and labels (default: the field name)
    wording: str | None = None  # the accepted values in words, when the generated text is not the clearest

    def options(self) -> tuple:
        return tuple(self.choices() if callable(self.choices) else self.choices or ())

    def allowed(self) -> str:
        """The accepted values in words, as error messages and help print them."""
        none = " or None" if self.optional else ""
        if self.wording:
            return self.wording
        if self.kind == "int":
            return f"an int in [{self.low:g}, {self.high:g}]{none}"
        if self.kind == "float":
            lo, hi = "(" if self.low_open else "[", ")" if self.high_open or math.isinf(self.high) else "]"
            return f"a float in {lo}{self.low:g}, {self.high:g}{hi}{none}"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.options()) + none
        if self.kind == "bool":
            return "True or False"
        if self.kind == "names":
            return "a list of module-name patterns, or None"
        return "any value"

    def text(self, name: str, value: Any) -> str:
        """``value`` as a person writes it in a label: floats without binary noise (0.8, not
        0.8000000000000002), True as the setting's label, False and None left out ("")."""
        if value is None or value is False:
            return ""
        if value is True:
            return self.label or name.replace("_", " ")
        if isinstance(value, float):
            return f"{value:.6g}"
        if isinstance(value, (tuple, list)):
            return ",".join(map(str, value))
        return str(value)

    def check(self, name: str, value: Any) -> Any:
        """The value, normalised (ints stay ints, names become a tuple), or a slimkit error."""
        if value is None and (self.optional or self.kind == "names"):
            return None
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidTypeError(name, value, self.allowed())
            if not self.low <= value <= self.high:
                raise InvalidParameterError(name, value, self.allowed())
            return value
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidTypeError(name, value, self.allowed())
            v = float(value)
            if (math.isnan(v) or math.isinf(v) or v < self.low or v > self.high
                    or (self.high_open and v == self.high) or (self.low_open and v == self.low)):
                raise InvalidParameterError(name, value, self.allowed())
            return v
        if self.kind == "choice":
            return check_choice(name, value, self.options())
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InvalidTypeError(name, value, self.allowed())
            return value
        if self.kind == "names":
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
                raise InvalidTypeError(name, value, self.allowed())
            return tuple(value)
        return value


def _field(default: Any, setting: Setting):
    return dataclasses.field(default=default, metadata={"setting": setting})


def integer(default, low: int, high: int, help: str, *, optional: bool = False, label: str | None = None,
            wording: str | None = None):
    return _field(default, Setting("int", help, low, high, optional=optional, label=label, wording=wording))


def number(default, low: float, high: float, help: str, *, low_open: bool = False, high_open: bool = False,
           optional: bool = False, label: str | None = None, wording: str | None = None):
    """A finite float in [low, high] (ends excluded as asked); ``high`` may be ``math.inf``."""
    return _field(default, Setting("float", help, low, high, high_open=high_open, low_open=low_open,
                                   optional=optional, label=label, wording=wording))


def choice(default, choices, help: str, *, optional: bool = False, label: str | None = None):
    return _field(default, Setting("choice", help, choices=choices, optional=optional, label=label))


def flag(default: bool, help: str, *, label: str | None = None, wording: str | None = None):
    return _field(default, Setting("bool", help, label=label, wording=wording))


def names(help: str, *, label: str | None = None, wording: str | None = None):
    return _field(None, Setting("names", help, label=label, wording=wording))


def anything(default, help: str, *, label: str | None = None):
    return _field(default, Setting("any", help, label=label))


class Config:
    """Base of the verbs' frozen config dataclasses: each field checked in ``__post_init__``."""

    verb: ClassVar[str] = ""  # the slimkit function the config drives, for code and labels
    first: ClassVar[str] = ""  # the setting a bare second positional argument means (bits, sparsity...)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setting = f.metadata.get("setting")
            if setting is not None:
                object.__setattr__(self, f.name, setting.check(f.name, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Checks across fields; subclasses override (after every field passed its own check)."""

    @classmethod
    def settings(cls) -> dict[str, tuple[Setting, Any]]:
        """Every declared setting: name -> (Setting, default), in declaration order."""
        return {f.name: (f.metadata["setting"], f.default) for f in dataclasses.fields(cls)
                if "setting" in f.metadata}

    @classmethod
    def build(cls, config: Any = None, settings: Mapping[str, Any] | None = None):
        """The config a verb was called with: a config instance, the value of ``first`` (so
        ``quantize(model, 4)`` keeps working), or None; keyword ``settings`` override it."""
        settings = dict(settings or {})
        known = cls.settings()
        unknown = [k for k in settings if k not in known]
        if unknown:
            raise InvalidTypeError(unknown[0], settings[unknown[0]],
                                   f"a setting of {cls.__name__}: " + ", ".join(known))
        if isinstance(config, cls):
            return dataclasses.replace(config, **settings) if settings else config
        if isinstance(config, Config):
            raise InvalidTypeError("config", config, f"a {cls.__name__}")
        if config is not None:
            if cls.first in settings:
                raise InvalidParameterError(cls.first, settings[cls.first], "given once (it was also passed by position)")
            settings[cls.first] = config
        return cls(**settings)

    def changed(self) -> dict[str, Any]:
        """The settings that differ from their defaults, in declaration order."""
        return {name: getattr(self, name) for name, (_, default) in self.settings().items()
                if getattr(self, name) != default}

    def label(self, keys: Iterable[str] | None = None,
              formats: Mapping[str, Callable[[Any], str]] | None = None) -> str:
        """This config as a person writes it: ``quantize int4 per_group``, ``prune 80% magnitude``.
        ``keys``: the settings shown, in order (default: those changed); ``formats``: how some
        settings read (``{"bits": lambda v: f"int{v}"}``); unset and False settings are left out."""
        settings, formats = self.settings(), formats or {}
        parts = [self.verb]
        for key in (self.changed() if keys is None else keys):
            value = getattr(self, key)
            text = settings[key][0].text(key, value)
            if not text:
                continue
            if key in formats:
                parts.append(formats[key](value))
            else:  # a number says what it is; a choice or a flag is its own word
                parts.append(text if settings[key][0].kind in ("choice", "bool") else f"{key}={text}")
        return " ".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.settings()}

    def code(self, model: str = "model", extra: Mapping[str, str] | None = None) -> str:
        """The Python call that reproduces this config: ``slimkit.quantize(model, bits=4)``.
        ``extra`` adds arguments that are not settings (data...), as source text."""
        args = [model] + [f"{k}={_literal(v)}" for k, v in self.changed().items()]
        args += [f"{k}={v}" for k, v in (extra or {}).items()]
        return f"slimkit.{self.verb}({', '.join(args)})"


def _literal(v: Any) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)


def signature(verb: Callable, cls: type[Config]) -> Callable:
    """Give ``verb(model, config=None, *, ..., **settings)`` a signature listing every setting
    (with its default) so ``help()``, IDEs and ``inspect`` show them; returns ``verb``."""
    sig = inspect.signature(verb)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    taken = {p.name for p in params}
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, (_, default) in cls.settings().items() if name not in taken]
    verb.__signature__ = sig.replace(parameters=params)
    return verb
