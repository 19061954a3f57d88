"""The zoo grid: every zoo model through every verb (ids like ``bert-int8``). A cell passes when
the verb works (see :mod:`zoo.cells` for what "works" checks) or refuses with a SlimkitError;
WRONG results and crashes fail. torch.compile and ONNX export cost 10-60 s a model on a small
CPU, so those cells run on three representative models here (slow-marked); the benchmark
(``python -m benchmarks.zoo``) runs them on all."""
from __future__ import annotations

import copy
import functools

import pytest

from zoo.cells import OPS, run_cell
from zoo.models import NAMES, build

BACKENDS = ("compile", "onnxruntime")
# one transformer with a tied LM head, one plain CNN with BatchNorm and a reused ReLU, one model
# whose forward takes one dict
BACKEND_MODELS = ("gpt2", "resnet", "dict_input")


@functools.lru_cache(maxsize=None)
def _built(name: str):
    return build(name)


def _cells():
    for name in NAMES:
        for op in OPS:
            if op in BACKENDS:
                if name in BACKEND_MODELS:
                    yield pytest.param(name, op, id=f"{name}-{op}", marks=pytest.mark.slow)
            else:
                yield pytest.param(name, op, id=f"{name}-{op}")


@pytest.mark.parametrize("name,op", list(_cells()))
def test_zoo(name, op):
    z = copy.deepcopy(_built(name))  # a fresh copy per cell: no cell can leak into the next
    cell = run_cell(z, op)
    if cell.status == "n/a":
        pytest.skip(cell.detail)
    assert cell.status in ("ok", "refused"), f"{cell.status}: {cell.detail}"
