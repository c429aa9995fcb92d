"""The EMA teacher and its decay ramp."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, decay_init: float, decay_final: float, warm_it: int) -> float:
    """Linear ramp from ``decay_init`` at step 0 to ``decay_final`` at ``warm_it``, then flat."""
    frac = min(1.0, step / max(1, warm_it))
    return decay_init + (decay_final - decay_init) * frac


class EmaTeacher:
    """An exponential moving average of the student, initialised as a copy of it.

    The teacher never trains (no grad, eval mode); buffers are copied, not averaged.
    """

    def __init__(self, student: nn.Module):
        self.module = copy.deepcopy(student).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, decay: float) -> None:
        t_params = list(self.module.parameters())
        s_params = [p.detach() for p in student.parameters()]
        # lerp: t <- t + (1 - decay) * (s - t) == decay * t + (1 - decay) * s
        torch._foreach_lerp_(t_params, s_params, 1.0 - decay)
        t_buffers = list(self.module.buffers())
        s_buffers = list(student.buffers())
        if len(t_buffers) != len(s_buffers):
            raise ValueError("The teacher and the student have different buffers.")
        if t_buffers:
            torch._foreach_copy_(t_buffers, s_buffers)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
