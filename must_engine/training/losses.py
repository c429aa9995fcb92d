"""The four MUST losses, each a small pure function so it can be checked by hand.

Every function takes the tensors of one batch. Where a mean over the *whole* batch across
devices is needed (fairness), a ``gather`` callable can be passed: under torch.distributed it
concatenates the per-device tensors with gradient; on one device it is the identity.

No function reads a value back to the host (no ``.item()``, no ``if tensor``, no boolean
indexing): masks enter as weights of masked sums, so a GPU step never stalls on a loss.
An optional ``valid`` [B] weight drops samples (an image that could not be read) from a loss.
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


def _weights(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """[B] float sample weights: ``valid`` as 0/1, or all ones."""
    if valid is None:
        return torch.ones(like.shape[0], device=like.device, dtype=torch.float32)
    return valid.to(device=like.device, dtype=torch.float32)


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
    published; the trainer calls ``reset`` at the start of each epoch, as the reference code
    does. The running state is part of the trainer's checkpoint.
    """

    def __init__(self, num_classes: int, running_from: int = 512, gather: Gather | None = None):
        self.running = num_classes >= running_from
        self.gather = gather or _identity
        self.previous: torch.Tensor | None = None

    def __call__(self, student_logits: torch.Tensor, valid: torch.Tensor | None = None,
                 rest: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``rest``: (sum of weighted probabilities [C], weight) of the batch's other images,
        without gradient (gradient accumulation: the other passes of the same step)."""
        probs = self.gather(student_logits.float().softmax(dim=-1))
        if valid is None and rest is None:
            batch_avg = probs.mean(dim=0)
        else:
            w = self.gather(_weights(valid, student_logits)).unsqueeze(1)
            count = w.sum()
            total = (probs * w).sum(dim=0)
            if rest is not None:
                total, count = total + rest[0], count + rest[1]
            batch_avg = total / count.clamp(min=1.0)
            # A batch with no valid sample: the uniform prior, a constant loss with no gradient.
            uniform = torch.full_like(batch_avg, 1.0 / batch_avg.shape[0])
            batch_avg = torch.where(count > 0, batch_avg, uniform)
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
                                pixel_mask: torch.Tensor,
                                valid: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between the decoder output and the normalised input, over masked pixels only,
    divided by (masked pixel count * channels). ``pixel_mask`` is [B, 1, H, W] in {0, 1}.
    No masked pixel gives 0 (with a graph)."""
    l1 = (reconstruction.float() - target.float()).abs()
    masked = pixel_mask.float() * _weights(valid, target).view(-1, 1, 1, 1)
    denom = masked.sum() * target.shape[1]
    return (l1 * masked).sum() / denom.clamp(min=1.0)


def global_local_alignment_loss(patch_embeddings: torch.Tensor, cls_embedding: torch.Tensor,
                                patch_mask: torch.Tensor, *, detach_cls: bool = True,
                                valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over masked patches of ||normalize(proj(patch)) - normalize(proj(cls))||^2.

    The image's own global [CLS] embedding is the target, so local masked patches learn to
    carry the global semantics; inputs are already normalised. ``detach_cls`` stops the
    gradient into the [CLS] side (the reference code lets it flow: ``detach_cls=False``).
    ``patch_mask`` is [B, N] (or [B, gh, gw]) bool. No masked patch gives 0 (with a graph).
    """
    m = patch_mask.flatten(1).float() * _weights(valid, patch_embeddings).unsqueeze(1)
    target = cls_embedding.detach() if detach_cls else cls_embedding
    diff = patch_embeddings.float() - target.float().unsqueeze(1)
    per_patch = diff.pow(2).sum(dim=-1)  # [B, N]
    return (per_patch * m).sum() / m.sum().clamp(min=1.0)
