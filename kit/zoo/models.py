"""Models that are trained here on real data (digits), cached by seed, and the registry of
named builders an artifact may name to rebuild its architecture (no code in artifacts)."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import check_choice, check_int


class DigitsMLP(nn.Module):
    def __init__(self, hidden: tuple[int, ...] = (256, 128), num_classes: int = 10):
        super().__init__()
        dims = (64, *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsCNN(nn.Module):
    """Two 3x3 conv blocks and two Linear layers: ~285k parameters, ~98-99% test accuracy."""

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 256, num_classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 16, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, 8, 8)  # accepts (N, 64) too; unconditional so torch.fx can trace it
        return self.classifier(self.features(x))


def _from_json(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    """A factory taking JSON kwargs: lists (JSON has no tuples) become the tuples ``cls`` expects."""
    return lambda **kw: cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})


# name -> factory. An artifact names one of these to rebuild its model;
# load() never imports arbitrary code named in a file.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "digits_mlp": _from_json(DigitsMLP),
    "digits_cnn": _from_json(DigitsCNN),
}


def register_builder(name: str, factory: Callable[..., nn.Module]) -> None:
    """Let ``slimkit.load`` rebuild models of your own by name (call before loading)."""
    BUILDERS[name] = factory


def build(name: str, **kwargs) -> nn.Module:
    check_choice("builder", name, BUILDERS)
    model = BUILDERS[name](**kwargs)
    tag_builder(model, name, kwargs)
    return model


def tag_builder(model: nn.Module, name: str, kwargs: dict | None = None) -> nn.Module:
    """Remember how to rebuild ``model``; ``slimkit.save`` writes this into the artifact."""
    model._slimkit_builder = {"name": name, "kwargs": dict(kwargs or {})}
    return model


def cache_dir() -> Path:
    root = os.environ.get("SLIMKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "slimkit")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


TRAIN_RECIPE = {"epochs": 30, "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 64, "version": 1}
# CPU float sums split across threads round differently with their number, so a teacher trained
# with 1 thread differs from one trained with 2: training always uses this many, whoever calls
# (a test that left torch at 1 thread trained a teacher the notebooks' stored outputs do not match).
TRAIN_THREADS = 2


def pretrained_digits(arch: str = "cnn", seed: int = 0, *, callbacks=None, stop=None,
                      retrain: bool = False) -> nn.Module:
    """A digits classifier trained here (deterministic by seed), cached after the first call."""
    from .. import artifact
    from ..data import load_digits
    from ..measure import threads
    from ..training import fit

    check_choice("arch", arch, ("cnn", "mlp"))
    check_int("seed", seed, 0, 2**31 - 1)
    key = hashlib.sha256(json.dumps([arch, seed, TRAIN_RECIPE, torch.__version__], sort_keys=True).encode())
    path = cache_dir() / f"digits_{arch}_seed{seed}_{key.hexdigest()[:10]}.slim"
    if path.exists() and not retrain:
        try:
            return artifact.load(path)
        except Exception:  # a corrupt cache entry is retrained, not fatal
            path.unlink(missing_ok=True)
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
        torch.manual_seed(seed)
        model = build(f"digits_{arch}")
    data = load_digits(seed=0)
    recipe = {k: v for k, v in TRAIN_RECIPE.items() if k != "version"}
    with threads(TRAIN_THREADS):
        fit(model, data.train, seed=seed, stage=f"train digits_{arch}", callbacks=callbacks, stop=stop, **recipe)
    model.eval()
    artifact.save(model, path)  # atomic: concurrent runs never read a half-written cache file
    return model
