"""accel's public wrapper of a compiled OpenVINO model (what a benchmark peer such as NNCF's own
int8 compiles itself) as a Prepared called like the torch model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit import accel

ov = pytest.importorskip("openvino")
pytest.importorskip("onnxscript")


def test_a_compiled_openvino_model_is_wrapped_as_a_prepared_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 16)).eval()
    x = torch.randn(8, 24)
    slimkit.export(model, x[:4], tmp_path / "m.xml", format="openvino")
    compiled = ov.Core().compile_model(str(tmp_path / "m.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    from slimkit.accel.openvino_backend import wrap_compiled

    run = wrap_compiled(compiled, model, "openvino+peer", options={"precision": "f32"},
                        setup_seconds={"compile": 0.5}, size_bytes=123, info={"peer": "yes"})
    assert isinstance(run, accel.Prepared) and run.backend == "openvino+peer" and run.device == torch.device("cpu")
    assert run.options == {"precision": "f32"} and run.setup_seconds == {"compile": 0.5} and run.size_bytes == 123
    assert run.info["precision"] == "f32" and run.info["peer"] == "yes" and run.info["openvino"] == ov.__version__
    with torch.inference_mode():
        want = model(x)
    got = run(x)
    got = got[0] if isinstance(got, (list, tuple)) else got
    assert torch.allclose(torch.as_tensor(got), want, atol=1e-4)


def test_the_kernels_openvino_picked_are_described_after_the_first_call(tmp_path):
    model = nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 16)).eval()
    x = torch.randn(8, 24)
    slimkit.export(model, x, tmp_path / "m.xml", format="openvino")
    compiled = ov.Core().compile_model(str(tmp_path / "m.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    from slimkit.accel.openvino_backend import wrap_compiled

    run = wrap_compiled(compiled, model)
    assert "matmul_kernels" not in run.describe()["info"]  # the CPU plugin picks them at the first call
    run(x)
    info = run.describe()["info"]
    assert sum(info["matmul_kernels"].values()) == 2  # the two Linears
    assert all(k.startswith(("FullyConnected", "MatMul")) for k in info["matmul_kernels"])
    assert info["matmul_compute"] == ["f32"]
