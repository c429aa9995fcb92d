"""The trainer's side of user corrections: per batch, labelled images train on their fixed
label with the correction weight, whatever the teacher says and whatever its confidence."""

from __future__ import annotations

import torch

from must_engine.trust.user_labels import RunLabels


class FixedLabels:
    """A per-image table of fixed labels (-1: none) on the training device."""

    def __init__(self, run_labels: RunLabels, files: list[str], device: torch.device | str):
        table = [run_labels.fixed.get(f, -1) for f in files]
        self.table = torch.tensor(table, dtype=torch.long, device=device)
        self.weight = float(run_labels.weight)
        self.count = sum(1 for t in table if t >= 0)

    def apply(self, index: torch.Tensor, labels: torch.Tensor, confident: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, per-sample weight) for the self-training loss: pseudo-labels weighted 1
        where confident, fixed labels weighted ``weight`` always."""
        if self.count == 0:
            return labels, confident
        fixed = self.table[index]
        use = fixed >= 0
        weights = torch.where(use, torch.full_like(confident, self.weight, dtype=torch.float32),
                              confident.float())
        return torch.where(use, fixed, labels), weights
