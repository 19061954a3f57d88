"""The one table renderer: aligned text, escaped Markdown, dict rows through formatted columns."""
import math

from slimkit import table


def test_text_aligns_columns_rules_the_header_and_trims_trailing_blanks():
    out = table.text(["name", "ms", "note"], [["fp32", "1.20", ""], ["int8 long", "0.6", "x"]], align="lrl")
    assert out.splitlines() == ["name         ms  note",
                                "---------  ----  ----",
                                "fp32       1.20",
                                "int8 long   0.6  x"]
    assert table.text(["a"], [[1]]) == "a\n-\n1"


def test_markdown_escapes_every_cell_unless_told_the_cells_are_markdown():
    out = table.markdown(["run|id", "acc"], [["<script>x</script>", 0.123456], [None, "[a](b)"]])
    assert out.splitlines() == ["| run\\|id | acc |", "|---|---|",
                                "| &lt;script&gt;x&lt;/script&gt; | 0.1235 |", "|  | \\[a\\](b) |"]
    assert table.markdown(["**b**"], [["`c`"]], escape=False).splitlines() == ["| **b** |", "|---|", "| `c` |"]


def test_markdown_table_of_dict_rows_takes_columns_in_order_of_appearance():
    out = table.markdown_table([{"a": 1, "b": "x"}, {"c": 2.5, "a": None}])
    assert out == "| a | b | c |\n|---|---|---|\n| 1 | x |  |\n|  |  | 2.5 |\n"
    assert table.markdown_table([{"a": 1, "b": 2}], ["b"]) == "| b |\n|---|\n| 2 |\n"


def test_cells_and_columns():
    assert table.cell(None) == table.cell(math.nan) == "n/a"
    assert table.cell(0.5, "{:.1%}") == "50.0%" and table.cell("fp32", "{:.2f}") == "fp32"
    assert table.plain(None) == "" and table.plain(1 / 3) == "0.3333" and table.plain(3) == "3"
    head, cells = table.formatted([{"m": "a", "x": 1.0}, {"m": "b"}], [("m", "M", "{}"), ("x", "X", "{:.1f}"),
                                                                     ("y", "Y", "{}")])
    assert head == ["M", "X"] and cells == [["a", "1.0"], ["b", "n/a"]]
