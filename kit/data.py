"""Real data that ships in packages: scikit-learn's handwritten digits.

A *data* argument anywhere in slimkit is either an iterable of ``(inputs, targets)``
batches (a ``DataLoader``) or a pair of tensors ``(X, y)``, which is batched here.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .errors import InvalidTypeError, check_fraction

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


def batches(data, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> Batches:
    """Normalise a *data* argument to an iterable of (inputs, targets) batches."""
    pair = tuple(data) if isinstance(data, (Split, tuple, list)) else ()
    if len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair):
        X, y = pair
        g = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=shuffle, generator=g)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, torch.Tensor)):
        return data
    raise InvalidTypeError("data", data, "an iterable of (inputs, targets) batches or a pair of tensors (X, y)")


def first_inputs(data, n: int | None = None) -> torch.Tensor:
    """Inputs of the first batch (for example inputs, shape probes and calibration)."""
    x = next(iter(batches(data)))[0]
    return x if n is None else x[:n]
