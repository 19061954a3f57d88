"""Artifacts: exact round trip, no code execution on load, corrupt files refused."""
import json

import pytest
import torch
import torch.nn as nn

import slimkit
from conftest import TiedModel as Tied
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


def _rewrite_meta(path, change):
    """Re-save an artifact's tensors with edited slimkit metadata (checksum untouched)."""
    from safetensors.torch import load_file, save_file

    meta = artifact.read_metadata(path)
    change(meta)
    save_file(load_file(str(path)), str(path), metadata={"slimkit": json.dumps(meta)})


@pytest.mark.parametrize("change,match", [
    (lambda m: m.pop("sha256"), "sha256"),
    (lambda m: m.update(modules=[]), "modules"),
    (lambda m: m.update(modules={"features.0": {"kind": "slimkit.QuantLinear", "spec": {"bogus": 1}}}),
     "cannot be rebuilt"),
    (lambda m: m.update(modules={"features.0": {"kind": "os.system", "spec": {}}}), "unknown kind"),
    (lambda m: m.update(aliases={"x": "nope"}), "alias"),
    (lambda m: m.update(version=99), "v99"),
])
def test_tampered_metadata_is_an_artifact_error(cnn, tmp_path, change, match):
    path = slimkit.save(cnn, tmp_path / "c.slim")
    _rewrite_meta(path, change)
    with pytest.raises(ArtifactError, match=match):
        slimkit.load(path)
