"""Same notebook, same parameters and seed: the same metrics (timings aside), run to run."""
import pytest
from notebook_factory import NOTEBOOK_DIR

from slimkit.runs.records import RunStore
from slimkit.runs.runner import run


@pytest.mark.slow
def test_same_parameters_and_seed_give_the_same_metrics(kernel, tmp_path):
    params = {"epochs": 2, "fraction": 0.2, "baseline": False, "timing_rounds": 1}  # training, kept short
    with RunStore(tmp_path / "records.sqlite") as store:
        first, second = (run(NOTEBOOK_DIR / "distill.ipynb", params, out=tmp_path, name=n, store=store,
                             kernel_name=kernel) for n in ("a", "b"))
    assert first.status == second.status == "ok", (first.error, second.error)
    strip = lambda m: {k: v for k, v in m.items() if not k.endswith("latency_ms")}  # noqa: E731
    assert strip(first.metrics) == strip(second.metrics)
    assert 0.1 < first.metrics["accuracy"] < 1 and first.metrics["params_ratio"] < 0.3
    assert first.hardware == second.hardware and first.hardware["cpu_model"]  # the record says what ran it
