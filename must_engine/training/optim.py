"""AdamW with layer-wise learning-rate decay, and the cosine schedule.

Layer ids follow BEiT/MUST: patch, class and position embeddings (and the [MASK] token) at
depth 0, transformer block i at i + 1, everything after the blocks (final norm, projection,
classifier, decoder) at the top, L + 1. A group's lr is lr * layer_decay ** (L + 1 - id).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_EMBEDDING_NAMES = ("visual.conv1", "visual.class_embedding", "visual.positional_embedding",
                    "mask_token", "visual.ln_pre")
# Parameters that are not 1-D but still get no weight decay (tokens and embeddings).
_NO_DECAY_NAMES = ("visual.class_embedding", "visual.positional_embedding", "mask_token")


def layer_id(name: str, num_layers: int) -> int:
    if name.startswith(_EMBEDDING_NAMES):
        return 0
    if name.startswith("visual.transformer.resblocks."):
        return int(name.split(".")[3]) + 1
    return num_layers + 1


def param_groups(model: nn.Module, *, weight_decay: float, layer_decay: float,
                 num_layers: int) -> list[dict]:
    """One group per (layer, decay/no-decay); each carries ``lr_scale`` and ``layer_id``."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name in _NO_DECAY_NAMES
        lid = layer_id(name, num_layers)
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (num_layers + 1 - lid),
                "layer_id": lid,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def fused_adamw_supported(device: torch.device | str | None) -> bool:
    """Fused AdamW (one kernel for all parameters) on CUDA and MPS. On the CPU the default
    multi-tensor path is kept: a CPU step is dominated by the model, and keeping it leaves
    CPU runs bit-identical to earlier versions."""
    return device is not None and torch.device(device).type in ("cuda", "mps")


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, layer_decay: float,
                    num_layers: int, device: torch.device | str | None = None
                    ) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay=weight_decay, layer_decay=layer_decay,
                          num_layers=num_layers)
    fast = {"fused": True} if fused_adamw_supported(device) else {}
    # "names" is bookkeeping for tests and logs; AdamW ignores extra keys it does not know.
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, **fast)


def cosine_lr(step: int, total_steps: int, base_lr: float, min_lr: float) -> float:
    """Cosine from base_lr at step 0 to min_lr at the last step, no warm-up."""
    if total_steps <= 1:
        return base_lr
    progress = min(1.0, step / (total_steps - 1))
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
