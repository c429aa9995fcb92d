"""Which compute devices this machine offers, and turning a user's choice into a torch.device."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Literal

import torch

DeviceKind = Literal["cuda", "mps", "cpu"]

_GIB = 1024**3


class DeviceNotAvailableError(ValueError):
    """The device asked for is unknown or not present on this machine."""


@dataclass
class DeviceInfo:
    kind: DeviceKind
    index: int | None  # CUDA ordinal; None for MPS and CPU
    name: str
    total_memory_bytes: int | None
    label: str  # e.g. "NVIDIA H200 (139 GiB)", for menus

    @property
    def choice(self) -> str:
        """The string `resolve_device` accepts for this device ("cuda:0", "mps", "cpu")."""
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind


def _gib(n_bytes: int) -> str:
    return f"{round(n_bytes / _GIB)} GiB"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cpu_name() -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo has the model name.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _system_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None  # Windows has no sysconf


def _cpu_info() -> DeviceInfo:
    cores = os.cpu_count() or 1
    name = _cpu_name()
    return DeviceInfo(
        kind="cpu",
        index=None,
        name=name,
        total_memory_bytes=_system_memory_bytes(),
        label=f"CPU: {name} ({cores} {'core' if cores == 1 else 'cores'})",
    )


def list_devices() -> list[DeviceInfo]:
    """GPUs first (CUDA/ROCm in ordinal order, then Apple MPS), the CPU last."""
    devices: list[DeviceInfo] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            memory = int(props.total_memory)
            devices.append(
                DeviceInfo("cuda", i, props.name, memory, f"{props.name} ({_gib(memory)})")
            )
    if _mps_available():
        memory: int | None = None
        recommended = getattr(getattr(torch, "mps", None), "recommended_max_memory", None)
        if recommended is not None:
            try:
                memory = int(recommended())
            except RuntimeError:
                memory = None
        label = f"Apple GPU (MPS, {_gib(memory)})" if memory else "Apple GPU (MPS)"
        devices.append(DeviceInfo("mps", None, "Apple GPU", memory, label))
    devices.append(_cpu_info())
    return devices


# The app's choice "every GPU here": the run trains in one process per GPU under torchrun.
ALL_GPUS = "cuda:all"


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_choices(devices: list[DeviceInfo]) -> list[tuple[str, str]]:
    """(choice, label) for a device menu: each device, and after the GPUs "all N GPUs"
    where there are two or more."""
    out = [(d.choice, d.label) for d in devices]
    gpus = sum(d.kind == "cuda" for d in devices)
    if gpus >= 2:
        out.insert(gpus, (ALL_GPUS, f"All {gpus} GPUs (one training process each, torchrun)"))
    return out


def in_process_device(choice: str) -> str:
    """Where work done in this one process goes for a device choice: "all GPUs" scores
    and prepares on the first GPU (training alone runs on all of them)."""
    return "cuda" if choice == ALL_GPUS else choice


def resolve_device(choice: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device, or a clear error."""
    text = (choice or "").strip().lower()
    if text == ALL_GPUS:
        raise DeviceNotAvailableError(
            "'cuda:all' trains on every GPU through torchrun: use `must train --nproc N` (one "
            "process per GPU) with --device cuda.")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise DeviceNotAvailableError(
                "Apple MPS was asked for but is not available here (it needs an Apple-silicon Mac "
                "and a PyTorch build with MPS); choose 'auto' or 'cpu'."
            )
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2] if ":" in text else "0"
        if not index_text.isdigit():
            raise DeviceNotAvailableError(
                f"Unknown device {choice!r}: write the GPU number after 'cuda:', as in 'cuda:0'."
            )
        index = int(index_text)
        if not torch.cuda.is_available():
            build = (
                "this PyTorch build has no CUDA support"
                if torch.version.cuda is None and getattr(torch.version, "hip", None) is None
                else "no CUDA GPU was found"
            )
            raise DeviceNotAvailableError(
                f"A CUDA GPU was asked for but {build}; choose 'auto' or 'cpu'."
            )
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceNotAvailableError(
                f"GPU cuda:{index} was asked for but this machine has {count} "
                f"(cuda:0 to cuda:{count - 1}); choose one of those or 'auto'."
            )
        return torch.device("cuda", index)
    raise DeviceNotAvailableError(
        f"Unknown device {choice!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
    )
