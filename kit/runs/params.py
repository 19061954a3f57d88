"""A notebook's ``parameters`` cell as a typed signature, checked before any kernel starts.

papermill only *warns* about unknown parameters and never checks types; a typo or a string
where a float belongs then fails minutes into a run (or, worse, silently uses the default).
Here each line of the cell tagged ``parameters`` is read with :mod:`ast`::

    sparsity: float = 0.5         # in [0, 1)
    score: str = "magnitude"      # one of "magnitude", "fisher", "random"
    device: str = "cpu"           # torch device, e.g. "cpu", "cuda"

giving name, annotated type, default and help. The help comment may carry a constraint that
is enforced too: ``in [lo, hi)`` (brackets say which ends are open) or ``one of a, b, c``.
"""
from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, InvalidTypeError, SlimkitError
from ..jsonsafe import Limits, Violation, walk

# annotation -> python types accepted (int is a float; bool is not an int)
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
    "list": (list, tuple), "dict": (dict,),
}
_RANGE = re.compile(r"\bin\s*([\[(])\s*([-+\w.]+)\s*,\s*([-+\w.]+)\s*([\])])")
_CHOICES = re.compile(r"\bone of\s*:?\s*(.+)$")

# What a parameter value may be. papermill writes each value into the notebook as Python source:
# str, numbers, bool, None, lists and dicts are escaped, anything else (bytes from YAML's !!binary,
# dates, sets, objects) as its str() *unescaped*, i.e. as code. The limits keep a value's source small.
MAX_DEPTH, MAX_ITEMS, MAX_STR, MAX_TEXT = 8, 10_000, 10_000, 1_000_000
INT_RANGE = (-2**63, 2**63 - 1)
PLAIN = (f"plain JSON data (str, int, float, bool, None, and lists and dicts with str keys of those) "
         f"within the limits: ints within 64 bits, finite floats, strings of at most {MAX_STR:,} characters, "
         f"nesting at most {MAX_DEPTH} deep, at most {MAX_ITEMS:,} items in all")
_LIMITS = Limits(depth=MAX_DEPTH, int_range=INT_RANGE, max_str=MAX_STR, max_total=MAX_ITEMS, max_key=MAX_STR)


class NotebookParameterError(SlimkitError, ValueError):
    """The notebook's parameters cell is missing or unreadable."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str            # "int", "float", "str", "bool", "list", "dict" or "any"
    default: Any
    help: str = ""
    optional: bool = False   # annotated ``X | None`` / ``Optional[X]``: None is accepted
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None

    def allowed(self) -> str:
        parts = [("an " if self.type == "int" else "a ") + self.type if self.type != "any" else "any value"]
        if self.low is not None:
            parts.append(f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        if self.optional:
            parts.append("or None")
        return " ".join(parts)

    def check(self, value: Any) -> Any:
        """The value converted to this parameter's type, or an error naming what is allowed."""
        if value is None:
            if self.optional or self.default is None:
                return None
            raise InvalidTypeError(self.name, value, self.allowed())
        if self.type != "any":
            kinds = _TYPES[self.type]
            if isinstance(value, bool) and self.type != "bool":
                raise InvalidTypeError(self.name, value, self.allowed())
            if not isinstance(value, kinds):
                raise InvalidTypeError(self.name, value, self.allowed())
            if self.type == "float":
                value = float(value)
                if math.isnan(value):
                    raise InvalidParameterError(self.name, value, self.allowed())
            if self.type == "list":
                value = list(value)
        if self.low is not None and isinstance(value, (int, float)):
            lo_bad = value <= self.low if self.low_open else value < self.low
            hi_bad = value >= self.high if self.high_open else value > self.high
            if lo_bad or hi_bad:
                raise InvalidParameterError(self.name, value, self.allowed())
        if self.choices is not None and value not in self.choices:
            raise InvalidParameterError(self.name, value, self.allowed())
        return value


@dataclass
class Signature:
    """All parameters of one notebook, in cell order."""

    notebook: str
    parameters: dict[str, Parameter] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        return {n: p.default for n, p in self.parameters.items()}

    def validate(self, values: dict[str, Any]) -> dict[str, Any]:
        """Checked, type-converted values; unknown names and wrong types raise."""
        unknown = [n for n in values if n not in self.parameters]
        if unknown:
            raise self._unknown(unknown[0], values[unknown[0]])
        return {n: self.parameters[n].check(check_plain(n, v, allow_inf=self.parameters[n].type == "float"))
                for n, v in values.items()}

    def coerce(self, name: str, text: str) -> Any:
        """A command-line string (``-p sparsity 0.8``) parsed for parameter ``name``."""
        if name not in self.parameters:
            raise self._unknown(name, text)
        param = self.parameters[name]
        if text.strip() in ("None", "null", "~") and (param.optional or param.default is None):
            return None
        kind = param.type
        if len(text) > MAX_TEXT:
            raise InvalidParameterError(name, _Shown(text), f"a value of at most {MAX_TEXT:,} characters")
        if kind == "str":
            return text
        if kind == "bool":
            low = text.strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise InvalidTypeError(name, text, param.allowed())
        return parse_value(text, name)

    def _unknown(self, name: str, value: Any) -> InvalidParameterError:
        return InvalidParameterError(name, value, f"a parameter of {Path(self.notebook).name}: one of "
                                     + ", ".join(self.parameters))

    def help(self) -> str:
        rows = [f"{p.name}: {p.type}{' | None' if p.optional else ''} = {p.default!r}"
                + (f"  # {p.help}" if p.help else "") for p in self.parameters.values()]
        return "\n".join(rows)


class _Shown:
    """A value as an error message shows it: its repr, cut short (a refused value may be huge)."""

    def __init__(self, value: Any, limit: int = 80):
        text = repr(value)
        self.text = text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"

    def __repr__(self) -> str:
        return self.text


def check_plain(name: str, value: Any, *, allow_inf: bool = False) -> Any:
    """``value`` as plain JSON data (tuples become lists), or an error naming ``name`` (and where
    inside the value) and :data:`PLAIN`. Every parameter value passes here before papermill writes
    it into a notebook: -p, -f files, sweep grids and the Python API. ``allow_inf``: a top-level
    float may be infinite (papermill writes ``float('inf')``; a float parameter's own check refuses NaN)."""
    try:
        return walk(value, name, _LIMITS, top_inf=allow_inf)
    except Violation as v:
        if v.kind == "type":
            raise InvalidTypeError(v.where, v.value, PLAIN) from None
        raise InvalidParameterError(v.where, v.value if v.kind == "float" else _Shown(v.value), PLAIN) from None


def parse_value(text: str, name: str = "value") -> Any:
    """YAML-ish scalar parsing for ``-p NAME VALUE``: numbers, true/false, null, [lists], strings.
    Text that is not YAML is taken as a string; YAML beyond Python's limits (a 5000-digit int,
    nesting too deep to parse) is an error naming ``name``."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except (ValueError, RecursionError):
        raise InvalidParameterError(name, _Shown(text), PLAIN) from None
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        except ValueError:
            pass
    return value


def load_yaml_file(path: str | Path, what: str) -> Any:
    """The data of a YAML file (``-f`` parameters, a sweep grid), or an error naming ``what`` and
    the file: missing, unreadable, over :data:`MAX_TEXT` bytes, or not YAML."""
    import yaml

    shown = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TEXT + 1)
        if len(data) > MAX_TEXT:
            raise InvalidParameterError(what, shown, f"a YAML file of at most {MAX_TEXT:,} bytes")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise InvalidParameterError(what, shown, "an existing YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidParameterError(what, shown, f"a readable UTF-8 YAML file ({_first_line(e)})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidParameterError(what, shown, f"valid YAML ({_first_line(e)})") from None
    except (ValueError, RecursionError):
        raise InvalidParameterError(what, shown, f"YAML holding {PLAIN}") from None


def read_params_file(path: str | Path) -> dict[str, Any]:
    """A ``-f`` file's parameters: a YAML mapping of name to value (empty file: none)."""
    data = load_yaml_file(path, "-f")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidParameterError("-f", str(path), "a YAML mapping of parameter name to value")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return _Unevaluated(ast.unparse(node))


class _Unevaluated(str):
    """A default that is an expression (e.g. ``os.cpu_count()``): shown, never type-checked."""


def _annotation(node: ast.AST | None, default: Any) -> tuple[str, bool]:
    if node is None:  # untyped: infer from the default
        if default is None or isinstance(default, _Unevaluated):
            return "any", default is None
        for name in ("bool", "int", "float", "str", "list", "dict"):
            if type(default).__name__ == name or (name == "list" and isinstance(default, tuple)):
                return name, False
        return "any", False
    text = ast.unparse(node).replace(" ", "").strip("'\"")
    optional = False
    m = re.fullmatch(r"Optional\[(.+)\]", text)
    if m:
        text, optional = m.group(1), True
    parts = [p for p in text.split("|")]
    if "None" in parts:
        optional = True
        parts = [p for p in parts if p != "None"]
    base = parts[0].split("[")[0].lower() if len(parts) == 1 else "any"
    base = {"tuple": "list", "sequence": "list", "mapping": "dict"}.get(base, base)
    return (base if base in _TYPES else "any"), optional


def _constraint(help_text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = _RANGE.search(help_text)
    if m:
        try:
            out.update(low=float(m.group(2)), high=float(m.group(3)),
                       low_open=m.group(1) == "(", high_open=m.group(4) == ")")
        except ValueError:
            pass
    m = _CHOICES.search(help_text)
    if m:
        items = [s.strip().strip("'\"") for s in m.group(1).split(",")]
        out["choices"] = tuple(parse_value(s) if s and s[0] in "-0123456789" else s for s in items if s)
    return out


def parse_cell(source: str, notebook: str = "<cell>") -> Signature:
    """Parameters declared in one cell's source (assignments at top level, with comments)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise NotebookParameterError(f"{notebook}: the parameters cell is not valid Python: {e}") from None
    lines = source.splitlines()
    sig = Signature(notebook)
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, ann, value = node.target.id, node.annotation, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, ann, value = node.targets[0].id, None, node.value
        else:
            continue
        default = _literal(value)
        rest = lines[node.end_lineno - 1][node.end_col_offset:]  # after the statement: its comment
        help_text = rest.split("#", 1)[1].strip() if "#" in rest else ""
        kind, optional = _annotation(ann, default)
        sig.parameters[name] = Parameter(name, kind, default, help_text, optional, **_constraint(help_text))
    return sig


def read_signature(notebook: str | Path) -> Signature:
    """The signature of ``notebook``'s cell tagged ``parameters`` (nbformat read, no kernel)."""
    notebook = str(notebook)
    try:
        with open(notebook, encoding="utf-8") as f:
            nb = json.load(f)
    except FileNotFoundError:
        raise NotebookParameterError(f"notebook {notebook!r} does not exist") from None
    except (OSError, ValueError) as e:
        raise NotebookParameterError(f"{notebook}: not a readable notebook ({e})") from None
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise NotebookParameterError(f"{notebook}: no cell is tagged 'parameters', so it takes no parameters")
    source = cells[0].get("source", "")
    return parse_cell("".join(source) if isinstance(source, list) else source, notebook)
