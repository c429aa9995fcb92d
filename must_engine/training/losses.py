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


def pseudo_labels(teacher_logits: torch.Tensor, threshold: float | torch.Tensor):
    """(labels, confidence, confident mask) from the teacher's logits on the weak view.

    ``threshold`` is one number, or a [C] tensor of per-class thresholds (a sample passes
    when its confidence is above its predicted class's threshold)."""
    probs = teacher_logits.float().softmax(dim=-1)
    confidence, labels = probs.max(dim=-1)
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.to(confidence.device)[labels]
    return labels, confidence, confidence > threshold


class AdaptiveThreshold:
    """Self-adaptive, class-aware thresholds (FreeMatch's SAT, Wang et al., ICLR 2023).

    A global threshold, the EMA of the teacher's mean top probability, is scaled per class by
    the EMA of the teacher's mean probability of that class over its largest class:
    ``tau_c = tau * p_c / max_k p_k``. Both start at 1 / C (as published), so early on most
    pseudo-labels pass, and the bar rises as the teacher grows surer; a class the teacher
    rarely predicts gets a lower bar. ``update`` takes the batch's teacher probabilities; under
    torch.distributed ``reduce`` (an in-place sum over processes) makes the statistics the
    global batch's, the same on every process. No value is read back to the host.
    """

    def __init__(self, num_classes: int, momentum: float, device: torch.device | str = "cpu"):
        self.momentum = float(momentum)
        self.tau = torch.full((), 1.0 / num_classes, device=device)
        self.class_mean = torch.full((num_classes,), 1.0 / num_classes, device=device)

    def update(self, probs: torch.Tensor, valid: torch.Tensor | None = None,
               reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        probs = probs.detach().float()
        w = _weights(valid, probs)
        sums = torch.cat([(probs * w.unsqueeze(1)).sum(dim=0),
                          (probs.max(dim=-1).values * w).sum().unsqueeze(0), w.sum().unsqueeze(0)])
        if reduce is not None:
            sums = reduce(sums)
        count = sums[-1]
        seen = count > 0  # a batch with no readable image leaves the statistics as they were
        mean_probs = sums[:-2] / count.clamp(min=1.0)
        mean_conf = sums[-2] / count.clamp(min=1.0)
        m = self.momentum
        self.tau = torch.where(seen, m * self.tau + (1 - m) * mean_conf, self.tau)
        self.class_mean = torch.where(seen, m * self.class_mean + (1 - m) * mean_probs,
                                      self.class_mean)

    def thresholds(self) -> torch.Tensor:
        """[C] the current per-class thresholds."""
        return self.tau * self.class_mean / self.class_mean.max().clamp(min=1e-12)

    def state_dict(self) -> dict:
        return {"tau": self.tau, "class_mean": self.class_mean}

    def load_state_dict(self, state: dict) -> None:
        self.tau = state["tau"].to(self.tau.device)
        self.class_mean = state["class_mean"].to(self.class_mean.device)


class QuantileThreshold:
    """Per-class quantile thresholds: each class passes its most confident ``share`` of the
    images the teacher gave it among the last ``window`` images (a running window of global
    batches), so every class the teacher predicts contributes pseudo-labels, in proportion to
    how often it is predicted. A class's threshold is the lower (1 - share) quantile of its
    confidences in the window (a sample passes strictly above it); a class with no image in
    the window uses ``fallback``. ``update`` takes the global batch's confidences and labels
    (under torch.distributed, gathered from every process, so every process holds the same
    window). Memory and time are linear in the window (two sorts, no [classes x window]
    matrix); no value is read back to the host.
    """

    def __init__(self, num_classes: int, share: float, window: int, fallback: float,
                 device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.share = float(share)
        self.fallback = float(fallback)
        self.confidence = torch.zeros(window, device=device)
        self.labels = torch.full((window,), -1, dtype=torch.long, device=device)
        self.position = 0

    def update(self, confidence: torch.Tensor, labels: torch.Tensor,
               valid: torch.Tensor | None = None) -> None:
        """Add the batch's images (an unreadable one, ``valid`` False, takes a slot but no
        class), replacing the oldest."""
        w = self.confidence.shape[0]
        labels = torch.where(_weights(valid, labels) > 0, labels, torch.full_like(labels, -1))
        n = labels.shape[0]
        slots = (self.position + torch.arange(n, device=labels.device)) % w
        if n > w:  # only the last ``window`` images stay
            slots, confidence, labels = slots[-w:], confidence[-w:], labels[-w:]
        self.confidence.index_copy_(0, slots, confidence.detach().float())
        self.labels.index_copy_(0, slots, labels)
        self.position = (self.position + n) % w

    def thresholds(self) -> torch.Tensor:
        """[C] the current per-class thresholds."""
        # the window ordered by class (empty slots, label -1, first), then by confidence
        by_conf = torch.argsort(self.confidence, stable=True)
        order = by_conf[torch.argsort(self.labels[by_conf], stable=True)]
        ordered = self.confidence[order]
        counts = torch.zeros(self.num_classes + 1, dtype=torch.long,
                             device=self.labels.device)
        counts.scatter_add_(0, self.labels + 1, torch.ones_like(self.labels))
        starts = (torch.cumsum(counts, dim=0) - counts)[1:]
        counts = counts[1:]
        # torch.quantile's "lower" interpolation: index floor(q * (n - 1))
        k = torch.floor((1.0 - self.share) * (counts - 1).clamp(min=0).double()).long()
        index = (starts + k).clamp(max=ordered.shape[0] - 1)
        return torch.where(counts > 0, ordered[index],
                           torch.full_like(ordered[index], self.fallback))

    def state_dict(self) -> dict:
        return {"confidence": self.confidence, "labels": self.labels,
                "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.confidence = state["confidence"].to(self.confidence.device)
        self.labels = state["labels"].to(self.labels.device)
        self.position = int(state["position"])


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
