"""Side-by-side comparison: the latency harness measures what it should, rows add up."""
import time

import pytest
import torch
import torch.nn as nn

import slimkit
from slimkit import measure as compare
from slimkit.errors import DeviceUnavailableError, InvalidParameterError, InvalidTypeError


class _Sleep(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_latency_of_known_sleeps():
    out = compare.latency({"short": _Sleep(0.004), "long": _Sleep(0.012)}, torch.zeros(3, 2), rounds=3,
                          number=2, warmup=1)
    assert set(out["ms"]) == {"short", "long"} and out["batch"] == 3 and out["number"] == 2
    assert 3.9 <= out["ms"]["short"] < 10 and 11.9 <= out["ms"]["long"] < 30
    assert all(len(v) == 3 for v in out["rounds"].values())
    assert out["threads"] == 1 and out["device"] == "cpu"


def test_latency_restores_threads_and_reports_failures():
    before = torch.get_num_threads()

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("no kernel")

    out = compare.latency({"ok": nn.Identity(), "broken": Broken()}, torch.zeros(2), rounds=1, warmup=0)
    assert torch.get_num_threads() == before
    assert out["ms"]["broken"] != out["ms"]["broken"]  # nan
    assert "no kernel" in out["errors"]["broken"] and out["ms"]["ok"] >= 0


def test_compare_rows(mlp, digits):
    q, _ = slimkit.quantize(mlp, 8)
    rows = compare.compare(mlp, {"int8": q}, digits.test, latency_input=digits.test.X[:32], rounds=2)
    base, row = rows
    assert base["method"] == "original" and base["drop_pts"] == 0 and base["speedup"] == 1
    assert row["size_bytes"] == slimkit.size(q) and row["size_ratio"] == pytest.approx(
        slimkit.size(mlp) / slimkit.size(q))
    assert row["drop_pts"] == pytest.approx(100 * (base["accuracy"] - slimkit.evaluate(q, digits.test)["accuracy"]))
    assert row["speedup"] == pytest.approx(base["latency_ms"] / row["latency_ms"])
    text = compare.format_table(rows)
    assert "int8" in text and "size ratio" in text and f"{row['size_ratio']:.2f}x" in text
    no_latency = compare.compare(mlp, {"int8": q}, digits.test)
    assert "latency ms" not in compare.format_table(no_latency)


def test_compare_bad_input(mlp, digits):
    with pytest.raises(InvalidTypeError, match=r"candidates\['x'\] must be"):
        compare.compare(mlp, {"x": 3}, digits.test)
    with pytest.raises(InvalidParameterError, match="candidates="):
        compare.compare(mlp, {"original": mlp}, digits.test)
    with pytest.raises(InvalidTypeError, match="models must be"):
        compare.latency({}, torch.zeros(1))
    with pytest.raises(InvalidParameterError, match="device='tpu'"):
        compare.latency({"m": mlp}, torch.zeros(1, 64), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="cuda"):
            compare.latency({"m": mlp}, torch.zeros(1, 64), device="cuda")


def test_compressed_models_count_the_parameters_they_store_in_buffers(mlp):
    """int8 and sparse layers keep weights in buffers; they still have their logical parameters."""
    from slimkit.nn import param_count

    n = param_count(mlp)
    q, _ = slimkit.quantize(mlp, bits=4)
    s, _ = slimkit.sparsify(mlp, sparsity=0.5, format="csr")
    assert sum(p.numel() for p in q.parameters()) == 0  # nothing left as nn.Parameter...
    assert param_count(q) == n and param_count(s) == n  # ...but every weight and bias is counted
    slim, _ = slimkit.prune(mlp, 0.5, structured=True, data=(torch.rand(4, 1, 8, 8), torch.zeros(4).long()))
    assert param_count(slim) < n / 2


def test_pareto_front_keeps_the_points_nothing_beats_on_both_axes():
    assert compare.pareto_front([(1, 5), (2, 2), (3, 3), (5, 1), (2, 2)]) == {0, 1, 3, 4}  # ties both stay
    assert compare.pareto_front([]) == set()
