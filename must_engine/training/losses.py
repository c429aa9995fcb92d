"""The four MUST losses, each a small pure function so it can be checked by hand.

Every function takes the tensors of one batch. Where a mean over the *whole* batch across
devices is needed (fairness), a ``gather`` callable can be passed: under torch.distributed it
concatenates the per-device tensors with gradient; on one device it is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def pseudo_labels(teacher_logits: torch.Tensor, threshold: float):
    """(labels, confidence, confident mask) from the teacher's logits on the weak view."""
    probs = teacher_logits.float().softmax(dim=-1)
    confidence, labels = probs.max(dim=-1)
    return labels, confidence, confidence > threshold


def self_training_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                       confident: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the pseudo-labels over confident samples only.

    A batch with no confident sample gives 0 (with a graph, so backward still works),
    where the reference code divided by zero and stopped with NaN.
    """
    ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
    weight = confident.to(ce.dtype)
    return (ce * weight).sum() / weight.sum().clamp(min=1.0)


class FairnessLoss:
    """-mean_k log(p_avg[k]) with p_avg the batch mean of the student's softmax.

    With many classes (>= ``running_from``) a batch cannot see every class, so a running
    prior p = 0.5 * (p_prev.detach() + p_batch) is used and the loss divided by 0.5, as
    published. The running state is part of the trainer's checkpoint.
    """

    def __init__(self, num_classes: int, running_from: int = 512, gather: Gather | None = None):
        self.running = num_classes >= running_from
        self.gather = gather or _identity
        self.previous: torch.Tensor | None = None

    def __call__(self, student_logits: torch.Tensor) -> torch.Tensor:
        probs = self.gather(student_logits.float().softmax(dim=-1))
        batch_avg = probs.mean(dim=0)
        if not self.running:
            return -torch.log(batch_avg).mean()
        avg = batch_avg if self.previous is None else 0.5 * (self.previous + batch_avg)
        self.previous = avg.detach()
        return -torch.log(avg).mean() / 0.5

    def reset(self) -> None:
        self.previous = None

    def state_dict(self) -> dict:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.previous = state.get("previous")


def masked_image_modelling_loss(reconstruction: torch.Tensor, target: torch.Tensor,
                                pixel_mask: torch.Tensor) -> torch.Tensor:
    """L1 between the decoder output and the normalised input, over masked pixels only,
    divided by (masked pixel count * channels). ``pixel_mask`` is [B, 1, H, W] in {0, 1}."""
    l1 = (reconstruction.float() - target.float()).abs()
    masked = pixel_mask.float()
    denom = masked.sum() * target.shape[1]
    if denom.item() == 0:
        return reconstruction.sum() * 0.0
    return (l1 * masked).sum() / denom


def global_local_alignment_loss(patch_embeddings: torch.Tensor, cls_embedding: torch.Tensor,
                                patch_mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked patches of ||normalize(proj(patch)) - sg(normalize(proj(cls)))||^2.

    The image's own global [CLS] embedding is the target (stop-gradient), so local masked
    patches learn to carry the global semantics; inputs are already normalised.
    ``patch_mask`` is [B, N] (or [B, gh, gw]) bool.
    """
    m = patch_mask.flatten(1)
    if not bool(m.any()):
        return patch_embeddings.sum() * 0.0
    diff = patch_embeddings.float() - cls_embedding.detach().float().unsqueeze(1)
    per_patch = diff.pow(2).sum(dim=-1)  # [B, N]
    return per_patch[m].mean()
