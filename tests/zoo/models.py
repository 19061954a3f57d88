"""Small, seeded instances of the models users bring: transformers built from tiny configs (never
downloaded) and plain-torch architectures with the awkward parts (reused modules, grouped convs,
RNNs, skip concatenations, tied weights, weight norm, bf16, a forward that takes one dict).

``build(name)`` returns a :class:`ZooModel`: the model in eval mode, example inputs following
``slimkit.inputs``'s rule (tensor / tuple = positional / dict = keywords / ``slimkit.Inputs``)
and, where labels make sense, a tiny labelled dataset (a list of ``(inputs, labels)`` batches).
The same name and seed always give the same weights and data.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import slimkit

VOCAB, SEQ, BATCH, CLASSES = 64, 8, 2, 3


@dataclass
class ZooModel:
    name: str
    model: nn.Module
    inputs: object
    data: list | None = None  # [(inputs, labels), ...] for distill (labels per sample or per token)
    hf: bool = False


# --- data helpers ---------------------------------------------------------------------------

def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ids(g, batch=BATCH, seq=SEQ, vocab=VOCAB) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, seq), generator=g)


def _labelled(make_inputs: Callable[[torch.Generator], object], label_shape: Callable[[object], tuple],
              classes: int, seed: int, batches: int = 3) -> list:
    g = _gen(seed + 100)
    out = []
    for _ in range(batches):
        x = make_inputs(g)
        out.append((x, torch.randint(0, classes, label_shape(x), generator=g)))
    return out


def _text_data(seed, classes=CLASSES, mask=True, per_token=False):
    def make(g):
        ids = _ids(g, batch=4)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if mask else {"input_ids": ids}
    shape = (lambda x: tuple(x["input_ids"].shape)) if per_token else (lambda x: (x["input_ids"].shape[0],))
    return _labelled(make, shape, classes, seed)


def _image_data(seed, shape, classes=CLASSES):
    return _labelled(lambda g: torch.randn((4, *shape), generator=g), lambda x: (x.shape[0],), classes, seed)


@torch.no_grad()
def _settle_batchnorm(model: nn.Module, make_batch: Callable[[torch.Generator], object], seed: int) -> None:
    """Estimate BatchNorm running statistics on a few random batches (else eval() fidelity is noise)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average over the batches
    model.train()
    g = _gen(seed + 7)
    for _ in range(4):
        slimkit.inputs.call(model, make_batch(g))
    model.eval()


# --- transformers ---------------------------------------------------------------------------

def _hf(cls_name: str, config_name: str, **config) -> nn.Module:
    import transformers

    cfg = getattr(transformers, config_name)(**config)
    try:
        return getattr(transformers, cls_name)._from_config(cfg, attn_implementation="eager")
    except (ValueError, TypeError):  # models without a choice of attention
        return getattr(transformers, cls_name)._from_config(cfg)


def _text_classifier(name, cls, config_name, seed, **config):
    torch.manual_seed(seed)
    model = _hf(cls, config_name, num_labels=CLASSES, **config).eval()
    ids = _ids(_gen(seed))
    return ZooModel(name, model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, _text_data(seed), True)


def bert(seed=0):
    return _text_classifier("bert", "BertForSequenceClassification", "BertConfig", seed, vocab_size=VOCAB,
                            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=32)


def distilbert(seed=0):
    return _text_classifier("distilbert", "DistilBertForSequenceClassification", "DistilBertConfig", seed,
                            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=32)


def roberta(seed=0):
    return _text_classifier("roberta", "RobertaForSequenceClassification", "RobertaConfig", seed, vocab_size=VOCAB,
                            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=40, pad_token_id=1)


def gpt2(seed=0):
    torch.manual_seed(seed)
    model = _hf("GPT2LMHeadModel", "GPT2Config", vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2,
                n_positions=32, use_cache=False, bos_token_id=0, eos_token_id=0).eval()
    return ZooModel("gpt2", model, {"input_ids": _ids(_gen(seed))},
                    _text_data(seed, classes=VOCAB, mask=False, per_token=True), True)


def t5(seed=0):
    torch.manual_seed(seed)
    model = _hf("T5ForConditionalGeneration", "T5Config", vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64,
                num_layers=1, num_decoder_layers=1, num_heads=2, decoder_start_token_id=0, use_cache=False).eval()

    def make(g, n=BATCH):
        ids = _ids(g, batch=n)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "decoder_input_ids": _ids(g, batch=n, seq=4)}
    data = _labelled(lambda g: make(g, 4), lambda x: tuple(x["decoder_input_ids"].shape), VOCAB, seed)
    return ZooModel("t5", model, make(_gen(seed)), data, True)


def _image_model(name, cls, config_name, seed, shape=(3, 16, 16), **config):
    torch.manual_seed(seed)
    model = _hf(cls, config_name, num_labels=CLASSES, **config)
    _settle_batchnorm(model, lambda g: torch.randn((8, *shape), generator=g), seed)
    x = torch.randn((BATCH, *shape), generator=_gen(seed))
    return ZooModel(name, model.eval(), x, _image_data(seed, shape), True)


def vit(seed=0):
    return _image_model("vit", "ViTForImageClassification", "ViTConfig", seed, image_size=16, patch_size=4,
                        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def convnext(seed=0):
    return _image_model("convnext", "ConvNextForImageClassification", "ConvNextConfig", seed, shape=(3, 32, 32),
                        hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, patch_size=2, image_size=32)


def hf_resnet(seed=0):
    return _image_model("hf_resnet", "ResNetForImageClassification", "ResNetConfig", seed, shape=(3, 32, 32),
                        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")


def mobilenet(seed=0):
    return _image_model("mobilenet", "MobileNetV2ForImageClassification", "MobileNetV2Config", seed,
                        shape=(3, 32, 32), image_size=32, depth_multiplier=0.25, min_depth=4)


def wav2vec2(seed=0):
    torch.manual_seed(seed)
    model = _hf("Wav2Vec2ForSequenceClassification", "Wav2Vec2Config", num_labels=CLASSES, hidden_size=32,
                num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
                conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                classifier_proj_size=16, do_stable_layer_norm=False, feat_extract_norm="group")
    wave = lambda g, n=BATCH: torch.randn(n, 400, generator=g)  # noqa: E731
    data = _labelled(lambda g: wave(g, 4), lambda x: (x.shape[0],), CLASSES, seed)
    return ZooModel("wav2vec2", model.eval(), wave(_gen(seed)), data, True)


# --- plain torch ----------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module reused twice, a 1x1 conv + BN shortcut on stride/width change."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):  # as torchvision writes it, in-place residual add included
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """A torchvision-style ResNet: a stem, ``blocks`` BasicBlocks at ``width`` then at twice it."""

    def __init__(self, classes=CLASSES, width=16, blocks=(2, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(*[BasicBlock(width, width) for _ in range(blocks[0])])
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2),
                                    *[BasicBlock(2 * width, 2 * width) for _ in range(blocks[1] - 1)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class Depthwise(nn.Module):
    """MobileNet-style separable convs plus a grouped conv (groups=4)."""

    def __init__(self, classes=CLASSES):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, 1, 1, groups=4)
        self.bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = F.relu6(self.stem(x))
        x = F.relu6(self.pw(F.relu6(self.dw(x))))
        x = F.relu6(self.bn(self.grouped(x)))
        return self.fc(x.mean((2, 3)))


class RNNClassifier(nn.Module):
    def __init__(self, cell: str, classes=CLASSES):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.rnn = getattr(nn, cell)(16, 32, num_layers=1, batch_first=True)
        self.head = nn.Linear(32, classes)

    def forward(self, ids):
        out, _ = self.rnn(self.emb(ids))
        return self.head(out[:, -1])


class AttentionBlock(nn.Module):
    """A pre-norm transformer block on nn.MultiheadAttention (its in_proj is a bare Parameter)."""

    def __init__(self, dim=32, classes=CLASSES):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        x = self.emb(ids)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))


class UNet(nn.Module):
    """Two levels: skip connections concatenated, upsampling by ConvTranspose2d; per-pixel output."""

    def __init__(self, classes=CLASSES):
        super().__init__()
        block = lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),  # noqa: E731
                                                nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())
        self.down1, self.down2 = block(3, 8), block(8, 16)
        self.pool = nn.MaxPool2d(2)
        self.bottom = block(16, 32)
        self.up2, self.dec2 = nn.ConvTranspose2d(32, 16, 2, stride=2), block(32, 16)
        self.up1, self.dec1 = nn.ConvTranspose2d(16, 8, 2, stride=2), block(16, 8)
        self.out = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(self.pool(d1))
        b = self.bottom(self.pool(d2))
        u2 = self.dec2(torch.cat([self.up2(b), d2], 1))
        u1 = self.dec1(torch.cat([self.up1(u2), d1], 1))
        return self.out(u1)


class Tied(nn.Module):
    """One Linear applied twice, and an embedding table that is also the output head's weight."""

    def __init__(self, dim=32):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.shared = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        x = self.emb(ids)
        x = torch.tanh(self.shared(x))
        x = torch.tanh(self.shared(x))  # the same layer again
        return self.head(x.mean(1))


class WeightNormed(nn.Module):
    def __init__(self, classes=CLASSES):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.conv1 = wn(nn.Conv2d(3, 16, 3, padding=1))
        self.conv2 = wn(nn.Conv2d(16, 16, 3, padding=1))
        self.fc = wn(nn.Linear(16, classes))

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class DictInput(nn.Module):
    """A forward that takes one dict (a batch from a user's collate function)."""

    def __init__(self, classes=CLASSES):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.feat = nn.Linear(4, 16)
        self.head = nn.Linear(32, classes)

    def forward(self, batch):
        text = self.emb(batch["ids"]).mean(1)
        return self.head(torch.cat([text, F.relu(self.feat(batch["features"]))], -1))


def _plain(name, model, make_inputs, seed, data=True, classes=CLASSES):
    _settle_batchnorm(model, lambda g: make_inputs(g, 8), seed)
    x = make_inputs(_gen(seed), BATCH)
    labelled = _labelled(lambda g: make_inputs(g, 4), lambda x: (slimkit.inputs.batch_size(x),), classes,
                         seed) if data else None
    return ZooModel(name, model.eval(), x, labelled)


_image = lambda g, n, size=16: torch.randn(n, 3, size, size, generator=g)  # noqa: E731
_tokens = lambda g, n: torch.randint(0, VOCAB, (n, SEQ), generator=g)  # noqa: E731


def resnet(seed=0):
    torch.manual_seed(seed)
    return _plain("resnet", TinyResNet(), _image, seed)


def depthwise(seed=0):
    torch.manual_seed(seed)
    return _plain("depthwise", Depthwise(), _image, seed)


def lstm(seed=0):
    torch.manual_seed(seed)
    return _plain("lstm", RNNClassifier("LSTM"), _tokens, seed)


def gru(seed=0):
    torch.manual_seed(seed)
    return _plain("gru", RNNClassifier("GRU"), _tokens, seed)


def mha(seed=0):
    torch.manual_seed(seed)
    return _plain("mha", AttentionBlock(), _tokens, seed)


def unet(seed=0):
    torch.manual_seed(seed)
    return _plain("unet", UNet(), _image, seed, data=False)


def tied(seed=0):
    torch.manual_seed(seed)
    return _plain("tied", Tied(), _tokens, seed, classes=VOCAB)


def weightnorm(seed=0):
    torch.manual_seed(seed)
    return _plain("weightnorm", WeightNormed(), _image, seed)


def bf16(seed=0):
    torch.manual_seed(seed)
    # wide enough that int8 storage outweighs the artifact's per-layer metadata (~0.5 KB a layer)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.LayerNorm(128), nn.Linear(128, CLASSES)).to(torch.bfloat16)
    return _plain("bf16", model, lambda g, n: torch.randn(n, 64, generator=g).to(torch.bfloat16), seed)


def dict_input(seed=0):
    torch.manual_seed(seed)

    def make(g, n):
        return slimkit.Inputs(args=({"ids": torch.randint(0, VOCAB, (n, SEQ), generator=g),
                                     "features": torch.randn(n, 4, generator=g)},))
    return _plain("dict_input", DictInput(), make, seed)


BUILDERS: dict[str, Callable[..., ZooModel]] = {f.__name__: f for f in (
    bert, distilbert, roberta, gpt2, t5, vit, convnext, hf_resnet, mobilenet, wav2vec2,
    resnet, depthwise, lstm, gru, mha, unet, tied, weightnorm, bf16, dict_input)}
NAMES = list(BUILDERS)


def build(name: str, seed: int = 0) -> ZooModel:
    return BUILDERS[name](seed)
