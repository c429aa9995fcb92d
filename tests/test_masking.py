"""Block masks: exact counts, aligned whole blocks, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from must_engine.masking import (
    MaskSpec,
    choose_mask_patch_size,
    patch_mask_to_pixels,
    sample_block_masks,
)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _blocks(mask: torch.Tensor, k: int) -> torch.Tensor:
    """[B, gh, gw] -> [B, n, n, k*k]: the patches of each mask block side by side."""
    b, gh, gw = mask.shape
    n = gh // k
    return mask.view(b, n, k, n, k).permute(0, 1, 3, 2, 4).reshape(b, n, n, k * k)


@pytest.mark.parametrize(
    "image_size, patch_size, expected",
    [(224, 16, 32), (224, 32, 32), (224, 14, 56), (384, 16, 64), (32, 8, 8), (64, 16, 16)],
)
def test_choose_mask_patch_size(image_size, patch_size, expected) -> None:
    chosen = choose_mask_patch_size(image_size, patch_size)
    assert chosen == expected
    MaskSpec(image_size, patch_size, chosen, 0.3)  # always a valid spec


def test_choose_mask_patch_size_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="multiple of the patch size"):
        choose_mask_patch_size(225, 16)


@pytest.mark.parametrize(
    "args, message",
    [
        ((224, 16, 24, 0.3), "multiple of the model patch size"),
        ((224, 16, 48, 0.3), "divide the image size"),
        ((224, 16, 32, 1.0), "below 1"),
        ((224, 16, 32, -0.1), "at least 0"),
        ((220, 16, 32, 0.3), "not a multiple of the model patch size"),
        ((224, 0, 32, 0.3), "positive whole number"),
    ],
)
def test_mask_spec_validation(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        MaskSpec(*args)


def test_published_vit_b16_setting() -> None:
    spec = MaskSpec(224, 16, 32, 0.3)
    assert (spec.grid_size, spec.block_patches, spec.blocks_per_side) == (14, 2, 7)
    assert spec.num_masked_blocks == math.ceil(49 * 0.3) == 15
    mask = sample_block_masks(spec, 4, _gen(0))
    assert mask.shape == (4, 14, 14) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [60] * 4  # 15 blocks x 2 x 2 patches


def test_ceil_is_exact_despite_float_error() -> None:
    spec = MaskSpec(320, 16, 32, 0.07)  # 100 blocks; 100 * 0.07 == 7.000000000000001
    assert spec.num_blocks == 100 and spec.num_masked_blocks == 7
    assert MaskSpec(320, 16, 32, 0.071).num_masked_blocks == 8


def test_zero_ratio_masks_nothing() -> None:
    mask = sample_block_masks(MaskSpec(64, 16, 32, 0.0), 3, _gen(0))
    assert not mask.any()


@settings(max_examples=60, deadline=None)
@given(
    patch=st.sampled_from([2, 4, 8, 14, 16]),
    k=st.integers(1, 4),
    n=st.integers(1, 6),
    ratio=st.floats(0.0, 0.99),
    batch=st.integers(0, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_masks_are_whole_aligned_blocks_with_exact_count(patch, k, n, ratio, batch, seed) -> None:
    spec = MaskSpec(patch * k * n, patch, patch * k, ratio)
    mask = sample_block_masks(spec, batch, _gen(seed))
    assert mask.shape == (batch, k * n, k * n)
    expected_blocks = math.ceil(n * n * ratio - 1e-9)
    assert spec.num_masked_blocks == expected_blocks
    per_image = mask.flatten(1).sum(1)
    assert per_image.tolist() == [expected_blocks * k * k] * batch
    blocks = _blocks(mask, k)
    # every block is either fully masked or fully visible, on the block grid
    assert (blocks.all(-1) | ~blocks.any(-1)).all()
    assert blocks.all(-1).flatten(1).sum(1).tolist() == [expected_blocks] * batch


def test_masks_are_deterministic_given_the_generator() -> None:
    spec = MaskSpec(224, 16, 32, 0.3)
    a = sample_block_masks(spec, 8, _gen(7))
    b = sample_block_masks(spec, 8, _gen(7))
    c = sample_block_masks(spec, 8, _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = _gen(7)
    first, second = sample_block_masks(spec, 8, g), sample_block_masks(spec, 8, g)
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_images_in_a_batch_get_different_masks_and_all_blocks_are_used() -> None:
    spec = MaskSpec(224, 16, 32, 0.1)
    mask = sample_block_masks(spec, 300, _gen(3))
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 250
    hits = _blocks(mask, 2).all(-1).sum(0)  # how often each of the 49 blocks was chosen
    assert (hits > 0).all()
    assert hits.float().mean().item() == pytest.approx(300 * 5 / 49)


def test_patch_mask_to_pixels() -> None:
    spec = MaskSpec(64, 16, 32, 0.5)
    mask = sample_block_masks(spec, 2, _gen(0))
    pixels = patch_mask_to_pixels(mask, 16)
    assert pixels.shape == (2, 1, 64, 64) and pixels.dtype == torch.float32
    assert set(pixels.unique().tolist()) <= {0.0, 1.0}
    assert pixels.sum((1, 2, 3)).tolist() == [2 * 4 * 256.0] * 2
    for b in range(2):
        for i in range(4):
            for j in range(4):
                patch = pixels[b, 0, i * 16 : (i + 1) * 16, j * 16 : (j + 1) * 16]
                assert (patch == float(mask[b, i, j])).all()
    with pytest.raises(ValueError, match=r"\[B, gh, gw\]"):
        patch_mask_to_pixels(mask.flatten(1), 16)
