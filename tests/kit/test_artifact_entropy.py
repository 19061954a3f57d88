"""Entropy-coded artifacts (``save(..., entropy=True)``): exact round trips, ``size`` equal to the
file, default saves unchanged, and edited, forged or fuzzed files refused before decoding."""
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import slimkit
from slimkit import artifact
from slimkit.errors import ArtifactError


@pytest.fixture(scope="module")
def models(_cnn, _mlp):
    pruned_cnn = slimkit.prune(_cnn, 0.9).model
    return {
        "cnn pruned+int4": slimkit.quantize(pruned_cnn, bits=4).model,
        "cnn int8": slimkit.quantize(_cnn, bits=8).model,
        "mlp pruned+int8": slimkit.quantize(slimkit.prune(_mlp, 0.9).model, bits=8).model,
        "cnn sparse csr": slimkit.sparsify(pruned_cnn, 0.0, format="csr").model,
        "cnn sparse bitmask": slimkit.sparsify(pruned_cnn, 0.0, format="bitmask").model,
        "mlp fp32 (nothing to code)": _mlp,
    }


@pytest.mark.parametrize("name", ["cnn pruned+int4", "cnn int8", "mlp pruned+int8", "cnn sparse csr",
                                  "cnn sparse bitmask", "mlp fp32 (nothing to code)"])
def test_round_trip_is_exact_and_size_is_the_file(models, digits, tmp_path, name):
    m = models[name]
    path = slimkit.save(m, tmp_path / "m.slim", entropy=True)
    assert slimkit.size(m, entropy=True) == path.stat().st_size
    back = slimkit.load(path)
    want, got = m.state_dict(), back.state_dict()
    assert list(want) == list(got)
    for k in want:
        assert want[k].dtype == got[k].dtype and torch.equal(want[k], got[k]), k
    x = digits.test.X[:16]
    assert torch.equal(m(x), back(x))
    meta = artifact.read_metadata(path)
    if name.startswith("mlp fp32"):
        assert meta["coded"] == {}
    else:
        assert meta["version"] == artifact.CODED_VERSION and meta["coded"]
        assert slimkit.size(m, entropy=True) < slimkit.size(m)


def test_pruned_quantized_weights_shrink_several_fold(models):
    m = models["cnn pruned+int4"]
    assert slimkit.size(m) > 3 * slimkit.size(m, entropy=True)


def test_default_save_is_todays_format_byte_for_byte(tmp_path):
    """The sha256 of these bytes was taken from main before entropy coding existed."""
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) / (i + 3))
    q = slimkit.quantize(m, bits=8).model
    assert artifact.read_metadata(artifact.save(q, tmp_path / "q.slim"))["history"] == {
        "0": ["quantize affine 8-bit"], "2": ["quantize affine 8-bit"]}
    del q._slimkit_history  # the steps are new metadata; without them the bytes are the old format's
    for model, want in ((m, "902760e960126d6f7146c12f1f2c7c2cc31034e95747cab8b4ce151d24ccd82c"),
                        (q, "d56c33bea0f4c74d7ae40079448abc25d8374bf47c6ecc41688cd12fd10577bf")):
        assert hashlib.sha256(artifact.to_bytes(model, {"note": "x"})).hexdigest() == want


def _resave(path, change_meta=None, change_tensors=None, resign=True):
    """Re-save with edited metadata and/or stored tensors, checksum recomputed (as anyone who
    can write the file can): what the loader's own checks must catch."""
    from safetensors.torch import load_file, save_file

    meta, tensors = artifact.read_metadata(path), load_file(str(path))
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    if resign:
        meta["sha256"] = artifact._digest(tensors, meta)
    save_file(tensors, str(path), metadata={"slimkit": json.dumps(meta)})


def _first_coded(meta):
    return next(iter(meta["coded"].values()))


def _flip_payload(tensors):
    key = max((k for k, t in tensors.items() if t.dtype == torch.uint8), key=lambda k: tensors[k].numel())
    tensors[key] = tensors[key].clone()
    tensors[key][len(tensors[key]) // 2] ^= 0x5A


@pytest.mark.parametrize("change_meta,change_tensors,match", [
    (lambda m: _first_coded(m).update(shape=[2**19, 2**19]), None, "does not fit|refused"),
    (lambda m: _first_coded(m).update(shape=[2**21, 2**21]), None, "refused"),
    (lambda m: _first_coded(m).update(coder="os.system"), None, "unknown coder"),
    (lambda m: _first_coded(m).update(dtype="float32"), None, "coded tensors are one of"),
    (lambda m: _first_coded(m).update(dtype="int16"), None, "cannot code int16|does not fit"),
    (lambda m: m["coded"].update(nope={"coder": "ans", "symbols": "bytes", "dtype": "int8", "shape": [1]}),
     None, "'nope' is not stored"),
    (lambda m: m.update(decoded_sha256="0" * 64), None, "decode to other values"),
    (lambda m: m.pop("coded"), None, "'coded' missing"),
    (None, _flip_payload, "does not decode|decode to other values"),
])
def test_forged_coded_entries_are_refused(models, tmp_path, change_meta, change_tensors, match):
    path = slimkit.save(models["cnn pruned+int4"], tmp_path / "m.slim", entropy=True)
    _resave(path, change_meta, change_tensors)
    with pytest.raises(ArtifactError, match=match):
        slimkit.load(path)


def test_edited_coded_bytes_fail_the_checksum(models, tmp_path):
    path = slimkit.save(models["cnn pruned+int4"], tmp_path / "m.slim", entropy=True)
    _resave(path, change_tensors=_flip_payload, resign=False)
    with pytest.raises(ArtifactError, match="checksum"):
        slimkit.load(path)


def test_fuzzed_and_truncated_files_raise_artifact_errors(models, tmp_path):
    m = models["mlp pruned+int8"]
    data = artifact.to_bytes(m, entropy=True)
    rng = np.random.default_rng(0)
    path = tmp_path / "f.slim"
    for trial in range(40):
        bad = bytearray(data)
        if trial % 4 == 0:
            bad = bad[: int(rng.integers(0, len(bad)))]
        else:
            for i in rng.integers(0, len(bad), size=int(rng.integers(1, 4))):
                bad[i] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(bad))
        try:
            back = slimkit.load(path)
        except ArtifactError:
            continue
        for k, t in m.state_dict().items():  # a flip that changes nothing (JSON spacing) loads exactly
            assert torch.equal(back.state_dict()[k], t)


def test_tied_weights_stay_tied_when_coded(tmp_path):
    from conftest import TiedModel

    torch.manual_seed(0)
    q = slimkit.quantize(TiedModel(), bits=8).model
    path = slimkit.save(q, tmp_path / "t.slim", entropy=True)
    assert slimkit.size(q, entropy=True) == path.stat().st_size
    back = slimkit.load(path, model=TiedModel())
    x = torch.arange(10).view(2, 5)
    assert torch.equal(back(x), q(x))
