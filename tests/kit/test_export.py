"""slimkit.export: int8 layers as QDQ with slimkit's own integers and scales, refusals, formats."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit.exporter import Exported, MissingRuntimeError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 48), nn.GELU(), nn.Linear(48, 16)).eval()


X = torch.randn(64, 24, generator=torch.Generator().manual_seed(1))


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().detach())


def _ort(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


def _initializers(path):
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    return g, {i.name: numpy_helper.to_array(i) for i in g.initializer}


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory):
    q, _ = slimkit.quantize(_mlp(), bits=8)
    path = tmp_path_factory.mktemp("export") / "dyn.onnx"
    return q, slimkit.export(q, X[:4], path)


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    q, _ = slimkit.quantize(_mlp(), bits=8, activations=X)
    path = tmp_path_factory.mktemp("export") / "static.onnx"
    return q, slimkit.export(q, X[:4], path)


@pytest.mark.slow
def test_dynamic_int8_keeps_slimkit_integers_and_fidelity(dynamic):
    q, ex = dynamic
    assert isinstance(ex, Exported) and ex.format == "onnx" and ex.path.stat().st_size == ex.size_bytes
    g, inits = _initializers(ex.path)
    int8 = [a for a in inits.values() if a.dtype.name == "int8" and a.ndim == 2]
    weights = {tuple(m.qweight.t().shape): m.qweight.t().numpy() for m in q.modules() if hasattr(m, "qweight")}
    assert len(int8) == 3 and all((a == weights[a.shape]).all() for a in int8)  # slimkit's own int8 values
    assert sum(n.op_type == "DequantizeLinear" for n in g.node) == 3
    assert "per-token dynamic" in ex.layers["0"]
    fp32 = _mlp()(X)
    got = _ort(ex.path, X)  # another batch size than the example: batch is dynamic
    assert abs(_cos(got, fp32) - _cos(q(X), fp32)) < 5e-4
    assert ex.max_abs_diff is not None and ex.max_abs_diff < 1e-2


@pytest.mark.slow
def test_static_int8_is_qdq_with_calibrated_scales(static):
    q, ex = static
    g, inits = _initializers(ex.path)
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) == 3
    scales = sorted(float(m.act_scale) for m in q.modules() if hasattr(m, "act_scale"))
    qscales = []
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            qscales.append(float(inits[n.input[1]]) if n.input[1] in inits else None)
    qscales = sorted(s for s in qscales if s is not None)
    assert qscales == pytest.approx(scales, rel=1e-6)
    # per-channel weight scales are slimkit's (one per output channel)
    wscales = [m.scale.numpy() for m in q.modules() if hasattr(m, "qweight")]
    dq = [inits[n.input[1]] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
          and inits[n.input[0]].ndim == 2]
    assert len(dq) == 3 and all(any(a.shape == w.shape and (a == w).all() for w in wscales) for a in dq)
    fp32 = _mlp()(X)
    assert abs(_cos(_ort(ex.path, X), fp32) - _cos(q(X), fp32)) < 5e-4


def test_simulated_layers_are_refused_by_name(tmp_path):
    q4, _ = slimkit.quantize(_mlp(), bits=4)
    with pytest.raises(slimkit.ExportError, match=r"0 \(QuantLinear: int4 packed.*dequantize=True"):
        slimkit.export(q4, X[:2], tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_dequantize_exports_simulated_layers_as_float(tmp_path):
    q4, _ = slimkit.quantize(_mlp(), bits=4, granularity="per_group", group_size=8)
    ex = slimkit.export(q4, X[:2], tmp_path / "m.onnx", dequantize=True)
    assert all("dequantized to float" in v for v in ex.layers.values())
    assert torch.allclose(_ort(ex.path, X), q4(X), atol=1e-4)


@pytest.mark.slow
def test_pruned_and_sparse_models_export_dense(tmp_path):
    sp, _ = slimkit.sparsify(slimkit.prune(_mlp(), 0.8)[0], format="csr")
    ex = slimkit.export(sp, X[:2], tmp_path / "sp.onnx")
    assert any("dense weight" in v for v in ex.layers.values())
    assert torch.allclose(_ort(ex.path, X), sp(X), atol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"format": "tflite"}, "format"),
    ({"path": "m.onx"}, "ending in .onnx"),
    ({"format": "openvino"}, "ending in .xml"),
    ({"dequantize": "yes"}, "dequantize"),
])
def test_bad_arguments_fail_before_work(tmp_path, kwargs, match):
    path = tmp_path / kwargs.pop("path", "m.onnx")
    with pytest.raises((slimkit.InvalidParameterError, slimkit.InvalidTypeError), match=match):
        slimkit.export(_mlp(), X[:2], path, **kwargs)


def test_missing_openvino_names_the_extra(tmp_path, no_openvino):
    with pytest.raises(MissingRuntimeError, match=r"slimkit\[openvino\]"):
        slimkit.export(_mlp(), X[:2], tmp_path / "m.xml", format="openvino")


@pytest.mark.slow
def test_openvino_ir_keeps_int8_weights(tmp_path):
    pytest.importorskip("openvino")
    q, _ = slimkit.quantize(_mlp(), bits=8)
    ex = slimkit.export(q, X[:4], tmp_path / "m.xml", format="openvino")
    assert ex.path.with_suffix(".bin").exists() and ex.max_abs_diff is not None and ex.max_abs_diff < 1e-2
    assert 'element_type="i8"' in ex.path.read_text()


@pytest.mark.slow
def test_a_model_the_runtime_cannot_run_leaves_the_users_file_alone(tmp_path, monkeypatch):
    from slimkit import exporter

    target = tmp_path / "m.onnx"
    target.write_text("the user's earlier export")

    def fails(*a, **k):
        raise RuntimeError("[ONNXRuntimeError] cannot load")

    monkeypatch.setattr(exporter, "_onnx_diff", fails)
    with pytest.raises(slimkit.ExportError, match="does not run in onnxruntime.*cannot load"):
        slimkit.export(_mlp(), X[:2], target)
    assert target.read_text() == "the user's earlier export"
