"""The onnxruntime and openvino backends on slimkit's own quantized models (through slimkit.export),
and the prepared-form cache (compile once, reload by key)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import slimkit
from slimkit import accel

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(autouse=True)
def _reference_kernel(monkeypatch):
    """The exported graphs compute slimkit's reference int8 arithmetic (8-bit per-token
    activations, the torch._int_mm path); on CPUs without VNNI eager torch runs fbgemm instead
    (7-bit activations where 8 would saturate), so the torch side is pinned to the reference."""
    monkeypatch.setenv("SLIMKIT_INT8_KERNEL", "int_mm")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 16)).eval()


X = torch.randn(16, 24, generator=torch.Generator().manual_seed(1))


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


@pytest.fixture(scope="module")
def int8():
    return slimkit.quantize(_mlp(), bits=8)[0]


@pytest.mark.slow
def test_onnxruntime_runs_slimkit_int8(int8):
    run = accel.prepare(int8, X[:4], backend="onnxruntime")  # was: aten._int_mm has no ONNX mapping
    assert "per-token dynamic" in run.info["slimkit_layers"]["0"]
    with torch.inference_mode():
        want = int8(X)
    assert _cos(run(X), want) > 0.9999


def test_onnxruntime_refuses_its_own_quantization_on_top_of_slimkit_int8(int8):
    with pytest.raises(slimkit.InvalidParameterError, match="quantize"):
        accel.prepare(int8, X[:4], backend="onnxruntime", quantize="int8")


def test_simulated_layers_are_a_backend_error_naming_them():
    q4 = slimkit.quantize(_mlp(), bits=4)[0]
    with pytest.raises(accel.BackendError, match=r"0 \(QuantLinear: int4"):
        accel.prepare(q4, X[:4], backend="onnxruntime")


@pytest.mark.slow
def test_openvino_runs_slimkit_int8_and_records_precision(int8):
    pytest.importorskip("openvino")
    run = accel.prepare(int8, X[:4], backend="openvino", precision="f32")
    assert run.info["precision"] == "f32" and run.size_bytes > 0
    with torch.inference_mode():
        assert _cos(run(X), int8(X)) > 0.9999


@pytest.mark.slow
def test_prepared_form_is_reloaded_by_key_and_rebuilt_when_a_key_differs(int8, tmp_path):
    first = accel.prepare(int8, X[:4], backend="onnxruntime", prepared_cache=tmp_path)
    assert first.info["prepared_cache"] == "miss" and "export" in first.setup_seconds
    again = accel.prepare(int8, X[:4], backend="onnxruntime", prepared_cache=tmp_path)
    assert again.info["prepared_cache"] == "hit" and "export" not in again.setup_seconds
    assert torch.equal(again(X), first(X))
    entry = tmp_path / again.info["prepared_path"].rsplit("/", 1)[-1]
    key = json.loads((entry / "key.json").read_text())
    assert key["torch"] == torch.__version__ and key["slimkit"] == slimkit.__version__
    assert key["cpu"]["capability"] and key["inputs"][1] == [[4, 24], "torch.float32"]
    # another input shape, another model: other keys, rebuilt
    other = accel.prepare(int8, X[:2], backend="onnxruntime", prepared_cache=tmp_path)
    assert other.info["prepared_cache"] == "miss"
    changed = slimkit.quantize(_mlp(), bits=8)[0]
    changed[0].scale.mul_(2)
    assert accel.prepare(changed, X[:4], backend="onnxruntime",
                         prepared_cache=tmp_path).info["prepared_cache"] == "miss"
    # an entry whose stored key differs (e.g. written by another slimkit or torch) is never used
    key["torch"] = "0.0"
    (entry / "key.json").write_text(json.dumps(key))
    assert accel.prepare(int8, X[:4], backend="onnxruntime", prepared_cache=tmp_path).info["prepared_cache"] == "miss"


def test_openvino_missing_names_the_extra(no_openvino):
    with pytest.raises(slimkit.DeviceUnavailableError, match=r"slimkit\[openvino\]"):
        accel.prepare(_mlp(), X[:4], backend="openvino")


def _wide():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32)).eval()


def test_onnxruntime_computes_slimkit_int8_as_written():
    """ORT's DQ+MatMul -> MatMulNBits fusion re-quantized activations at its default accuracy level
    (MiniLM lost 0.0012 mean cosine); the exported graph must give slimkit's own numbers."""
    q = slimkit.quantize(_wide(), bits=8)[0]
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(2))
    run = accel.prepare(q, x[:4], backend="onnxruntime", optimize=None)
    with torch.inference_mode():
        want = q(x)
    err = float((run(x) - want).abs().max() / want.abs().max())
    assert err < 2e-3, err  # one integer step on a rounding tie at most, not a second quantization


def test_no_temporary_folder_is_left_per_cached_build(tmp_path, monkeypatch, int8):
    import tempfile

    made = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    accel.prepare(int8, X[:4], backend="onnxruntime", prepared_cache=str(tmp_path / "cache"))
    assert not [m for m in made if "slimkit-onnx-" in m]


def test_threads_are_checked_by_both_runtime_backends(int8):
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(slimkit.InvalidParameterError, match="threads"):
            accel.prepare(int8, X[:4], backend=backend, threads=0)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_runtimes_refuse_static_8bit_layers_without_vnni_and_run_7bit_exactly(monkeypatch, backend):
    """ORT's and OpenVINO's AVX2 u8 x s8 kernels saturate on full-range int8 weights (31% off measured)."""
    pytest.importorskip(backend)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 32)).eval()
    data = [torch.randn(32, 64) for _ in range(2)]
    q8 = slimkit.quantize(m, bits=8, activations=data)[0]
    monkeypatch.setattr("slimkit.hardware.cpu_flags", lambda: ("avx2", "avx512_vnni"))
    accel.prepare(q8, data[0][:4], backend=backend)  # with VNNI: no refusal
    monkeypatch.setattr("slimkit.hardware.cpu_flags", lambda: ("avx2",))
    with pytest.raises(accel.BackendError, match=rf"backend '{backend}'.*static int8 layers \(0\).*bits=7"):
        accel.prepare(q8, data[0][:4], backend=backend)
    q7 = slimkit.quantize(m, bits=7, activations=data)[0]
    run = accel.prepare(q7, data[0][:4], backend=backend)
    x = torch.randn(32, 64)
    with torch.inference_mode():
        want = q7(x)
    assert float((run(x) - want).abs().max() / want.abs().max()) < 1e-4
