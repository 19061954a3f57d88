"""The entropy coders: exact round trips, the smallest candidate kept, and hostile payloads or
entries refused (bounded output, never a crash)."""
import numpy as np
import pytest
import torch

from slimkit import entropy
from slimkit.errors import ArtifactError


def _tensors():
    g = torch.Generator().manual_seed(0)
    gauss = (torch.randn(64, 96, generator=g) * 20).round().clamp(-127, 127)
    keep = torch.rand(64, 96, generator=g) < 0.1
    return {
        "int8 weights": gauss.to(torch.int8),
        "pruned int8": (gauss * keep).to(torch.int8),
        "bool mask": keep,
        "packed int4": torch.randint(0, 256, (3000,), generator=g, dtype=torch.uint8) & 0x13,
        "uint8 sorted indices": torch.arange(2000, dtype=torch.int64).remainder(200).to(torch.uint8),
        "int64 row pointers": torch.cumsum(torch.randint(0, 30, (513,), generator=g), 0),
        "int16 columns": torch.randint(-700, 784, (5000,), generator=g, dtype=torch.int16),
        "int32 extremes": torch.tensor([-(2**31), 2**31 - 1, 0] * 400, dtype=torch.int32),
        "int64 extremes": torch.tensor([-(2**63), 2**63 - 1, 5] * 400, dtype=torch.int64),
        "constant": torch.full((7, 300), -3, dtype=torch.int8),
    }


def _bytes(payload: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(payload, dtype=np.uint8).copy())


@pytest.mark.parametrize("name", list(_tensors()))
def test_round_trip_is_exact_and_never_larger(name):
    t = _tensors()[name]
    coded = entropy.encode(t)
    assert coded is not None, "every tensor here compresses"
    payload, entry = coded
    assert len(payload) < t.numel() * t.element_size()
    assert entry["dtype"] == str(t.dtype).removeprefix("torch.") and entry["shape"] == list(t.shape)
    back = entropy.decode(name, entry, _bytes(payload))
    assert back.dtype == t.dtype and torch.equal(back, t)


def test_the_smallest_candidate_is_kept():
    t = _tensors()["pruned int8"]
    payload, _ = entropy.encode(t)
    flat = t.reshape(-1).numpy()
    others = [len(entropy._zstd_encode(flat.tobytes())), len(entropy._ans_encode(entropy._symbols(flat, "bytes")))]
    assert len(payload) == min(others)
    assert len(entropy.encode(_tensors()["constant"])[0]) <= 8, "one symbol: the table alone"
    assert entropy.encode(_tensors()["int64 row pointers"])[1]["symbols"] == "delta"


def test_floats_empty_and_incompressible_tensors_stay_raw():
    assert entropy.encode(torch.randn(100)) is None
    assert entropy.encode(torch.zeros(0, dtype=torch.int8)) is None
    noise = torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    assert entropy.encode(noise) is None


def test_encode_all_keeps_raw_tensors_and_digest_sees_decoded_values():
    ts = {"w": _tensors()["pruned int8"], "b": torch.randn(3)}
    stored, coded = entropy.encode_all(ts)
    assert set(coded) == {"w"} and stored["b"] is ts["b"] and stored["w"].dtype == torch.uint8
    back = entropy.decode_all("f", coded, stored, entropy.digest(ts, coded))
    assert torch.equal(back["w"], ts["w"])
    with pytest.raises(ArtifactError, match="decode to other values"):
        entropy.decode_all("f", coded, stored, "0" * 64)


_GOOD = {"coder": "ans", "symbols": "bytes", "dtype": "int8", "shape": [4]}


@pytest.mark.parametrize("change,match", [
    (dict(coder="pickle"), "unknown coder"),
    (dict(dtype="float32"), "coded tensors are one of"),
    (dict(coder="zstd", symbols="nibbles"), "cannot code"),
    (dict(symbols="nibbles"), "cannot code int8"),
    (dict(shape=[-1]), "shape"),
    (dict(shape=[True]), "shape"),
    (dict(shape=[1] * 9), "shape"),
    (dict(shape=[2**30, 2**30]), "shape|refused"),
    (dict(shape=[2**20, 2**20, 2]), "refused"),
    (dict(extra=1), "is not"),
])
def test_malformed_entries_are_refused(change, match):
    with pytest.raises(ArtifactError, match=match):
        entropy.check_entry("t", {**_GOOD, **change}, torch.zeros(4, dtype=torch.uint8))


def test_payload_must_be_a_byte_vector():
    with pytest.raises(ArtifactError, match="not bytes"):
        entropy.check_entry("t", _GOOD, torch.zeros(4, dtype=torch.int8))


def test_zstd_bomb_decodes_no_more_than_declared():
    """64 MiB of zeros in a few KiB: declared as 100 bytes, refused after reading 101."""
    payload = entropy._zstd_encode(bytes(64 * 2**20))
    entry = {"coder": "zstd", "symbols": "bytes", "dtype": "uint8", "shape": [100]}
    with pytest.raises(ArtifactError, match="more than 100"):
        entropy.decode("t", entry, _bytes(payload))
    short = {**entry, "shape": [2**27]}
    with pytest.raises(ArtifactError, match="not 134217728"):
        entropy.decode("t", short, _bytes(payload))


@pytest.mark.parametrize("payload,match", [
    (b"", "past the end"),
    (b"\xff" * 12, "too long"),
    (b"\x02\x00\x01\x03\x03", "add up to 6, not 4"),  # two symbols, counts 3 + 3 for 4
    (b"\x02\x00\x01\x02\x02\x01\x02\x03", "whole 32-bit words"),
    (b"\x01\x00\x04\x00", "after a one-symbol table"),
    (b"\x05", "table of 5 symbols"),
])
def test_corrupt_ans_tables_are_refused(payload, match):
    with pytest.raises(ArtifactError, match=match):
        entropy.decode("t", _GOOD, _bytes(payload))


def test_fuzzed_payloads_raise_or_decode_to_the_declared_shape():
    rng = np.random.default_rng(0)
    for name, t in _tensors().items():
        payload, entry = entropy.encode(t)
        for _ in range(20):
            bad = bytearray(payload)
            if rng.random() < 0.5:
                for i in rng.integers(0, len(bad), size=3):
                    bad[i] ^= int(rng.integers(1, 256))
            else:
                bad = bad[: int(rng.integers(0, len(bad)))]
            try:
                out = entropy.decode(name, entry, _bytes(bytes(bad)))
            except ArtifactError:
                continue
            assert out.shape == t.shape and out.dtype == t.dtype


def test_zstd_frames_asking_for_a_large_window_are_refused():
    """1000 zero bytes in a frame that declares a 128 MiB window: refused, not allocated."""
    import io

    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as w:
        w.write(bytes(1000))
    assert zstandard.get_frame_parameters(out.getvalue()).window_size == 2**27
    entry = {"coder": "zstd", "symbols": "bytes", "dtype": "uint8", "shape": [1000]}
    with pytest.raises(ArtifactError, match="too much memory"):
        entropy.decode("t", entry, _bytes(out.getvalue()))


def test_ans_decodes_in_chunks_to_the_same_values(monkeypatch):
    rng = np.random.default_rng(0)
    stream = rng.choice(np.array([0, 0, 0, 1, 3, 7, 200], dtype=np.int64), size=5000)
    payload = memoryview(entropy._ans_encode(stream))
    whole = entropy._ans_decode(payload, stream.size)
    monkeypatch.setattr(entropy, "DECODE_CHUNK", 7)
    assert np.array_equal(entropy._ans_decode(payload, stream.size), whole) and np.array_equal(whole, stream)


def test_a_coded_entry_cannot_declare_far_more_than_its_payload():
    t = torch.zeros(4, 1 << 16, dtype=torch.int8)  # 256 KiB of zeros: any coding is a few bytes
    assert entropy.encode(t) is None  # so a save stores it raw: a load would refuse the coded entry
    payload = entropy._zstd_encode(t.numpy().tobytes())
    entry = {"coder": "zstd", "symbols": "bytes", "dtype": "int8", "shape": [4, 1 << 16]}
    with pytest.raises(ArtifactError, match="declares 262,144 bytes"):
        entropy.declared("f", {"w": entry}, {"w": _bytes(payload)})
    padded = payload + bytes(512 - len(payload))  # 512 coded bytes may declare 512 * 512 + 64 KiB
    assert entropy.declared("f", {"w": entry}, {"w": _bytes(padded)})["w"].shape == (4, 1 << 16)
