"""The benchmark harness measures what it claims: known durations, orderings, statistics, memory."""
import mmap
import statistics
import time

import numpy as np
import pytest
import torch

from slimkit import accel
from slimkit.accel import Measurement, benchmark, percentile, throughput, time_variants
from slimkit.errors import InvalidParameterError, InvalidTypeError


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
@pytest.mark.parametrize("n", [1, 2, 7, 20])
def test_percentile_matches_numpy_linear_interpolation(q, n):
    values = list(np.random.default_rng(n).normal(size=n))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_rejects_bad_input():
    with pytest.raises(InvalidParameterError, match="values"):
        percentile([], 50)
    for q in (-1, 101, True, "90"):
        with pytest.raises(InvalidParameterError, match="q="):
            percentile([1.0], q)


def test_measurement_statistics_on_known_values():
    m = Measurement("x", [0.5, 0.1, 0.4, 0.2, 0.3], items=8)
    assert m.median_s == 0.3 and m.min_s == 0.1
    assert m.p90_s == pytest.approx(0.46)  # between the 4th (0.4) and 5th (0.5) of 5 sorted values
    assert m.mean_s == pytest.approx(0.3)
    assert m.throughput == pytest.approx(8 / 0.3)
    base = Measurement("b", [0.6, 0.6, 0.6])
    assert m.speedup_vs(base) == pytest.approx(2.0)
    s = m.summary()
    assert s["median_ms"] == pytest.approx(300) and s["p90_ms"] == pytest.approx(460) and s["runs"] == 5


def test_a_sleep_of_known_length_measures_about_right():
    calls = []

    def nap():
        calls.append(1)
        time.sleep(0.05)

    m = benchmark(nap, warmup=2, repeat=5)
    assert len(calls) == 7 and len(m.times_s) == 5 and m.warmup == 2
    assert 0.049 <= m.median_s < 0.15  # never shorter than the sleep; a loaded machine adds a little
    assert m.min_s <= m.median_s <= m.p90_s
    assert statistics.median(m.cpu_time_s) < 0.02  # sleeping costs no CPU time: the two clocks differ
    assert m.timer == "perf_counter" and m.device == "cpu"


def test_min_time_adds_runs_until_enough_time_is_measured():
    m = benchmark(lambda: time.sleep(0.01), warmup=0, repeat=2, min_time_s=0.1)
    assert len(m.times_s) >= 9 and sum(m.times_s) >= 0.1


def test_threads_are_fixed_for_the_run_recorded_and_restored():
    before = torch.get_num_threads()
    seen = []
    m = benchmark(lambda: seen.append(torch.get_num_threads()), warmup=1, repeat=3, threads=1)
    assert set(seen) == {1} and m.threads == 1 and m.summary()["threads"] == 1
    assert torch.get_num_threads() == before


def _matmul_model(width):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(256, width), torch.nn.ReLU(), torch.nn.Linear(width, 256))


def test_a_model_known_to_be_slower_orders_after_the_faster_one():
    x = torch.randn(64, 256)
    small, big = _matmul_model(64), _matmul_model(4096)  # 64x the multiply-adds
    res = time_variants({"big": big, "small": small}, x, rounds=6, warmup=1, threads=1)
    assert list(res) == ["big", "small"]
    assert res["small"].median_s < res["big"].median_s
    assert res["small"].speedup_vs(res["big"]) > 3
    assert res["small"].items == 64 and res["big"].threads == 1


def test_time_variants_alternates_the_order_round_by_round():
    order = []
    variants = {name: (lambda name=name: (lambda x: order.append(name)))() for name in "abc"}
    time_variants(variants, torch.zeros(1), rounds=4, warmup=0)
    assert order == list("abc") + list("cba") + list("abc") + list("cba")


def test_a_prepared_backend_is_benchmarked_with_its_inputs_moved():
    model = _matmul_model(32)
    x = torch.randn(4, 256)
    prepared = accel.prepare(model, x, "eager")
    m = benchmark(prepared, x, warmup=1, repeat=3)
    assert m.name == "eager" and m.items == 4
    assert m.fingerprint["cpu_model"] and m.fingerprint["torch_threads"] >= 1 and "torch" in m.fingerprint["packages"]


def test_throughput_at_several_batch_sizes():
    model = _matmul_model(32)
    rows = throughput(model, lambda b: torch.randn(b, 256), [1, 16], warmup=1, repeat=3, name="mlp")
    assert [r.items for r in rows] == [1, 16] and [r.extra["batch_size"] for r in rows] == [1, 16]
    assert rows[1].name == "mlp[16]"
    assert all(r.throughput == pytest.approx(r.items / r.median_s) for r in rows)


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="Linux peak-RSS reset")
def test_peak_memory_sees_a_temporary_allocation():
    def allocate():
        # 256 MiB from a fresh anonymous mapping, every page touched, then freed. (A torch or numpy
        # buffer may be served from free heap memory that earlier tests left resident: no growth.)
        buf = mmap.mmap(-1, 256 * 2**20)
        for offset in range(0, len(buf), mmap.PAGESIZE):
            buf[offset] = 1
        buf.close()

    m = benchmark(allocate, warmup=0, repeat=1)
    quiet = benchmark(lambda: None, warmup=0, repeat=1)
    assert m.peak_cpu_rss_bytes - m.rss_before_bytes >= 200 * 2**20
    assert quiet.peak_cpu_rss_bytes - quiet.rss_before_bytes < 100 * 2**20


def test_bad_arguments_are_rejected():
    with pytest.raises(InvalidParameterError, match="repeat"):
        benchmark(lambda: None, repeat=0)
    with pytest.raises(InvalidParameterError, match="warmup"):
        benchmark(lambda: None, warmup=-1)
    with pytest.raises(InvalidParameterError, match="threads"):
        benchmark(lambda: None, threads=0)
    with pytest.raises(InvalidTypeError, match="fn"):
        benchmark(42, torch.zeros(1))
    with pytest.raises(InvalidTypeError, match="example_inputs"):
        benchmark(lambda x: x, "not a tensor")
    with pytest.raises(InvalidParameterError, match="variants"):
        time_variants({}, torch.zeros(1))
    with pytest.raises(InvalidParameterError, match="rounds"):
        time_variants({"a": lambda x: x}, torch.zeros(1), rounds=0)
    with pytest.raises(InvalidParameterError, match="batch_sizes"):
        throughput(lambda x: x, lambda b: torch.zeros(b), [])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runs_are_timed_with_events_and_report_allocated_memory():
    x = torch.randn(2048, 2048, device="cuda")
    m = benchmark(lambda t: t @ t, x, warmup=2, repeat=5)
    assert m.timer == "cuda_event" and m.device.startswith("cuda")
    assert m.cuda_max_allocated_bytes >= 2 * 2048 * 2048 * 4
    assert m.median_s > 0
