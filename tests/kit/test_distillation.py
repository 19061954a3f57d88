"""Distillation: the Hinton loss by hand, the noise-averaged teacher, shrink, bad input."""
import math
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import slimkit
from conftest import assert_unchanged, state_snapshot
from slimkit.distillation import _NoisyTeacher, hinton_loss
from slimkit.errors import (IncompatibleModelsError, InvalidParameterError, InvalidTypeError, Interrupted,
                            NothingToCompressError)
from slimkit.layers import param_count
from slimkit.training import fit


def _softmax(v, T):
    e = [math.exp(x / T) for x in v]
    return [x / sum(e) for x in e]


def test_hinton_loss_by_hand():
    s, t, y, T, alpha = [1.0, 2.0, 0.0], [2.0, 0.0, 1.0], 1, 2.0, 0.6
    ps, pt = _softmax(s, T), _softmax(t, T)
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    ce = -math.log(_softmax(s, 1.0)[y])
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = hinton_loss(torch.tensor([s]), torch.tensor([pt]), torch.tensor([y]), T, alpha)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # the two ends: teacher only, labels only
    assert float(hinton_loss(torch.tensor([s]), torch.tensor([pt]), torch.tensor([y]), T, 1.0)) == \
        pytest.approx(T * T * kl, rel=1e-6)
    assert float(hinton_loss(torch.tensor([s]), None, torch.tensor([y]), T, 0.0)) == pytest.approx(ce, rel=1e-6)


def _tiny_pair(seed=0):
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    student = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 4))
    x = torch.randn(40, 6)
    y = teacher(x).argmax(1).detach()
    return teacher, student, x, y


def test_distill_trains_on_the_hinton_loss():
    """With a vanishing learning rate the student stays put, so the first epoch's loss is
    the Hinton loss of the initial student on the whole data set."""
    teacher, student, x, y = _tiny_pair()
    events = []
    slimkit.distill(teacher, student, (x, y), temperature=3.0, alpha=0.4, epochs=1, lr=1e-12,
                    batch_size=8, callbacks=events.append)
    (epoch,) = [e for e in events if e.kind == "metrics"]
    with torch.no_grad():
        expected = hinton_loss(student(x), F.softmax(teacher(x) / 3.0, -1), y, 3.0, 0.4)
    assert epoch.metrics["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_alpha_zero_is_exactly_labels_only_training():
    teacher, student, x, y = _tiny_pair()
    kd, _ = slimkit.distill(teacher, student, (x, y), alpha=0.0, epochs=3, lr=1e-2, batch_size=8, seed=5)
    plain = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 4))
    plain.load_state_dict(student.state_dict())
    fit(plain, (x, y), epochs=3, lr=1e-2, batch_size=8, seed=5)
    for a, b in zip(kd.parameters(), plain.parameters()):
        assert torch.equal(a, b)


def test_noise_averaged_teacher_restores_weights_and_softens_targets():
    teacher, _, x, _ = _tiny_pair()
    with torch.no_grad():
        teacher[2].weight.mul_(20)  # a confident teacher: noise can only soften it
    snap = state_snapshot(teacher)
    plain = _NoisyTeacher(teacher, 1.0, 0.0, 1, seed=0)(x)
    torch.testing.assert_close(plain, F.softmax(teacher(x), -1))
    noisy = _NoisyTeacher(teacher, 1.0, 0.5, 16, seed=0)(x)
    assert_unchanged(teacher, snap)  # noise added in place is copied back exactly
    torch.testing.assert_close(noisy.sum(1), torch.ones(40))
    entropy = lambda p: float(-(p * p.log()).sum(1).mean())  # noqa: E731
    assert entropy(noisy) > entropy(plain)
    assert not torch.allclose(noisy, plain)


def test_distill_with_noise_leaves_both_models_unchanged():
    teacher, student, x, y = _tiny_pair()
    t_snap, s_snap = state_snapshot(teacher), state_snapshot(student)
    out, report = slimkit.distill(teacher, student, (x, y), noise=0.1, noise_samples=2, epochs=2,
                                  val_data=(x, y))
    assert_unchanged(teacher, t_snap)
    assert_unchanged(student, s_snap)
    assert report.params["noise"] == 0.1 and report.summary["student_params"] == param_count(student)
    assert 0 <= report.summary["val_accuracy"] <= 1 and report.summary["teacher_val_accuracy"] == 1.0
    assert not torch.equal(out[0].weight, student[0].weight)


def test_shrink_makes_a_narrow_fresh_model(cnn, digits):
    snap = state_snapshot(cnn)
    small = slimkit.shrink(cnn, 0.5, seed=3)
    assert_unchanged(cnn, snap)
    assert small.features[0].out_channels == 16 and small.classifier[1].out_features == 128
    assert small.classifier[3].out_features == 10  # the output layer keeps its units
    assert small(digits.test.X[:4]).shape == (4, 10)
    again = slimkit.shrink(cnn, 0.5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(small.parameters(), again.parameters()))
    assert not torch.equal(small.features[0].weight, cnn.features[0].weight[:16])  # re-initialised
    assert param_count(slimkit.shrink(cnn, 0.25)) < param_count(small) < param_count(cnn) / 3
    assert param_count(slimkit.shrink(cnn, 0.45)) <= param_count(cnn) / 4  # the study's student


def test_shrunk_student_round_trips(cnn, tmp_path):
    small = slimkit.shrink(cnn, 0.3)
    back = slimkit.load(slimkit.save(small, tmp_path / "s.slim"))
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(back(x), small.eval()(x))


# ---- bad input ---------------------------------------------------------------------------

def test_teacher_student_shape_mismatch():
    teacher, _, x, y = _tiny_pair()
    student = nn.Sequential(nn.Linear(6, 5))
    snap = state_snapshot(student)
    with pytest.raises(IncompatibleModelsError, match=r"teacher gave \(40, 4\) and the student \(40, 5\)"):
        slimkit.distill(teacher, student, (x, y))
    assert_unchanged(student, snap)


@pytest.mark.parametrize("kw,match,err", [
    (dict(temperature=0), "temperature=0", InvalidParameterError),
    (dict(temperature=float("inf")), "temperature=inf", InvalidParameterError),
    (dict(temperature="4"), "temperature must be", InvalidTypeError),
    (dict(alpha=1.5), r"alpha=1.5 .*\[0, 1\]", InvalidParameterError),
    (dict(alpha=float("nan")), "alpha=nan", InvalidParameterError),
    (dict(noise=-0.1), "noise=-0.1", InvalidParameterError),
    (dict(noise=True), "noise must be", InvalidTypeError),
    (dict(noise_samples=0), "noise_samples=0", InvalidParameterError),
    (dict(epochs=0), "epochs=0", InvalidParameterError),
    (dict(lr=-1.0), "lr=-1.0", InvalidParameterError),
])
def test_bad_arguments_raise_and_change_nothing(kw, match, err):
    teacher, student, x, y = _tiny_pair()
    t_snap, s_snap = state_snapshot(teacher), state_snapshot(student)
    with pytest.raises(err, match=match) as e:
        slimkit.distill(teacher, student, (x, y), **kw)
    assert isinstance(e.value, slimkit.SlimkitError)
    assert_unchanged(teacher, t_snap)
    assert_unchanged(student, s_snap)


def test_bad_models_and_data():
    teacher, student, x, y = _tiny_pair()
    with pytest.raises(InvalidTypeError, match="teacher must be"):
        slimkit.distill(None, student, (x, y))
    with pytest.raises(InvalidTypeError, match="data must be"):
        slimkit.distill(teacher, student, 3)
    with pytest.raises(InvalidParameterError, match="width=0"):
        slimkit.shrink(teacher, 0)
    with pytest.raises(NothingToCompressError, match="shrink"):
        slimkit.shrink(nn.Linear(3, 2), 0.5)


def test_stop_interrupts_distillation():
    teacher, student, x, y = _tiny_pair()
    stop = threading.Event()

    def listener(e):
        if e.kind == "metrics":
            stop.set()

    snap = state_snapshot(student)
    with pytest.raises(Interrupted):
        slimkit.distill(teacher, student, (x, y), epochs=5, callbacks=listener, stop=stop)
    assert_unchanged(student, snap)
