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
from slimkit.nn import param_count
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
    with pytest.raises(Interrupted) as info:
        slimkit.distill(teacher, student, (x, y), epochs=5, callbacks=listener, stop=stop)
    assert_unchanged(student, snap)
    # the finished epoch is kept: a trained copy and a report that says it stopped
    kept = info.value.result
    assert kept.report.summary["stopped_after_epochs"] == 1 and len(info.value.history) == 1
    # the model is the one the finished epoch's metrics describe, not a mid-epoch state
    assert kept.report.summary["final_loss"] == info.value.history[0]["loss"]
    assert any(not torch.equal(a, b) for a, b in zip(kept.model.state_dict().values(), student.state_dict().values()))
    assert kept.model(x).shape == student(x).shape


def test_a_stop_before_any_epoch_finished_keeps_nothing():
    teacher, student, x, y = _tiny_pair()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted) as info:
        slimkit.distill(teacher, student, (x, y), epochs=5, stop=stop)
    assert not hasattr(info.value, "result") and not getattr(info.value, "history", [])


# ---- users' models: transformers outputs, the inputs rule, bad batches (issue 8) -------------

def _bert_pair():
    from zoo.models import bert

    teacher = bert(seed=0)
    student = _small_bert(seed=1)
    return teacher, student


def _small_bert(seed):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, num_labels=3)
    return transformers.BertForSequenceClassification._from_config(cfg, attn_implementation="eager")


def test_distill_reads_the_logits_of_transformers_outputs():
    """Two BERT classifiers of different widths return SequenceClassifierOutput: distill uses
    their .logits (it refused 'teacher gave SequenceClassifierOutput and the student ...')."""
    zoo_teacher, student = _bert_pair()
    teacher, data = zoo_teacher.model, zoo_teacher.data
    before_t, before_s = state_snapshot(teacher), state_snapshot(student)
    model, report = slimkit.distill(teacher, student, data, epochs=2, lr=1e-2, batch_size=4)
    assert_unchanged(teacher, before_t)
    assert_unchanged(student, before_s)
    x = data[0][0]
    assert model(**x).logits.shape == teacher(**x).logits.shape
    assert not torch.equal(model.classifier.weight, student.classifier.weight)  # it trained
    from slimkit.nn import param_modules
    rows = {l.name: l.action for l in report.layers}
    assert {n for n, _ in param_modules(student)} <= set(rows)
    assert set(rows.values()) == {"distilled"}  # every parameter trains, LayerNorms and embeddings included
    assert report.summary["student_params"] < report.summary["teacher_params"]
    assert report.summary["model_params_after"] == param_count(model)


class _Scores(nn.Module):
    """Returns a dict without 'logits', or a tuple: the user says where the logits are."""

    def __init__(self, width, as_tuple=False):
        super().__init__()
        self.body, self.as_tuple = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 4)), as_tuple

    def forward(self, x):
        s = self.body(x)
        return (s, x.sum()) if self.as_tuple else {"scores": s, "aux": x.sum()}


def test_distill_output_selector_by_name_and_by_callable():
    torch.manual_seed(0)
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    teacher, student = _Scores(16), _Scores(3)
    with pytest.raises(IncompatibleModelsError, match="teacher gave dict.*pass output="):
        slimkit.distill(teacher, student, (x, y), epochs=1)
    m, _ = slimkit.distill(teacher, student, (x, y), epochs=1, output="scores")
    assert m(x)["scores"].shape == (16, 4)
    m, _ = slimkit.distill(_Scores(16, True), _Scores(3, True), (x, y), epochs=1, output=lambda out: out[0])
    assert m(x)[0].shape == (16, 4)
    with pytest.raises(InvalidTypeError, match="output"):
        slimkit.distill(teacher, student, (x, y), epochs=1, output=3)


def test_distill_follows_the_inputs_rule_for_a_forward_taking_one_dict():
    """(Inputs(args=(batch_dict,)), y) is batched tensor by tensor and called model(batch_dict)."""
    from zoo.models import dict_input

    zt, zs = dict_input(seed=0), dict_input(seed=1)
    d = {"ids": torch.randint(0, 64, (10, 8)), "features": torch.randn(10, 4)}
    y = torch.randint(0, 3, (10,))
    model, report = slimkit.distill(zt.model, zs.model, (slimkit.Inputs(args=(d,)), y), epochs=1, batch_size=4)
    assert model(d).shape == (10, 3)
    # a plain dict of tensors is keyword inputs: dict_input's forward has no 'ids' keyword -> clear error
    with pytest.raises(InvalidParameterError, match=r"data='batch 0'.*TypeError.*ids"):
        slimkit.distill(zt.model, zs.model, (d, y), epochs=1)


def test_distill_per_token_targets_for_language_models():
    """GPT-2's (B, T, V) logits with (B, T) targets: every token is a row of the loss."""
    from zoo.models import gpt2

    zt, zs = gpt2(seed=0), gpt2(seed=1)
    model, report = slimkit.distill(zt.model, zs.model, zt.data, epochs=1, val_data=zt.data)
    x = zt.data[0][0]
    assert model(**x).logits.shape == (4, 8, 64)
    assert 0 <= report.summary["val_accuracy"] <= 1


def _mlp_pair():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), nn.Sequential(nn.Linear(6, 3))


BAD_BATCHES = {
    "wrong input shape": ([torch.randn(4, 6), torch.randn(4, 5)], [torch.zeros(4, dtype=torch.long)] * 2,
                          "mat1 and mat2"),
    "labels out of range": ([torch.randn(4, 6)] * 2, [torch.zeros(4, dtype=torch.long), torch.full((4,), 7)],
                            "out of bounds"),
    "batch sizes disagree": ([torch.randn(4, 6)] * 2,
                             [torch.zeros(4, dtype=torch.long), torch.zeros(3, dtype=torch.long)], "batch_size"),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batches_name_data_and_the_batch(case):
    """Each verb reports the batch torch rejected as InvalidParameterError('data', 'batch 1'),
    with torch's reason (they raised raw RuntimeError/IndexError/ValueError)."""
    xs, ys, reason = BAD_BATCHES[case]
    data = list(zip(xs, ys))
    teacher, student = _mlp_pair()
    before = state_snapshot(student)
    match = rf"data='batch 1'.*{reason}"
    with pytest.raises(InvalidParameterError, match=match):
        slimkit.distill(teacher, student, data, epochs=1)
    assert_unchanged(student, before)
    with pytest.raises(InvalidParameterError, match=match):
        slimkit.evaluate(teacher, data)
    with pytest.raises(InvalidParameterError, match=match):
        fit(student, data, epochs=1)


def test_pair_data_with_inputs_of_different_sample_counts_is_refused():
    teacher, student = _mlp_pair()
    d = slimkit.Inputs(args=(torch.randn(5, 6),))
    with pytest.raises(InvalidParameterError, match="data=.*samples"):
        slimkit.distill(teacher, student, (d, torch.zeros(4, dtype=torch.long)), epochs=1)


def test_bf16_models_distill_in_bf16():
    from zoo.models import bf16

    zt, zs = bf16(seed=0), bf16(seed=1)
    model, _ = slimkit.distill(zt.model, zs.model, zt.data, epochs=2)
    out = model(zt.inputs)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert not torch.equal(model[0].weight, zs.model[0].weight)


def test_a_config_and_a_first_positional_temperature_distill_alike():
    teacher, student, x, y = _tiny_pair()
    by_kw = slimkit.distill(teacher, student, (x, y), temperature=2.0, epochs=2)
    by_first = slimkit.distill(teacher, student, (x, y), 2.0, epochs=2)
    by_config = slimkit.distill(teacher, student, (x, y), slimkit.DistillConfig(temperature=2.0, epochs=2))
    for other in (by_first, by_config):
        assert other.report.params == by_kw.report.params
        for a, b in zip(by_kw.model.state_dict().values(), other.model.state_dict().values()):
            assert torch.equal(a, b)
    assert (slimkit.DistillConfig(temperature=2.0, epochs=2).code()
            == "slimkit.distill(teacher, student, data, temperature=2.0, epochs=2)")
