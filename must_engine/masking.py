"""Block masks for masked image modelling.

The image is cut into square blocks of `mask_patch_size` pixels; ceil(blocks * ratio) blocks
are drawn per image and every model patch inside a drawn block is masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Guards ceil() against float error: 100 * 0.07 is 7.000000000000001 and must give 7, not 8.
_CEIL_EPS = 1e-9


@dataclass(frozen=True)
class MaskSpec:
    image_size: int
    patch_size: int
    mask_patch_size: int
    mask_ratio: float

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "mask_patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"{name} must be a positive whole number of pixels, got {value!r}."
                )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"The image size {self.image_size} is not a multiple of the model patch size "
                f"{self.patch_size}; use an input size the model accepts."
            )
        if self.mask_patch_size % self.patch_size:
            raise ValueError(
                f"The mask block size {self.mask_patch_size} must be a multiple of the model "
                f"patch size {self.patch_size}."
            )
        if self.image_size % self.mask_patch_size:
            raise ValueError(
                f"The mask block size {self.mask_patch_size} must divide the image size "
                f"{self.image_size} evenly; try "
                f"{choose_mask_patch_size(self.image_size, self.patch_size)}."
            )
        if not 0.0 <= float(self.mask_ratio) < 1.0:
            raise ValueError(
                f"The mask ratio must be at least 0 and below 1, got {self.mask_ratio}."
            )

    @property
    def grid_size(self) -> int:
        """Model patches per side."""
        return self.image_size // self.patch_size

    @property
    def block_patches(self) -> int:
        """Model patches per side of one mask block (k)."""
        return self.mask_patch_size // self.patch_size

    @property
    def blocks_per_side(self) -> int:
        return self.image_size // self.mask_patch_size

    @property
    def num_blocks(self) -> int:
        return self.blocks_per_side**2

    @property
    def num_masked_blocks(self) -> int:
        return math.ceil(self.num_blocks * float(self.mask_ratio) - _CEIL_EPS)

    @property
    def num_masked_patches(self) -> int:
        return self.num_masked_blocks * self.block_patches**2


def choose_mask_patch_size(image_size: int, patch_size: int) -> int:
    """The smallest block (a multiple of the patch) at least 32 px per 224 px of input that tiles
    the patch grid: 32 for ViT-B/16 and B/32 at 224, 56 for ViT-L/14 at 224."""
    if patch_size < 1 or image_size < 1 or image_size % patch_size:
        raise ValueError(
            f"The image size {image_size} must be a positive multiple of the patch size {patch_size}."
        )
    grid = image_size // patch_size
    target = round(32 * image_size / 224)
    k = 1
    # k == grid always qualifies, so the loop ends.
    while k * patch_size < target or grid % k:
        k += 1
    return k * patch_size


def sample_block_masks(spec: MaskSpec, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Bool masks on the patch grid, shape [batch, grid, grid]; True = masked.

    Each image gets exactly spec.num_masked_blocks distinct blocks. The result lives on the
    generator's device and depends only on the generator's state.
    """
    if batch < 0:
        raise ValueError(f"batch must be zero or more, got {batch}.")
    n, k = spec.blocks_per_side, spec.block_patches
    device = generator.device
    # A random permutation per image: its first m entries are the chosen blocks.
    scores = torch.rand(batch, spec.num_blocks, generator=generator, device=device)
    chosen = scores.argsort(dim=1)[:, : spec.num_masked_blocks]
    blocks = torch.zeros(batch, spec.num_blocks, dtype=torch.bool, device=device)
    blocks.scatter_(1, chosen, True)
    blocks = blocks.view(batch, n, n)
    return blocks.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2)


def patch_mask_to_pixels(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, gh, gw] patch mask -> [B, 1, gh*patch, gw*patch] float mask (1.0 = masked pixel)."""
    if mask.dim() != 3:
        raise ValueError(f"Expected a [B, gh, gw] patch mask, got shape {tuple(mask.shape)}.")
    if patch_size < 1:
        raise ValueError(f"patch_size must be a positive number of pixels, got {patch_size}.")
    pixels = mask.repeat_interleave(patch_size, dim=1).repeat_interleave(patch_size, dim=2)
    return pixels.unsqueeze(1).to(torch.float32)
