"""The starting classifier: prompt-ensembled text prototypes, optionally refined with
prototypes estimated from the target images' own features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from must_engine.models.must_model import MustModel


@torch.no_grad()
def text_classifier(clip_model, tokenizer, class_names: list[str], templates: list[str],
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """[embed_dim, classes]: per class, embed each template, L2-normalise, average,
    L2-normalise again (open_clip's zero-shot helper does exactly this)."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    clip_model = clip_model.to(device)
    weights = build_zero_shot_classifier(clip_model, tokenizer, class_names, templates,
                                         num_classes_per_batch=10, device=device)
    return weights.float().cpu()


@torch.no_grad()
def target_prototypes(model: MustModel, batches, *, mix: float = 0.5) -> torch.Tensor:
    """Re-estimate each class prototype from the images' own features.

    Soft assignment: every image contributes its normalised embedding to each class in
    proportion to the zero-shot probability; the class mean is normalised and mixed with
    the text prototype (``mix`` of the image estimate), then normalised again.
    """
    text = F.normalize(model.classifier.detach().float(), dim=0)
    sums = torch.zeros_like(text)
    for images in batches:
        feats = model.embed(images).float()
        probs = (model.logit_scale * feats @ text).softmax(dim=-1)
        sums += feats.T.to(sums.device) @ probs.to(sums.device)
    image_protos = F.normalize(sums, dim=0)
    return F.normalize((1 - mix) * text + mix * image_protos, dim=0)


def balanced_assignment(logits: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Soft assignments [n, C] whose class totals are pulled toward a uniform prior (a few
    Sinkhorn-Knopp rounds, as in SwAV): each image's row sums to 1, each class's column to
    about n / C. Zero-shot classifiers often pile most images onto a few classes; this is
    the same prior the fairness loss applies during training."""
    q = (logits - logits.max()).exp()
    n, c = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=0, keepdim=True).clamp_min(1e-12) * (n / c)
        q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return q


@torch.no_grad()
def refine_prototypes(features: torch.Tensor, text: torch.Tensor, logit_scale: float, *,
                      rounds: int = 10, anchor: float = 0.5,
                      balanced: bool = True) -> torch.Tensor:
    """Refined zero-shot classifier [D, C]: soft k-means over the target images' normalised
    features ``[n, D]``, seeded with the text prototypes and pulled back toward them each
    round (``anchor`` is the text prototype's share), so clusters keep their class meaning.

    Each round assigns every image softly to the current prototypes (at the model's own
    logit scale; ``balanced`` applies the uniform class prior to the assignment), takes each
    class's weighted feature mean, and mixes it with its text prototype.
    """
    text = F.normalize(text.float(), dim=0)
    feats = F.normalize(features.float(), dim=-1).to(text.device)
    protos = text
    for _ in range(max(0, rounds)):
        logits = logit_scale * feats @ protos
        q = balanced_assignment(logits) if balanced else logits.softmax(dim=-1)
        means = F.normalize(feats.T @ q, dim=0)
        protos = F.normalize(anchor * text + (1 - anchor) * means, dim=0)
    return protos
