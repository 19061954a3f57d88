"""Real data that ships in packages (scikit-learn's handwritten digits), and the *data* argument.

A *data* argument anywhere in slimkit is either an iterable of ``(inputs, targets)`` batches
(a ``DataLoader``) or a pair ``(X, y)`` that is batched here. Inputs follow
:mod:`slimkit.inputs`: a tensor, a dict of keyword tensors (tokenized text), or
``slimkit.Inputs(args=..., kwargs=...)`` (e.g. ``Inputs(args=(batch_dict,))`` for a forward that
takes one dict); every tensor in ``X`` shares the sample dimension 0 with ``y``. Targets are class
indices, one per sample or one per token/position (then the logits' last dimension is the class).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .errors import (
    InvalidParameterError,
    InvalidTypeError,
    SlimkitError,
    check_fraction,
)
from .inputs import Inputs, ModelInputs, apply, tensors

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Split:
    X: torch.Tensor
    y: torch.Tensor

    def __iter__(self):  # lets a Split be unpacked as (X, y)
        return iter((self.X, self.y))

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Digits:
    train: Split
    test: Split
    num_classes: int = 10


def load_digits(seed: int = 0, test_size: float = 0.25) -> Digits:
    """8x8 digit images as float tensors (N, 1, 8, 8) in [0, 1], stratified split by seed."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    X, y = _load(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    as_t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    return Digits(Split(as_t(Xtr, torch.float32), as_t(ytr, torch.long)),
                  Split(as_t(Xte, torch.float32), as_t(yte, torch.long)))


def subset(split: Split, fraction: float, seed: int = 0) -> Split:
    """A stratified fraction of a split (e.g. 20% of the training set for distillation)."""
    check_fraction("fraction", fraction, allow_one=True)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(split.y):
        idx = torch.nonzero(split.y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        keep.append(idx[: max(1, round(fraction * len(idx)))])
    keep = torch.sort(torch.cat(keep)).values
    return Split(split.X[keep], split.y[keep])


class _Sliced:
    """(X, y) batches where X is structured inputs (a dict or ``slimkit.Inputs``): every tensor
    is sliced on dimension 0 with the same indices (a DataLoader would collate the dict away)."""

    def __init__(self, X: ModelInputs, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int):
        self.X, self.y, self.batch_size, self.shuffle, self.seed = X, y, batch_size, shuffle, seed
        sizes = {t.shape[0] if t.dim() else None for t in tensors(X)}
        if sizes != {len(y)}:
            raise InvalidParameterError("data", f"inputs with sample counts {sorted(sizes, key=str)}",
                                        f"{len(y)} samples in every input tensor, as many as targets")

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[ModelInputs, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)) if self.shuffle \
            else torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield apply(self.X, lambda t: t[idx]), self.y[idx]


def _pair(data) -> tuple | None:
    """``(X, y)`` if ``data`` is one pair of inputs and targets (not a list of two batches)."""
    pair = tuple(data) if isinstance(data, (Split, tuple, list)) else ()
    if len(pair) == 2 and isinstance(pair[1], torch.Tensor) and isinstance(pair[0], (torch.Tensor, Mapping, Inputs)):
        if not isinstance(pair[0], Mapping) or all(isinstance(v, torch.Tensor) for v in pair[0].values()):
            return pair
    return None


def batches(data, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> Batches:
    """Normalise a *data* argument to an iterable of (inputs, targets) batches."""
    pair = _pair(data)
    if pair is not None:
        X, y = pair
        if not isinstance(X, torch.Tensor):
            return _Sliced(X, y, batch_size, shuffle, seed)
        g = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=shuffle, generator=g)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, torch.Tensor, Mapping)):
        return data
    raise InvalidTypeError("data", data, "an iterable of (inputs, targets) batches or a pair (X, y) of inputs "
                           "(a tensor, a dict of tensors or slimkit.Inputs) and target tensor")


def first_inputs(data, n: int | None = None) -> ModelInputs:
    """Inputs of the first batch (for example inputs, shape probes and calibration)."""
    loader = batches(data)
    try:
        x = next(iter(loader))[0]
    except (StopIteration, TypeError, IndexError, KeyError) as e:
        raise InvalidParameterError("data", data, "at least one (inputs, targets) batch") from e
    return x if n is None else apply(x, lambda t: t[:n])


def describe_batch(batch) -> str:
    """The shapes of a batch's tensors, for error messages: "(tensor(8, 5), tensor(8,))"."""
    if isinstance(batch, torch.Tensor):
        return f"tensor{tuple(batch.shape)}"
    if isinstance(batch, (tuple, list, Mapping, Inputs)):
        try:
            return "(" + ", ".join(f"tensor{tuple(t.shape)}" for t in tensors(batch)) + ")"
        except Exception:  # a structure slimkit.inputs cannot read: its type is all we can say
            pass
    return type(batch).__name__


@contextlib.contextmanager
def batch_errors(index: int, name: str = "data", batch=None,
                 expected: str = "batches the model and the loss accept"):
    """Turn what torch (or the model's own code) raises on a bad batch (wrong input shape,
    out-of-range labels, batch sizes that disagree) into an InvalidParameterError naming ``name``
    and the batch (its index, and its shapes when given), with the underlying message. slimkit's
    own errors (a stop, a checked parameter) pass unchanged. The one place every verb turns a bad
    batch into a slimkit error: training, evaluation, calibration, Fisher/OBD scores, distillation."""
    try:
        yield
    except SlimkitError:
        raise
    except Exception as e:
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        shown = f"batch {index}" + (f" {describe_batch(batch)}" if batch is not None else "")
        raise InvalidParameterError(name, shown, f"{expected} ({type(e).__name__}: {reason})") from e
