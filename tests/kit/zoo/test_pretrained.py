"""The bundled teachers are the same whatever torch's thread count in the calling process (the
notebooks' stored outputs were made with them; a test that left torch at 1 thread once trained a
different one into the shared cache)."""
import pytest
import torch

from slimkit.zoo import pretrained_digits


@pytest.mark.slow
def test_a_teacher_does_not_depend_on_the_callers_thread_count(tmp_path, monkeypatch):
    weights = []
    before = torch.get_num_threads()
    for n in (1, 2):
        monkeypatch.setenv("SLIMKIT_CACHE", str(tmp_path / f"threads{n}"))
        torch.set_num_threads(n)
        try:
            weights.append(pretrained_digits("cnn", seed=1).state_dict())
            assert torch.get_num_threads() == n  # the caller's setting is restored
        finally:
            torch.set_num_threads(before)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
