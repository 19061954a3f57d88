"""LSTM / GRU / RNN with integer weight storage: each weight matrix (with its bias) is a
:class:`QuantMatrix`; a call dequantizes them into torch's fused float RNN kernel."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..artifact import register_module
from .affine import QTensor
from .layers import QWeight, dtype_name, float_dtype


@register_module("slimkit.QuantMatrix")
class QuantMatrix(QWeight):
    """One quantized weight matrix with its bias: the storage of :class:`QuantRNN`'s weights."""

    def __init__(self, shape, *, bits: int = 8, scheme: str = "symmetric", granularity: str = "per_channel",
                 group_size: int | None = None, bias: bool = False, qweight: QTensor | None = None,
                 bias_value: torch.Tensor | None = None, dtype: str = "float32"):
        super().__init__()
        self._init_qweight(qweight, tuple(shape), bits, scheme, granularity, 0, group_size, bias_value, bias, dtype)

    def spec(self) -> dict:
        return dict(shape=list(self.shape), bits=self.bits, scheme=self.scheme, granularity=self.granularity,
                    group_size=self.group_size, bias=self.bias is not None, dtype=dtype_name(self.dtype))


_RNNS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}


def _bias_name(weight_name: str) -> str:
    return "bias" + weight_name.removeprefix("weight")


def rnn_config(rnn: nn.RNNBase) -> dict:
    """The constructor arguments of an nn.LSTM / GRU / RNN (JSON)."""
    cfg = dict(input_size=rnn.input_size, hidden_size=rnn.hidden_size, num_layers=rnn.num_layers, bias=rnn.bias,
               batch_first=rnn.batch_first, dropout=float(rnn.dropout), bidirectional=rnn.bidirectional)
    if isinstance(rnn, nn.LSTM):
        cfg["proj_size"] = rnn.proj_size
    if isinstance(rnn, nn.RNN):
        cfg["nonlinearity"] = rnn.nonlinearity
    return cfg


@register_module("slimkit.QuantRNN")
class QuantRNN(nn.Module):
    """nn.LSTM / GRU / RNN with integer weight storage (one scale per row: per gate unit).
    Weights only: each call dequantizes them into torch's fused float RNN kernel, so the memory
    saving is real and the arithmetic is float. Biases stay in the layer's dtype."""

    def __init__(self, mode: str, config: dict, *, bits: int = 8, scheme: str = "symmetric",
                 granularity: str = "per_channel", group_size: int | None = None, dtype: str = "float32",
                 qweights: dict[str, QTensor] | None = None, biases: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.mode, self.config = mode, dict(config)
        self.bits, self.scheme, self.granularity, self.group_size = bits, scheme, granularity, group_size
        self.dtype = float_dtype(dtype)
        # A tensor-free float RNN (meta device) whose forward runs on the dequantized weights.
        # Not a submodule: it holds nothing to save.
        template = _RNNS[mode](**self.config, device="meta")
        object.__setattr__(self, "_template", template)
        q = dict(bits=bits, scheme=scheme, granularity=granularity, group_size=group_size, dtype=dtype)
        names = dict(template.named_parameters())
        self.weights = nn.ModuleDict()  # weight_ih_l0 holds bias_ih_l0 (same rows), and so on
        for name, p in names.items():
            if name.startswith("weight"):
                bias = _bias_name(name)
                self.weights[name] = QuantMatrix(p.shape, bias=bias in names, bias_value=(biases or {}).get(bias),
                                                 qweight=(qweights or {}).get(name), **q)

    @classmethod
    def from_float(cls, rnn: nn.RNNBase, qweights: dict[str, QTensor], **q) -> "QuantRNN":
        mode = next(k for k, c in _RNNS.items() if isinstance(rnn, c))
        biases = {n: p for n, p in rnn.named_parameters(recurse=False) if not n.startswith("weight")}
        return cls(mode, rnn_config(rnn), qweights=qweights, biases=biases, **q)

    @classmethod
    def from_spec(cls, spec: dict) -> "QuantRNN":
        return cls(**spec)

    def spec(self) -> dict:
        return dict(mode=self.mode, config=self.config, bits=self.bits, scheme=self.scheme,
                    granularity=self.granularity, group_size=self.group_size, dtype=dtype_name(self.dtype))

    @property
    def storage(self) -> str:
        return next(iter(self.weights.values())).storage

    execution = property(lambda self: f"{self.storage} weights dequantized per call into the float {self.mode} "
                                      "kernel (weights-only quantization; float arithmetic)")

    def forward(self, input, hx=None):
        from torch.func import functional_call

        params = {n: m.weight for n, m in self.weights.items()}
        params |= {_bias_name(n): m.bias for n, m in self.weights.items() if m.bias is not None}
        self._template.train(self.training)  # dropout between layers
        return functional_call(self._template, params, (input,) if hx is None else (input, hx))

    def extra_repr(self) -> str:
        return f"{self.mode}, {self.config}, bits={self.bits}, {self.scheme}, {self.granularity}"
