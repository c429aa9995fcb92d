"""Model weights in safetensors (no pickle), written atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from must_engine.io_utils import atomic_write

EXTRA_PREFIX = "extra."


def save_model_weights(path: Path, model: torch.nn.Module, *,
                       extra: dict[str, torch.Tensor] | None = None,
                       metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[EXTRA_PREFIX + k] = v.detach().to("cpu").contiguous()
    meta = {"format": "must-model/1", **(metadata or {})}
    atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata=meta))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            tensors[k] = f.get_tensor(k)
    return tensors, meta


def load_state_checked(model: torch.nn.Module, state: dict[str, torch.Tensor],
                       source: Path) -> None:
    """``model.load_state_dict`` that is strict, except that tensors under the model's
    ``optional_state_prefixes`` may be missing (they keep the model's own values)."""
    optional_prefixes = tuple(getattr(model, "optional_state_prefixes", ()))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(optional_prefixes)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{source} does not match the model: missing {missing[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]}.")


def load_model_weights(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Load into ``model`` (see ``load_state_checked``); returns the extra tensors saved
    beside the weights."""
    tensors, _ = read_weights(path)
    extra = {k[len(EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    load_state_checked(model, state, path)
    return extra
