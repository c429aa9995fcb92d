"""Device listing and choice resolution; CUDA/MPS are simulated where the machine lacks them."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from must_engine import devices
from must_engine.devices import DeviceInfo, DeviceNotAvailableError, list_devices, resolve_device


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


@pytest.fixture()
def two_h200(monkeypatch: pytest.MonkeyPatch) -> None:
    props = SimpleNamespace(name="NVIDIA H200", total_memory=150_000_000_000)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def test_cpu_is_always_listed_last() -> None:
    found = list_devices()
    assert found and found[-1].kind == "cpu"
    cpu = found[-1]
    assert isinstance(cpu, DeviceInfo) and cpu.index is None and cpu.choice == "cpu"
    assert f"{os.cpu_count()} core" in cpu.label
    assert cpu.name
    if cpu.total_memory_bytes is not None:
        assert cpu.total_memory_bytes > 2**28


def test_cpu_only_machine(no_gpu) -> None:
    assert [d.kind for d in list_devices()] == ["cpu"]
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_simulated_cuda_devices(two_h200) -> None:
    found = list_devices()
    assert [d.kind for d in found] == ["cuda", "cuda", "cpu"]
    assert [d.index for d in found[:2]] == [0, 1]
    assert found[0].label == "NVIDIA H200 (140 GiB)"
    assert found[1].choice == "cuda:1"
    assert found[0].total_memory_bytes == 150_000_000_000
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    for d in found:
        assert resolve_device(d.choice).type == d.kind


def test_missing_gpu_index_is_explained(two_h200) -> None:
    with pytest.raises(DeviceNotAvailableError, match=r"has 2 \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    with pytest.raises(DeviceNotAvailableError, match="GPU number"):
        resolve_device("cuda:x")


def test_unavailable_devices_are_explained(no_gpu) -> None:
    with pytest.raises(
        DeviceNotAvailableError, match="CUDA GPU was asked for.*choose 'auto' or 'cpu'"
    ):
        resolve_device("cuda")
    with pytest.raises(DeviceNotAvailableError, match="CUDA GPU was asked for"):
        resolve_device("cuda:0")
    with pytest.raises(DeviceNotAvailableError, match="MPS was asked for"):
        resolve_device("mps")
    with pytest.raises(DeviceNotAvailableError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
    assert issubclass(DeviceNotAvailableError, ValueError)


def test_simulated_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    found = list_devices()
    assert [d.kind for d in found] == ["mps", "cpu"]
    assert found[0].label.startswith("Apple GPU (MPS")
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_device() -> None:
    found = list_devices()
    assert found[0].kind == "cuda" and "GiB" in found[0].label
    device = resolve_device("auto")
    assert device.type == "cuda"
    x = torch.ones(4, device=device)
    assert x.sum().item() == 4
