"""Artifacts: exact round trip, no code execution on load, corrupt files refused."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import TiedModel as Tied

import slimkit
from slimkit import artifact
from slimkit.errors import ArtifactError


def test_round_trip_is_exact_with_builder(cnn, digits, tmp_path):
    path = slimkit.save(cnn, tmp_path / "cnn.slim")
    back = slimkit.load(path)
    assert type(back) is type(cnn)
    for (k, a), (k2, b) in zip(cnn.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = digits.test.X[:16]
    assert torch.equal(cnn(x), back(x))
    assert slimkit.size(cnn) == path.stat().st_size


def test_user_model_needs_template_and_keeps_tied_weights(tmp_path):
    torch.manual_seed(0)
    m = Tied()
    path = slimkit.save(m, tmp_path / "tied.slim")
    with pytest.raises(ArtifactError, match="pass model="):
        slimkit.load(path)
    back = slimkit.load(path, model=Tied())
    x = torch.arange(10).view(2, 5)
    assert torch.equal(back(x), m(x))
    # stored once: the artifact is about one table's bytes, not two
    assert slimkit.size(m) < 2 * 20 * 8 * 4


def test_structural_change_is_rebuilt_from_metadata(tmp_path):
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    slim = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # as after structured pruning
    path = slimkit.save(slim, tmp_path / "s.slim")
    back = slimkit.load(path, model=m)
    assert back[0].out_features == 3 and back[2].in_features == 3
    assert m[0].out_features == 6, "the template must not be modified"
    x = torch.randn(5, 4)
    assert torch.equal(back(x), slim(x))


def test_metadata_is_json_and_readable_without_tensors(cnn, tmp_path):
    path = slimkit.save(cnn, tmp_path / "c.slim", info={"note": "hi"})
    meta = artifact.read_metadata(path)
    assert meta["builder"]["name"] == "digits_cnn"
    assert meta["info"] == {"note": "hi"}
    json.dumps(meta)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "not_slimkit"])
def test_corrupt_artifacts_are_refused(cnn, tmp_path, damage):
    path = slimkit.save(cnn, tmp_path / "c.slim")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip":
        data[-100] ^= 0xFF  # inside the tensor data: only the checksum notices
        path.write_bytes(bytes(data))
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    else:
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ArtifactError):
        slimkit.load(path)


def test_load_never_unpickles(tmp_path):
    """A pickle disguised as an artifact is refused, and its payload never runs."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.slim"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ArtifactError):
        slimkit.load(path)
    assert not marker.exists()


def test_save_rejects_non_module(tmp_path):
    with pytest.raises(TypeError, match="model must be"):
        slimkit.save({"w": 1}, tmp_path / "x.slim")


def _rewrite_meta(path, change, resign=True):
    """Re-save an artifact's tensors with edited slimkit metadata. ``resign`` recomputes the
    checksum, as anyone who can write the file can: what the loader's own checks must catch."""
    from safetensors.torch import load_file, save_file

    meta, tensors = artifact.read_metadata(path), load_file(str(path))
    change(meta)
    if resign and "sha256" in meta:
        meta["sha256"] = artifact._digest(tensors, meta)
    save_file(tensors, str(path), metadata={"slimkit": json.dumps(meta)})


def _edit_module(name, **spec):
    return lambda m: m["modules"][name]["spec"].update(spec)


@pytest.mark.parametrize("change,match", [
    (lambda m: m.pop("sha256"), "sha256"),
    (lambda m: m.update(modules=[]), "modules"),
    (lambda m: m.update(modules={"features.0": {"kind": "slimkit.QuantLinear", "spec": {"bogus": 1}}}),
     "cannot be rebuilt"),
    (lambda m: m.update(modules={"features.0": {"kind": "os.system", "spec": {}}}), "unknown kind"),
    (lambda m: m.update(modules={"features.0": "torch.Linear"}), "is not"),
    (lambda m: m.update(modules={"nope.deep": {"kind": "torch.Linear", "spec": {}}}), "no layer 'nope.deep'"),
    (lambda m: m.update(modules={"__class__": {"kind": "torch.Linear", "spec": {}}}), "no layer"),
    (lambda m: m.update(modules={"features.1": {"kind": "torch.Linear", "spec": dict(
        in_features=2, out_features=2, bias=True)}}), "does not fit"),
    (lambda m: m.update(aliases={"x": "nope"}), "alias"),
    (lambda m: m.update(version=99), "v99"),
    (lambda m: m.update(builder={"name": "digits_cnn", "kwargs": {"bogus": 1}}), "cannot be called"),
    (lambda m: m.update(builder={"name": "digits_cnn", "kwargs": {"hidden": 10**50}}), "out-of-range"),
    (lambda m: m.update(builder="digits_cnn"), "builder"),
    (_edit_module("features.0", in_channels="1"), "in_channels='1'; allowed: an int"),
    (_edit_module("features.0", in_channels=True), "in_channels=True"),
    (_edit_module("features.0", stride=[0, 1]), "stride"),
    (_edit_module("features.0", padding_mode="os.system"), "padding_mode"),
    (_edit_module("features.0", kernel_size=[3] * 100), "kernel_size"),
    (lambda m: m.update(history={"features.0": "prune; import os"}), "history"),
    (lambda m: m.update(history=[["features.0", "prune"]]), "history"),
])
def test_tampered_metadata_is_an_artifact_error(cnn, tmp_path, change, match):
    path = slimkit.save(cnn, tmp_path / "c.slim")
    _rewrite_meta(path, change)
    with pytest.raises(ArtifactError, match=match):
        slimkit.load(path)


def _small(path):
    """A saved Linear -> LayerNorm -> Linear (template needed) and its template."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2))
    return m, slimkit.save(m, path), nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2))


def test_one_byte_metadata_edit_is_refused(tmp_path):
    """eps 1e-05 -> 1e+05 in the JSON: the checksum covers the metadata, not only the tensors."""
    m, path, template = _small(tmp_path / "s.slim")
    data = path.read_bytes()
    assert data.count(b'\\"eps\\": 1e-05') == 1
    path.write_bytes(data.replace(b'\\"eps\\": 1e-05', b'\\"eps\\": 1e+05'))
    with pytest.raises(ArtifactError, match="checksum"):
        slimkit.load(path, model=template)


def test_forged_spec_values_out_of_range_are_refused(tmp_path):
    """Even with a recomputed checksum, a LayerNorm eps of 1e+05 is not a value a spec may hold."""
    m, path, template = _small(tmp_path / "s.slim")
    _rewrite_meta(path, _edit_module("1", eps=1e5))
    with pytest.raises(ArtifactError, match="eps=100000.0; allowed"):
        slimkit.load(path, model=template)


@pytest.mark.parametrize("aliases,match", [
    ({"0.weight": "2.weight"}, "replace the stored tensor"),  # a stored tensor shadowed
    ({"x.weight": "y.weight", "y.weight": "0.weight"}, "missing tensor 'y.weight'"),  # a chain
    ({"x.weight": 3}, "missing tensor 3"),
])
def test_aliases_cannot_shadow_or_chain(tmp_path, aliases, match):
    m, path, template = _small(tmp_path / "s.slim")
    _rewrite_meta(path, lambda meta: meta.update(aliases=aliases))
    with pytest.raises(ArtifactError, match=match):
        slimkit.load(path, model=template)


def test_version_1_files_are_refused_clearly(tmp_path):
    m, path, template = _small(tmp_path / "s.slim")
    _rewrite_meta(path, lambda meta: meta.update(version=1))
    with pytest.raises(ArtifactError, match="version-1 .*re-save"):
        slimkit.load(path, model=template)


def test_nan_and_duplicate_keys_in_metadata_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    m, path, template = _small(tmp_path / "s.slim")
    raw = json.dumps(artifact.read_metadata(path))
    tensors = load_file(str(path))
    for bad, match in [(raw.replace('"eps": 1e-05', '"eps": NaN'), "NaN"),
                       (raw.replace('"aliases": {}', '"aliases": {}, "aliases": {}'), "duplicate"),
                       ("[" * 100_000 + "]" * 100_000, "corrupt")]:
        save_file(tensors, str(path), metadata={"slimkit": bad})
        with pytest.raises(ArtifactError, match=match):
            slimkit.load(path, model=template)


class _Allocated(BaseException):
    """Raised by the spy below: a BaseException, so no ``except Exception`` can hide it."""


@pytest.fixture
def no_big_allocation(monkeypatch):
    """Fail the test if torch.empty allocates more than 10M elements off the meta device."""
    real = torch.empty

    def spy(*size, **kw):
        dims = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        device = torch.device(kw.get("device") or torch.get_default_device())
        if device.type != "meta" and all(isinstance(d, int) for d in dims) and math.prod(dims) > 10**7:
            raise _Allocated(f"torch.empty{tuple(dims)} on {device}")
        return real(*size, **kw)

    monkeypatch.setattr(torch, "empty", spy)


@pytest.mark.parametrize("change", [
    # a layer spec claiming ~1e9 elements in a file of a few hundred bytes
    lambda m: m["modules"]["0"]["spec"].update(in_features=10**9),
    # the original architecture (before its layers are replaced) claiming 1e9 elements
    lambda m: m.update(builder={"name": "digits_mlp", "kwargs": {"hidden": [10**8]}}),
])
def test_huge_claims_are_refused_before_allocating(tmp_path, no_big_allocation, change):
    m, path, template = _small(tmp_path / "s.slim")
    _rewrite_meta(path, change)
    assert path.stat().st_size < 10_000
    with pytest.raises(ArtifactError, match="does not fit|asks for"):
        slimkit.load(path, model=None if "builder" in artifact.read_metadata(path) and
                     artifact.read_metadata(path)["builder"] else template)


def test_model_class_is_never_imported(tmp_path, monkeypatch):
    import builtins
    import sys

    m, path, template = _small(tmp_path / "s.slim")
    _rewrite_meta(path, lambda meta: meta.update(model_class="slimkit_evil_mod.Payload"))
    imported, real = [], builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: imported.append(name) or real(name, *a, **k))
    back = slimkit.load(path, model=template)
    assert "slimkit_evil_mod" not in imported and "slimkit_evil_mod" not in sys.modules
    x = torch.randn(3, 4)
    assert torch.equal(back(x), m(x))


def _fuzz_model():
    """Every kind of entry: built-in layers, a quantized and a sparse layer, tied weights."""
    from slimkit.sparse.layers import SparseLinear

    torch.manual_seed(0)
    m = Tied(vocab=12, dim=6)
    m.norm = nn.LayerNorm(6)
    q, _ = slimkit.quantize(nn.Sequential(nn.Linear(6, 6)), bits=4, granularity="per_channel")
    m.proj = q[0]
    w = torch.randn(6, 6) * (torch.rand(6, 6) > 0.7)
    m.sparse = SparseLinear.from_dense(w, torch.randn(6), "csr", "dense")
    return m


def _fuzz_forward(m, idx):
    return m.out(m.sparse(m.proj(m.norm(m.emb(idx)))))


def _mutate(obj, rng, depth=0):
    """A copy of a JSON value with one random change somewhere inside it."""
    import copy as _copy

    obj = _copy.deepcopy(obj)
    weird = [None, True, 0, -1, 1.5, 1e308, 10**30, "x", "", [], {}, [1, 2], {"a": 1}, 2**40 + 1]
    if isinstance(obj, (dict, list)) and obj and (depth == 0 or rng.random() < 0.85):
        keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
        k = rng.choice(keys)
        r = rng.random()
        if r < 0.1 and isinstance(obj, dict):
            del obj[k]
        elif r < 0.2 and isinstance(obj, dict):
            obj[k + "_x"] = rng.choice(weird)
        else:
            obj[k] = _mutate(obj[k], rng, depth + 1)
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, bool) and rng.random() < 0.5:
        return rng.choice([obj + 1, obj * 1000, -obj, obj * 1e-6])
    return rng.choice(weird)


@pytest.mark.parametrize("resign", [False, True])
def test_fuzzed_metadata_is_refused_or_harmless(tmp_path, resign):
    """Random edits of a valid artifact's JSON. Unsigned: refused, unless the edit changes
    nothing (the model loads identical). Re-signed with a recomputed checksum (a deliberate
    forgery): the loader's own checks run, and refuse with ArtifactError, never another error."""
    import random

    from safetensors.torch import load_file, save_file

    m = _fuzz_model()
    path = slimkit.save(m, tmp_path / "f.slim")
    meta, tensors = artifact.read_metadata(path), load_file(str(path))
    idx = torch.arange(12).view(3, 4)
    want = _fuzz_forward(m, idx)
    assert torch.equal(_fuzz_forward(slimkit.load(path, model=_fuzz_model()), idx), want)
    rng, template = random.Random(0), _fuzz_model()
    outcomes = {"refused": 0, "loaded": 0}
    for _ in range(150):
        bad = _mutate({k: v for k, v in meta.items() if k != "sha256"}, rng)
        bad["sha256"] = artifact._digest(tensors, bad) if resign else meta["sha256"]
        save_file(tensors, str(path), metadata={"slimkit": json.dumps(bad)})
        try:
            back = slimkit.load(path, model=template)
        except ArtifactError:
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        if not resign:
            assert torch.equal(_fuzz_forward(back, idx), want), f"a different model loaded from {bad}"
    assert outcomes["refused"] > 100, outcomes


def test_fuzzed_metadata_bytes_are_refused_or_harmless(tmp_path):
    """One-byte edits of the raw JSON text: refused, or (whitespace, say) an identical model."""
    import random

    from safetensors.torch import load_file, save_file

    m = _fuzz_model()
    path = slimkit.save(m, tmp_path / "f.slim")
    raw, tensors = json.dumps(artifact.read_metadata(path)), load_file(str(path))
    idx = torch.arange(12).view(3, 4)
    want = _fuzz_forward(m, idx)
    rng, template = random.Random(1), _fuzz_model()
    digits = [i for i, c in enumerate(raw) if c.isdigit()]  # half the edits change a number
    for _ in range(150):
        i = rng.choice(digits) if rng.random() < 0.5 else rng.randrange(len(raw))
        bad = raw[:i] + rng.choice('0123456789.-+eE"{}[],: abcnNx') + raw[i + 1:]
        save_file(tensors, str(path), metadata={"slimkit": bad})
        try:
            back = slimkit.load(path, model=template)
        except ArtifactError:
            continue
        assert torch.equal(_fuzz_forward(back, idx), want), f"a different model loaded after editing byte {i}"


def test_every_module_that_registers_layer_kinds_is_loaded_before_an_artifact_is_read():
    """`import slimkit` is lazy, so load() imports these itself; a new module of layers must be listed."""
    kit = Path(artifact.__file__).parent
    registering = {str(p.relative_to(kit).with_suffix("")).replace(os.sep, ".") for p in kit.rglob("*.py")
                   if p.name != "artifact.py" and "register_module(" in p.read_text()}
    assert registering == set(artifact.LAYER_MODULES)


@pytest.mark.slow
def test_a_fresh_process_loads_a_quantized_artifact(cnn, tmp_path):
    path = slimkit.save(slimkit.quantize(cnn, bits=4, method="codebook").model, tmp_path / "q.slim")
    code = f"import slimkit; m = slimkit.load({str(path)!r}); print(type(m.features[0]).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "CodebookConv2d"
