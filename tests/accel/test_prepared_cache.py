"""Compile once: an AOTInductor package stored by key is loaded by another process without
compiling; a different key (input shape) compiles again."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from slimkit import accel
from slimkit.accel.prepared_cache import PreparedCache, digest, make_key

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from torch import nn
    from slimkit import accel
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    run = accel.prepare(m, torch.ones(int(sys.argv[2]), 8), backend="aoti", prepared_cache=sys.argv[1],
                        freezing=False)
    print(json.dumps({"cache": run.info["prepared_cache"], "setup": run.setup_seconds,
                      "out": run(torch.ones(int(sys.argv[2]), 8)).tolist()}))
""")


def _process(folder, batch: int, env) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(batch)], capture_output=True, text=True,
                         env=env, timeout=900, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_loads_the_package_without_compiling(tmp_path, inductor_cache):
    import os

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": inductor_cache}
    cold = _process(tmp_path, 2, env)
    assert cold["cache"] == "miss" and "compile" in cold["setup"]
    warm = _process(tmp_path, 2, env)
    assert warm["cache"] == "hit" and "compile" not in warm["setup"] and "cache_load" in warm["setup"]
    assert warm["out"] == cold["out"]
    other = _process(tmp_path, 3, env)  # another input shape: another key, compiled
    assert other["cache"] == "miss" and "compile" in other["setup"]


def test_keys_differ_by_shape_model_and_options(tmp_path):
    m = torch.nn.Linear(4, 2)
    k = make_key(m, torch.ones(1, 4), "aoti", {"mode": None}, torch.device("cpu"))
    assert digest(k) != digest(make_key(m, torch.ones(2, 4), "aoti", {"mode": None}, torch.device("cpu")))
    assert digest(k) != digest(make_key(m, torch.ones(1, 4), "aoti", {"mode": "max"}, torch.device("cpu")))
    with torch.no_grad():
        m.weight[0, 0] += 1
    assert digest(k) != digest(make_key(m, torch.ones(1, 4), "aoti", {"mode": None}, torch.device("cpu")))
    cache = PreparedCache(tmp_path)
    assert cache.lookup(k) is None
    folder = cache.store(k, lambda f: (f / "x").write_text("1"))
    assert cache.lookup(k) == folder and (folder / "x").read_text() == "1"
    stored = json.loads((folder / "key.json").read_text())
    stored["slimkit"] = "other"
    (folder / "key.json").write_text(json.dumps(stored))
    assert cache.lookup(k) is None  # an entry written under another key is never used
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_failed_write_leaves_no_entry(tmp_path):
    k = make_key(torch.nn.Linear(2, 2), torch.ones(1, 2), "aoti", {}, torch.device("cpu"))

    def boom(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("compile failed")

    with pytest.raises(RuntimeError):
        PreparedCache(tmp_path).store(k, boom)
    assert list(tmp_path.iterdir()) == [] and accel.list_backends()


def test_keys_differ_by_module_settings_buffers_and_mode():
    """Models that compute differently never share a prepared form, even with equal state_dicts."""
    def key(m):
        return digest(make_key(m, torch.ones(1, 4), "onnxruntime", {}, torch.device("cpu")))

    base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(), torch.nn.LayerNorm(4)).eval()
    other = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(approximate="tanh"),
                                torch.nn.LayerNorm(4, eps=1e-3)).eval()
    other.load_state_dict(base.state_dict())
    assert key(base) != key(other)
    assert key(base) != key(base.train())
    base.eval().register_buffer("pos", torch.arange(4), persistent=False)
    before = key(base)
    base.pos += 1
    assert key(base) != before


def test_a_folder_others_can_write_is_refused(tmp_path):
    from slimkit.errors import InvalidParameterError

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(InvalidParameterError, match="other users cannot write"):
        PreparedCache(shared)
    assert oct(PreparedCache(tmp_path / "mine").root.stat().st_mode & 0o777) == oct(0o700)


class _DictOut(torch.nn.Module):
    """Counts its calls and returns a dict: a cache hit must keep the structure without calling it."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return {"y": self.lin(x), "z": self.lin(x).relu()}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_cache_hit_keeps_the_output_structure_without_running_the_torch_model(tmp_path, backend, monkeypatch):
    pytest.importorskip(backend)
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    model = _DictOut().eval()
    first = accel.prepare(model, x, backend, prepared_cache=tmp_path)
    # deepcopies are what the backend calls: count on the class, not the instance
    calls = []
    monkeypatch.setattr(_DictOut, "forward", lambda self, x: calls.append(1) or {"y": self.lin(x),
                                                                              "z": self.lin(x).relu()})
    hit = accel.prepare(model, x, backend, prepared_cache=tmp_path)
    assert hit.info["prepared_cache"] == "hit" and calls == []
    got, want = hit(x), first(x)
    assert set(got) == {"y", "z"} and torch.allclose(got["y"], want["y"]) and torch.allclose(got["z"], want["z"])
    # a stored structure that cannot be read: the hit runs the model once to learn it, still a hit
    entry = tmp_path / hit.info["prepared_path"].rsplit("/", 1)[-1]
    (entry / "outputs.json").write_text('{"spec": "not a spec"}')
    again = accel.prepare(model, x, backend, prepared_cache=tmp_path)
    assert again.info["prepared_cache"] == "hit" and len(calls) == 1 and set(again(x)) == {"y", "z"}
