"""``QuantConfig``: every setting of ``slimkit.quantize`` and ``slimkit.quant.sensitivity``."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, anything, choice, flag, integer, names, number
from ..errors import InvalidParameterError, InvalidTypeError
from .affine import GRANULARITIES, MODES, SCHEMES

METHODS = ("affine", "codebook", "gptq")
SCALE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class QuantConfig(Config):
    """How to quantize. ``quantize(model, bits=4)`` is ``quantize(model, QuantConfig(bits=4))``."""

    verb = "quantize"
    first = "bits"

    bits: int = integer(8, 2, 8, "bits per weight (affine: 5-7 are stored one per byte, like 8; codebook: "
                        "indices bit-packed at exactly this width)")
    method: str = choice("affine", METHODS, "affine (scale and zero point), codebook (k-means shared values, "
                         "Deep Compression's weight sharing; compute simulated) or gptq (affine storage, Linear "
                         "weights rounded by GPTQ's error compensation; needs calibration data)")
    granularity: str = choice("per_channel", GRANULARITIES,
                              "one scale per output channel, per tensor, or per group of group_size values")
    scheme: str = choice("symmetric", SCHEMES, "zero point 0 (what int8 kernels need), or min-max with a zero point")
    group_size: int | None = integer(None, 1, 2**31 - 1, "values per scale with per_group (None: per layer, "
                                     "the largest divisor in [8, 32])", optional=True,
                                     wording="a positive int or None")
    act_order: bool = flag(False, "gptq: round the input columns by decreasing Hessian diagonal (the paper's "
                           "act-order), each group's scale taken up front from the float weight")
    scale_dtype: str = choice("float32", SCALE_DTYPES, "dtype the per-group scales are stored in (float16 halves "
                              "their bytes; the weights are rounded with the float16 scale)")
    mode: str = choice("auto", MODES, "real integer storage/kernels, simulated (fake quantization), or auto")
    act_bits: int = integer(8, 2, 8, "bits of simulated activation quantization (real ones are int8)")
    include: tuple[str, ...] | None = names("layers to quantize (name globs; None: all)")
    exclude: tuple[str, ...] | None = names("layers to leave float (name globs)")
    keep: str | tuple[str, ...] | None = anything(None, "layers kept float: name globs, or 'auto' (the most "
                                                  "sensitive ones until the metric drops by at most max_drop)")
    max_drop: float = number(0.5, 0, float("inf"), "allowed metric drop with keep='auto'",
                             wording="a number >= 0 (allowed metric drop)")

    def check(self) -> None:
        if self.method == "codebook" and self.granularity == "per_group":
            raise InvalidParameterError("granularity", self.granularity, "per_channel or per_tensor with "
                                        "method='codebook' (one codebook per layer; groups are affine scales)")
        if self.scale_dtype != "float32" and (self.method == "codebook" or self.granularity != "per_group"):
            raise InvalidParameterError("scale_dtype", self.scale_dtype, "float32 unless granularity='per_group' "
                                        "with method='affine' or 'gptq' (per-group scales are the ones worth halving)")
        if self.act_order and self.method != "gptq":
            raise InvalidParameterError("act_order", self.act_order, "False unless method='gptq'")
        if self.granularity != "per_group" and self.group_size is not None:
            raise InvalidParameterError("group_size", self.group_size, "None unless granularity='per_group'")
        keep = self.keep
        if isinstance(keep, str) and keep != "auto":
            keep = (keep,)
        elif keep is not None and not isinstance(keep, str):
            if isinstance(keep, (bytes, dict)) or not hasattr(keep, "__iter__"):
                raise InvalidTypeError("keep", keep, "layer names/glob patterns, 'auto' or None")
            keep = tuple(keep)
            if not all(isinstance(k, str) for k in keep):
                raise InvalidTypeError("keep", keep, "layer names/glob patterns, 'auto' or None")
        object.__setattr__(self, "keep", keep)

    @property
    def auto_keep(self) -> bool:
        """keep='auto': the layers kept float are found by measuring (needs a metric)."""
        return self.keep == "auto"

    def params(self, calibrated: bool) -> dict:
        """The settings a quantize report records (its ``params``), as they always were."""
        keep = list(self.keep) if isinstance(self.keep, tuple) else self.keep
        return dict(bits=self.bits, granularity=self.granularity, scheme=self.scheme, mode=self.mode,
                    group_size=self.group_size, activations="calibrated" if calibrated else None, keep=keep,
                    act_bits=self.act_bits, method=self.method,
                    **({"scale_dtype": self.scale_dtype} if self.scale_dtype != "float32" else {}),
                    **({"act_order": True} if self.act_order else {}))
