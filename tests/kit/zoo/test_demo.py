"""``slimkit demo``: every method runs on the digits CNN and the table comes out."""
import pytest
import torch

from slimkit.zoo import demo
from slimkit.runs.cli import main as cli


@pytest.mark.slow
def test_quick_demo_prints_a_row_per_method(capsys, cnn):
    before = torch.get_num_threads()
    assert demo.main(seed=0, quick=True) == 0
    assert torch.get_num_threads() == before
    out = capsys.readouterr().out
    for name in ["original fp32", *demo.RECIPES]:
        assert name in out
    assert "size ratio" in out and "speed-up" in out and "drop (pt)" in out


@pytest.mark.slow
def test_rows_carry_the_measurements(cnn):
    rows = demo.run(seed=0, quick=True, batch=64, log=lambda *a: None)
    by = {r["method"]: r for r in rows}
    assert list(by) == ["original fp32", *demo.RECIPES]
    assert by["int8 per-channel"]["size_ratio"] >= 3.9 and by["int8 per-channel"]["drop_pts"] <= 1
    assert by["int4 per-channel"]["size_ratio"] > 7
    assert by["prune 90% + FT, sparse"]["size_ratio"] > 5
    assert by["structured 50% + FT"]["params"] < by["original fp32"]["params"] / 3
    assert by["distilled student"]["params"] <= by["original fp32"]["params"] / 4
    assert all(r["latency_ms"] > 0 and r["latency_batch"] == 64 for r in rows)


def test_demo_refuses_a_missing_device(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli(["demo", "--device", "cuda"]) == 2
    assert "cuda" in capsys.readouterr().err
