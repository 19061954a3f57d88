"""Device resolution: what exists is used, what is absent is an error or an explicit, logged fallback."""
import logging

import pytest
import torch

from slimkit.devices import available_devices, resolve_device
from slimkit.errors import DeviceUnavailableError, InvalidParameterError, InvalidTypeError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")


def test_cpu_always_exists_and_auto_picks_an_available_device():
    devices = available_devices()
    assert devices[0] == "cpu"
    assert all(d == "cpu" or d == "mps" or d.startswith("cuda:") for d in devices)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    assert str(auto) in devices
    assert (auto.type == "cuda") == torch.cuda.is_available()


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", " CUDA:1 "])
def test_absent_cuda_is_an_error_that_names_the_devices_that_exist(name):
    with pytest.raises(DeviceUnavailableError) as err:
        resolve_device(name)
    msg = str(err.value)
    assert name.strip().lower() in msg and "Devices on this machine: cpu" in msg and "fallback=True" in msg
    assert isinstance(err.value, RuntimeError)


@no_cuda
def test_fallback_is_logged_and_lands_on_an_existing_device(caplog):
    with caplog.at_level(logging.WARNING, logger="slimkit.accel"):
        dev = resolve_device("cuda:0", fallback=True)
    assert str(dev) in available_devices() and dev.type != "cuda"
    assert any("falling back to" in r.getMessage() and "cuda:0" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.device_count() > 7, reason="has 8+ GPUs")
def test_a_cuda_index_beyond_the_gpus_here_is_an_error():
    with pytest.raises(DeviceUnavailableError, match="cuda:7"):
        resolve_device("cuda:7")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the error raised without MPS")
def test_absent_mps_is_an_error():
    with pytest.raises(DeviceUnavailableError, match="mps"):
        resolve_device("mps")


@pytest.mark.parametrize("bad", ["tpu", "cpu:1", "cuda:-1", "", "cuda:x"])
def test_unknown_device_names_are_rejected_naming_the_parameter(bad):
    with pytest.raises(InvalidParameterError, match="device=") as err:
        resolve_device(bad)
    assert '"cuda:N"' in str(err.value)


def test_wrong_types_are_rejected():
    with pytest.raises(InvalidTypeError, match="device"):
        resolve_device(0)
    with pytest.raises(InvalidTypeError, match="fallback"):
        resolve_device("cpu", fallback="yes")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_resolves_to_an_indexed_device():
    assert resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    assert resolve_device("cuda:0") == torch.device("cuda:0")
