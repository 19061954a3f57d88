"""slimkit.quantize on the architectures users bring: transformers (BERT, GPT-2, T5, ViT),
MultiheadAttention, RNNs, grouped / transposed / weight-normed convs, tied weights, bf16, dict inputs."""
import copy
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import slimkit
from conftest import TiedModel, assert_unchanged, state_snapshot
from slimkit.quant import layers as qlayers
from slimkit.quant.rnn import QuantRNN
from slimkit.errors import InvalidParameterError, NothingToCompressError
from slimkit.nn import param_modules

transformers = pytest.importorskip("transformers")


def _cos(a, b):
    return float(F.cosine_similarity(a.detach().float().flatten(), b.detach().float().flatten(), 0))


def _quantize(model, *args, **kw):
    """quantize, checking the input model is not modified and the report covers every module
    that holds parameters."""
    snap = state_snapshot(model)
    q, report = slimkit.quantize(model, *args, **kw)
    assert_unchanged(model, snap)
    rows = {l.name for l in report.layers}
    for name, _ in param_modules(model):  # a row for the module or for a parent (weight_norm's originals)
        assert any(name == r or name.startswith(r + ".") for r in rows), name
    assert report.summary["model_bytes_before"] == slimkit.nn.tensor_bytes(model)
    assert report.summary["model_bytes_after"] == slimkit.nn.tensor_bytes(q)
    return q, report


def _rows(report):
    return {l.name: l for l in report.layers}


# ---- layers whose .weight other code reads ---------------------------------------------------

def _t5():
    torch.manual_seed(0)
    cfg = transformers.T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab_size=100)
    ids = torch.randint(0, 100, (2, 7))
    return transformers.T5Model(cfg).eval(), {"input_ids": ids, "decoder_input_ids": ids}


def _vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64)
    return transformers.ViTModel(cfg).eval(), {"pixel_values": torch.randn(2, 3, 32, 32)}


class AttnBlock(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        return self.ff(self.attn(x, x, x)[0])


def _mha():
    torch.manual_seed(0)
    return AttnBlock().eval(), (torch.randn(2, 5, 64),)


@pytest.mark.parametrize("build", [_t5, _vit, _mha], ids=["t5", "vit", "mha"])
@pytest.mark.parametrize("calibrate", [False, True], ids=["dynamic", "static"])
def test_models_that_read_layer_weights_run_quantized(build, calibrate):
    model, x = build()
    q, report = _quantize(model, 8, activations=[x] if calibrate else None)
    with torch.no_grad():
        ref, out = slimkit.inputs.call(model, x), slimkit.inputs.call(q, x)
    ref, out = (ref if isinstance(ref, torch.Tensor) else ref[0]), (out if isinstance(out, torch.Tensor) else out[0])
    assert _cos(ref, out) > 0.99
    assert report.summary["quantized_layers"] >= 2


def test_quantized_layers_expose_their_dequantized_weight():
    model, x = _t5()
    q, _ = _quantize(model, 8)
    wo = q.encoder.block[0].layer[1].DenseReluDense.wo
    assert isinstance(wo, qlayers.QuantLinear) and wo.weight.dtype == torch.float32
    torch.testing.assert_close(wo.weight, wo.dequantized_weight())
    with pytest.raises(AttributeError):  # read-only
        wo.weight = torch.zeros(2)


def test_multihead_attention_weights_read_by_the_parent_stay_float_with_reasons():
    model, x = _mha()
    q, report = _quantize(model, 8)
    rows = _rows(report)
    assert isinstance(q.attn.out_proj, nn.Linear)
    assert rows["attn.out_proj"].action == "skipped" and "reads .weight" in rows["attn.out_proj"].reason
    assert rows["attn"].action == "skipped" and "in_proj_weight" in rows["attn"].reason
    assert isinstance(q.ff[0], qlayers.QuantLinear)
    with pytest.raises(NothingToCompressError, match="reads .weight"):
        slimkit.quantize(nn.MultiheadAttention(64, 4, batch_first=True), 8)


# ---- GPT-2: Conv1D, tied LM head, whole-model figures ----------------------------------------

@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_gpt2_conv1d_layers_are_quantized_as_linear(gpt2, tmp_path):
    ids = torch.randint(0, 100, (2, 9))
    q, report = _quantize(gpt2, 8)
    conv1d = [n for n, m in gpt2.named_modules() if type(m).__name__ == "Conv1D"]
    assert len(conv1d) == 8
    rows = _rows(report)
    for n in conv1d:
        layer = q.get_submodule(n)
        assert isinstance(layer, qlayers.QuantLinear) and layer.integer_kernel and layer.qweight.dtype == torch.int8
        assert rows[n].action == "quantized" and rows[n].sqnr_db > 35
        # the quantized weight is the (out, in) Linear view of Conv1D's (in, out) weight
        torch.testing.assert_close(layer.weight, gpt2.get_submodule(n).weight.t(), atol=0.01, rtol=0)
    with torch.no_grad():
        assert _cos(gpt2(ids).logits, q(ids).logits) > 0.99
    assert slimkit.size(gpt2) / slimkit.size(q) > 2.5  # int8 + fp32 scales of 32-wide rows; LayerNorms stay
    before, after = report.summary["model_bytes_before"], report.summary["model_bytes_after"]
    assert f"{before / after:.2f}x" in report.summary["model_bytes"]
    back = slimkit.load(slimkit.save(q, tmp_path / "g.slim"), model=gpt2)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, q(ids).logits)


def test_gpt2_tied_lm_head_shares_one_int8_copy(gpt2, tmp_path):
    q, report = _quantize(gpt2, 8)
    assert q.lm_head.qweight is q.transformer.wte.qweight and q.lm_head.scale is q.transformer.wte.scale
    assert _rows(report)["lm_head"].details["tied_to"] == "transformer.wte"
    path = slimkit.save(q, tmp_path / "g.slim")
    assert slimkit.artifact.read_metadata(path)["aliases"]["lm_head.qweight"] == "transformer.wte.qweight"
    back = slimkit.load(path, model=gpt2)
    assert back.lm_head.qweight.data_ptr() == back.transformer.wte.qweight.data_ptr()


def test_tied_embedding_and_head():
    torch.manual_seed(0)
    model = TiedModel(vocab=64, dim=32).eval()
    ids = torch.randint(0, 64, (3, 5))
    q, report = _quantize(model, 8)
    assert q.out.qweight is q.emb.qweight
    assert report.summary["model_bytes_after"] < 64 * 32 + 2 * 64 * 4 + 64  # one int8 table + scales
    assert _cos(model(ids), q(ids)) > 0.99
    # one member kept in float: both stay float (no int8 + float double copy), so nothing is left
    with pytest.raises(NothingToCompressError, match="tied"):
        slimkit.quantize(model, 8, keep=["out"])


def test_tied_partner_kept_float_keeps_the_tie():
    torch.manual_seed(0)
    model = nn.Sequential(TiedModel(vocab=64, dim=32), nn.Linear(64, 8)).eval()
    q, report = _quantize(model, 8, keep=["0.out"])
    rows = _rows(report)
    assert rows["0.emb"].action == "skipped" and "tied" in rows["0.emb"].reason
    assert q[0].out.weight is q[0].emb.weight and isinstance(q[1], qlayers.QuantLinear)


def test_a_layer_used_twice_is_replaced_everywhere():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = self.a

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    model = Twice().eval()
    q, report = _quantize(model, 8)
    assert isinstance(q.a, qlayers.QuantLinear) and q.b is q.a
    assert report.summary["model_bytes_after"] < 16 * 16 + 3 * 16 * 4 + 1
    x = torch.randn(4, 16)
    assert _cos(model(x), q(x)) > 0.99


# ---- RNNs, convs of every kind ---------------------------------------------------------------

class RNNClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True, bidirectional=True, proj_size=8)
        self.gru = nn.GRU(16, 32, batch_first=True)
        self.rnn = nn.RNN(32, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        h, _ = self.gru(h)
        h, _ = self.rnn(h.transpose(0, 1))
        return self.fc(h[-1])


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.slow)],
                         ids=["fp32", "bf16"])
def test_rnn_weights_are_stored_int8(dtype, tmp_path):
    torch.manual_seed(0)
    model = RNNClassifier().to(dtype).eval()
    x = torch.randint(0, 50, (2, 9))
    for kw in (dict(bits=8), dict(bits=8, activations=[x]), dict(bits=4, granularity="per_group")):
        q, report = _quantize(model, **kw)
        rows = _rows(report)
        for n in ("lstm", "gru", "rnn"):
            layer = q.get_submodule(n)
            layer = getattr(layer, "inner", layer)
            assert isinstance(layer, QuantRNN) and rows[n].action == "quantized", rows[n]
            assert "float" in rows[n].reason  # weights-only: the RNN arithmetic is float, and it says so
            assert all(m.qweight.dtype in (torch.int8, torch.uint8) for m in layer.weights.values())
        with torch.no_grad():
            out = q(x)
        assert out.dtype == dtype and _cos(model(x), out) > 0.99
        back = slimkit.load(slimkit.save(q, tmp_path / "r.slim"), model=model)
        assert torch.equal(back(x), out)
    assert report.summary["model_params_after"] == report.summary["model_params_before"]
    q, report = _quantize(model, 8)
    before, after = report.summary["model_bytes_before"], report.summary["model_bytes_after"]
    assert before / after > (2.5 if dtype == torch.float32 else 1.4)  # one fp32 scale per row of 16-32 values
    assert slimkit.size(q) < slimkit.size(model)


def test_grouped_transposed_and_1d_3d_convs_have_real_storage(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 32, 3, groups=4), nn.ConvTranspose2d(32, 8, 2, stride=2, output_padding=0),
        nn.Conv2d(8, 3, 1)).eval()
    x = torch.randn(2, 3, 12, 12)
    for kw in (dict(bits=8), dict(bits=4, granularity="per_group"), dict(bits=8, activations=[x])):
        q, report = _quantize(model, **kw)
        assert all(l.action == "quantized" for l in report.layers), report
        assert isinstance(getattr(q[4], "inner", q[4]), qlayers.QuantConvTranspose2d)
        with torch.no_grad():
            assert _cos(model(x), q(x)) > 0.99
        back = slimkit.load(slimkit.save(q, tmp_path / "c.slim"), model=model)
        assert torch.equal(back(x), q(x))
    one_d = nn.Sequential(nn.Conv1d(4, 8, 3), nn.ConvTranspose1d(8, 4, 3))
    q, _ = _quantize(one_d, 8)
    x1 = torch.randn(2, 4, 10)
    assert isinstance(q[0], qlayers.QuantConv1d) and isinstance(q[1], qlayers.QuantConvTranspose1d)
    assert _cos(one_d(x1), q(x1)) > 0.99
    conv3 = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1))
    q3, _ = _quantize(conv3, 8)
    x3 = torch.randn(1, 2, 5, 5, 5)
    assert isinstance(q3[0], qlayers.QuantConv3d) and _cos(conv3(x3), q3(x3)) > 0.99


def test_conv_transpose_output_size_is_honoured():
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1)
    q, _ = _quantize(nn.Sequential(up), 8)
    x = torch.randn(1, 4, 5, 5)
    out = q[0](x, output_size=[10, 10])
    assert out.shape == up(x, output_size=[10, 10]).shape == (1, 4, 10, 10)


# ---- weight-normed (parametrized) layers -----------------------------------------------------

def _weight_normed():
    torch.manual_seed(0)
    with pytest.warns(FutureWarning):  # the legacy hook version, still in many audio models
        legacy = nn.utils.weight_norm(nn.Conv1d(8, 8, 1))
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 8, 3)), nn.ReLU(), legacy).eval()
    model(torch.randn(1, 4, 6))  # with grad: the legacy weight is now a non-leaf tensor deepcopy refuses
    return model


@pytest.mark.parametrize("mode", ["auto", "simulated"])
def test_weight_normed_layers_are_quantized_for_real(mode):
    model = _weight_normed()
    x = torch.randn(2, 4, 20)
    q, report = _quantize(model, 3, mode=mode)
    for i in (0, 2):
        row = _rows(report)[str(i)]
        assert row.action in ("quantized", "simulated") and "folded" in row.details["note"]
        w = q[i].weight.detach()
        # the weight the layer uses is on the 3-bit grid: at most 7 levels per output channel
        assert max(len(torch.unique(r)) for r in w.reshape(w.shape[0], -1)) <= 7
        assert not torch.equal(w, model[i].weight.detach())
    with torch.no_grad():
        assert _cos(model(x), q(x)) > 0.95


# ---- calls under inference_mode / no_grad / plain mix ------------------------------------------

@pytest.mark.parametrize("order", list(itertools.permutations(["inference", "no_grad", "plain"])))
def test_grad_modes_mix_freely(order):
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    q, _ = slimkit.quantize(model, 8)  # LayerNorm stays float: its output requires grad
    x = torch.randn(5, 16)
    with torch.no_grad():  # on a copy: the first call below is the one that fills q's kernel cache
        ref = copy.deepcopy(q)(x)
    modes = {"inference": torch.inference_mode, "no_grad": torch.no_grad, "plain": torch.enable_grad}
    for name in order + order:
        with modes[name]():
            out = q(x)  # a plain call records autograd through the float LayerNorm
        assert out.requires_grad == (name == "plain")
        torch.testing.assert_close(out.detach(), ref)


# ---- bf16 / fp16 models ----------------------------------------------------------------------

def _bf16_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(torch.bfloat16).eval(), \
        torch.randn(4, 16).bfloat16()


def _bf16_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 4)).to(torch.bfloat16).eval(), torch.randn(2, 3, 8, 8).bfloat16()


@pytest.mark.parametrize("build", [_bf16_mlp, _bf16_cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("kw", [dict(bits=8), dict(bits=4), dict(bits=8, calibrate=True),
                                dict(bits=4, mode="simulated")], ids=["int8", "int4", "static", "sim"])
def test_bf16_models_stay_bf16(build, kw, tmp_path):
    model, x = build()
    kw = dict(kw)
    if kw.pop("calibrate", False):
        kw["activations"] = x
    q, _ = _quantize(model, **kw)
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert out.dtype == torch.bfloat16 and _cos(ref, out) > 0.99
    for m in q.modules():
        if isinstance(m, qlayers.QWeight):
            assert m.weight.dtype == torch.bfloat16 and (m.bias is None or m.bias.dtype == torch.bfloat16)
    back = slimkit.load(slimkit.save(q, tmp_path / "b.slim"), model=model)
    assert torch.equal(back(x), out)


# ---- group sizes that do not divide ------------------------------------------------------------

def test_default_group_size_adapts_per_layer_and_says_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Flatten(),
                          nn.Linear(16 * 4 * 4, 10))
    q, report = _quantize(model, 4, granularity="per_group")
    rows = _rows(report)
    assert rows["0"].details["group_size"] == 27 and "27" in rows["0"].details["note"]  # 3*3*3 values
    assert rows["2"].details["group_size"] == 24  # 72 values: the largest divisor <= 32
    assert rows["4"].details["group_size"] == 32 and "note" not in rows["4"].details
    emb = nn.Sequential(nn.Embedding(20, 6))  # 6 values per row: no divisor in [8, 32]
    _, r2 = _quantize(emb, 4, granularity="per_group")
    assert r2.layers[0].details["granularity"] == "per_channel" and "per_channel" in r2.layers[0].details["note"]
    with pytest.raises(InvalidParameterError, match=r"group_size=32.*divisor of 27.*'0'"):
        slimkit.quantize(model, 4, granularity="per_group", group_size=32)


# ---- calibration data follows slimkit.inputs ---------------------------------------------------

class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, batch):
        return self.b(torch.relu(self.a(batch["x"])))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(6, 4)

    def forward(self, x, y=None):
        return self.a(x) + self.b(y)


def test_calibration_batches_follow_the_inputs_rule():
    torch.manual_seed(0)
    d = {"x": torch.randn(16, 8)}
    model = DictModel().eval()
    q, report = _quantize(model, 8, activations=[slimkit.Inputs(args=(d,))])
    assert q.a.act == "static" and float(q.a.act_scale) == pytest.approx(float(d["x"].max() - d["x"].min()) / 255,
                                                                         rel=1e-3)
    two = TwoInputs().eval()
    x, y = torch.randn(16, 8), torch.randn(16, 6)
    for acts in ([(x, y)], [{"x": x, "y": y}], {"x": x, "y": y}, [slimkit.Inputs((x,), {"y": y})]):
        q, _ = _quantize(two, 8, activations=acts)
        assert q.b.act == "static" and float(q.b.act_scale) == pytest.approx(float(y.max() - y.min()) / 255, rel=1e-3)
    # the forms that were accepted before keep working: X, (X, y), DataLoader of (x, y)
    mlp = nn.Sequential(nn.Linear(8, 4)).eval()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(16)), batch_size=4)
    for acts in (x, (x, torch.zeros(16)), loader):
        q, _ = _quantize(mlp, 8, activations=acts)
        assert float(q[0].act_scale) == pytest.approx(float(x.max() - x.min()) / 255, rel=1e-3)


def test_wrong_calibration_batches_name_activations_and_the_batch():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 4)).eval()
    snap = state_snapshot(mlp)
    with pytest.raises(InvalidParameterError, match=r"activations.*batch 1.*RuntimeError.*shapes") as e:
        slimkit.quantize(mlp, 8, activations=[torch.randn(3, 8), torch.randn(3, 5), torch.randn(3, 8)])
    assert isinstance(e.value, slimkit.SlimkitError)
    assert_unchanged(mlp, snap)
    with pytest.raises(slimkit.SlimkitError, match=r"activations\[0\]"):
        slimkit.quantize(mlp, 8, activations=[[torch.randn(3, 8), "text"]])


# ---- BERT: every mode ------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(bits=8), dict(bits=8, calibrate=True), dict(bits=4),
                                dict(bits=4, granularity="per_group")], ids=["int8", "static", "int4", "group"])
def test_bert_quantizes_in_every_mode(kw):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=100)
    model = transformers.BertModel(cfg).eval()
    batch = {"input_ids": torch.randint(0, 100, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    kw = dict(kw)
    if kw.pop("calibrate", False):
        kw["activations"] = [batch]
    q, report = _quantize(model, **kw)
    with torch.no_grad():
        cos = _cos(model(**batch).last_hidden_state, q(**batch).last_hidden_state)
    assert cos > (0.99 if kw["bits"] == 8 else 0.98)
    assert slimkit.size(model) / slimkit.size(q) > 2
