"""A spy for host reads: the tensor calls that make the CPU wait for a GPU's queued work
(.item(), `if tensor`, .tolist(), boolean indexing, ...). Tests of the training step and the
losses install it to prove that a step reads nothing back from the device."""

from __future__ import annotations

import sys

import torch


def record_host_reads(monkeypatch, methods: tuple[str, ...], *, only_from_engine: bool = False,
                      functions: tuple[str, ...] = ()) -> list[str]:
    """Patch ``torch.Tensor.<methods>`` and ``torch.<functions>`` to append their name to the
    returned list when called (only from must_engine's own code if ``only_from_engine``, so
    torch's internals are not counted), and record every boolean-mask index. Undo with
    ``monkeypatch.undo()`` before asserting."""
    calls: list[str] = []

    def counted() -> bool:
        return not only_from_engine or "must_engine" in sys._getframe(2).f_code.co_filename

    def record(name, original):
        def wrapper(*args, **kwargs):
            if counted():
                calls.append(name)
            return original(*args, **kwargs)
        return wrapper

    original_getitem = torch.Tensor.__getitem__

    def getitem(self, key):
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
            calls.append("boolean index")
        return original_getitem(self, key)

    for name in methods:
        monkeypatch.setattr(torch.Tensor, name, record(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
    for name in functions:
        monkeypatch.setattr(torch, name, record(name, getattr(torch, name)))
    return calls
