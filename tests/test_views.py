"""Weak/strong/eval views and the RandAugment posterize guard."""

from __future__ import annotations

import pickle
import random
import time

import numpy as np
import PIL
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as timm_aa
from timm.data import create_transform
from torchvision import transforms as T

from must_engine.views import (
    DEFAULT_RANDAUGMENT,
    Preprocess,
    denormalize,
    eval_view,
    guard_posterize,
    iter_augment_ops,
    safe_posterize,
    strong_view,
    weak_view,
)

PP = Preprocess(image_size=32, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))


def _seed(seed: int) -> None:
    # timm's RandAugment draws from `random` and `np.random`; torchvision from torch.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _noise(size=(48, 40), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _plain_tensor(img: Image.Image) -> torch.Tensor:
    return T.Normalize(PP.mean, PP.std)(T.ToTensor()(img))


# --- Preprocess ----------------------------------------------------------------------------


def test_preprocess_round_trip_and_open_clip_dict() -> None:
    assert Preprocess.from_dict(PP.to_dict()) == PP
    oc = {
        "size": [224, 224],
        "mode": "RGB",
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    pp = Preprocess.from_dict(oc)
    assert pp.image_size == 224 and pp.mean == tuple(oc["mean"]) and pp.interpolation == "bicubic"
    assert hash(pp) == hash(Preprocess.from_dict(pp.to_dict()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 0}, "positive"),
        ({"std": (0.2, 0.0, 0.2)}, "above zero"),
        ({"mean": (0.5, 0.5)}, "three numbers"),
        ({"interpolation": "cubic"}, "Unknown interpolation"),
    ],
)
def test_preprocess_rejects_bad_values(kwargs, message) -> None:
    base = PP.to_dict()
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Preprocess.from_dict(base)


def test_preprocess_rejects_non_square_size() -> None:
    with pytest.raises(ValueError, match="square"):
        Preprocess.from_dict({"size": [224, 256], "mean": PP.mean, "std": PP.std})


# --- weak / eval views ---------------------------------------------------------------------


def test_weak_view_has_no_flip_or_colour_change() -> None:
    # On an image already at the input size resize and crop are identities, so any flip or
    # colour change would show up as a difference.
    img = _noise((32, 32))
    expected = _plain_tensor(img)
    view = weak_view(PP)
    for seed in range(25):
        _seed(seed)
        assert torch.allclose(view(img), expected)


def test_weak_view_crops_at_random_along_the_long_side() -> None:
    img = _noise((64, 32))  # resize keeps it 64x32, crop picks a 32 px window
    view = weak_view(PP)
    _seed(0)
    outs = [view(img) for _ in range(12)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    windows = [_plain_tensor(img.crop((x, 0, x + 32, 32))) for x in range(33)]
    assert all(any(torch.allclose(o, w) for w in windows) for o in outs)


def test_eval_view_is_resize_and_centre_crop() -> None:
    img = _noise((64, 32))
    out = eval_view(PP)(img)
    assert torch.allclose(out, _plain_tensor(img.crop((16, 0, 48, 32))))
    small = eval_view(PP)(_noise((20, 10)))  # upsampled: shorter side becomes 32
    assert small.shape == (3, 32, 32)


def test_views_accept_non_rgb_images() -> None:
    grey = Image.new("L", (40, 40), 100)
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    for view in (weak_view(PP), eval_view(PP), strong_view(PP)):
        assert view(grey).shape == (3, 32, 32)
    white = denormalize(eval_view(PP)(rgba), PP)
    assert torch.allclose(white, torch.ones_like(white), atol=1e-5)


def test_denormalize_inverts_normalize() -> None:
    x = torch.rand(2, 3, 8, 8)
    y = T.Normalize(PP.mean, PP.std)(x)
    assert torch.allclose(denormalize(y, PP), x, atol=1e-6)
    assert torch.allclose(denormalize(y[0], PP), x[0], atol=1e-6)
    assert denormalize(y * 10, PP).max() <= 1.0
    assert denormalize(y * 10, PP, clamp=False).max() > 1.0
    with pytest.raises(ValueError, match="tensor"):
        denormalize(torch.zeros(4, 8, 8), PP)


# --- strong view ---------------------------------------------------------------------------


def _names(view) -> list[str]:
    return [type(t).__name__ for t in view.transforms]


def test_strong_view_is_timm_randaugment_without_colour_jitter() -> None:
    view = strong_view(PP)
    names = _names(view)
    assert "RandomResizedCropAndInterpolation" in names
    assert "RandomHorizontalFlip" in names
    assert "RandAugment" in names
    assert "ColorJitter" not in names and "RandomErasing" not in names
    rrc = view.transforms[names.index("RandomResizedCropAndInterpolation")]
    assert tuple(rrc.scale) == (0.3, 1.0)
    ops = list(iter_augment_ops(view))
    assert len(ops) == 15 and all(op.magnitude == 9 for op in ops)
    assert any(op.name == "PosterizeIncreasing" for op in ops)
    out = view(_noise())
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_strong_view_without_randaugment() -> None:
    view = strong_view(PP, randaugment=None, scale_min=0.5)
    names = _names(view)
    assert "RandAugment" not in names and "ColorJitter" not in names
    assert "RandomResizedCropAndInterpolation" in names and "RandomHorizontalFlip" in names
    assert list(iter_augment_ops(view)) == []
    with pytest.raises(ValueError, match="scale_min"):
        strong_view(PP, scale_min=0.0)


def test_every_posterize_op_is_guarded() -> None:
    view = strong_view(PP)
    posterize_ops = [op for op in iter_augment_ops(view) if op.name.startswith("Posterize")]
    assert posterize_ops and all(op.aug_fn is safe_posterize for op in posterize_ops)
    # The walker also reaches AutoAugment policies and AugMix chains.
    for policy in ("v0r", "originalr", "augmix-m5-w3"):
        t = create_transform(32, is_training=True, auto_augment=policy, color_jitter=None)
        assert guard_posterize(t) >= 1
        assert all(
            op.aug_fn is safe_posterize
            for op in iter_augment_ops(t)
            if op.name.startswith("Posterize")
        )


def _pillow_rejects_zero_bits() -> bool:
    try:
        PIL.ImageOps.posterize(Image.new("RGB", (2, 2)), 0)
    except ValueError:
        return True
    return False


def test_guarded_posterize_at_magnitude_10() -> None:
    hparams = {"magnitude_std": 0}
    op = timm_aa.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10, hparams=hparams)
    assert op.level_fn(10, hparams) == (0,)  # timm asks for 0 bits here
    img = _noise((16, 16))
    if _pillow_rejects_zero_bits():
        with pytest.raises(ValueError):
            op(img)  # the bug the guard exists for
    assert guard_posterize([op]) == 1
    out = np.asarray(op(img))
    assert set(np.unique(out).tolist()) <= {0, 128}  # clamped to 1 bit, not a crash
    assert np.asarray(safe_posterize(img, 8)).tolist() == np.asarray(img).tolist()
    assert np.asarray(safe_posterize(img, 4)).max() <= 240


def test_strong_view_survives_thousands_of_samples() -> None:
    view = strong_view(PP)
    # Record the raw bit counts timm asks for, to show the failing case was exercised.
    asked: list[int] = []
    for op in iter_augment_ops(view):
        if op.name.startswith("Posterize"):
            guarded = op.aug_fn

            def spy(img, bits, _fn=guarded, **kw):
                asked.append(bits)
                return _fn(img, bits, **kw)

            op.aug_fn = spy
    images = [_noise((40 + i % 3 * 4, 36 + i % 5 * 3), seed=i) for i in range(16)]
    _seed(1234)
    n_samples = 6000
    start = time.perf_counter()
    for i in range(n_samples):
        out = view(images[i % len(images)])
        assert out.shape == (3, 32, 32)
    elapsed = time.perf_counter() - start
    assert asked.count(0) >= 1, "the seed no longer reaches magnitude 10; pick another seed"
    assert elapsed < 30


def test_strong_view_pickles_with_its_guard() -> None:
    # DataLoader workers started with "spawn" (macOS, Windows) receive the view by pickling.
    view = pickle.loads(pickle.dumps(strong_view(PP)))
    ops = [op for op in iter_augment_ops(view) if op.name.startswith("Posterize")]
    assert ops and all(op.aug_fn is safe_posterize for op in ops)


def test_default_policy_is_the_published_one() -> None:
    assert DEFAULT_RANDAUGMENT == "rand-m9-mstd0.5-inc1"
