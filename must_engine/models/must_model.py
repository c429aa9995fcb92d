"""The MUST model: a CLIP ViT image tower with a [MASK] token, a linear pixel decoder and a
trainable classifier initialised from text prototypes.

The text tower is used once, to build the classifier, and is not part of this module, so a
saved MUST model needs neither the text tower nor a tokenizer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MustOutputs:
    """What one training forward pass yields for the losses."""

    logits: torch.Tensor  # [B, C]
    cls_embedding: torch.Tensor  # [B, D] normalised projected [CLS] (or pooled) embedding
    patch_embeddings: torch.Tensor  # [B, N, D] normalised projected patch tokens
    reconstruction: torch.Tensor | None  # [B, 3, H, W] pixel decoder output


PATCH_NORMS = ("new", "ln_post")
# Parts a weights file written before they existed loads without (they keep the model's own
# values): the patch LayerNorm only training reads, and the centre (zero: no centring).
OPTIONAL_STATE_PREFIXES = ("ln_patch.", "center")


class MustModel(nn.Module):
    """Image tower + [MASK] token + pixel decoder + classifier.

    ``forward(images)`` is the plain classifier (logits) used for prediction and export;
    ``forward_train(images, mask)`` returns everything the four MUST losses need. The patch
    tokens feeding MIM and alignment go through ``ln_patch``, a new LayerNorm, as in the
    reference code (``patch_norm="new"``), or through the tower's pretrained ``ln_post``.
    """

    optional_state_prefixes = OPTIONAL_STATE_PREFIXES

    def __init__(self, visual: nn.Module, classifier: torch.Tensor, logit_scale: float):
        super().__init__()
        self.visual = visual
        width = visual.conv1.out_channels
        patch = int(visual.conv1.kernel_size[0])
        self.patch_size = patch
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        # One learnable token replaces masked patch embeddings (std 0.02, as in BEiT/MUST).
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.mask_token, std=0.02)
        # Linear pixel decoder: 1x1 conv to p*p*3 channels, then PixelShuffle back to pixels.
        self.decoder = nn.Sequential(
            nn.Conv2d(width, patch * patch * 3, kernel_size=1),
            nn.PixelShuffle(patch),
        )
        self.classifier = nn.Parameter(classifier.detach().clone().float())  # [D, C]
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        # A fixed vector subtracted from the normalised image embedding before it is
        # normalised again and compared with the classifier (zero: no centring).
        self.register_buffer("center", torch.zeros(classifier.shape[0]))
        # Same LayerNorm class and eps as the tower's, freshly initialised (weight 1, bias 0).
        self.ln_patch = copy.deepcopy(visual.ln_post)
        self.ln_patch.reset_parameters()

    @property
    def num_classes(self) -> int:
        return int(self.classifier.shape[1])

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def _tokens(self, images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Run the tower; returns the final tokens after ln_post: [B, 1 + N, width]."""
        v = self.visual
        x = v.conv1(images)  # [B, width, gh, gw]
        x = x.flatten(2).transpose(1, 2)  # [B, N, width]
        if mask is not None:
            # Replace masked patch embeddings *before* the class token and positions are added.
            w = mask.flatten(1).unsqueeze(-1).to(x.dtype)
            x = x * (1 - w) + self.mask_token.to(x.dtype) * w
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)
        x = v.transformer(x)
        return x

    def _pool(self, x: torch.Tensor, patch_norm: str = "ln_post"
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled, patch tokens): pooled after the tower's final LayerNorm, patch tokens after
        ``ln_post`` or ``ln_patch`` (``patch_norm``)."""
        if patch_norm not in PATCH_NORMS:
            raise ValueError(f"patch_norm must be one of {PATCH_NORMS}, got {patch_norm!r}.")
        v = self.visual
        pool_type = getattr(v, "pool_type", "tok")
        raw_patches = x[:, 1:]
        if getattr(v, "final_ln_after_pool", False):
            pooled = v.ln_post(x[:, 0] if pool_type == "tok" else raw_patches.mean(dim=1))
            patches = v.ln_post(raw_patches)
        else:
            x = v.ln_post(x)
            pooled = x[:, 0] if pool_type == "tok" else x[:, 1:].mean(dim=1)
            patches = x[:, 1:]
        if patch_norm == "new":
            patches = self.ln_patch(raw_patches)
        return pooled, patches

    def _project(self, t: torch.Tensor) -> torch.Tensor:
        proj = self.visual.proj
        return t @ proj if proj is not None else t

    def centred(self, embedding: torch.Tensor) -> torch.Tensor:
        feat = F.normalize(embedding, dim=-1)
        return F.normalize(feat - self.center.to(feat.dtype), dim=-1)

    def logits_from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        feat = self.centred(embedding)
        return self.logit_scale * feat @ self.classifier.to(feat.dtype)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image embedding (for prototype estimation and feature export)."""
        pooled, _ = self._pool(self._tokens(images, None))
        return self.centred(self._project(pooled))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled, _ = self._pool(self._tokens(images, None))
        return self.logits_from_embedding(self._project(pooled))

    def forward_train(self, images: torch.Tensor, mask: torch.Tensor | None,
                      *, reconstruct: bool = True, patch_norm: str = "new") -> MustOutputs:
        pooled, patches = self._pool(self._tokens(images, mask), patch_norm)
        cls_emb = self._project(pooled)
        logits = self.logits_from_embedding(cls_emb)
        patch_emb = F.normalize(self._project(patches), dim=-1)
        recon = None
        if reconstruct:
            b, n, c = patches.shape
            g = self.grid_size
            recon = self.decoder(patches.transpose(1, 2).reshape(b, c, g, g))
        return MustOutputs(logits, F.normalize(cls_emb, dim=-1), patch_emb, recon)


def build_vision_tower(embed_dim: int, vision_cfg: dict, quick_gelu: bool) -> nn.Module:
    """Rebuild an open_clip ViT image tower from its config (no weights, no network)."""
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(embed_dim, dict(vision_cfg), quick_gelu=quick_gelu)


def must_model_from_config(arch: dict) -> MustModel:
    """An empty MUST model with the architecture recorded in a run (``arch`` dict)."""
    visual = build_vision_tower(arch["embed_dim"], arch["vision_cfg"], arch["quick_gelu"])
    classifier = torch.zeros(arch["embed_dim"], arch["num_classes"])
    return MustModel(visual, classifier, arch["logit_scale"])


def architecture_of(model_cfg: dict, quick_gelu: bool, num_classes: int,
                    logit_scale: float) -> dict:
    return {
        "embed_dim": int(model_cfg["embed_dim"]),
        "vision_cfg": dict(model_cfg["vision_cfg"]),
        "quick_gelu": bool(quick_gelu),
        "num_classes": int(num_classes),
        "logit_scale": float(logit_scale),
    }
