"""The AOTInductor backend: one package per input shape, the same numbers as eager, clear errors."""
import pytest
import torch
import torch.nn as nn

from slimkit import accel
from slimkit.accel import BackendError
from slimkit.accel.torch_backends import QUANT_REALIZE_OPCOUNT
from slimkit.errors import InvalidParameterError


@pytest.mark.slow
def test_aoti_matches_eager_on_the_int8_digits_cnn_and_compiles_each_new_shape(cnn, digits, inductor_cache,
                                                                               tmp_path):
    import slimkit

    q, _ = slimkit.quantize(cnn, bits=8)
    x = digits.test.X[:32]
    run = accel.prepare(q, x, "aoti", workdir=tmp_path)
    assert {"export", "compile", "first_call"} <= set(run.setup_seconds)
    assert run.info["inductor"]["realize_opcount_threshold"] == QUANT_REALIZE_OPCOUNT
    assert len(run.info["packages"]) == 1 and run.info["package_bytes"] > 0
    for batch in (x, digits.test.X[:5]):  # a second shape builds a second package, on first use
        ref = q(batch).detach()
        out = run(batch)
        torch.testing.assert_close(out, ref, rtol=0, atol=0.05 * float(ref.abs().max()))
        assert (out.argmax(1) == ref.argmax(1)).all()
    assert len(list(tmp_path.glob("*.pt2"))) == 2 and "compile_1" in run.fn.seconds
    run(x)
    assert len(list(tmp_path.glob("*.pt2"))) == 2  # a known shape reuses its package


def test_aoti_says_why_a_model_does_not_export(tmp_path):
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x  # a branch on a value: no static graph

    with pytest.raises(BackendError, match="'aoti' cannot handle DataDependent: torch.export failed"):
        accel.prepare(DataDependent(), torch.ones(2, 3), "aoti", workdir=tmp_path)
    with pytest.raises(InvalidParameterError, match="mode='fast'"):
        accel.prepare(nn.Linear(2, 2), torch.ones(1, 2), "aoti", mode="fast")


def test_inductor_settings_put_the_callers_choices_over_slimkit_defaults():
    import slimkit
    from slimkit.accel.torch_backends import inductor_settings

    q, _ = slimkit.quantize(nn.Sequential(nn.Linear(16, 8)), bits=8)
    assert inductor_settings(q, False, None, None) == {"realize_opcount_threshold": QUANT_REALIZE_OPCOUNT}
    assert inductor_settings(q, True, {"realize_opcount_threshold": 30}, None) == {
        "realize_opcount_threshold": 30, "freezing": True}
    assert inductor_settings(nn.Linear(2, 2), False, None, None) == {}  # nothing int8: inductor's own defaults
    with pytest.raises(InvalidParameterError, match="inductor='no_such_knob'"):
        inductor_settings(q, False, {"no_such_knob": 1}, None)


def test_aoti_packages_without_a_workdir_go_with_the_prepared_model():
    import gc

    from slimkit.accel.aoti_backend import _PackagePerShape

    fn = _PackagePerShape(nn.Linear(2, 2), torch.device("cpu"), {}, None, "aoti")
    folder = fn.workdir
    assert folder.is_dir()
    del fn
    gc.collect()
    assert not folder.exists()
