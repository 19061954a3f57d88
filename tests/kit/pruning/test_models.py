"""prune / structured prune / shrink / sparsify on the architectures users bring: GPT-2 (Conv1D),
BERT, LSTM/GRU, MHA, grouped convs, a UNet with skip concatenations and ConvTranspose2d, ResNet
blocks (a reused stateless ReLU, residual adds), channel shuffle, tied weights, weight norm,
bf16 and dict inputs. Each verb works and reports exactly what it did, or refuses clearly."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import slimkit
from conftest import assert_unchanged, state_snapshot
from slimkit.errors import InvalidParameterError, NothingToCompressError, SlimkitError
from slimkit.nn import param_count, param_modules
from zoo.models import TinyResNet  # torchvision's BasicBlocks: one ReLU module called twice in each


# ---- models -----------------------------------------------------------------------------

def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)
    return GPT2LMHeadModel(cfg).eval()


def bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     vocab_size=100)
    return BertForSequenceClassification(cfg).eval()


def token_ids(n=2, length=8):
    return torch.randint(0, 100, (n, length), generator=torch.Generator().manual_seed(1))


class RNNClassifier(nn.Module):
    def __init__(self, cell=nn.LSTM):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.rnn = cell(16, 24, batch_first=True)
        self.head = nn.Linear(24, 3)

    def forward(self, ids):
        out, _ = self.rnn(self.emb(ids))
        return self.head(out[:, -1])


class MHABlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        y, _ = self.attn(x, x, x)
        return self.head(self.norm(x + y).mean(1))


class GroupedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.gc = nn.Conv2d(16, 32, 1, groups=4)
        self.pw = nn.Conv2d(32, 24, 1)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.gc(F.relu(self.dw(x))))
        x = F.relu(self.pw(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class MobileBlock(nn.Module):
    """MobileNet's depthwise-separable block: the stem's channels pass through the depthwise conv."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.dw, self.bn1 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = F.relu6(self.bn1(self.dw(F.relu6(self.bn0(self.stem(x))))))
        return self.fc(F.adaptive_avg_pool2d(F.relu6(self.pw(x)), 1).flatten(1))


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 16, 3, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Conv2d(16, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a = F.relu(self.enc1(x))
        b = F.relu(self.enc2(F.max_pool2d(a, 2)))
        u = self.up(b)
        return self.out(F.relu(self.dec(torch.cat([a, u], 1))))


def resnet():
    torch.manual_seed(0)
    model = TinyResNet(classes=10, width=8, blocks=(2, 2))
    with torch.no_grad():  # non-trivial BN statistics, so a wrong slice shows in the outputs
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


class ShuffleBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        x = F.relu(self.conv3(F.relu(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


class TiedMLP(nn.Module):
    """One Linear called twice in forward."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(12, 16)
        self.shared = nn.Linear(16, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = torch.relu(self.shared(h))
        h = torch.relu(self.shared(h))
        return self.out(h)


class TiedLM(nn.Module):
    """An embedding tied to the LM head, with a hidden MLP in between."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, 40, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.fc2(torch.relu(self.fc1(self.emb(ids)))))


class WeightNormCNN(nn.Module):
    def __init__(self):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.c1 = wn(nn.Conv2d(3, 8, 3, padding=1))
        self.c2 = wn(nn.Conv2d(8, 8, 3, padding=1))
        self.fc = wn(nn.Linear(8, 4))

    def forward(self, x):
        x = F.relu(self.c2(F.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 16)
        self.b = nn.Linear(4, 16)
        self.hidden = nn.Linear(16, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, image, meta):
        return self.out(torch.relu(self.hidden(torch.relu(self.a(image) + self.b(meta)))))


def mlp_bf16():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)).to(torch.bfloat16)


def images(n=2, c=3, hw=8):
    return torch.randn(n, c, hw, hw, generator=torch.Generator().manual_seed(2))


# name -> (builder, example inputs)
ZOO = {
    "gpt2": (gpt2, lambda: token_ids()),
    "bert": (bert, lambda: token_ids()),
    "lstm": (lambda: RNNClassifier(nn.LSTM), lambda: token_ids(length=5) % 50),
    "gru": (lambda: RNNClassifier(nn.GRU), lambda: token_ids(length=5) % 50),
    "mha": (MHABlock, lambda: torch.randn(2, 5, 16)),
    "grouped_cnn": (GroupedCNN, images),
    "unet": (UNet, images),
    "mobile": (lambda: MobileBlock().eval(), images),
    "resnet": (resnet, images),
    "shuffle": (ShuffleBlock, images),
    "tied_mlp": (TiedMLP, lambda: torch.randn(2, 12)),
    "tied_lm": (TiedLM, lambda: token_ids(length=5) % 40),
    "weight_norm": (WeightNormCNN, images),
    "bf16": (mlp_bf16, lambda: torch.randn(2, 12).to(torch.bfloat16)),
    "dict": (DictModel, lambda: {"image": torch.randn(2, 6), "meta": torch.randn(2, 4)}),
}


def _rows(report):
    return {l.name: l for l in report.layers}


def _assert_reports_every_param_module(model, report):
    rows = _rows(report)  # a row for a layer covers its children (weight_norm's parametrizations)
    missing = [n for n, _ in param_modules(model) if n not in rows and not any(n.startswith(r + ".") for r in rows)]
    assert not missing, f"not in the report: {missing}"


def _unique_weights(model, names):
    seen = {}
    for n in names:
        w = model.get_submodule(n).weight
        seen.setdefault(id(w), w)
    return list(seen.values())


# ---- 1. GPT-2's Conv1D ----------------------------------------------------------------------

def _conv1d_names(model):
    return [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_gpt2_conv1d_is_pruned_like_a_linear(scope):
    model = gpt2()
    snap = state_snapshot(model)
    pruned, report = slimkit.prune(model, 0.5, scope=scope)
    assert_unchanged(model, snap)
    rows = _rows(report)
    conv1d = _conv1d_names(model)
    assert len(conv1d) == 8 and all(rows[n].action == "pruned" for n in conv1d)
    pruned_names = [n for n, l in rows.items() if l.action == "pruned"]
    weights = _unique_weights(pruned, pruned_names)  # wte and lm_head share one tensor
    zeros, total = sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)
    assert zeros / total == pytest.approx(0.5, abs=1e-4)
    assert report.summary["sparsity"] == pytest.approx(zeros / total) and report.summary["prunable_weights"] == total
    if scope == "layer":
        assert all(rows[n].sparsity == pytest.approx(0.5, abs=1e-3) for n in conv1d)
    assert pruned.lm_head.weight is pruned.transformer.wte.weight
    assert rows["lm_head"].details["tied_to"] == "transformer.wte"
    _assert_reports_every_param_module(model, report)  # LayerNorms and position embeddings too
    assert pruned(token_ids()).logits.shape == (2, 8, 100)


@pytest.mark.parametrize("score", ["random", "obd"])
def test_gpt2_conv1d_with_other_scores(score):
    model = gpt2()
    ids = token_ids(4)
    lm_loss = lambda m, x, y: F.cross_entropy(m(x).logits[:, -1], y)  # noqa: E731
    pruned, report = slimkit.prune(model, 0.5, score=score, data=(ids, ids[:, 0]), loss_fn=lm_loss,
                                   include=["*.c_fc", "*.c_proj"])
    for n in _conv1d_names(model):
        if n.endswith(("c_fc", "c_proj")):
            w = pruned.get_submodule(n).weight
            assert int((w == 0).sum()) == round(0.5 * w.numel()), n


def test_gpt2_sparsify_stores_conv1d_transposed_and_matches():
    model = gpt2()
    snap = state_snapshot(model)
    out, report = slimkit.sparsify(model, sparsity=0.9, execution="sparse")
    assert_unchanged(model, snap)
    rows = _rows(report)
    reference = gpt2()
    with torch.no_grad():
        for n in _conv1d_names(model):
            sparse = out.get_submodule(n)
            assert rows[n].action == "sparsified" and type(sparse).__name__ == "SparseLinear"
            m = model.get_submodule(n)
            assert sparse.shape == (m.nf, m.weight.shape[0])  # (out, in)
            kept = sparse.dense_weight() != 0
            assert torch.equal(sparse.dense_weight()[kept], m.weight.t()[kept])
            reference.get_submodule(n).weight.copy_(sparse.dense_weight().t())
            assert int(kept.sum()) == round(0.1 * kept.numel())
        for n in ("transformer.wte", "transformer.wpe"):
            if isinstance(out.get_submodule(n), nn.Embedding):
                continue
            reference.get_submodule(n).weight.copy_(out.get_submodule(n).dense_weight())
    _assert_reports_every_param_module(model, report)
    ids = token_ids()
    torch.testing.assert_close(out(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-4)


# ---- 2. every parameter-holding module is in the report ---------------------------------------

@pytest.mark.parametrize("name", ["lstm", "gru", "mha", "unet", "bert"])
def test_reports_list_every_module_holding_parameters(name):
    build, example = ZOO[name]
    model = build()
    snap = state_snapshot(model)
    for verb in (lambda m: slimkit.prune(m, 0.5), lambda m: slimkit.sparsify(m, sparsity=0.9)):
        result, report = verb(model)
        assert_unchanged(model, snap)
        _assert_reports_every_param_module(model, report)
        s = report.summary
        assert s["model_params_before"] == param_count(model) and s["model_params_after"] == param_count(result)
        assert 0 < s["sparsity_all_params"] < 1 and s["sparsity_all_params"] != s["sparsity"]
        with torch.no_grad():
            slimkit.inputs.call(result.eval(), example())
    pruned, report = slimkit.prune(model, 0.5)
    params = list(pruned.parameters())  # over all parameters, each once (BERT's biases start at zero)
    zeros = sum(int((p == 0).sum()) for p in params) / sum(p.numel() for p in params)
    assert report.summary["sparsity_all_params"] == pytest.approx(zeros)
    rows = _rows(report)
    if name in ("lstm", "gru"):  # the weight matrices, each to the target; forward runs on the pruned ones
        assert rows["rnn"].action == "pruned" and "weight_hh_l0" in rows["rnn"].reason
        assert all(float((w == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
                   for w in (pruned.rnn.weight_ih_l0, pruned.rnn.weight_hh_l0))
        assert torch.equal(pruned.rnn.bias_hh_l0, model.rnn.bias_hh_l0)
        reference = build()
        reference.load_state_dict(pruned.state_dict())
        x = example()
        torch.testing.assert_close(pruned(x), reference(x))
    if name == "mha":
        assert rows["attn"].action == "pruned" and "in_proj_weight" in rows["attn"].reason
        assert float((pruned.attn.in_proj_weight == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
        assert rows["attn.out_proj"].action == "pruned"
    if name == "unet":
        assert rows["up"].action == "pruned" and rows["up"].sparsity == pytest.approx(0.5, abs=1e-3)


# ---- 3. weight norm: what the report says happened did happen -------------------------------

def test_weight_norm_layers_prune_and_sparsify_their_effective_weight():
    torch.manual_seed(0)
    model = WeightNormCNN()
    snap = state_snapshot(model)
    x = images()
    before = model(x)
    pruned, report = slimkit.prune(model, 0.5)
    assert_unchanged(model, snap)
    assert model.c1.weight.shape == (8, 3, 3, 3) and torch.equal(model(x), before)  # still weight-normed
    for name in ("c1", "c2", "fc"):
        row, w = _rows(report)[name], pruned.get_submodule(name).weight  # the weight forward uses
        assert row.action == "pruned" and "parametrization" in row.reason
        assert int((w == 0).sum()) == row.details["zeros"] == round(0.5 * w.numel())
    _assert_reports_every_param_module(model, report)
    pruned(x)

    out, report = slimkit.sparsify(model, sparsity=0.9)
    assert_unchanged(model, snap)
    for name in ("c1", "c2", "fc"):
        row, layer = _rows(report)[name], out.get_submodule(name)
        assert row.action == "sparsified" and "parametrization" in row.reason
        w = layer.dense_weight()
        assert 1 - int((w != 0).sum()) / w.numel() == pytest.approx(row.sparsity) == pytest.approx(0.9, abs=0.02)
    with torch.no_grad():  # the kept weights are the effective (g * v / |v|) ones
        ref = WeightNormCNN()
        ref.load_state_dict(model.state_dict())
        nn.utils.parametrize.remove_parametrizations(ref.c1, "weight")
        kept = out.c1.dense_weight() != 0
        torch.testing.assert_close(out.c1.dense_weight()[kept], ref.c1.weight[kept])
    out(x)
    assert torch.equal(model(x), before) and nn.utils.parametrize.is_parametrized(model.c1)


# ---- 5. tied weights: pruned once, the tie holds ---------------------------------------------

@pytest.mark.parametrize("scope", ["layer", "global"])
def test_tied_embedding_and_head_are_pruned_once(scope):
    torch.manual_seed(0)
    model = TiedLM()
    pruned, report = slimkit.prune(model, 0.5, scope=scope)
    assert pruned.head.weight is pruned.emb.weight
    rows = _rows(report)
    assert rows["head"].details["tied_to"] == "emb" and "tied" in rows["head"].reason
    weights = _unique_weights(pruned, ["emb", "fc1", "fc2"])
    total = sum(w.numel() for w in weights)
    assert report.summary["prunable_weights"] == total
    assert sum(int((w == 0).sum()) for w in weights) == round(0.5 * total) if scope == "global" else True
    assert report.summary["model_params_after"] == param_count(pruned)


def test_tied_layer_called_twice_is_pruned_with_one_mask():
    torch.manual_seed(0)
    model = TiedMLP()
    pruned, report = slimkit.prune(model, 0.5)
    assert [l.name for l in report.layers if l.action == "pruned"] == ["inp", "shared", "out"]
    assert int((pruned.shared.weight == 0).sum()) == 128


# ---- 6. bf16 / fp16 ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("execution", ["sparse", "auto", "dense"])
def test_half_precision_models_sparsify_and_keep_their_dtype(dtype, execution):
    model = mlp_bf16().to(dtype)
    x = torch.randn(4, 12).to(dtype)
    out, report = slimkit.sparsify(model, sparsity=0.9, execution=execution)
    y = out(x)
    assert y.dtype == dtype
    reference = mlp_bf16().to(dtype)
    with torch.no_grad():
        for i in (0, 2, 4):
            reference[i].weight.copy_(out[i].dense_weight())
            assert out[i].values.dtype == dtype
    torch.testing.assert_close(y, reference(x), atol=2e-2, rtol=2e-2)


def test_bf16_model_prunes_and_keeps_its_dtype():
    model = mlp_bf16()
    pruned, report = slimkit.prune(model, 0.5, scope="global")
    assert all(p.dtype == torch.bfloat16 for p in pruned.parameters())
    assert report.summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert pruned(torch.randn(2, 12).to(torch.bfloat16)).dtype == torch.bfloat16


# ---- 4. structured pruning and shrink: ResNet, channel shuffle, UNet, grouped convs ----------

def _labels(n, classes):
    return torch.arange(n) % classes


def _masked_equivalent(model, report, example):
    """``model`` with the removed units silenced instead: every consumer ignores them. Physically
    removing exactly those units must give the same outputs."""
    import copy

    ref, rows = copy.deepcopy(model), _rows(report)
    for g in slimkit.pruning.surgery.analyse(model, example=example).groups:
        removed = torch.tensor(rows[g.producer].details["removed_units"], dtype=torch.long)
        assert all(rows[p].details["removed_units"] == removed.tolist() for p in g.producers)
        with torch.no_grad():
            for name, per_unit in g.consumers:
                c = ref.get_submodule(name)
                idx = (removed[:, None] * per_unit + torch.arange(per_unit)).flatten()
                c.weight.index_fill_(slimkit.pruning.surgery.unit_dim(c, out=False), idx, 0.0)
    return ref


def test_resnet_structured_prune_ties_channels_across_residual_adds():
    model = resnet()
    snap = state_snapshot(model)
    x = images(4)
    pruned, report = slimkit.prune(model, 0.3, structured=True, data=(x, _labels(4, 10)))
    assert_unchanged(model, snap)
    groups = {g.producer: g.producers for g in slimkit.pruning.surgery.analyse(model).groups}
    assert groups["conv1"] == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]  # the identity shortcuts
    assert groups["layer2.0.conv2"] == ["layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"]
    assert len(groups) == 6  # and every block's conv1
    assert pruned.conv1.out_channels == pruned.layer1[1].conv2.out_channels == 6 == pruned.layer1[0].bn2.num_features
    assert pruned.layer2[0].downsample[0].out_channels == pruned.fc.in_features == 11
    assert pruned(x).shape == (4, 10)
    assert report.summary["params_after"] == param_count(pruned) < 0.7 * param_count(model)
    _assert_reports_every_param_module(model, report)
    torch.testing.assert_close(pruned(x), _masked_equivalent(model, report, x)(x), atol=1e-5, rtol=1e-4)


def test_resnet_shrinks_to_a_working_student():
    model = resnet()
    snap = state_snapshot(model)
    student = slimkit.shrink(model, 0.5)
    assert_unchanged(model, snap)
    assert student.conv1.out_channels == student.layer1[0].conv2.out_channels == 4
    assert student.layer1[0].conv1.out_channels == 4 and student.layer2[1].conv2.out_channels == 8
    assert student.layer2[0].downsample[0].out_channels == student.fc.in_features == 8
    assert student(images(4)).shape == (4, 10)
    assert param_count(student) < 0.3 * param_count(model)


def test_channel_shuffle_is_skipped_with_its_reason():
    torch.manual_seed(0)
    model = ShuffleBlock().eval()
    x = images()
    pruned, report = slimkit.prune(model, 0.5, structured=True)
    rows = _rows(report)
    assert rows["conv1"].action == "skipped" and "view" in rows["conv1"].reason
    assert rows["conv2"].action == "skipped" and "grouped" in rows["conv2"].reason
    assert rows["conv3"].action == "pruned" and pruned.fc.in_features == 4
    torch.testing.assert_close(pruned(x), _masked_equivalent(model, report, x)(x))


@pytest.mark.parametrize("name", ["unet", "grouped_cnn", "mobile", "weight_norm", "tied_lm"])
def test_structured_prune_removes_what_it_planned(name):
    build, example = ZOO[name]
    torch.manual_seed(0)
    model = build()
    snap = state_snapshot(model)
    x = example()
    pruned, report = slimkit.prune(model, 0.3, structured=True)
    assert_unchanged(model, snap)
    assert report.summary["params_after"] == param_count(pruned) < param_count(model)
    _assert_reports_every_param_module(model, report)
    plain = slimkit.pruning.api.plain_copy(model)[0]
    torch.testing.assert_close(pruned(x), _masked_equivalent(plain, report, x)(x), atol=1e-5, rtol=1e-4)
    student = slimkit.shrink(model, 0.5)
    assert student(x).shape == model(x).shape


def test_depthwise_conv_passes_the_stems_channels_through():
    torch.manual_seed(0)
    pruned, report = slimkit.prune(MobileBlock().eval(), 0.5, structured=True)
    assert pruned.stem.out_channels == pruned.dw.in_channels == pruned.dw.groups == pruned.pw.in_channels == 8
    rows = _rows(report)
    assert rows["dw"].action == "resized" and rows["stem"].action == rows["pw"].action == "pruned"


def test_unet_concatenation_and_transposed_conv():
    torch.manual_seed(0)
    _, report = slimkit.prune(UNet(), 0.5, structured=True)
    rows = _rows(report)
    assert rows["enc1"].action == "skipped" and "concatenation" in rows["enc1"].reason
    assert rows["enc2"].action == "pruned" and rows["up"].action == "resized"


# ---- 5. tied weights in structured pruning ---------------------------------------------------

def test_structured_prune_keeps_an_embedding_tied_to_the_head():
    torch.manual_seed(0)
    model = TiedLM()
    pruned, report = slimkit.prune(model, 0.5, structured=True)
    assert pruned.head.weight is pruned.emb.weight
    rows = _rows(report)
    assert rows["fc2"].action == "resized" and "'head'" in rows["fc2"].reason and "tied" in rows["fc2"].reason
    assert report.summary["params_after"] == param_count(pruned) < param_count(model)
    assert report.summary["params_ratio"] == pytest.approx(param_count(pruned) / param_count(model))
    student = slimkit.shrink(model, 0.5)
    assert student.head.weight is student.emb.weight and param_count(student) < param_count(model)


def test_a_layer_called_twice_is_refused_by_name():
    with pytest.raises(NothingToCompressError, match="'shared'.*called more than once"):
        slimkit.prune(TiedMLP(), 0.3, structured=True)


# ---- 8. the rest: refusals say what to do instead; dict inputs ---------------------------------

@pytest.mark.parametrize("name", ["bert", "gpt2", "mha", "lstm"])
def test_structured_refusals_suggest_unstructured(name):
    model = ZOO[name][0]()
    with pytest.raises(NothingToCompressError, match=r"structured=False"):
        slimkit.prune(model, 0.3, structured=True)
    with pytest.raises(NothingToCompressError, match="shrink"):
        slimkit.shrink(model, 0.5)


def test_dict_input_model_structured_and_shrink():
    torch.manual_seed(0)
    model = DictModel()
    x = ZOO["dict"][1]()
    pruned, report = slimkit.prune(model, 0.5, structured=True, data=[(x, _labels(2, 3))])
    assert pruned.hidden.out_features == 8 and pruned(**x).shape == (2, 3)
    assert slimkit.shrink(model, 0.5, example=x)(**x).shape == (2, 3)


# ---- 7. wrong data is a slimkit error naming the parameter and the batch -------------------

@pytest.mark.parametrize("kw, name, match", [
    (dict(score="fisher", data=(images(4)[:, :2], torch.arange(4))), "data", "batch 1.*weight of size"),
    (dict(score="obd", data=(images(4), torch.arange(4) + 20)), "data", "batch 1.*out of bounds"),
    (dict(score="fisher", data=[(images(4), torch.arange(4)), (images(4, c=1), torch.arange(4))]), "data",
     "batch 2"),
    (dict(finetune=dict(data=(images(4, c=1), torch.arange(4)))), "finetune", "batch 1"),
    (dict(structured=True, finetune=dict(data=(images(4, c=1), torch.arange(4)))), "finetune", "batch 1"),
])
def test_wrong_data_raises_a_slimkit_error_naming_it(kw, name, match):
    model = resnet()
    snap = state_snapshot(model)
    with pytest.raises(InvalidParameterError, match=match) as e:
        slimkit.prune(model, 0.3, **kw)
    assert e.value.name == name and isinstance(e.value, SlimkitError)
    assert_unchanged(model, snap)


def test_fisher_data_follows_the_inputs_rule():
    torch.manual_seed(0)
    model = DictModel()
    x = {"image": torch.randn(8, 6), "meta": torch.zeros(8, 4)}  # meta is always 0: b's weights get no gradient
    for inputs in (x, slimkit.Inputs(kwargs=x), (x["image"], x["meta"])):
        pruned, _ = slimkit.prune(model, 0.3, score="fisher", scope="global", data=[(inputs, _labels(8, 3))])
        assert bool((pruned.b.weight == 0).all())
        assert int((pruned.a.weight == 0).sum()) < pruned.a.weight.numel()
