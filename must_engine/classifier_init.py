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
