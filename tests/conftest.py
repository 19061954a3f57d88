"""Shared fixtures. Trained digits models are cached per checkout (deterministic by seed)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("SLIMKIT_CACHE", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "slimkit-models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def digits():
    from slimkit.data import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def _cnn():
    from slimkit.zoo.models import pretrained_digits

    return pretrained_digits("cnn", seed=0)


@pytest.fixture(scope="session")
def _mlp():
    from slimkit.zoo.models import pretrained_digits

    return pretrained_digits("mlp", seed=0)


@pytest.fixture
def cnn(_cnn):
    """The trained digits CNN (a fresh copy per test, so tests cannot leak changes)."""
    import copy

    return copy.deepcopy(_cnn)


@pytest.fixture
def mlp(_mlp):
    import copy

    return copy.deepcopy(_mlp)


def state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Used after a failing call: the input model must be exactly as before."""
    now = model.state_dict()
    assert now.keys() == snapshot.keys()
    for k, v in snapshot.items():
        assert torch.equal(now[k], v), f"{k} changed"


class TiedModel(torch.nn.Module):
    """An embedding whose table is also the output layer's weight (tied weights)."""

    def __init__(self, vocab: int = 20, dim: int = 8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(self.emb(x))


def wait_for(predicate, timeout: float = 180.0, poll: float = 0.2) -> bool:
    """True as soon as ``predicate()`` holds, False after ``timeout`` seconds (subprocess tests)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return False


@pytest.fixture
def no_openvino(monkeypatch):
    """This process behaves as if the openvino package were not installed."""
    import builtins

    real = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
