"""Tables as text: the one renderer behind every plain-text and Markdown table slimkit prints.

::

    text(["model", "ms"], [["fp32", "1.20"], ["int8", "0.61"]], align="lr")
    markdown(["model", "ms"], [["fp32", 1.2]])          # every cell escaped (:func:`md_text`)
    markdown_table([{"model": "fp32", "ms": 1.2}])      # dict rows, columns in order of appearance

Core module: no notebook library (the panel and the notebooks build HTML / Markdown outputs on it).
"""
from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

# (key, heading, format) of one column of dict rows; the format is a str.format pattern.
Column = tuple[str, str, str]


def plain(v: Any) -> str:
    """``v`` as a short cell: None is empty, floats get four significant digits."""
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cell(value: Any, fmt: str = "{}") -> str:
    """``value`` through ``fmt``; a missing or NaN value reads "n/a", one the format refuses its str."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


# After HTML escaping, what Markdown itself would still act on: a pipe splits a table cell,
# a backtick opens a code span, brackets make links and images, a backslash escapes the next
# character, a newline ends the row. (``*`` and ``_`` only format, and are common in names.)
_MD_SPECIALS = str.maketrans({"\\": "\\\\", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]",
                              "\n": " ", "\r": " "})


def md_text(v: Any) -> str:
    """``v`` as literal Markdown table text: renders as the characters it holds, never as HTML
    (Markdown passes raw HTML through: a ``<script>`` in a run name would run in the report).
    Quotes stay as they are: outside a tag they are text, and &#x27; would show in terminals."""
    if v is None:
        return ""
    return html.escape(plain(v), quote=False).translate(_MD_SPECIALS)


def plot_text(v: Any) -> str:
    """``v`` for plotly titles, labels and hover text, which render a subset of HTML tags:
    shown literally. (Quotes stay: plotly decodes only a few named entities.)"""
    return html.escape(str(v), quote=False)


def text(header: Sequence[Any], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> str:
    """A plain-text table: columns two spaces apart, a dashed rule under the header, no trailing
    blanks. ``align``: one "l" or "r" per column (default: all left)."""
    cells = [[str(c) for c in header], *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or "l" * len(header)
    lines = ["  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(header: Sequence[Any], rows: Sequence[Sequence[Any]], *, escape: bool = True) -> str:
    """A Markdown table. With ``escape`` every header and cell goes through :func:`md_text`;
    without, cells are taken as Markdown already (trusted, pre-formatted text)."""
    show = md_text if escape else str
    lines = ["| " + " | ".join(show(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(show(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str] | None = None) -> str:
    """A Markdown table of dict ``rows`` (columns: ``cols``, default every key in order of
    appearance), ending in a newline. Every header and cell is escaped (:func:`md_text`)."""
    if cols is None:
        cols = list(dict.fromkeys(k for row in rows for k in row))
    return markdown(cols, [[row.get(c) for c in cols] for row in rows]) + "\n"


def formatted(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> tuple[list[str], list[list[str]]]:
    """(headings, cells) of dict ``rows`` through ``columns``; a column absent from every row is left out."""
    columns = [c for c in columns if any(c[0] in r for r in rows)]
    return [h for _, h, _ in columns], [[cell(r.get(k), f) for k, _, f in columns] for r in rows]
